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

Two callers: the pipeline, before the exports, with `quantize.search = "auto"` and a [verify] budget
(converter/budget.py), and ONNX Runtime's quantizer, after a first attempt that misses the verification
gate (`quantize.search = "rescue"`, the default: steps/ort_rescue.py), for int8-dynamic and fp16 too.
This module imports no step, so both can use it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sensitivity

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

    def broken(self, result: dict) -> bool:
        """A candidate that computes nothing usable (its cosine is NaN: inf or NaN outputs): with more
        layers float it can only be the conversion's boundaries (fp16 Casts) that break, so the search
        tries fewer."""
        return False

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
    batches: Callable[[], Iterable[Any]]  # calibration/eval batches for the SQNR pass
    latency: Callable[[Path], float] | None = None  # host p50 ms
    score_key: str = "score"  # what `metric_change` measures
    # (quantized model, float model, batches) -> layers, most sensitive first: the SQNR of static QDQ
    # models by default; sensitivity.error_growth for models without Q/DQ pairs (int8-dynamic, fp16)
    rank: Callable[[Path, Path, Iterable], list] = sensitivity.analyse
    probe: int = PROBE
    refine: int = 0  # rounds of `_refined` after the bisection (each: a few more candidates)
    log: Callable[[str], None] = lambda message: None


class Trials:
    """Candidates made and measured once each, by the nodes they keep float, in the order tried."""

    def __init__(self, search: Search):
        self.search = search
        self.tried: dict[tuple[str, ...], Candidate] = {}

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
    assert everything.path is not None  # made by `trials` (only reports drop the path)
    ranked = search.rank(everything.path, search.float_model, search.batches())
    _probe(ranked, search, everything, trials)
    return ranked


def run(search: Search, trials: Trials | None = None) -> dict:
    """The search: the report's `accuracy_search` (candidates, chosen, kept float) and `sensitivity`.
    `trials`: candidates already made (e.g. the first attempt, keeping nothing float)."""
    started, trials = time.perf_counter(), trials or Trials(search)
    everything = trials([])
    assert everything.path is not None
    if everything.holds:
        ranked, chosen = search.rank(everything.path, search.float_model, search.batches()), everything
    else:
        search = trials.search = dataclasses.replace(
            search, score_key=search.budget.binding(everything.result)
        )
        ranked = ranked_layers(search, trials)
        chosen = _refined(_order(ranked), trials, search.refine)
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


def _bisect(groups: list[list[str]], attempt, high: int | None = None,
            best: Candidate | None = None) -> tuple[int, Candidate]:  # fmt: skip
    """(how many, the candidate of) the fewest first groups that hold, among the first `high` (all by
    default; `best`: their candidate, already made), assuming more float never hurts; the all-float
    candidate if none does. A candidate the budget calls `broken` (NaN outputs) counts as too many
    float: the search goes lower, and if nothing holds, the fewest groups found broken are returned."""
    broken = attempt.search.budget.broken
    low, high = 0, len(groups) if high is None else high
    at_high = best or attempt(_prefix(groups, high))
    if not at_high.holds and not broken(at_high.result):
        return high, at_high
    found = (high, at_high) if at_high.holds else None
    while high - low > 1:
        middle = (low + high) // 2
        candidate = attempt(_prefix(groups, middle))
        if candidate.holds:
            found = (middle, candidate)
        if candidate.holds or broken(candidate.result):
            high, at_high = middle, candidate
        else:
            low = middle
    return found or (high, at_high)


def _refined(groups: list[list[str]], attempt, rounds: int) -> Candidate:
    """Bisect; then, up to `rounds` times, move the group that made the smallest prefix hold (or break)
    to the front and bisect again within that prefix. The layer that tips the model over is often one
    the ranking put late (MediaPipe's face detector: its stem Conv, 89th of 106; basic-pitch in fp16:
    the Add before its log, 41st of 246), and most of the layers ranked before it are then not needed."""
    broken = attempt.search.budget.broken
    count, best = _bisect(groups, attempt)
    for _ in range(rounds):
        if count <= 1 or not (best.holds or broken(best.result)):
            break
        order = [groups[count - 1], *groups[: count - 1]]
        fewer, candidate = _bisect(order, attempt, count, best)
        if fewer >= count and candidate.holds == best.holds:
            break
        groups, count, best = order, fewer, candidate
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
