"""OpenVINO IR export: `<name>.xml` (graph) plus `<name>.bin` (weights).

The fp32 ONNX handle goes through `openvino.convert_model`, then by precision:
- fp32: saved with `compress_to_fp16=False`. `save_model` compresses weights to FP16 by default, so
  an "fp32" IR would silently hold FP16 weights otherwise.
- fp16: FP16-compressed weights (`compress_to_fp16=True`), OpenVINO's own FP16 IR; the CPU plugin
  decompresses them at load time and computes in its inference precision.
- int8: NNCF's `quantize` on the OpenVINO model with the recipe's calibration data
  (steps/nncf_quantize.py); OpenVINO's CPU plugin runs the FakeQuantize graph with INT8 kernels.
- weight-only INT8/INT4: NNCF's `compress_weights` (steps/weight_only.py), no calibration data.
- dynamic INT8 (INT8 weights with activations quantized at run time) is an ONNX Runtime
  feature with no OpenVINO counterpart: refused, with the static preset as the fix.

The same inputs give byte-identical files. Conversion and NNCF compute the same graph every time,
but OpenVINO names the nodes it creates after a process-wide counter (`Constant_31151`), so the
second export in one process would differ; `openvino_names.stable_names` renumbers those names in
graph order. The IR's `rt_info` records only versions and the work file's name (OpenVINO writes the folder as
`DIR`).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError, require
from ..handle import ModelHandle
from . import Exported
from .openvino_names import stable_names

FORMAT = "openvino"
SUFFIX = ".xml"
ENGINES = ("auto", "nncf")


def _check(config, quantize) -> None:
    if config.io != "float":
        raise InputError(
            f"exports.io = {config.io!r} is for full-integer TFLite; an OpenVINO IR takes and gives float: "
            "remove `io` from the openvino export"
        )
    if quantize is None:
        return
    if quantize.mode == "dynamic":
        raise InputError(
            "OpenVINO has no dynamic INT8: use --preset int8 (static INT8, calibrated with --calibration) "
            "for the openvino format, or export dynamic INT8 as --format onnx"
        )
    if quantize.engine not in ENGINES:
        raise InputError(
            f"OpenVINO IR is quantized by NNCF, not engine = {quantize.engine!r}; "
            "set engine = 'nncf' or 'auto' (or export that engine's result as --format onnx)"
        )


def export(config, model: ModelHandle, quantize, dest: Path, ctx) -> Exported:
    xml = dest.with_name(dest.name + SUFFIX)
    if model.precision == "binary":  # BinaryConvolution with u1 weights where it can, u1 weights elsewhere
        from .binary_openvino import convert
        from .onnx_export import no_quantize_after_binarize

        no_quantize_after_binarize(quantize)
        report = convert(model.path, xml)
        return Exported(xml, "binary", "edgesmith binary IR", report, (xml.with_suffix(".bin"),), True)
    _check(config, quantize)
    ov = require("openvino", "convert-openvino", "the openvino format is written with it")
    # OpenVINO's TFLite frontend reads a .tflite source itself (tf2onnx may have no ONNX for it)
    original = ctx.source.native.path if ctx.source.kind == "tflite" else model.path
    try:
        ov_model = ov.convert_model(str(original))
    except Exception as exc:  # OpenVINO's frontend names the op it cannot convert
        from ...runtime.backends.openvino_backend import error_line

        raise InputError(f"OpenVINO cannot convert the model: {error_line(exc)}") from exc
    stable_names(ov_model, original)  # before NNCF, which names its nodes after these (TFLite's are counters)
    precision, engine, report = "fp32", None, None
    if quantize is not None and quantize.mode == "fp16":
        precision, engine = "fp16", "openvino"
        report = {"mode": "fp16", "engine": "openvino", "weights": "float16 (compressed IR)",
                  "io_types": "float32 (kept)"}  # fmt: skip
    elif quantize is not None and quantize.mode == "weight-only":
        from ..steps.quantize import quantize_precision
        from ..steps.weight_only import compress_openvino

        ov_model, report = compress_openvino(ov_model, quantize)
        precision, engine = quantize_precision(quantize), "nncf"
    elif quantize is not None:
        from ..steps.nncf_quantize import quantize_model

        ov_model, report = quantize_model(ov_model, quantize, ctx.step)
        precision, engine = "int8", "nncf"
    stable_names(ov_model, original)
    ov.save_model(ov_model, str(xml), compress_to_fp16=precision == "fp16")
    return Exported(xml, precision, engine, report, files=(xml.with_suffix(".bin"),), files_are_weights=True)
