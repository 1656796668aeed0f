"""Exporters convert the float model to a format and write the artifacts, one module per format.
They do not quantize: converter/plan.py runs the format's quantizer (steps/, `QUANTIZERS`) between
an exporter's `convert` and its `write`.

An exporter module defines
- `FORMAT`, `SUFFIX`, and `KIND`: the handle kind (handle.py) it converts to, which picks the
  quantizers that can follow it;
- `convert(config, model, ctx) -> StepResult`: the fp32 ONNX handle after the recipe's other steps,
  as a float model of its `KIND` (a binarized model keeps its precision: the format stores it);
- `write(config, model, dest, ctx, quantization) -> Exported`: the artifact, from the converted or
  quantized handle; `quantization` is the merged report of conversion and quantizer.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..handle import file_info
from ..steps.base import ExportContext  # noqa: F401  (exporters.ExportContext, its old home)

# format name -> module; adding a format is adding a module here.
FORMATS = {
    "onnx": "edgesmith.converter.exporters.onnx_export",
    "tflite": "edgesmith.converter.exporters.tflite_export",
    "c-array": "edgesmith.converter.exporters.c_array",
    "openvino": "edgesmith.converter.exporters.openvino_export",
    "auto": "edgesmith.converter.fastest",  # the fastest format on the first target (fastest.resolve)
}


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
