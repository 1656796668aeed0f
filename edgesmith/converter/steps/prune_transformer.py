"""`prune_transformer`: remove attention heads, FFN neurons and whole layers from a BERT-like model.

Why these three: in an encoder the FFN holds about two thirds of the MACs, attention heads are largely
redundant (Michel et al. 2019), and a dropped layer saves everything at once. Each cut is structural
(smaller Linear layers, fewer layers), so any dense runtime runs it faster.

Importance comes from data when given (a dict of input_ids/attention_mask arrays): a head scores the
mean norm of what it adds to the residual stream (its context vectors through its slice of the output
projection), an FFN neuron the mean |activation| times the norm of its output weights. Without data,
weight norms stand in. The same number of heads and neurons is kept in every layer: the shapes stay
uniform and `intermediate_size` / `num_hidden_layers` in config.json describe the model exactly.

Head counts cannot be written in a stock BERT config (it derives the head size from hidden_size /
num_attention_heads), so the kept heads are recorded as `edgesmith_heads` in config.json and
`load_pruned(folder)` rebuilds the model from it; everything else is plain Hugging Face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import InputError, require
from ..frontends.bert import bert_encoder, keep_heads, load_pruned, slice_linear
from ..validate import spec
from .base import StepConfig

WHY = "transformer pruning works on Hugging Face models"


@dataclass(frozen=True)
class TransformerPruneConfig(StepConfig):
    kind: ClassVar[str] = "prune_transformer"
    consumes: ClassVar[str] = "torch"
    # its result changes the model's `config` (intermediate_size, edgesmith_heads), an object the step
    # cache does not restore; recomputing it takes seconds (a distillation after it is still cached)
    cacheable: ClassVar[bool] = False
    heads: float = spec(0.0, ge=0, lt=1)  # fraction of the attention heads removed in every layer
    ffn: float = spec(0.0, ge=0, lt=1)  # fraction of the FFN (intermediate) neurons removed in every layer
    layers: int | None = spec(None, ge=1)  # keep this many layers, evenly spaced (None: all)
    batch_size: int = spec(32, ge=1)


def encoder_module(model):
    """`(input_ids, attention_mask) -> last_hidden_state` as a plain module with positional inputs, the
    form ONNX exporters trace; pooling and normalization stay outside, as in sentence-transformers."""
    torch = require("torch", "convert", "the transformer wrapper is a torch module")

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return Encoder()


def load_model(model_or_path):
    """A Hugging Face model from a folder (config.json + weights), or the module itself."""
    if not isinstance(model_or_path, (str, Path)):
        return model_or_path
    path = Path(model_or_path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path} is not a Hugging Face model folder (no config.json)")
    config = json.loads((path / "config.json").read_text())
    if "edgesmith_heads" in config:
        return load_pruned(path)
    return require("transformers", "convert", WHY).AutoModel.from_pretrained(str(path))


def _keep_neurons(torch, layer, index) -> None:
    layer.intermediate.dense = slice_linear(torch, layer.intermediate.dense, index, 0)
    layer.output.dense = slice_linear(torch, layer.output.dense, index, 1)


def _scores(torch, model, layers, data, batch_size: int):
    """Per layer: head scores (n_heads,) and FFN neuron scores (intermediate,)."""
    heads = [torch.zeros(layer.attention.self.num_attention_heads) for layer in layers]
    ffn = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    if data is None:  # weight norms: each head's slice of the output projection, each neuron's row
        for i, layer in enumerate(layers):
            w = layer.attention.output.dense.weight
            heads[i] = w.reshape(w.shape[0], len(heads[i]), -1).norm(dim=(0, 2)).detach()
            ffn[i] = (
                layer.intermediate.dense.weight.norm(dim=1) * layer.output.dense.weight.norm(dim=0)
            ).detach()
        return heads, ffn
    mask: list = [None]

    def head_hook(i):
        def hook(module, inputs):
            ctx = inputs[0]  # (B, T, H*d): every head's context vectors, before the output projection
            h = len(heads[i])
            w = module.weight.reshape(module.weight.shape[0], h, -1)  # (out, H, d)
            parts = torch.einsum("bthd,ohd->btho", ctx.reshape(*ctx.shape[:2], h, -1), w).norm(dim=-1)
            heads[i] += (parts * mask[0][..., None]).sum((0, 1))

        return hook

    def ffn_hook(i):
        def hook(module, inputs, output):
            ffn[i] += (output.abs() * mask[0][..., None]).sum((0, 1)) * layers[i].output.dense.weight.norm(
                dim=0
            )

        return hook

    hooks = [
        layer.attention.output.dense.register_forward_pre_hook(head_hook(i)) for i, layer in enumerate(layers)
    ]
    hooks += [layer.intermediate.register_forward_hook(ffn_hook(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            n = len(data["input_ids"])
            for start in range(0, n, batch_size):
                batch = {
                    k: torch.as_tensor(np.asarray(v[start : start + batch_size])) for k, v in data.items()
                }
                mask[0] = batch["attention_mask"].float()
                model(**batch)
    finally:
        for h in hooks:
            h.remove()
    return heads, ffn


def prune_transformer(model_or_path, config: TransformerPruneConfig, data=None) -> tuple[Any, dict]:
    """Return (the pruned model, report). The model is pruned in place when given as a module."""
    torch = require("torch", "convert", WHY)
    model = load_model(model_or_path).eval()
    encoder = bert_encoder(model)
    layers = list(encoder.layer)
    params0 = sum(p.numel() for p in model.parameters())
    if config.layers is not None and config.layers > len(layers):
        raise InputError(
            f"prune_transformer.layers = {config.layers} but the model has only {len(layers)} layers"
        )
    if data is not None:
        data = {
            k: np.asarray(v)
            for k, v in data.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        if "attention_mask" not in data:
            data["attention_mask"] = np.ones_like(data["input_ids"])
    head_scores, ffn_scores = _scores(torch, model, layers, data, config.batch_size)
    kept_heads = []
    for i, layer in enumerate(layers):
        n = len(head_scores[i])
        keep = max(1, round(n * (1 - config.heads)))
        chosen = sorted(torch.argsort(head_scores[i], descending=True)[:keep].tolist())
        if keep < n:
            keep_heads(torch, layer, chosen)
        kept_heads.append(chosen)
        m = len(ffn_scores[i])
        keep_ffn = max(1, round(m * (1 - config.ffn)))
        if keep_ffn < m:
            _keep_neurons(
                torch, layer, torch.argsort(ffn_scores[i], descending=True)[:keep_ffn].sort().values
            )
    kept_layers = list(range(len(layers)))
    if config.layers is not None and config.layers < len(layers):
        kept_layers = sorted({round(x) for x in np.linspace(0, len(layers) - 1, config.layers)})
        encoder.layer = torch.nn.ModuleList([layers[i] for i in kept_layers])
    for new_index, layer in enumerate(encoder.layer):
        if hasattr(layer.attention.self, "layer_idx"):
            layer.attention.self.layer_idx = new_index
    model.config.num_hidden_layers = len(encoder.layer)
    model.config.intermediate_size = encoder.layer[0].intermediate.dense.out_features
    heads = [kept_heads[i] for i in kept_layers]
    if any(len(h) != model.config.num_attention_heads for h in heads):
        model.config.edgesmith_heads = heads
    params = sum(p.numel() for p in model.parameters())
    report = {
        "layers": [len(layers), len(encoder.layer)],
        "kept_layers": kept_layers,
        "heads_per_layer": [len(head_scores[0]), len(heads[0])],
        "ffn_neurons": [len(ffn_scores[0]), model.config.intermediate_size],
        "params": [params0, params],
        "importance": "data" if data is not None else "weight norms",
    }
    return model, report
