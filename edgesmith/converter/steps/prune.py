"""`prune`: structured pruning of a PyTorch module with Torch-Pruning's dependency graph (DepGraph).

Why structured: removing whole channels makes every tensor smaller, so any dense runtime (ONNX
Runtime, OpenVINO, TFLite) gets faster with no sparse kernels. Why a dependency graph: a channel
removed from one conv must also leave its batch norm, the next layer's inputs, every branch of a
residual add, the matching slice of a concatenation and the groups of a depthwise conv; DepGraph
traces the forward pass once and prunes each coupled group together.

`prune_module` is a library function on an `nn.Module` (the pipeline calls it before the ONNX export);
it never modifies the module it is given. The output layer (the last conv/linear to run) keeps its
outputs so the model's output shape does not change.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ...errors import InputError, require
from ..validate import spec
from .base import StepConfig

MAX_RATIO = 0.9  # the most channels a MACs target may remove from a layer
BISECTIONS = 9  # trials to meet a MACs target (ratio resolution 0.9 / 2^9)


@dataclass(frozen=True)
class PruneConfig(StepConfig):
    kind: ClassVar[str] = "prune"
    consumes: ClassVar[str] = "torch"
    criterion: Literal["l1", "l2", "bn_scale", "taylor"] = "l1"  # taylor needs data
    # fraction of channels removed (per layer, or across the net if global)
    ratio: float | None = spec(None, gt=0, lt=1)
    # per-layer ratio: module-name regex -> ratio
    ratios: dict[str, float] = spec(default_factory=dict, gt=0, lt=1, regex=True)
    target_macs: float | None = spec(None, gt=0, lt=1)  # fraction of the original MACs to keep, e.g. 0.5
    # global: rank channels net-wide (measured fastest) | layer: same ratio everywhere
    scope: Literal["layer", "global"] = "global"
    ignore: list[str] = spec(default_factory=list, regex=True)  # module-name regexes whose outputs are kept
    iterative_steps: int = spec(1, ge=1)  # prune in this many steps, re-scoring importance between them
    # channel counts multiples of this: 16 floats fill an AVX-512 register; 1 disables
    round_to: int = spec(16, ge=1)
    seed: int = spec(0, ge=0)

    def __post_init__(self):
        super().__post_init__()
        if (self.ratio is None) == (self.target_macs is None) and not self.ratios:
            raise InputError("prune needs exactly one of ratio = 0.3 (channels removed) or target_macs = 0.5")


def _importance(tp, criterion: str):
    return {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[criterion]()


def _as_tensors(torch, example_inputs) -> tuple:
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a) for a in items)


def _output_layers(torch, module, args) -> list:
    """The last conv/linear to run: its output channels are the model's outputs, never pruned."""
    order: list = []
    kinds = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m))
        for m in module.modules()
        if isinstance(m, kinds)
    ]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def _failing_module(torch, module, args) -> str:
    """Run forward; on failure, one line naming where it broke and the layer to keep whole."""
    stack: list[str] = []
    done: list[str] = []
    names = {m: n for n, m in module.named_modules()}

    def leave(m, i, o):
        done.append(stack.pop())

    pre = [m.register_forward_pre_hook(lambda m, i: stack.append(names[m])) for m in module.modules()]
    post = [m.register_forward_hook(leave) for m in module.modules()]
    try:
        with torch.no_grad():
            module(*args)
        return ""
    except Exception as exc:
        why = str(exc).splitlines()[0][:160]
        inner = [n for n in stack if n]
        last = next((n for n in reversed(done) if n), "")
        if inner:
            return f"pruning broke module '{inner[-1]}' ({why}); add prune.ignore = ['{re.escape(last or inner[-1])}']"
        return (
            f"pruning broke {type(module).__name__}.forward after module '{last}' ({why}): the dependency graph"
            f" cannot follow a hard-coded shape; add prune.ignore = ['{re.escape(last)}']"
        )
    finally:
        for h in pre + post:
            h.remove()


def _taylor_grads(torch, model, data, batches: int = 4, batch_size: int = 32) -> None:
    """Gradients for first-order Taylor importance, from unlabeled data: cross-entropy against the
    model's own predictions (the loss the pruned model should keep low)."""
    x = torch.as_tensor(np.asarray(data, dtype=np.float32))
    model.zero_grad()
    for start in range(0, min(len(x), batches * batch_size), batch_size):
        out = model(x[start : start + batch_size])
        torch.nn.functional.cross_entropy(out, out.detach().argmax(1)).backward()


