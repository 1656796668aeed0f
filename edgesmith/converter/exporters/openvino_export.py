"""OpenVINO IR export: `<name>.xml` (graph) plus `<name>.bin` (weights).

The fp32 ONNX handle goes through `openvino.convert_model` (`convert`); the planner then runs the
OpenVINO quantizer the recipe asks for, and `write` saves the IR at the handle's precision:
- fp32: saved with `compress_to_fp16=False`. `save_model` compresses weights to FP16 by default, so
  an "fp32" IR would silently hold FP16 weights otherwise.
- fp16: FP16-compressed weights (`compress_to_fp16=True`, steps/openvino_fp16.py), OpenVINO's own
  FP16 IR; the CPU plugin decompresses them at load time and computes in its inference precision.
- int8: NNCF's `quantize` on the OpenVINO model with the recipe's calibration data
  (steps/nncf_quantize.py); OpenVINO's CPU plugin runs the FakeQuantize graph with INT8 kernels.
- weight-only INT8/INT4: NNCF's `compress_weights` (steps/weight_only.py), no calibration data.
- dynamic INT8 (weights-only INT8 with activations quantized at run time) is an ONNX Runtime
  feature with no OpenVINO counterpart: the planner refuses it, with the static preset as the fix.

The same inputs give byte-identical files. Conversion and NNCF compute the same graph every time,
but OpenVINO names the nodes it creates after a process-wide counter (`Constant_31151`), so the
second export in one process would differ; `openvino_names.stable_names` renumbers those names in
graph order. The IR's `rt_info` records only versions and the work file's name (OpenVINO writes the folder as
`DIR`).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError, require
from ..handle import ModelHandle, OpenVINOHandle
from ..precision import BINARY, FP16
from ..steps.base import ExportContext, StepResult
from . import Exported
from .openvino_names import stable_names

FORMAT = "openvino"
SUFFIX = ".xml"
KIND = "openvino"


def convert(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    """The fp32 model as an `openvino.Model`, its generated node names renumbered in graph order
    (before NNCF, which names its nodes after these; TFLite's are counters)."""
    if model.precision == BINARY:  # built from the ONNX file by `write`
        return StepResult(OpenVINOHandle(None, model.path, BINARY))
    ov = require("openvino", "convert-openvino", "the openvino format is written with it")
    # OpenVINO's TFLite frontend reads a .tflite source itself (tf2onnx may have no ONNX for it), unless
    # the ONNX was changed since (quantize.equalize)
    unchanged = ctx.source.kind == "tflite" and model.path == ctx.source.onnx.path
    original = ctx.source.native.path if unchanged else model.path
    try:
        ov_model = ov.convert_model(str(original))
    except Exception as exc:  # OpenVINO's frontend names the op it cannot convert
        from ...runtime.backends.openvino_backend import error_line

        raise InputError(f"OpenVINO cannot convert the model: {error_line(exc)}") from exc
    stable_names(ov_model, original)
    return StepResult(OpenVINOHandle(ov_model, original))


def write(
    config, model: OpenVINOHandle, dest: Path, ctx: ExportContext, quantization: dict | None
) -> Exported:
    """`<dest>.xml` and `.bin`: fp32 weights kept fp32 (`save_model` compresses to FP16 by default), fp16
    compressed; a binarized model as BinaryConvolution with u1 weights where it can, u1 weights elsewhere."""
    xml = dest.with_name(dest.name + SUFFIX)
    weights = (xml.with_suffix(".bin"),)
    if model.precision == BINARY:
        from .binary_openvino import convert as binary_ir

        report = binary_ir(model.origin, xml)
        return Exported(xml, BINARY, "edgesmith binary IR", report, weights, True)
    ov = require("openvino", "convert-openvino", "the openvino format is written with it")
    stable_names(model.model, model.origin)
    ov.save_model(model.model, str(xml), compress_to_fp16=model.precision == FP16)
    engine = (quantization or {}).get("engine")
    return Exported(xml, model.precision, engine, quantization, files=weights, files_are_weights=True)
