"""ONNX export: the pipeline already works in ONNX, so converting is checking there is an ONNX model,
and writing is copying the (possibly quantized) file into place; a binarized model is bit-packed."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..handle import ModelHandle
from ..precision import BINARY
from ..steps.base import ExportContext, StepResult
from . import Exported

FORMAT = "onnx"
SUFFIX = ".onnx"
KIND = "onnx"


def convert(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    if ctx.source.kind == "tflite":  # tf2onnx's ONNX, made by the frontend, or why there is none
        ctx.source.native.check_onnx()
    return StepResult(model)


def write(config, model: ModelHandle, dest: Path, ctx: ExportContext, quantization: dict | None) -> Exported:
    path = dest.with_name(dest.name + SUFFIX)
    if model.precision == BINARY:  # a binarized model: its +-alpha weights are stored as bits
        from .binary_onnx import pack

        return Exported(path, BINARY, "edgesmith bit-pack", pack(model.path, path))
    shutil.copyfile(model.path, path)
    return Exported(path, model.precision, (quantization or {}).get("engine"), quantization)
