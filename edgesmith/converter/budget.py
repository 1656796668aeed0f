"""The pipeline's hook for the accuracy search (converter/accuracy.py): with `quantize.search = "auto"`
and a [verify] budget, `pipeline.run` searches once, before the exports, and every export applies the
quantize step with the nodes the search keeps float added to `exclude`.

(The search itself lives in accuracy.py, which imports no step: the ONNX Runtime quantizer's rescue,
steps/ort_rescue.py, runs the same search from inside an export.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import sensitivity
from .accuracy import Budget, Search, Trials, all_op_types, exact, ranked_layers, run
from .precision import INT8


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
    from .steps.quantize import Requantizer

    ops = quantize.op_types or (all_op_types() if everything else None)
    work = ctx.workdir / "accuracy-search"
    work.mkdir(exist_ok=True)
    requantize = Requantizer(dataclasses.replace(quantize, op_types=ops), model_path, ctx, work)
    return requantize.float_model, requantize


def pipeline_search(quantize, handle, ctx, recipe, source, data, everything: bool = True) -> Search:
    """A `Search` over the pipeline's pieces: the quantize step (preprocessed once), verify.py's metric
    and cosine against the original on `data`, profile_step.py's host latency."""
    from . import verify
    from .profile_step import profile
    from .verify import DEFAULT_MIN_COSINE

    float_model, quantize_with = step_quantizer(quantize, handle.path, ctx, everything)
    reference = verify.reference(source, data, quiet=True, metric=recipe.verify.metric)

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
