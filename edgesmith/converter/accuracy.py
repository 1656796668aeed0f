"""Accuracy-aware static INT8 (ONNX Runtime): meet `[verify] max_drop` / `min_cosine` by returning the
most sensitive layers to float, as few as the budget allows.

1. Quantize everything (ONNX Runtime's whole op set, not the transformer rule of steps/quantize.py)
   and measure. Within budget: done, nothing stays float.
2. Rank the layers (sensitivity.py: worst SQNR first); re-quantize with each of the first few alone
   kept float and move those whose exclusion helps the metric most to the front.
3. Bisect on how many of the ranked layers stay float: the smallest prefix that meets the budget
   (checked first with all of them float; if even that fails, the search reports it and the best
   candidate).

Every candidate is reported: excluded nodes, metric / cosine, size and host p50 latency. Calibration
runs once: ONNX Runtime's calibration cache (steps/quantize.py) serves every re-quantization.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import sensitivity
from .precision import INT8

PROBE = 5  # layers re-quantized alone in float to measure their metric change (the report's top 5)


def all_op_types() -> list[str]:
    """Every op ONNX Runtime can quantize in QDQ format: what "quantize everything" means."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


@dataclass(frozen=True)
class Budget:
    """What an artifact must keep: at most `max_drop` metric points lost, and/or a cosine to the
    original's outputs of at least `min_cosine` on every sample (`cosine_min`)."""

    max_drop: float | None = None
    min_cosine: float | None = None

    def holds(self, result: dict) -> bool:
        if self.max_drop is not None and result.get("drop") is not None and result["drop"] > self.max_drop:
            return False
        if self.min_cosine is not None and result.get("cosine_min") is not None:
            return result["cosine_min"] >= self.min_cosine
        return True

    def binding(self, result: dict) -> str:
        """What to probe layers by, for a `result` over budget: the metric when it dropped too far,
        else the cosine."""
        over = self.max_drop is not None and result.get("drop") is not None and result["drop"] > self.max_drop
        return "score" if over or self.min_cosine is None else "cosine_min"

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Candidate:
    float_nodes: list[str]
    result: dict  # metric fields: score, drop, cosine_min ... (whatever `evaluate` returns)
    size_bytes: int
    p50_ms: float | None
    holds: bool
    path: Path | None = None  # the candidate's file (work folder), not reported

    def to_json(self) -> dict:
        return {"float_layers": len(self.float_nodes), "float_nodes": self.float_nodes, **self.result,
                "size_bytes": self.size_bytes, "p50_ms": self.p50_ms, "within_budget": self.holds}  # fmt: skip


@dataclass
class Search:
    """How to make and judge a candidate; the pipeline and benchmarks/accuracy_search.py fill it in."""

    quantize: Callable[[list[str]], Path]  # nodes kept float -> a quantized model file
    evaluate: Callable[[Path], dict]  # -> {"score": ..., "drop": ..., "cosine_min": ...}
    budget: Budget
    float_model: Path  # the float model the INT8 ones are compared with (steps.quantize.prepared)
    batches: Callable[[], object]  # calibration/eval batches for the SQNR pass
    latency: Callable[[Path], float] | None = None  # host p50 ms
    score_key: str = "score"  # what `metric_change` measures
    probe: int = PROBE
    log: Callable[[str], None] = lambda message: None


class Trials:
    """Candidates made and measured once each, by the nodes they keep float, in the order tried."""

    def __init__(self, search: Search):
        self.search, self.tried = search, {}

    def __call__(self, nodes: list[str]) -> Candidate:
        key = tuple(nodes)
        if key not in self.tried:
            search = self.search
            path = search.quantize(nodes)
            result = search.evaluate(path)
            latency = search.latency(path) if search.latency else None
            self.tried[key] = Candidate(
                nodes, result, path.stat().st_size, latency, search.budget.holds(result), path
            )
            search.log(f"{len(nodes)} layers float: {_brief(self.tried[key], search.score_key)}")
        return self.tried[key]


