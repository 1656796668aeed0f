"""The step contract: a config dataclass, a handler registered for it, a result with a report.

A handler takes `(config, model, context)` and returns `StepResult(model, report)`. It must write a
new file in `context.workdir` and leave its input file untouched; the pipeline checks both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..validate import Checked

if TYPE_CHECKING:
    from ..data.arrays import ArraySource
    from ..data.config import CalibrationConfig
    from ..handle import ModelHandle


@dataclass(frozen=True)
class StepConfig(Checked):
    """A step's settings, frozen and checked when created (see validate.py for the rules)."""

    kind: ClassVar[str]
    consumes: ClassVar[str] = "onnx"  # "torch": runs on the PyTorch module, before the ONNX export


@dataclass(frozen=True)
class StepResult:
    model: ModelHandle
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    workdir: Path
    calibration: Callable[[], ArraySource]  # opened on demand: not every step needs data
    calibration_config: CalibrationConfig
    quiet: bool = False
    original: Any = None  # the unchanged torch module, for steps that distill from it
    devices: tuple[str, ...] = ()  # the recipe's device targets ([profile] targets): they pick INT8 types


Handler = Callable[[Any, "ModelHandle", StepContext], StepResult]
HANDLERS: dict[type, Handler] = {}


def register(config_cls: type) -> Callable[[Handler], Handler]:
    """Register the function that applies `config_cls` (one handler per config type)."""

    def decorate(fn: Handler) -> Handler:
        HANDLERS[config_cls] = fn
        return fn

    return decorate
