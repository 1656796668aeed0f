"""A model file as a list of layers: op class, dtype, MACs, parameter and activation bytes.

This is the host-side half of the cost model: it reads ONNX with the `onnx` package (imported
inside the functions, so `import edgesmith.targets` stays light). It folds what every runtime
fuses anyway (an activation right after a conv or matmul, BatchNorm, Q/DQ pairs around an integer
kernel, shape-only ops), so one layer here is one kernel launch on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .layer import Layer

# onnx is not followed by mypy (its types are Any): these names say which protobuf a value is
Model = Any  # onnx.ModelProto
Node = Any  # onnx.NodeProto

ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}
FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Constant", "Identity", "Gather",
        "Cast", "Transpose", "ConstantOfShape", "Dropout", "QuantizeLinear", "DequantizeLinear",
        "BatchNormalization"}  # fmt: skip
CONVS = {"Conv", "QLinearConv", "ConvInteger", "ConvTranspose"}
GEMMS = {"Gemm", "MatMul", "QLinearMatMul", "MatMulInteger", "MatMulNBits"}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean"}


def layers(path: str | Path, batch: int = 1, shapes: dict[str, Any] | None = None) -> list[Layer]:
    """The layers of an ONNX model (TFLite: see `tflite_layers`), with a dynamic first axis set to
    `batch` and other dynamic axes sized by `shapes` ({input name: sizes}, e.g. from --input-shape);
    an axis nothing sizes is refused (`latency.input_shape`), not guessed."""
    path = Path(path)
    if path.suffix.lower() == ".tflite":
        from .tflite_graph import tflite_layers

        return tflite_layers(path)
    if path.suffix.lower() != ".onnx":
        raise InputError(f"{path.name}: the cost model reads .onnx and .tflite files, not '{path.suffix}'")
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InputError(f"{path} is not a valid ONNX model ({exc}); check the file is complete") from exc
    from .latency import input_shape

    weights = {t.name for t in model.graph.initializer}
    for value in [v for v in model.graph.input if v.name not in weights]:
        dims = value.type.tensor_type.shape.dim
        sizes = input_shape(value.name, [d.dim_value or None for d in dims], batch, shapes)
        for dim, size in zip(dims, sizes, strict=True):
            dim.dim_value = size
    inits = _strip_weights(model)
    return _walk(_infer_shapes(model).graph, inits)


def _infer_shapes(model: Model) -> Model:
    """ONNX's shape inference, then ONNX Runtime's symbolic one where that left a node output without
    a static shape: a TorchScript export of `x.chunk(2, 1)` (YOLO's C2f/C3k2 blocks) slices at
    positions computed from `Shape`, which ONNX's pass does not follow, so every layer after it had no
    spatial size and YOLO11n came out at 0.41 of its 3.3 GMACs."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    known = {v.name for v in [*g.value_info, *g.output, *g.input] if _static(v)}
    if all(o in known for n in inferred.graph.node for o in n.output if o and n.op_type != "Constant"):
        return inferred
    try:  # onnxruntime and sympy (torch brings it) may be missing where only the cost model runs
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # or its sympy rules miss an op: keep what ONNX's pass found
        return inferred


def _static(value: Any) -> bool:  # an onnx ValueInfoProto
    dims = value.type.tensor_type.shape.dim
    return value.type.HasField("tensor_type") and all(d.dim_value > 0 for d in dims)


@dataclass(frozen=True)
class _Init:
    shape: tuple[int, ...]
    nbytes: int
    dtype: int  # onnx TensorProto data type


def _strip_weights(model: Model) -> dict[str, _Init]:
    """Shapes and sizes of all initializers; the large ones leave the graph (as typed inputs) so
    shape inference does not copy megabytes of weights it never reads."""
    from onnx import helper

    inits, keep = {}, []
    for t in model.graph.initializer:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        inits[t.name] = _Init(tuple(t.dims), math.prod(t.dims) * itemsize, t.data_type)
        if math.prod(t.dims) > 1024:
            model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            keep.append(t)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return inits


def _walk(graph: Any, inits: dict[str, _Init]) -> list[Layer]:  # an onnx GraphProto
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, int] = {}
    for v in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = v.type.tensor_type
        shapes[v.name] = [d.dim_value for d in t.shape.dim]
        dtypes[v.name] = t.elem_type
    for name, info in inits.items():
        shapes[name], dtypes[name] = list(info.shape), info.dtype
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Node]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    quantized_inputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}

    out: list[Layer] = []
    fused_into: dict[str, Layer] = {}
    alias: dict[str, str] = {}  # output of a shape-only op -> the tensor whose bytes it reuses
    for node in graph.node:
        op = node.op_type
        if op in FREE and node.input and node.output:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
        # the tensor the activation reads, through Q/DQ and shape-only ops (a QDQ Conv -> Q -> DQ -> Relu)
        origin = alias.get(node.input[0], node.input[0]) if node.input else None
        if op in ACTIVATIONS and origin in fused_into and len(consumers.get(node.input[0], [])) == 1 and \
                len(consumers.get(origin, [])) == 1:  # fmt: skip
            layer = fused_into[origin]  # conv + activation run as one kernel
            layer.outputs.append(node.output[0])
            alias[node.input[0]] = node.output[0]
            fused_into[node.output[0]] = layer
            continue
        if op in FREE:
            continue
        int8 = (
            op.startswith("QLinear")
            or op.endswith("Integer")
            or (op in CONVS | GEMMS and node.input[0] in quantized_inputs)
            or _between_qdq(node, inits, quantized_inputs, consumers)
        )
        dtype = "int8" if int8 else "fp32"
        size = 1 if int8 else 4
        weights = [i for i in node.input[1:] if i in inits or (producer.get(i) and producer[i].op_type
                   == "DequantizeLinear" and producer[i].input[0] in inits)]  # fmt: skip
        param_bytes = sum(_init_bytes(inits, producer, w, int8) for w in weights)
        acts_in = [i for i in node.input if i and i not in weights and i not in inits]
        out_elems = _elems(shapes.get(node.output[0]))
        macs, op_class = _macs(node, shapes, inits, producer, out_elems)
        layer = Layer(
            depth=macs // out_elems if op_class in ("conv", "dwconv", "gemm") and out_elems else 0,
            in_channels=_in_channels(node, shapes, inits, producer) if op_class == "conv" else 0,
            name=node.name or node.output[0],
            op=op,
            op_class=op_class,
            dtype=dtype,
            macs=macs,
            param_bytes=param_bytes,
            in_bytes=sum(_elems(shapes.get(i)) for i in acts_in) * size,
            out_bytes=out_elems * size,
            outputs=list(node.output),
            inputs=[alias.get(i, i) for i in acts_in],
            in_sizes=[_elems(shapes.get(i)) * size for i in acts_in],
        )
        out.append(layer)
        if op in CONVS | GEMMS:
            fused_into[node.output[0]] = layer
    return out


