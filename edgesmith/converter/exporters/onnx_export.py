"""ONNX export: the pipeline works in ONNX, so this applies the quantize step (ONNX Runtime's
quantizer) to the fp32 handle and copies the result into place."""

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
    if quantize is not None:
        result = _quantizer(quantize)(quantize, model, ctx.step)
        model, report = result.model, result.report
    path = dest.with_name(dest.name + SUFFIX)
    shutil.copyfile(model.path, path)
    return Exported(path, model.precision, (report or {}).get("engine"), report)


def _quantizer(quantize):
    """The handler for the recipe's `engine`: ONNX Runtime's (auto) or NNCF's."""
    if quantize.engine == "nncf":
        from ..steps.nncf_quantize import quantize_onnx

        return quantize_onnx
    if quantize.engine == "inc":
        raise InputError("engine 'inc' is not available yet; use engine = 'onnxruntime' or 'nncf'")
    return HANDLERS[type(quantize)]
