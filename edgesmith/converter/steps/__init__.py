"""Steps a recipe can list, by `kind`. Each step lives in its own module; see docs/adding_a_step.md."""

from __future__ import annotations

from .base import HANDLERS, StepConfig, StepContext, StepResult, register
from .quantize import QuantizeConfig

STEP_CONFIGS: dict[str, type[StepConfig]] = {cls.kind: cls for cls in (QuantizeConfig,)}

__all__ = ["HANDLERS", "STEP_CONFIGS", "StepConfig", "StepContext", "StepResult", "register"]
