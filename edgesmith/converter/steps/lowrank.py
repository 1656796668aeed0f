"""`lowrank`: replace Linear and 1x1 Conv layers by two thinner ones from a truncated SVD.

W (out x in) ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T): the layer costs r * (in + out) MACs per position
instead of in * out, so it only pays when r < in * out / (in + out). Trained weights are often far
from low rank (a 384x1536 transformer FFN keeps 90% of its energy only near full rank), so each layer
is checked and factorized only where it lowers the MACs by at least `min_saving`; the report says
where it helped and where it did not, and why.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import require
from ..validate import spec
from .base import StepConfig


@dataclass(frozen=True)
class LowRankConfig(StepConfig):
    kind: ClassVar[str] = "lowrank"
    consumes: ClassVar[str] = "torch"
    # keep the smallest rank holding this fraction of sum(singular values^2)
    energy: float = spec(0.9, gt=0, le=1)
    rank_ratio: float | None = spec(
        None, gt=0, lt=1
    )  # or: rank = rank_ratio * min(in, out) (overrides energy)
    # factorize only where a layer's MACs drop by at least this fraction
    min_saving: float = spec(0.1, ge=0, lt=1)
    ignore: list[str] = spec(default_factory=list, regex=True)  # module-name regexes left alone


def _rank(torch, s, config: LowRankConfig) -> int:
    if config.rank_ratio is not None:
        return max(1, round(config.rank_ratio * len(s)))
    energy = torch.cumsum(s**2, 0) / (s**2).sum()
    return int(torch.searchsorted(energy, torch.tensor(config.energy, dtype=energy.dtype)).item()) + 1


def _factor(torch, layer, rank: int, u, s, vh):
    nn = torch.nn
    root = s[:rank].sqrt()
    first_w, second_w = root[:, None] * vh[:rank], u[:, :rank] * root[None, :]
    if isinstance(layer, nn.Linear):
        first, second = (
            nn.Linear(layer.in_features, rank, bias=False),
            nn.Linear(rank, layer.out_features, layer.bias is not None),
        )
    else:
        first = nn.Conv2d(layer.in_channels, rank, 1, stride=layer.stride, bias=False)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
        first_w, second_w = first_w[..., None, None], second_w[..., None, None]
    with torch.no_grad():
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def _eligible(torch, m) -> bool:
    if isinstance(m, torch.nn.Linear):
        return True
    return (
        isinstance(m, torch.nn.Conv2d)
        and m.kernel_size == (1, 1)
        and m.groups == 1
        and tuple(m.padding) == (0, 0)
    )


def factorize_module(module, config: LowRankConfig) -> tuple[Any, dict]:
    """Return (a copy of `module` with qualifying layers factorized, report)."""
    torch = require("torch", "convert", "low-rank factorization runs on PyTorch modules")
    model = copy.deepcopy(module).eval()
    regexes = [re.compile(p) for p in config.ignore]
    helped, skipped = [], []
    for name, layer in list(model.named_modules()):
        if not name or not _eligible(torch, layer) or any(r.search(name) for r in regexes):
            continue
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
        out_f, in_f = w.shape
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        rank = _rank(torch, s, config)
        saving = 1 - rank * (in_f + out_f) / (in_f * out_f)
        entry = {"layer": name, "shape": [out_f, in_f], "rank": rank, "macs_saving": round(saving, 3)}
        if saving < config.min_saving:
            entry["why"] = f"rank {rank} needed; pays only below {in_f * out_f // (in_f + out_f)}"
            skipped.append(entry)
            continue
        entry["rel_error"] = round(float(s[rank:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt()), 4)
        new = _factor(torch, layer, rank, u.float(), s.float(), vh.float())
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        helped.append(entry)
    return model, {"factorized": helped, "skipped": skipped}
