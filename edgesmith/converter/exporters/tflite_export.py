"""TFLite export: the float `.tflite` (`convert`), quantized by the planner's TFLite quantizer, written
with float, int8 or uint8 I/O (`write`).

Which converter runs depends on where the model came from:
- Keras: TensorFlow's converter (steps/keras_tflite.py), which also quantizes in the same pass, so a
  quantized Keras export skips `convert` (the planner's KERAS quantizer consumes the source);
- PyTorch (`.pt2`, modules): litert-torch on the exported program (tflite_torch.py);
- ONNX files, or any source after graph steps changed its ONNX: onnx2torch, then as PyTorch
  (tflite_onnx.py; the choice is argued in docs/decisions/onnx-to-tflite.md);
- TFLite: the float file itself (tflite_frontend.py's working copy);
- a TF SavedModel: TensorFlow's converter on its signature (savedmodel_frontend.py), keys kept.
Those are quantized by the AI Edge Quantizer (steps/aeq_quantize.py).

Every artifact leaves with the source's input/output names as its signature keys and is checked
against the reference model on one sample before anything is quantized. Same inputs give the same
bytes (tests/test_export_tflite.py checks it).
"""

from __future__ import annotations

from pathlib import Path

from .. import tflite_fb
from ..handle import ModelHandle, TFLiteHandle
from ..precision import BINARY, FP32
from ..steps.base import ExportContext, StepResult
from . import Exported

FORMAT = "tflite"
SUFFIX = ".tflite"
KIND = "tflite"
LAYOUT = "as the source model (NHWC for Keras and TFLite, NCHW for PyTorch/ONNX)"


def _torch_module(model: ModelHandle, source, workdir: Path):
    """The source's own program when no graph step changed the model, else the ONNX after the steps."""
    if source.kind in ("pt2", "torch") and model.path == source.onnx.path:
        return source.native.module(), "litert-torch"
    from . import tflite_onnx

    return tflite_onnx.to_torch(model.path, source.inputs, workdir), "onnx2torch + litert-torch"


def convert(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    """The float `.tflite` and the report (converter, batch). A binarized model converts like any other
    (its +-alpha weights are float here); the planner then quantizes it to int8 (binary_tflite.py)."""
    source = ctx.source
    inputs = [s.name for s in source.inputs]
    if source.kind == "keras" and model.path == source.onnx.path:
        from ..steps.keras_tflite import convert_source

        data, report = convert_source(source, model, None, None, config.io)
    elif source.kind == "tflite":  # already TFLite: the frontend's float working copy
        data = source.native.data
        report = {"converter": "none (a .tflite source)", "source_changes": list(source.native.changes)}
    elif source.kind == "savedmodel" and model.path == source.onnx.path:
        data = source.native.float_tflite()  # keyed by the signature's names, as the ONNX is
        report = {"converter": "tensorflow.lite (TFLiteConverter.from_saved_model)"}
    else:
        from . import tflite_torch

        outputs = model.output_names()
        module, converter = _torch_module(model, source, ctx.step.workdir)
        data = tflite_fb.rename_signature(tflite_torch.convert_fp32(module, source.inputs), inputs, outputs)
        tflite_torch.check_close(data, source.reference, source.inputs, outputs[0])
        report = {"converter": converter, "batch": 1}
    if model.precision == BINARY:  # no 1-bit TFLite: +-alpha weights as int8 per channel (exact, 4x)
        from .binary_tflite import NOTE

        report["binary"] = NOTE
    return StepResult(TFLiteHandle(data, FP32), report)


def finish(config, model: TFLiteHandle, quantization: dict) -> tuple[bytes, dict]:
    """The bytes to write, with the export's I/O type, and the artifact's report."""
    data = model.data if model.io == config.io else tflite_fb.set_io_type(model.data, config.io)
    report = dict(quantization)
    binary = report.pop("binary", None)
    report["io"] = config.io
    if binary:
        report["binary"] = binary
    report["layout"] = LAYOUT
    return data, report


def write(config, model: TFLiteHandle, dest: Path, ctx: ExportContext, quantization: dict | None) -> Exported:
    data, report = finish(config, model, quantization or {})
    path = dest.with_name(dest.name + SUFFIX)
    path.write_bytes(data)
    return Exported(path, model.precision, report.get("engine"), report)
