"""TFLite flatbuffers as cost-model layers, read through LiteRT's interpreter (host side).

The interpreter lists the ops with their input/output tensor indices, and the tensors with shapes
and dtypes; weights are the second input of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (TFLite
weight layouts: OHWI, 1HW(C*m), [out, in]). Activations are fused into the op by the converter, so
one op is one kernel, as in `graph.layers` for ONNX.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import InputError, require
from .layer import Layer

FREE = {"RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE", "DELEGATE", "EXPAND_DIMS", "SHAPE"}
POOLS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN"}
ELEMENTWISE = {
    "ADD",
    "MUL",
    "SUB",
    "RELU",
    "RELU6",
    "LOGISTIC",
    "HARD_SWISH",
    "SOFTMAX",
    "CONCATENATION",
    "TANH",
}


def tflite_layers(path: str | Path) -> list[Layer]:
    interpreter_mod = require("ai_edge_litert.interpreter", "litert", why="to read .tflite graphs")
    try:
        interpreter = interpreter_mod.Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{path} is not a valid TFLite model ({exc}); check the file is complete") from exc
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    out = []
    for op in interpreter._get_ops_details():  # the only public-enough op listing LiteRT has
        name = op["op_name"]
        if name in FREE:
            continue
        inputs = [i for i in op["inputs"] if i >= 0]
        outs = [tensors[i] for i in op["outputs"]]
        if all(t["dtype"].__name__ in ("int32", "int64") for t in outs):
            continue  # shape arithmetic (STRIDED_SLICE/PACK feeding a RESHAPE): no kernel on device
        out_elems = sum(math.prod(int(d) for d in t["shape"]) for t in outs)
        weights = inputs[1:] if name in {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} else []
        acts = [i for i in inputs if i not in weights]
        macs, op_class = _macs(name, out_elems, [tensors[w]["shape"] for w in weights[:1]])
        # an integer kernel: int8 weights, or (weightless ops: ADD, MEAN, SOFTMAX ...) an int8 output
        int8 = (tensors[weights[0]]["dtype"].__name__ if weights else outs[0]["dtype"].__name__) in (
            "int8",
            "uint8",
        )
        size = 1 if int8 or outs[0]["dtype"].__name__ in ("int8", "uint8") else 4
        out.append(Layer(
            depth=macs // out_elems if op_class in ("conv", "dwconv", "gemm") and out_elems else 0,
            in_channels=int(tensors[weights[0]]["shape"][3]) if name == "CONV_2D" else 0,  # OHWI
            name=outs[0]["name"], op=name, op_class=op_class, dtype="int8" if int8 else "fp32", macs=macs,
            param_bytes=sum(_nbytes(tensors[w]) for w in weights),
            in_bytes=sum(_nbytes(tensors[i]) for i in acts), out_bytes=out_elems * size,
            outputs=[t["name"] for t in outs], inputs=[tensors[i]["name"] for i in acts],
            in_sizes=[_nbytes(tensors[i]) for i in acts],
        ))  # fmt: skip
    return out


def _nbytes(t: dict[str, Any]) -> int:  # a tensor's details from the interpreter
    return math.prod(int(d) for d in t["shape"]) * t["dtype"]().itemsize if len(t["shape"]) else 0


def _macs(name: str, out_elems: int, weight_shapes: list[Any]) -> tuple[int, str]:
    w = [int(d) for d in weight_shapes[0]] if weight_shapes else []
    if name == "CONV_2D":
        return out_elems * math.prod(w[1:]), "conv"
    if name == "DEPTHWISE_CONV_2D":
        return out_elems * w[1] * w[2], "dwconv"
    if name == "FULLY_CONNECTED":
        return out_elems * w[1], "gemm"
    if name in POOLS:
        return out_elems, "pool"
    return out_elems, "elementwise" if name in ELEMENTWISE else "other"
