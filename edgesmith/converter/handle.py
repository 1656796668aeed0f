"""What travels between steps: a model in one of four kinds, each a handle type with a `kind` that
steps and exporters declare they consume and produce (`steps/base.py`, `converter/plan.py`).

ONNX is a file in the work folder; a PyTorch module, TFLite bytes and an OpenVINO model are held in
memory between a format's converter and its quantizer, and written once, by the format's exporter.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .precision import FP32


@dataclass(frozen=True)
class ModelHandle:
    """An ONNX file in the pipeline's work folder and what precision it holds."""

    kind: ClassVar[str] = "onnx"
    path: Path
    precision: str = FP32  # a name from precision.py

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def output_names(self) -> list[str]:
        """The graph's output names (what other formats name their outputs after)."""
        import onnx

        return [o.name for o in onnx.load(str(self.path), load_external_data=False).graph.output]


@dataclass(frozen=True)
class TorchHandle:
    """A PyTorch module between torch-level steps (prune, distill, binarize), before the ONNX export.

    Steps never modify `module`: they return a new handle with a changed copy."""

    kind: ClassVar[str] = "torch"
    module: Any  # torch.nn.Module
    example: tuple  # example inputs (numpy, batch >= 2) to trace and export with
    precision: str = FP32  # "binary" once binarized: exporters then store weights as bits
    # the `qat` step's trained PT2E graph (fake quantizers with the ranges it learned), for the
    # quantizer that exports those ranges as they are (steps/qat_export.py); any later step drops it
    qat: Any = None


@dataclass(frozen=True)
class TFLiteHandle:
    """A TFLite flatbuffer between its converter and its quantizer (the TFLite exporter writes it)."""

    kind: ClassVar[str] = "tflite"
    data: bytes
    precision: str = FP32
    io: str = "float"  # the model's input/output type: integer I/O is set when written, unless already


@dataclass(frozen=True)
class OpenVINOHandle:
    """An `openvino.Model` between `convert_model` and `save_model`, and the file it was converted from
    (OpenVINO's node names are renumbered against it: exporters/openvino_names.py). A binarized model
    has no `model` yet: the exporter builds its BinaryConvolution IR from `origin`, the ONNX file."""

    kind: ClassVar[str] = "openvino"
    model: Any  # openvino.Model, or None for a binarized model
    origin: Path
    precision: str = FP32


def sha256(path: Path) -> str:
    """Of a file's bytes; of a folder (a Hugging Face model), of its files' relative paths and bytes."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [path]
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(functools.partial(f.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def file_info(path: Path) -> dict:
    files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [Path(path)]
    return {"path": str(path), "size_bytes": sum(f.stat().st_size for f in files), "sha256": sha256(path)}