def ranked_layers(search: Search, trials: Trials) -> list:
    """Sensitivity of the all-INT8 candidate, with the metric change of the first `probe` layers."""
    everything = trials([])
    ranked = sensitivity.analyse(everything.path, search.float_model, search.batches())
    _probe(ranked, search, everything, trials)
    return ranked


def run(search: Search) -> dict:
    """The search: the report's `accuracy_search` (candidates, chosen, kept float) and `sensitivity`."""
    started, trials = time.perf_counter(), Trials(search)
    everything = trials([])
    if everything.holds:
        ranked, chosen = (
            sensitivity.analyse(everything.path, search.float_model, search.batches()),
            everything,
        )
    else:
        search = trials.search = dataclasses.replace(
            search, score_key=search.budget.binding(everything.result)
        )
        ranked = ranked_layers(search, trials)
        chosen = _bisect(_order(ranked), trials)
    return {
        "budget": search.budget.to_json(),
        "within_budget": chosen.holds,
        "float_nodes": chosen.float_nodes,
        "chosen": chosen.to_json(),
        "candidates": [c.to_json() for c in trials.tried.values()],
        "layers_ranked": len(ranked),
        "metric_change_of": search.score_key,  # what sensitivity's `metric_change` measures
        "wall_s": round(time.perf_counter() - started, 1),
        "sensitivity": sensitivity.to_json(ranked),
    }


def _probe(ranked, search: Search, everything: Candidate, attempt) -> None:
    """Metric change of each of the first `probe` layers kept float alone (the report's top 5)."""
    baseline = everything.result.get(search.score_key)
    for layer in ranked[: search.probe]:
        score = attempt(layer.nodes).result.get(search.score_key)
        if score is not None and baseline is not None:
            layer.metric_change = round(score - baseline, 4)


def _order(ranked) -> list[list[str]]:
    """The layers' node groups in the order they return to float: the probed layers that helped,
    most first, then the rest by SQNR (worst first)."""
    helped = sorted((la for la in ranked if (la.metric_change or 0) > 0), key=lambda la: -la.metric_change)
    return [la.nodes for la in helped] + [la.nodes for la in ranked if la not in helped]


def _prefix(groups: list[list[str]], count: int) -> list[str]:
    """The nodes of the first `count` groups, each once, in order."""
    return list(dict.fromkeys(n for group in groups[:count] for n in group))


def _bisect(groups: list[list[str]], attempt) -> Candidate:
    """The candidate of the fewest first groups that holds (assuming more float never hurts); the
    all-float candidate if none does."""
    low, high = 0, len(groups)
    best = attempt(_prefix(groups, high))
    if not best.holds:
        return best
    while high - low > 1:
        middle = (low + high) // 2
        candidate = attempt(_prefix(groups, middle))
        if candidate.holds:
            high, best = middle, candidate
        else:
            low = middle
    return best


def _brief(candidate: Candidate, key: str) -> str:
    r = candidate.result
    parts = [f"{key} {r[key]:.2f}" if r.get(key) is not None else None,
             f"min cos {r['cosine_min']:.4f}" if r.get("cosine_min") is not None else None,
             f"p50 {candidate.p50_ms:.2f} ms" if candidate.p50_ms else None,
             "within budget" if candidate.holds else "over budget"]  # fmt: skip
    return ", ".join(p for p in parts if p)


def exact(nodes: list[str]) -> list[str]:
    """`quantize.exclude` regexes that match exactly these node names."""
    return [f"^{re.escape(n)}$" for n in nodes]


# -- the pipeline's hook ------------------------------------------------------------------------------


def searches(quantize, recipe) -> bool:
    """Whether `convert` searches: static QDQ INT8 by ONNX Runtime, `quantize.search = "auto"`, and a
    budget in [verify] (max_drop or min_cosine). Off by default: a budget alone only checks (and
    fails the run), as before."""
    if quantize is None or quantize.mode != "static" or quantize.format != "qdq":
        return False
    if quantize.engine not in ("auto", "onnxruntime") or quantize.search != "auto":
        return False
    if not any(e.format == "onnx" for e in recipe.exports):
        return False
    return recipe.verify.max_drop is not None or recipe.verify.min_cosine is not None


