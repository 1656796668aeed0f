"""Steps a recipe can list, by `kind`. Each step lives in its own module; see docs/adding_a_step.md.

PyTorch-level steps (`consumes = "torch"`: prune, prune_transformer, distill, lowrank, sparsify,
binarize) run on the module before the ONNX export; ONNX-level steps run after it; `quantize` comes
last and each exporter applies it its own way.
"""

from __future__ import annotations

from . import torch_steps  # noqa: F401  (registers the PyTorch-level handlers)
from .base import HANDLERS, StepConfig, StepContext, StepResult, register
from .binarize import BinarizeConfig
from .distill import DistillConfig
from .lowrank import LowRankConfig
from .prune import PruneConfig
from .prune_transformer import TransformerPruneConfig
from .quantize import QuantizeConfig
from .sparsify import SparsifyConfig

STEP_CONFIGS: dict[str, type[StepConfig]] = {
    cls.kind: cls
    for cls in (
        PruneConfig,
        TransformerPruneConfig,
        DistillConfig,
        LowRankConfig,
        SparsifyConfig,
        BinarizeConfig,
        QuantizeConfig,
    )
}

__all__ = ["HANDLERS", "STEP_CONFIGS", "StepConfig", "StepContext", "StepResult", "register"]
