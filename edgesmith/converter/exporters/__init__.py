"""Exporters write the final artifact files and their manifests into the output folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..handle import file_info


def write_manifest(artifact: Path, manifest: dict) -> Path:
    """`<artifact>.json` beside the artifact: format, tensors, quantization, provenance."""
    path = artifact.with_name(artifact.name + ".json")
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def artifact_entry(fmt: str, path: Path, precision: str, engine: str | None) -> dict:
    return {"format": fmt, **file_info(path), "precision": precision, "engine": engine}
