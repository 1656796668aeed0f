"""TFLite export: fp32, fp16, dynamic-range INT8 or full-integer INT8 (float, int8 or uint8 I/O).

Which converter runs depends on where the model came from:
- Keras: TensorFlow's converter, precision included (tflite_keras.py);
- PyTorch (`.pt2`, modules): litert-torch on the exported program, then the AI Edge Quantizer
  (tflite_torch.py);
- ONNX files, or any source after graph steps changed its ONNX: onnx2torch, then as PyTorch
  (tflite_onnx.py; the choice is argued in docs/decisions/onnx-to-tflite.md);
- TFLite: the float file itself (tflite_frontend.py's working copy), quantized by the AI Edge Quantizer.

Every artifact leaves with the source's input/output names as its signature keys and is checked
against the reference model on one sample before anything is quantized. Same inputs give the same
bytes (tests/test_export_tflite.py checks it).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError, require
from .. import tflite_fb
from ..handle import ModelHandle
from . import Exported

FORMAT = "tflite"
SUFFIX = ".tflite"
PRECISIONS = {None: "fp32", "static": "int8", "dynamic": "int8-dynamic", "fp16": "fp16"}


def _output_names(model: ModelHandle) -> list[str]:
    onnx = require("onnx", "convert")
    return [o.name for o in onnx.load(str(model.path), load_external_data=False).graph.output]


def _torch_module(model: ModelHandle, source, workdir: Path):
    """The source's own program when no graph step changed the model, else the ONNX after the steps."""
    if source.kind in ("pt2", "torch") and model.path == source.onnx.path:
        return source.native.module(), "litert-torch"
    from . import tflite_onnx

    return tflite_onnx.to_torch(model.path, source.inputs, workdir), "onnx2torch + litert-torch"


def build(config, model: ModelHandle, quantize, ctx) -> tuple[bytes, str, dict]:
    """The `.tflite` bytes, their precision and the report (converter, quantizer, layout, I/O)."""
    binary_note = None
    if quantize is not None and quantize.mode == "weight-only":
        from ..steps.weight_only import TFLITE_FIX

        raise InputError(TFLITE_FIX)
    if model.precision == "binary":  # no 1-bit TFLite: +-alpha weights as int8 per channel (exact, 4x)
        from ..steps.quantize import QuantizeConfig
        from .binary_tflite import NOTE
        from .onnx_export import no_quantize_after_binarize

        no_quantize_after_binarize(quantize)
        # Full-integer when there is calibration data (TFLite Micro runs only that), else dynamic range.
        mode = "static" if ctx.step.calibration() is not None else "dynamic"
        quantize, binary_note = QuantizeConfig(mode=mode), NOTE
    if quantize is not None and quantize.engine not in ("auto",):
        raise InputError(
            f"TFLite is quantized by its own converter and the AI Edge Quantizer, not engine = "
            f"{quantize.engine!r}; set engine = 'auto', or export that engine's result as --format onnx"
        )
    source, mode = ctx.source, (quantize.mode if quantize is not None else None)
    if config.io != "float" and mode != "static":
        raise InputError(
            f"io = '{config.io}' needs full-integer INT8 (preset int8); {PRECISIONS[mode]} models take float"
        )
    inputs = [s.name for s in source.inputs]
    outputs = None if source.kind == "tflite" else _output_names(model)  # a .tflite's are its signature's
    calibration = ctx.step.calibration() if mode == "static" else None
    if source.kind == "keras" and model.path == source.onnx.path:
        from . import tflite_keras

        data, report = tflite_keras.convert(source.native, mode, calibration, source.inputs, config.io)
        data = tflite_fb.rename_signature(data, inputs, outputs)
        report = dict(report or {}, converter="tensorflow.lite")
    else:
        from . import tflite_torch

        if source.kind == "tflite":  # already TFLite: the frontend's float working copy
            source.native.check_tflite(mode)
            data, report = (
                source.native.data,
                {"converter": "none (a .tflite source)", "source_changes": list(source.native.changes)},
            )
        else:
            module, converter = _torch_module(model, source, ctx.step.workdir)
            data = tflite_fb.rename_signature(
                tflite_torch.convert_fp32(module, source.inputs), inputs, outputs
            )
            tflite_torch.check_close(data, source.reference, source.inputs, outputs[0])
            report = {"converter": converter, "batch": 1}
        if mode is not None:
            data, quant = tflite_torch.quantize(data, mode, calibration, inputs)
            report = {**quant, **report}
        data = tflite_fb.set_io_type(data, config.io)
    report["io"] = config.io
    if binary_note:
        report["binary"] = binary_note
    report["layout"] = "as the source model (NHWC for Keras and TFLite, NCHW for PyTorch/ONNX)"
    return data, PRECISIONS[mode], report


def export(config, model: ModelHandle, quantize, dest: Path, ctx) -> Exported:
    data, precision, report = build(config, model, quantize, ctx)
    path = dest.with_name(dest.name + SUFFIX)
    path.write_bytes(data)
    return Exported(path, precision, report.get("engine"), report)
