"""Exporters write the final artifacts, one module per format, each applying the recipe's precision
with its own engine (ONNX Runtime's quantizer for ONNX; other formats bring theirs).

An exporter module defines `FORMAT`, `SUFFIX` and
`export(config, model, quantize, dest, ctx) -> Exported`, where `model` is the fp32 handle after the
recipe's other steps and `quantize` the recipe's quantize step (None for fp32).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..handle import file_info

if TYPE_CHECKING:
    from ..frontends import Source
    from ..steps import StepContext

# format name -> module; adding a format is adding a module here.
FORMATS = {
    "onnx": "edgesmith.converter.exporters.onnx_export",
    "tflite": "edgesmith.converter.exporters.tflite_export",
    "c-array": "edgesmith.converter.exporters.c_array",
    "openvino": "edgesmith.converter.exporters.openvino_export",
    "auto": "edgesmith.converter.fastest",  # the fastest format on the first target (fastest.resolve)
}


@dataclass(frozen=True)
class ExportContext:
    source: Source
    step: StepContext  # work folder, calibration data, quiet


@dataclass(frozen=True)
class Exported:
    path: Path  # the artifact (inside the output's staging folder)
    precision: str
    engine: str | None
    quantization: dict[str, Any] | None = None  # what the quantizer did, for report and manifest
    files: tuple[Path, ...] = field(default=())  # companions (weights .bin, .h/.cc ...)
    files_are_weights: bool = False  # the companions hold part of the model (OpenVINO's .bin): count them


def module(fmt: str):
    return importlib.import_module(FORMATS[fmt])


def export(config, model, quantize, dest: Path, ctx: ExportContext) -> Exported:
    return module(config.format).export(config, model, quantize, dest, ctx)


def write_manifest(artifact: Path, manifest: dict) -> Path:
    """`<artifact>.json` beside the artifact: format, tensors, quantization, provenance."""
    path = artifact.with_name(artifact.name + ".json")
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def artifact_entry(fmt: str, exported: Exported) -> dict:
    """The report row: path and sha256 of the main file; `size_bytes` is the model's size, so it counts
    companions that hold weights (an OpenVINO .xml is nothing without its .bin) but not the C source
    that merely spells a .tflite out again."""
    entry = {"format": fmt, **file_info(exported.path), "precision": exported.precision}
    entry["engine"] = exported.engine
    if exported.files:
        entry["files"] = [file_info(f) for f in exported.files]
        if exported.files_are_weights:
            entry["size_bytes"] += sum(f["size_bytes"] for f in entry["files"])
    return entry
