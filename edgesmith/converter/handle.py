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
    """Of a file's bytes; of a folder (a Hugging Face model), of its files' relative paths and bytes."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [path]
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def file_info(path: Path) -> dict:
    files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [Path(path)]
    return {"path": str(path), "size_bytes": sum(f.stat().st_size for f in files), "sha256": sha256(path)}
