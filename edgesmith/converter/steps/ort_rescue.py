"""ONNX Runtime's quantizer for ONNX exports (static INT8, int8-dynamic, fp16), and its rescue.

With `quantize.search = "rescue"` (the default), the artifact quantized as configured is first held
to a bar a little stricter than the verification gate's (`judge`). When it holds, it is returned as
it is: byte-identical to a run without the rescue. When it does not, the most sensitive nodes go back
to float until a candidate holds: converter/accuracy.py's search (rank, probe the first few, bisect on
how many stay float), on the model prepared once, with
- static INT8 (QDQ): layers ranked by the SQNR of their quantized tensors (sensitivity.analyse), kept
  float through `nodes_to_exclude`;
- int8-dynamic: the MatMul/Conv/Gemm ... ONNX Runtime replaced, ranked by the error each adds
  (sensitivity.error_growth), kept float through `nodes_to_exclude`;
- fp16: every node, ranked the same way, kept float32 through the converter's `node_block_list`.

What stayed float, why, every candidate tried and how long it took are in the quantization report's
`kept_float`. When no candidate holds, the one closest to the original is returned and the pipeline's
gate stops the run (exit 1), naming the best cosine reached.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

from ...targets.records import NOISE_FLOOR, Verification
from ..accuracy import Budget, Candidate, Search, Trials, run
from ..sensitivity import analyse, error_growth
from .base import ExportContext, Gate, Quantizer, StepResult
from .quantize import QuantizeConfig, Requantizer, quantize

# How much stricter than the gate's cosine bar a candidate must be, as a share of the distance from the
# bar to 1 (0.98 -> 0.985, 0.999 -> 0.99925): the gate sees few samples (of 16 calibration samples, the
# 4 held out and the 12 calibrated on: pipeline._held_out), and an artifact chosen at exactly the bar
# on those falls below it on others.
MARGIN = 0.25
PROBE = 3  # layers probed alone in float (accuracy.PROBE is 5): each probe costs a candidate
REFINE = 2  # rounds of accuracy._refined: the layer that tips the model over, to the front
RANKED_BATCHES = 16  # batches of calibration data the ranking runs on


def margin(bar: float | None) -> float:
    return 0.0 if bar is None else round((1 - bar) * MARGIN, 6)


def judge(gate: Gate, result: Verification, precision: str) -> str | None:
    """Why `result` misses the rescue's bar (one line), or None: the gate's failure with the margin, or
    a sample whose own cosine is below the gate's bar (an aggregate over 4 samples hides one bad one)."""
    bar = gate.min_cosine(precision)
    failure = gate.judge(result, precision, margin(bar))
    if failure is not None or bar is None:
        return failure
    for output in result.outputs:
        worst = output.cosine_worst_sample
        quiet = output.max_abs_error is not None and output.max_abs_error <= NOISE_FLOOR
        if worst is not None and not worst >= bar and not quiet:  # NaN: below too
            return f"output '{output.name}' has a sample at cosine {worst:.4f} < {bar}"
    return None


class _Rule(Budget):
    """The rescue's budget: `judge`'s verdict, stored in each candidate's result."""

    def holds(self, result: dict) -> bool:
        return result["failure"] is None

    def broken(self, result: dict) -> bool:
        return result["cosine_min"] is None

    def binding(self, result: dict) -> str:
        return "cosine_min"

    def to_json(self) -> dict:
        return {}


def quantize_export(config: QuantizeConfig, model, ctx: ExportContext) -> StepResult:
    """Quantize as configured; with `search = "rescue"` and a gate, rescue an artifact that misses it."""
    first = quantize(config, model, ctx.step)
    gate = ctx.gate
    if config.search != "rescue" or gate is None:
        return first
    started, precision = time.perf_counter(), first.model.precision
    if gate.min_cosine(precision) is None and gate.max_drop is None:
        return first
    checked = gate.measure(first.model.path)
    because = judge(gate, checked, precision)
    if because is None:
        return first
    return _rescue(config, model, ctx, first, _result(gate, checked, precision), because, started)


def _result(gate: Gate, checked: Verification, precision: str) -> dict:
    cosine = checked.cosine_min if math.isfinite(checked.cosine_min) else None  # NaN: inf/NaN outputs
    return {"cosine_min": None if cosine is None else round(cosine, 6),
            "failure": judge(gate, checked, precision), "passes_gate": gate.judge(checked, precision) is None}  # fmt: skip


def _rescue(config, model, ctx: ExportContext, first: StepResult, result: dict, because: str,
            started: float) -> StepResult:  # fmt: skip
    """Keep the most sensitive nodes float until a candidate holds (`judge`); the report's `kept_float`."""
    gate, precision = ctx.gate, first.model.precision
    assert gate is not None
    work = ctx.step.workdir / f"rescue-{precision}"
    requantize = Requantizer(config, model.path, ctx.step, work)
    data = ctx.step.calibration() or gate.data

    def evaluate(path: Path) -> dict:
        return _result(gate, gate.measure(path), precision)

    search = Search(requantize, evaluate, _Rule(), requantize.float_model,
                    lambda: itertools.islice(data.batches(), RANKED_BATCHES) if data is not None else iter(()),
                    probe=PROBE, refine=REFINE, rank=_ranking(config))  # fmt: skip
    trials = Trials(search)
    path = first.model.path
    trials.tried[()] = Candidate([], result, path.stat().st_size, None, False, path)
    outcome = run(search, trials)
    chosen = _choose(list(trials.tried.values()))
    kept_float = {
        "layers": chosen.float_nodes,
        "because": because,
        "tried": [
            {"float_layers": len(c.float_nodes), "cosine_min": c.result["cosine_min"], "passes": c.holds}
            for c in trials.tried.values()
        ],  # fmt: skip
        "seconds": round(time.perf_counter() - started, 1),
        "layers_ranked": outcome["layers_ranked"],
    }
    if not chosen.float_nodes or chosen.path is None:  # nothing better than the first attempt
        return StepResult(first.model, {**first.report, "kept_float": kept_float})
    report = dict(requantize.reports[chosen.path])
    if "preprocessed" in report:  # the candidates' model was preprocessed once, by the Requantizer
        report["preprocessed"] = config.preprocess
    return StepResult(type(first.model)(chosen.path, precision), {**report, "kept_float": kept_float})


def _choose(tried: list[Candidate]) -> Candidate:
    """The candidate that holds with the fewest nodes float; else the fewest float that passes the gate
    itself (the first attempt, if it did); else the one closest to the original (the gate will stop the
    run and name its cosine)."""
    for rule in (lambda c: c.holds, lambda c: c.result["passes_gate"]):
        passing = [c for c in tried if rule(c)]
        if passing:
            return min(passing, key=lambda c: len(c.float_nodes))
    return max(tried, key=lambda c: (c.result["cosine_min"] or -1.0, -len(c.float_nodes)))


def _ranking(config: QuantizeConfig):
    """How the layers are ranked: by their quantized tensors' SQNR for QDQ models, by the error each node
    adds for the others (int8-dynamic: only the nodes ONNX Runtime replaced; fp16: every node)."""
    if config.mode == "static":
        return analyse
    replaced_only = config.mode != "fp16"

    def rank(qpath: Path, fpath: Path, batches):
        return error_growth(qpath, fpath, batches, replaced_only=replaced_only)

    return rank


ONNXRUNTIME = Quantizer(
    "onnxruntime", "onnx", "onnx", ("static", "dynamic", "fp16"), ("auto", "onnxruntime"), quantize_export
)