def meet_budget(quantize, handle, ctx, recipe, source, data, report: dict):
    """The quantize step the exporters apply: unchanged, or (when `searches`) with the nodes the search
    keeps float added to `exclude`. Adds `accuracy_search` and `sensitivity` to `report`; with
    `[verify] sensitivity = true` and no search, only `sensitivity`."""
    wanted = searches(quantize, recipe)
    if not wanted and not (getattr(recipe.verify, "sensitivity", False) and quantize is not None):
        return quantize
    if quantize.mode != "static" or quantize.engine not in ("auto", "onnxruntime"):
        report["sensitivity_skipped"] = "per-layer sensitivity covers static INT8 by ONNX Runtime"
        return quantize
    search = pipeline_search(quantize, handle, ctx, recipe, source, data, wanted)
    if not wanted:  # sensitivity only: of the quantize step as configured
        report["sensitivity"] = sensitivity.to_json(ranked_layers(search, Trials(search)))
        return quantize
    outcome = run(search)
    report["sensitivity"] = outcome.pop("sensitivity")
    report["accuracy_search"] = outcome
    ops = quantize.op_types or all_op_types()
    return dataclasses.replace(
        quantize, op_types=ops, exclude=[*quantize.exclude, *exact(outcome["float_nodes"])]
    )


def step_quantizer(quantize, model_path: Path, ctx, everything: bool = True):
    """(the float model, `nodes -> INT8 model`): the quantize step as configured, on the model
    preprocessed once, with `nodes` added to its `exclude`; `everything`: ONNX Runtime's whole op set
    unless the recipe names `op_types`. Candidates are written to the step's work folder."""
    from .handle import ModelHandle
    from .steps import HANDLERS
    from .steps.quantize import prepared

    work = ctx.workdir / "accuracy-search"
    work.mkdir(exist_ok=True)
    float_model = prepared(model_path, work, quantize.preprocess)
    ops = quantize.op_types or (all_op_types() if everything else None)
    base = dataclasses.replace(quantize, preprocess=False, op_types=ops)
    step_ctx = dataclasses.replace(ctx, workdir=work, quiet=True)
    made = itertools.count()

    def quantize_with(nodes: list[str]) -> Path:
        config = dataclasses.replace(base, exclude=[*quantize.exclude, *exact(nodes)])
        out = HANDLERS[type(config)](config, ModelHandle(float_model), step_ctx).model.path
        return Path(shutil.move(out, work / f"candidate-{next(made)}.onnx"))

    return float_model, quantize_with


def pipeline_search(quantize, handle, ctx, recipe, source, data, everything: bool = True) -> Search:
    """A `Search` over the pipeline's pieces: the quantize step (preprocessed once), verify.py's metric
    and cosine against the original on `data`, profile_step.py's host latency."""
    from . import verify
    from .profile_step import profile
    from .verify import DEFAULT_MIN_COSINE

    float_model, quantize_with = step_quantizer(quantize, handle.path, ctx, everything)
    reference = verify.reference(source, data, quiet=True)

    def evaluate(path: Path) -> dict:
        result = verify.verify(path, reference, data, quiet=True)
        keys = ("metric", "original", "artifact", "drop", "cosine", "cosine_min", "agreement")
        found = {k: result[k] for k in keys if result.get(k) is not None}
        score = found.get("artifact", found.get("agreement", found.get("cosine_min")))
        return {"score": score, **found}

    min_cosine = recipe.verify.min_cosine
    if min_cosine is None and not any(s.kind != "quantize" for s in recipe.steps):
        min_cosine = DEFAULT_MIN_COSINE[INT8]  # what checks.check_gate will hold the artifact to
    max_drop = recipe.verify.max_drop if reference.metric else None
    latency = (
        (lambda path: profile(path, recipe.profile, source.inputs)["p50_ms"])
        if recipe.profile.enabled
        else None
    )
    return Search(quantize_with, evaluate, Budget(max_drop, min_cosine), float_model, data.batches, latency)
