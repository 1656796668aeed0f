"""Pipeline handlers for the PyTorch-level steps: `prune`, `prune_transformer`, `distill`, `qat`,
`binarize`, `lowrank`, `sparsify`.

The algorithms live in their own modules as library functions on an `nn.Module`; this file only
connects them to the pipeline: which data each gets (the recipe's calibration data unless the step
names its own), which teacher (the unchanged original module) and what handle comes out.

Hugging Face encoders arrive wrapped (`frontends/hf_frontend.HFEncoder`: input_ids, attention_mask ->
embedding); `prune_transformer` and `distill` work on the Hugging Face model inside and wrap the result
again. Their data is a dict of token arrays: an .npz of input_ids/attention_mask, or a .txt of
sentences tokenized with the model folder's tokenizer.
"""

from __future__ import annotations

import copy

import numpy as np

from ...errors import InputError
from ..handle import TorchHandle
from ..precision import BINARY
from .base import StepContext, StepResult, register
from .binarize import BinarizeConfig, binarize_module, load_training_data
from .distill import DistillConfig, distill_module
from .lowrank import LowRankConfig, factorize_module
from .prune import PruneConfig, prune_module
from .prune_transformer import TransformerPruneConfig, prune_transformer
from .qat import QATConfig, qat_module
from .sparsify import SparsifyConfig, sparsify_module

TEXT_DATA = "a .txt of sentences, one per line, or an .npz of input_ids/attention_mask"


def calibration_inputs(ctx: StepContext, why: str) -> np.ndarray:
    """The calibration set's single input as one array (these steps train or score on it)."""
    source = ctx.calibration()
    if source is None:
        raise InputError(f"{why} needs data: pass --calibration PATH (an .npz, .npy or image folder)")
    if len(source.inputs) != 1:
        raise InputError(f"{why} supports single-input models; this one has {len(source.inputs)} inputs")
    name = source.inputs[0].name
    return np.concatenate([batch[name] for batch in source.batches()])


def _hf_encoder(module, step: str):
    """The HFEncoder wrapper around a Hugging Face model, or a one-line error."""
    from ..frontends import hf_frontend

    if not hf_frontend.is_encoder(module):
        raise InputError(
            f"{step} works on Hugging Face transformers (a model folder with config.json, or a "
            f"transformers model in Python); this model is a {type(module).__name__}"
        )
    return module


def _token_arrays(source) -> dict[str, np.ndarray]:
    batches = list(source.batches())
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def hf_data(ctx: StepContext, wrapper, path: str | None, why: str, required: bool = True):
    """Token arrays {input_ids, attention_mask} for a transformer step: from `path` (the step's own
    data) or else the calibration data; None when there is none and the step can do without."""
    from ...runtime.session import TensorSpec
    from ..data.arrays import ArraySource

    if path:
        specs = tuple(
            TensorSpec(n, (None, wrapper.seq_len), "int64") for n in ("input_ids", "attention_mask")
        )
        return _token_arrays(ArraySource(path, specs, f"{why}.data", None, 256, tokenize=wrapper.tokenize))
    source = ctx.calibration()
    if source is None:
        if required:
            raise InputError(f"{why} needs data: pass --calibration PATH or set {why}.data ({TEXT_DATA})")
        return None
    return _token_arrays(source)


@register(TransformerPruneConfig)
def prune_transformer_step(
    config: TransformerPruneConfig, model: TorchHandle, ctx: StepContext
) -> StepResult:
    wrapper = _hf_encoder(model.module, "prune_transformer")
    data = hf_data(ctx, wrapper, None, "prune_transformer", required=False)  # none: weight-norm importance
    pruned, report = prune_transformer(copy.deepcopy(wrapper.model), config, data)
    return StepResult(TorchHandle(wrapper.rewrap(pruned), model.example, model.precision), report)


@register(PruneConfig)
def prune(config: PruneConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    data = calibration_inputs(ctx, "prune.criterion = 'taylor'") if config.criterion == "taylor" else None
    module, report = prune_module(model.module, config, model.example, data)
    return StepResult(TorchHandle(module, model.example, model.precision), report)


@register(DistillConfig)
def distill(config: DistillConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    from ..frontends import hf_frontend

    if hf_frontend.is_encoder(model.module):  # distill the Hugging Face model inside, on token arrays
        data = hf_data(ctx, model.module, config.data, "distill")
        teacher = ctx.original.model if hf_frontend.is_encoder(ctx.original) else ctx.original
        if "attention" in config.losses:  # distill switches the teacher to eager attention: use a copy
            teacher = copy.deepcopy(teacher)
        module, report = distill_module(model.module.model, teacher, config, data, quiet=ctx.quiet)
        return StepResult(TorchHandle(model.module.rewrap(module), model.example, model.precision), report)
    if config.data:
        data, labels = load_training_data(config.data, "distill.data")
    else:
        data, labels = calibration_inputs(ctx, "distill"), None
    module, report = distill_module(model.module, ctx.original, config, data, labels, quiet=ctx.quiet)
    return StepResult(TorchHandle(module, model.example, model.precision), report)


@register(QATConfig)
def qat(config: QATConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    from ..frontends import hf_frontend

    if hf_frontend.is_encoder(model.module):
        raise InputError(
            "qat trains classifiers and CNNs from their logits; for a transformer use distill, then quantize"
        )
    if config.data:
        data, labels = load_training_data(config.data, "qat.data")
    else:
        data, labels = calibration_inputs(ctx, "qat"), None
    module, trained, report = qat_module(model.module, ctx.original, config, data, labels, quiet=ctx.quiet)
    return StepResult(TorchHandle(module, model.example, model.precision, qat=trained), report)


@register(BinarizeConfig)
def binarize(config: BinarizeConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    from .binary_layers import freeze

    if config.data:
        x, y = load_training_data(config.data)
    else:
        x, y = calibration_inputs(ctx, "binarize"), None
    module, report = binarize_module(model.module, config, x, y, teacher=ctx.original, quiet=ctx.quiet)
    return StepResult(TorchHandle(freeze(module), model.example, BINARY), report)


@register(LowRankConfig)
def lowrank(config: LowRankConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    module, report = factorize_module(model.module, config)
    return StepResult(TorchHandle(module, model.example, model.precision), report)


@register(SparsifyConfig)
def sparsify(config: SparsifyConfig, model: TorchHandle, ctx: StepContext) -> StepResult:
    module, report = sparsify_module(model.module, config)
    return StepResult(TorchHandle(module, model.example, model.precision), report)
