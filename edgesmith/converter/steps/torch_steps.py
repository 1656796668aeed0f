"""Pipeline handlers for the PyTorch-level steps: `prune`, `distill`, `binarize`, `lowrank`, `sparsify`.

The algorithms live in their own modules as library functions on an `nn.Module`; this file only
connects them to the pipeline: which data each gets (the recipe's calibration data unless the step
names its own), which teacher (the unchanged original module) and what handle comes out.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..handle import TorchHandle
from .base import StepContext, StepResult, register
from .binarize import BinarizeConfig, binarize_module, load_training_data
from .distill import DistillConfig, distill_module
from .lowrank import LowRankConfig, factorize_module
from .prune import PruneConfig, prune_module
from .sparsify import SparsifyConfig, sparsify_module


def calibration_inputs(ctx: StepContext, why: str) -> np.ndarray:
    """The calibration set's single input as one array (these steps train or score on it)."""
    source = ctx.calibration()
    if source is None:
        raise InputError(f"{why} needs data: pass --calibration PATH (an .npz, .npy or image folder)")
    if len(source.inputs) != 1:
        raise InputError(f"{why} supports single-input models; this one has {len(source.inputs)} inputs")
    name = source.inputs[0].name
    return np.concatenate([batch[name] for batch in source.batches()])


@register(PruneConfig)
def prune(config: PruneConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    data = calibration_inputs(ctx, "prune.criterion = 'taylor'") if config.criterion == "taylor" else None
    module, report = prune_module(model.module, config, model.example, data)
    return StepResult(TorchHandle(module, model.example, model.precision), report)


@register(DistillConfig)
def distill(config: DistillConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    if config.data:
        data, labels = load_training_data(config.data, "distill.data")
    else:
        data, labels = calibration_inputs(ctx, "distill"), None
    module, report = distill_module(model.module, ctx.original, config, data, labels, quiet=ctx.quiet)
    return StepResult(TorchHandle(module, model.example, model.precision), report)


@register(BinarizeConfig)
def binarize(config: BinarizeConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    from .binary_layers import freeze

    if config.data:
        x, y = load_training_data(config.data)
    else:
        x, y = calibration_inputs(ctx, "binarize"), None
    module, report = binarize_module(model.module, config, x, y, teacher=ctx.original, quiet=ctx.quiet)
    return StepResult(TorchHandle(freeze(module), model.example, "binary"), report)


@register(LowRankConfig)
def lowrank(config: LowRankConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    module, report = factorize_module(model.module, config)
    return StepResult(TorchHandle(module, model.example, model.precision), report)


@register(SparsifyConfig)
def sparsify(config: SparsifyConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    module, report = sparsify_module(model.module, config)
    return StepResult(TorchHandle(module, model.example, model.precision), report)
