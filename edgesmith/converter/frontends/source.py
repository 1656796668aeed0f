"""What every frontend returns. In a module of its own so that the frontends, which build it, and the
package's dispatcher (`frontends/__init__.py`), which imports the frontends, do not import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...runtime.session import TensorSpec
from ..handle import ModelHandle


@dataclass(frozen=True)
class Source:
    kind: str  # "onnx" | "pt2" | "torch" | "keras" | "tflite" | "savedmodel" (a Hugging Face folder or model is "torch")
    path: Path | None  # the user's file (or Hugging Face model folder); None for an in-memory module
    onnx: ModelHandle  # the fp32 ONNX the steps start from
    inputs: tuple[TensorSpec, ...]
    reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # runs the original model
    native: Any = None  # the framework's own model (a torch ExportedProgram, a Keras model, a TFLiteModel)
    module: Any = None  # the torch.nn.Module itself, for steps that train or reshape it (torch sources)
    example: tuple | None = None  # example inputs as numpy arrays (torch sources)
    qat: Any = None  # after a final `qat` step: its trained PT2E graph (handle.TorchHandle.qat)
    notes: tuple[str, ...] = ()  # what the frontend repaired in the user's model (report.json source.fixes)
