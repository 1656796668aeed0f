"""ONNX export: the pipeline works in ONNX, so this applies the quantize step (ONNX Runtime's
quantizer, NNCF's, or INC's on the PyTorch source) to the fp32 handle and copies the result into place."""

from __future__ import annotations

import shutil
from pathlib import Path

from ...errors import InputError
from ..handle import ModelHandle
from ..steps import HANDLERS
from . import Exported

FORMAT = "onnx"
SUFFIX = ".onnx"


def export(config, model: ModelHandle, quantize, dest: Path, ctx) -> Exported:
    report = None
    path = dest.with_name(dest.name + SUFFIX)
    if ctx.source.kind == "tflite":  # tf2onnx's ONNX, made by the frontend, or why there is none
        ctx.source.native.check_onnx()
    if model.precision == "binary":  # a binarized model: its +-alpha weights are stored as bits
        no_quantize_after_binarize(quantize)
        from .binary_onnx import pack

        return Exported(path, "binary", "edgesmith bit-pack", pack(model.path, path))
    if quantize is not None:
        result = _quantize(quantize, model, ctx)
        model, report = result.model, result.report
    shutil.copyfile(model.path, path)
    return Exported(path, model.precision, (report or {}).get("engine"), report)


def _quantize(quantize, model: ModelHandle, ctx):
    """The recipe's `engine`: ONNX Runtime's (auto), NNCF's, or INC's (which quantizes the PyTorch
    source, so it takes the whole ExportContext)."""
    if quantize.engine == "nncf":
        from ..steps.nncf_quantize import quantize_onnx

        return quantize_onnx(quantize, model, ctx.step)
    if quantize.engine == "inc":
        from ..steps.inc_quantize import quantize_onnx

        return quantize_onnx(quantize, model, ctx)
    return HANDLERS[type(quantize)](quantize, model, ctx.step)


def no_quantize_after_binarize(quantize) -> None:
    if quantize is not None:
        raise InputError(
            "a binarized model is exported with 1-bit weights; drop the quantize step after binarize "
            "(its first and last layers stay float by design)"
        )
