"""What travels between steps: a model file on disk, never an in-memory global."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelHandle:
    """An ONNX file in the pipeline's work folder and what precision it holds."""

    path: Path
    precision: str = "fp32"  # fp32 | fp16 | int8 | int8-dynamic

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class TorchHandle:
    """A PyTorch module between torch-level steps (prune, distill, binarize), before the ONNX export.

    Steps never modify `module`: they return a new handle with a changed copy."""

    module: Any  # torch.nn.Module
    example: tuple  # example inputs (numpy, batch >= 2) to trace and export with
    precision: str = "fp32"  # "binary" once binarized: exporters then store weights as bits


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_info(path: Path) -> dict:
    return {"path": str(path), "size_bytes": path.stat().st_size, "sha256": sha256(path)}
