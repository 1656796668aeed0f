"""`sparsify`: unstructured magnitude pruning (zero the smallest weights), global or per layer.

Plainly: dense runtimes (ONNX Runtime, OpenVINO, TFLite CPU kernels) multiply the zeros like any
other weight, so a sparsified model is NOT faster; it is smaller once compressed (what ships over the
air or sits in flash), and it is the starting point for sparse kernels where a target has them.
The report gives the dense size, the size as a zip of the dense tensors, and the size of a sparse
encoding (a bitmask plus the non-zero values), and repeats that latency does not change.

Iterative magnitude pruning (`iterations` > 1) raises the sparsity in steps, calling `train(model)`
between them to recover; `rewind = true` resets the surviving weights to their values in the given
module before each retraining, the lottery-ticket procedure (Frankle & Carbin 2019).
"""

from __future__ import annotations

import copy
import io
import re
import zipfile
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ...errors import InputError, require
from ..validate import spec
from .base import StepConfig

NOTE = "dense runtimes do not get faster from zeros: latency is unchanged; only the compressed size drops"


@dataclass(frozen=True)
class SparsifyConfig(StepConfig):
    kind: ClassVar[str] = "sparsify"
    consumes: ClassVar[str] = "torch"
    sparsity: float = spec(0.5, gt=0, lt=1)  # fraction of the weights set to zero
    # global: one threshold for all layers | layer: the same sparsity in each
    scope: Literal["global", "layer"] = "global"
    iterations: int = spec(1, ge=1)  # iterative magnitude pruning rounds (train(model) runs between them)
    rewind: bool = False  # lottery ticket: reset survivors to the original weights before retraining
    ignore: list[str] = spec(default_factory=list, regex=True)  # module-name regexes left dense


def _weights(torch, model, ignore) -> dict[str, Any]:
    regexes = [re.compile(p) for p in ignore]
    kinds = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    return {
        n: m.weight
        for n, m in model.named_modules()
        if isinstance(m, kinds) and not any(r.search(n) for r in regexes)
    }


def _masks(torch, weights: dict, sparsity: float, scope: str) -> dict:
    if scope == "layer":
        return {
            n: w.abs() > w.abs().flatten().kthvalue(max(1, int(sparsity * w.numel()))).values
            for n, w in weights.items()
        }
    everything = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    threshold = everything.kthvalue(max(1, int(sparsity * everything.numel()))).values
    return {n: w.abs() > threshold for n, w in weights.items()}


def sizes(state: dict[str, np.ndarray]) -> dict[str, int]:
    """Bytes: dense float32, a zip (deflate) of the dense tensors, and a bitmask + non-zero values."""
    dense = sum(a.nbytes for a in state.values())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for k, a in state.items():
            z.writestr(k, a.astype(np.float32).tobytes())
    sparse = sum(np.packbits(a != 0).nbytes + int((a != 0).sum()) * 4 for a in state.values())
    return {"dense_bytes": dense, "zip_bytes": len(buffer.getvalue()), "bitmask_bytes": sparse}


def sparsify_module(module, config: SparsifyConfig, train=None) -> tuple[Any, dict]:
    """Return (a copy of `module` with the smallest weights zeroed, report). `train(model)`, if given,
    retrains between iterations (zeros are re-applied after it, so they stay zero)."""
    torch = require("torch", "convert", "sparsify runs on PyTorch modules")
    if config.iterations > 1 and train is None:
        raise InputError("sparsify.iterations > 1 needs a train(model) callback to recover between rounds")
    model = copy.deepcopy(module).eval()
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights = _weights(torch, model, config.ignore)
    if not weights:
        raise InputError("sparsify found no Linear/Conv weights (is everything in sparsify.ignore?)")
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    for k in range(1, config.iterations + 1):
        target = 1 - (1 - config.sparsity) ** (k / config.iterations)  # the same fraction pruned each round
        with torch.no_grad():
            masked = {n: w * masks[n] for n, w in weights.items()}
            masks = _masks(torch, masked, target, config.scope)
            if config.rewind and k > 1:
                model.load_state_dict(original)
            for n, w in weights.items():
                w.mul_(masks[n])
        if train is not None and (k < config.iterations or config.rewind):
            train(model)
            with torch.no_grad():
                for n, w in weights.items():
                    w.mul_(masks[n])
    model.eval()
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    state = {k: v.detach().numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    before = sizes({k: v.numpy() for k, v in original.items() if v.dtype.is_floating_point})
    report = {
        "sparsity": round(zeros / total, 4),
        "layers": {n: round(float((w == 0).float().mean()), 4) for n, w in weights.items()},
        "size_before": before,
        "size_after": sizes(state),
        "note": NOTE,
    }
    return model, report
