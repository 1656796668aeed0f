"""ONNX-only sources to a torch module with onnx2torch, for litert-torch (see
docs/decisions/onnx-to-tflite.md for why this path and not onnx2tf).

The module keeps the ONNX model's NCHW layout at its inputs and outputs; litert-torch moves the
inside to NHWC itself (transposes it then folds), so the `.tflite` takes the same arrays as the ONNX
file and verification feeds it the same eval set.

torch.export cannot trace onnx2torch's shape-taking ops (Reshape, Pad, Slice read their shape
tensors' values: a data-dependent guard). The TFLite model has batch 1, so every shape is known:
ONNX Runtime's basic (hardware-independent) constant folding first turns shape computations into
constants, then those ops get their constants as Python values, baked in.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from ...errors import InputError, require
from ..steps.onnx_branches import deciding_inputs, inline_constant_ifs

HINT = "export the model without it, or convert from the PyTorch/Keras original"
CONTROL_FLOW = ("If", "Loop", "Scan")


def _torchvision_stub() -> dict:
    """onnx2torch imports torchvision at module level for two converters (NonMaxSuppression,
    RoiAlign). torchvision's PyPI wheels are built for torch's CUDA build and fail to import next to
    the CPU torch, so when it is missing or broken those two ops get a stub that raises."""
    vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

    def missing(*args, **kwargs):
        raise InputError(f"this op needs a working torchvision; {HINT}")

    for name in ("nms", "roi_align", "box_convert"):
        setattr(ops, name, missing)
    vision.ops = ops  # type: ignore[attr-defined]  # a stand-in module gets its attributes set here
    return {"torchvision": vision, "torchvision.ops": ops}


def _forget(*prefixes: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


def _onnx2torch():
    """onnx2torch, imported with the real torchvision when that works, else with the stub (kept in
    `sys.modules` for the duration of the import only: other code still sees no torchvision)."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    import importlib.util

    if importlib.util.find_spec("onnx2torch") is None:
        raise InputError(
            "TFLite export of an ONNX file needs onnx2torch: run `pip install --no-deps onnx2torch==1.5.15`"
        )
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import onnx2torch

            return onnx2torch
        except Exception:  # a CUDA-built torchvision next to the CPU torch: "torchvision::nms does not exist"
            _forget("onnx2torch", "torchvision")
    stub = _torchvision_stub()
    sys.modules.update(stub)
    try:
        import onnx2torch
    finally:
        for name in stub:
            sys.modules.pop(name, None)
    return onnx2torch


def _relax_reshapes(model) -> None:
    """torch's dynamo exporter writes `Reshape(allowzero=1)`, which onnx2torch refuses. With a constant
    shape that has no 0 the attribute changes nothing, so it is dropped."""
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        shape = constants.get(node.input[1])
        if shape is not None and (shape != 0).all():
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)


def _fold_static(path: Path, inputs, workdir: Path):
    """The model at batch 1 and the sizes `inputs` give its other dynamic axes (the calibration data's or
    --input-shape's: input_shapes.py; an unsized axis is refused, as a 1x1 image would fold its pooling
    to nothing), constants folded."""
    from ...targets.latency import input_shape

    onnx = require("onnx", "convert")
    ort = require("onnxruntime", "convert")
    model = onnx.load(str(path))
    _refuse_control_flow(model)
    shapes = {s.name: input_shape(s.name, s.shape, 1) for s in inputs}
    for value in model.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=True):
                dim.Clear()
                dim.dim_value = size
    static, folded = workdir / f"{path.stem}.static.onnx", workdir / f"{path.stem}.folded.onnx"
    onnx.save(model, str(static))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    while True:
        try:
            # MatMulAddFusion rewrites MatMul + Add as Reshape -> Gemm -> Reshape, which litert-torch
            # mistranslates in PP-OCRv4's recognizer (softmax off by 0.56; TFLite's converter fuses the
            # separate ops into FULLY_CONNECTED itself): the other basic passes only fold constants
            ort.InferenceSession(str(static), options, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=["MatMulAddFusion"])  # fmt: skip
        except Exception as exc:  # ORT's own types: the graph does not hold at these sizes
            cause = " ".join(str(exc).split()).replace(f"{static}", static.name)
            sizes = ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in shapes.items())
            raise InputError(
                f"the model does not run at the input sizes the TFLite file needs ({sizes}): {cause}; give "
                f"sizes it takes with --input-shape or data of that shape"
            ) from exc
        model = onnx.load(str(folded))
        # an If on sizes, decided now that they are fixed: its branch, folded again (it may hold more)
        if not inline_constant_ifs(model):
            break
        onnx.save(model, str(static))
    node = next((n for n in model.graph.node if n.op_type in CONTROL_FLOW), None)
    if node is not None:
        raise InputError(
            f"op '{node.op_type}' (node '{node.name}') has no TFLite conversion path (onnx2torch cannot "
            f"translate it) and does not fold away at these input sizes; {HINT}"
        )
    _relax_reshapes(model)
    return model


def _refuse_control_flow(model) -> None:
    """onnx2torch translates no control flow: an `If` on sizes folds away once they are fixed (silero-vad's
    op15 export), but not a `Loop`, nor an `If` on an input's value (silero-vad's sample rate `sr`),
    for which a TFLite file would need both branches. Refused before folding, which may fail on them."""
    for node in model.graph.node:
        deciding = deciding_inputs(model.graph, node) if node.op_type == "If" else []
        if deciding:
            names = ", ".join(f"'{name}'" for name in deciding)
            raise InputError(
                f"op 'If' (node '{node.name}', on input {names}) has no TFLite conversion path (onnx2torch "
                f"cannot translate it, and a TFLite file holds one branch); convert a model exported for "
                f"one value of {names}, without the If"
            )
        if node.op_type in CONTROL_FLOW and node.op_type != "If":
            raise InputError(
                f"op '{node.op_type}' has no TFLite conversion path (onnx2torch cannot translate it); {HINT}"
            )


def to_torch(path: Path, inputs, workdir: Path):
    """The fp32 ONNX file as a torch.fx module (batch 1), or an InputError naming the op with no path."""
    model = _fold_static(path, inputs, workdir)
    onnx2torch = _onnx2torch()
    from .onnx2torch_lstm import register

    register()  # the LSTM converter onnx2torch lacks

    try:
        module = onnx2torch.convert(model).eval()
    except NotImplementedError as exc:
        text = str(exc)
        op = re.search(r"operation_type='([^']+)'", text)
        if op:
            raise InputError(
                f"op '{op.group(1)}' has no TFLite conversion path (onnx2torch cannot translate it); {HINT}"
            ) from exc
        raise InputError(f"the ONNX model cannot be converted to TFLite ({text[:160]}); {HINT}") from exc
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"the ONNX model cannot be converted to TFLite ({first}); {HINT}") from exc
    from .tflite_bake import bake_constants

    return bake_constants(module)
