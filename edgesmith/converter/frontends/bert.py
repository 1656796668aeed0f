"""The shape of BERT-like Hugging Face models: where the encoder layers are, how heads are cut, and how a
folder written after `prune_transformer` is read back.

The Hugging Face frontend (which loads such folders and checks a model is BERT-like) and the
`prune_transformer` step (which cuts heads and neurons) both need these; they live here, on the
frontends' side, because steps run on what frontends load and not the other way round.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError, require

WHY = "transformer pruning works on Hugging Face models"


def bert_encoder(model):
    """The `encoder` holding the `layer` list of a BERT-like model, or a one-line error."""
    for path in ("encoder", "bert.encoder", "roberta.encoder", "model.encoder"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, "layer"):
            return obj
    raise InputError(
        f"{type(model).__name__} has no BERT-like encoder.layer list; prune_transformer supports BERT-like models"
    )


def slice_linear(torch, linear, index, dim: int):
    """A new Linear holding only `index` along its output (dim 0) or input (dim 1) features."""
    weight = linear.weight.index_select(dim, index)
    bias = linear.bias if dim == 1 or linear.bias is None else linear.bias[index]
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def keep_heads(torch, layer, heads: list[int]) -> None:
    """Keep only `heads` (indices) of one layer's self-attention."""
    attn = layer.attention.self
    d = attn.attention_head_size
    index = torch.tensor([h * d + i for h in sorted(heads) for i in range(d)])
    for name in ("query", "key", "value"):
        setattr(attn, name, slice_linear(torch, getattr(attn, name), index, 0))
    layer.attention.output.dense = slice_linear(torch, layer.attention.output.dense, index, 1)
    attn.num_attention_heads, attn.all_head_size = len(heads), len(heads) * d


def load_pruned(path):
    """Load a folder written by `save_pretrained` after `prune_transformer` (heads rebuilt from config)."""
    torch = require("torch", "convert", WHY)
    transformers = require("transformers", "convert", WHY)
    path = Path(path)
    config = transformers.AutoConfig.from_pretrained(str(path))
    heads = getattr(config, "edgesmith_heads", None)
    model = transformers.AutoModel.from_config(config)
    if heads:
        for layer, kept in zip(bert_encoder(model).layer, heads, strict=True):
            keep_heads(torch, layer, kept)
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InputError(f"{path} has no .safetensors weights; save with save_pretrained(path)")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    if getattr(model, "pooler", None) is not None and not any(k.startswith("pooler.") for k in state):
        model.pooler = None  # saved without a pooler (sentence encoders), so build none
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise InputError(f"{path}: weights do not match the pruned config ({(unexpected or missing)[0]})")
    return model.eval()
