"""ONNX export: the pipeline already works in ONNX, so the artifact is the last step's file."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..handle import ModelHandle


def export(model: ModelHandle, dest: Path) -> Path:
    path = dest.with_name(dest.name + ".onnx")
    shutil.copyfile(model.path, path)
    return path