def _prune_copy(tp, torch, module, config: PruneConfig, args, ratio: float, data):
    """Prune a deep copy of `module` at `ratio` (one shot, or `iterative_steps` steps); returns it."""
    model = copy.deepcopy(module).eval()
    names = dict(model.named_modules())
    regexes = [re.compile(p) for p in config.ignore]
    ignored = _output_layers(torch, model, args) + [
        m for n, m in names.items() if any(r.search(n) for r in regexes)
    ]
    kinds = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    per_layer = {
        m: float(value)
        for pattern, value in config.ratios.items()
        for n, m in names.items()
        if isinstance(m, kinds) and re.search(pattern, n)
    }
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            args,
            importance=_importance(tp, config.criterion),
            global_pruning=config.scope == "global",
            pruning_ratio=ratio,
            pruning_ratio_dict=per_layer or None,
            max_pruning_ratio=0.95,
            iterative_steps=config.iterative_steps,
            ignored_layers=ignored,
            round_to=config.round_to if config.round_to > 1 else None,
        )
    except Exception as exc:
        raise InputError(
            f"the dependency graph cannot trace this model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "add the layers it trips on to prune.ignore"
        ) from exc
    for _ in range(config.iterative_steps):
        if config.criterion == "taylor":
            _taylor_grads(torch, model, data)
        pruner.step()
    model.zero_grad(set_to_none=True)
    return model, sorted(n for n, m in names.items() if m in ignored)


def _bisect(trial, goal: float):
    """The trial with the most MACs at or below `goal` (+0.5%), searching the ratio in [0, MAX_RATIO]."""
    best, low, high = None, 0.0, MAX_RATIO
    for _ in range(BISECTIONS):
        mid = (low + high) / 2
        candidate = trial(mid)
        if candidate[2] <= goal * 1.005:
            best = candidate if best is None or candidate[2] > best[2] else best
            high = mid
        else:
            low = mid
    return best


def _unlifted_hint(module) -> str:
    """For a model rebuilt from a .pt2 (frontends/torch_lift.py): the parameters no layer owns."""
    unlifted = getattr(module, "meta", {}).get("edgesmith_unlifted") if hasattr(module, "graph") else None
    if not unlifted:
        return ""
    shown = ", ".join(unlifted[:3]) + (" ..." if len(unlifted) > 3 else "")
    return f" (the .pt2 has parameters outside any layer: {shown}; pass the nn.Module in Python instead)"


def prune_module(module, config: PruneConfig, example_inputs, data=None) -> tuple[Any, dict]:
    """Return (a pruned copy of `module`, report). `example_inputs`: a batch (array/tensor or tuple)
    to trace with; `data`: inputs (N, ...) for the taylor criterion.

    A MACs target is met by bisection on the channel ratio (each trial prunes a fresh copy), keeping
    the trial closest to the target from below: channel rounding makes MACs a step function of the
    ratio, so a fixed schedule would overshoot on small models."""
    torch = require("torch", "convert", "pruning runs on PyTorch modules")
    tp = require("torch_pruning", "convert", "structured pruning uses Torch-Pruning's DepGraph")
    if config.criterion == "taylor" and data is None:
        raise InputError("prune.criterion = 'taylor' needs data: give calibration data or pick 'l1'")
    args = _as_tensors(torch, example_inputs)
    module = copy.deepcopy(module).eval()  # counting MACs runs forward: keep BN statistics of the caller's
    with torch.no_grad():
        reference_shape = tuple(module(*args).shape)
    macs0, params0 = tp.utils.count_ops_and_params(module, args)

    def trial(cfg: PruneConfig, ratio: float):
        torch.manual_seed(cfg.seed)
        pruned, kept = _prune_copy(tp, torch, module, cfg, args, ratio, data)
        broken = _failing_module(torch, pruned, args)
        if broken:
            raise InputError(broken + _unlifted_hint(module))
        return pruned, kept, tp.utils.count_ops_and_params(pruned, args)[0]

    if config.target_macs is None:
        model, kept, macs = trial(config, float(config.ratio or 0.0))
    else:
        goal = config.target_macs * macs0
        best = None
        for cfg in (config, dataclasses.replace(config, round_to=1)):
            best = _bisect(lambda r, cfg=cfg: trial(cfg, r), goal)
            if best is not None and best[2] >= 0.95 * goal:
                break  # channel rounding too coarse for a small model: retry without it
        if best is None:
            macs = trial(config, MAX_RATIO)[2]
            raise InputError(
                f"prune.target_macs = {config.target_macs} cannot be reached (best: {macs / macs0:.2f} of the MACs "
                f"removing up to {MAX_RATIO:.0%} of the channels); raise target_macs, shorten prune.ignore or use scope = 'layer'"
                + _unlifted_hint(module)
            )
        model, kept, macs = best
        config = cfg
    with torch.no_grad():
        shape = tuple(model(*args).shape)
    if shape != reference_shape:
        raise InputError(
            f"pruning changed the output shape {reference_shape} -> {shape}; add the head to prune.ignore"
        )
    _, params = tp.utils.count_ops_and_params(model, args)
    report = {
        "criterion": config.criterion,
        "scope": config.scope,
        "round_to": config.round_to,
        "macs_before": int(macs0),
        "macs_after": int(macs),
        "macs_kept": round(macs / macs0, 4),
        "params_before": int(params0),
        "params_after": int(params),
        "kept_whole": kept,
    }
    return model.eval(), report