def _between_qdq(
    node: Node, inits: dict[str, _Init], quantized_inputs: set[str], consumers: dict[str, list[Node]]
) -> bool:
    """An op fed only by DequantizeLinear and read only by QuantizeLinear (a QDQ pool, add, concat):
    runtimes run it on the int8 tensors (ORT's QDQ transformer, LiteRT's int8 kernels), 1 byte per
    element, as the .tflite of the same model does."""
    acts = [i for i in node.input if i and i not in inits]
    readers = [r for o in node.output for r in consumers.get(o, [])]
    return (
        bool(acts and readers)
        and all(i in quantized_inputs for i in acts)
        and all(r.op_type == "QuantizeLinear" for r in readers)
    )


def _elems(shape: list[int] | None) -> int:
    return math.prod(d for d in shape if d > 0) if shape else 0


def _init_bytes(inits: dict[str, _Init], producer: dict[str, Node], name: str, int8: bool) -> int:
    if name in inits:
        return inits[name].nbytes
    return inits[producer[name].input[0]].nbytes  # DequantizeLinear of a constant


def _weight_shape(
    name: str, shapes: dict[str, list[int]], inits: dict[str, _Init], producer: dict[str, Node]
) -> list[int] | None:
    if name in inits:
        return list(inits[name].shape)
    p = producer.get(name)
    if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in inits:
        return list(inits[p.input[0]].shape)
    return shapes.get(name)


def _in_channels(
    node: Node, shapes: dict[str, list[int]], inits: dict[str, _Init], producer: dict[str, Node]
) -> int:
    """Input channels per group of a convolution (its weight's second axis)."""
    w = _weight_shape(node.input[3 if node.op_type == "QLinearConv" else 1], shapes, inits, producer)
    return int(w[1]) if w and len(w) > 1 else 0


def _macs(
    node: Node,
    shapes: dict[str, list[int]],
    inits: dict[str, _Init],
    producer: dict[str, Node],
    out_elems: int,
) -> tuple[int, str]:
    op = node.op_type
    attrs = {a.name: a for a in node.attribute}
    if op in CONVS:
        w_index = 3 if op == "QLinearConv" else 1
        w = _weight_shape(node.input[w_index], shapes, inits, producer) or [1, 1, 1, 1]
        group = attrs["group"].i if "group" in attrs else 1
        per_output = math.prod(w[1:])  # C/group x kh x kw
        in_channels = w[1] * group
        depthwise = group > 1 and group == in_channels
        return out_elems * per_output, "dwconv" if depthwise else "conv"
    if op in GEMMS:
        a_index = 0
        a = shapes.get(node.input[a_index]) or [1]
        k = a[-1] if a else 1
        if op == "Gemm" and "transA" in attrs and attrs["transA"].i:
            k = a[0]
        return out_elems * max(k, 1), "gemm"
    if op in POOLS:
        in_elems = _elems(shapes.get(node.input[0]))
        return max(in_elems, out_elems), "pool"
    if op in {"Add", "Mul", "Sub", "Div", "Relu", "Clip", "Sigmoid", "HardSwish", "Concat",
              "QLinearAdd", "QLinearMul", "Softmax", "LeakyRelu", "Tanh", "Pow", "Sqrt", "Erf"}:  # fmt: skip
        return out_elems, "elementwise"
    return out_elems, "other"
