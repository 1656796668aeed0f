"""Search recipes for a device: Optuna proposes, Ray Tune runs the trials, each trial a conversion.

A trial is a recipe built from the sampled parameters, converted like any sweep task (so it shares
the conversion cache and the one-line errors), and scored on three objectives: the metric on the
eval data (higher is better), the latency on the target (the cost model's estimate from the recipe's
`[profile] targets`, or measured on this machine for the target `host`) and the artifact's size. A
trial is feasible when it passed verification with `[verify] max_drop` (the recipe carries it, so
a run over budget fails like `convert` would) and is under `--latency-ms`. The Pareto front of the
feasible trials is the result, each point written as a `best-N.toml` that replays with
`edgesmith convert --recipe`.

The space is what a recipe can vary: the quantization mode (static/dynamic/fp16/none), the
calibration method, keeping the first and/or last layer in float, per-layer precision from the
sensitivity ranking (static INT8 to ONNX: the fewest most sensitive layers float that meet
max_drop), the format the target runs and, for PyTorch sources, a pruning ratio with distillation
steps (Hugging Face encoders: a fraction of the heads and FFN neurons, `prune_transformer`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..converter import build_recipe, metrics
from ..converter.recipe import ExportConfig, Recipe
from ..converter.steps.binarize import BinarizeConfig
from ..converter.steps.distill import DistillConfig
from ..converter.steps.prune import PruneConfig
from ..converter.steps.prune_transformer import TransformerPruneConfig
from ..converter.steps.quantize import QuantizeConfig
from ..errors import InputError, require
from .cache import cache_dir
from .sweep import Task, run_task

OBJECTIVES = {"score": "max", "latency_ms": "min", "size_kb": "min"}
WORST = {"score": -1.0, "latency_ms": 1e9, "size_kb": 1e9}  # what an infeasible trial reports to the sampler
SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino"}
# The sensitivity search (converter/accuracy.py: rank the layers by SQNR, keep the fewest float that
# meet max_drop) re-quantizes and re-verifies a model many times: seconds to a minute for a CNN of a
# few MB, tens of minutes for a 90 MB transformer, too long for a trial.
SEARCH_MAX_BYTES = 20 * 2**20
FORMAT_MODULES = {"onnx": "onnxruntime", "tflite": "litert_torch", "openvino": "nncf"}  # what each needs
# Fractions of the MACs pruning removes. The light end matters: a preset that loses nothing (INT8 of
# an MNIST CNN) is dominated only by a point as accurate, and on MNISTNet 50 % cost 0.45 points after
# distilling on 256 calibration images (docs/scale.md), so lighter ratios are in the space too.
PRUNE = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
DISTILL_STEPS = (100, 300, 600)  # after pruning, on the calibration data
# A Hugging Face encoder: the fraction of attention heads and of FFN neurons `prune_transformer`
# removes in every layer (docs/pruning.md: half of both, distilled, kept 81.1 of 82.0 STS-B points)
TRANSFORMER_PRUNE = (0.0, 0.25, 0.5)
# 1-bit layers (the `binarize` step, every Conv2d/Linear but the first and last, trained with
# distillation on the calibration data): weights only, or weights and activations (which needs a
# BatchNorm before each binary layer; a model without fails that trial in one line)
BINARIZE: dict[str, Literal["float", "binary"] | None] = {
    "none": None,
    "weights": "float",
    "binary": "binary",
}


@dataclass(frozen=True)
class Space:
    """What the search may vary for this model and target."""

    formats: tuple[str, ...]
    layers: tuple[str, ...]  # compute nodes of an ONNX source, first to last (for `exclude`)
    torch: bool  # a PyTorch source: pruning and distillation are open
    static: bool  # calibration data given: static INT8 is open
    search: bool = False  # small enough for the sensitivity search per trial (see SEARCH_MAX_BYTES)
    mcu: bool = False  # TFLite Micro runs float32 and full-integer INT8 only (no hybrid, no fp16 kernels)
    transformer: bool = False  # a Hugging Face encoder: heads and FFN neurons pruning, then distillation

    @property
    def binarize(self) -> bool:
        """1-bit layers are open for PyTorch CNNs/MLPs exported to ONNX or OpenVINO (they store the bits;
        TFLite and TFLite Micro would keep float weights)."""
        return self.torch and not self.mcu and bool({"onnx", "openvino"} & set(self.formats))

    @property
    def modes(self) -> list[str]:
        """The quantization modes the target can run; static needs calibration data."""
        modes = ["static", "none"] if self.mcu else ["static", "dynamic", "fp16", "none"]
        return [m for m in modes if m != "static" or self.static]

    def sample(self, trial) -> None:
        """Optuna's define-by-run space: the parameters a trial depends on, conditionally."""
        fmt = trial.suggest_categorical("format", list(self.formats))
        binary = trial.suggest_categorical("binarize", list(BINARIZE)) if self.binarize else "none"
        # a binarized model is exported as it is: its 1-bit layers are the compression
        mode = trial.suggest_categorical("mode", self.modes) if binary == "none" else "none"
        if mode == "static":
            trial.suggest_categorical("calibration", ["minmax", "percentile", "entropy"])
            if self.search and fmt == "onnx":  # per-layer precision from the sensitivity ranking
                trial.suggest_categorical("layers", ["rule", "sensitivity"])
        if mode in ("static", "dynamic") and self.layers:
            trial.suggest_categorical("keep_float", ["none", "first", "last", "first+last"])
        if self.torch or self.transformer:
            prune = trial.suggest_categorical("prune", list(TRANSFORMER_PRUNE if self.transformer else PRUNE))
            if prune:
                trial.suggest_categorical("distill_steps", list(DISTILL_STEPS))

    def presets(self) -> list[dict]:
        """The presets' parameters: the search starts from what a user would try by hand, and the
        front shows whether it found better."""
        return list(self.named_presets().values())

    def named_seeds(self) -> dict[str, dict]:
        """The trials run before the sampler proposes any: the presets, then (PyTorch sources) each
        preset with the lightest pruning and the shortest distillation.

        Why the neighbours: a preset that loses nothing (INT8 of an MNIST CNN) is dominated only by a
        point as accurate and cheaper, and the lightest pruning is the nearest such step from it
        (MNISTNet pruned 10 % and distilled 100 steps scores above the fp32 original). A sampler
        given 8-10 trials over ~1000 points drew it with fp16 but never with INT8 (docs/scale.md,
        "Tune, second round"). The neighbours share one pruning through the step cache, so all but
        the first cost a quantization and a verification.

        Last, where the space binarizes, the converter's `bnn-weights` preset (1-bit weights): the
        smallest point a user would try by hand, which a sampler with a few trials may not draw.
        It is a seed, not one of the presets the front is judged against (those quantize)."""
        seeds = self.named_presets()
        # not a transformer's: its lightest pruning loses ~6 STS-B points untrained, and won them back
        # only after 2 epochs on 10k sentences (docs/pruning.md), far from a trial's budget
        if self.torch:
            light = {"prune": min(p for p in PRUNE if p), "distill_steps": min(DISTILL_STEPS)}
            seeds |= {f"{name} + prune {light['prune']:.0%}": {**params, **light}
                      for name, params in self.named_presets().items()}  # fmt: skip
        if self.binarize:
            bits = next(f for f in self.formats if f in ("onnx", "openvino"))
            seeds["bnn-weights"] = {"format": bits, "binarize": "weights", "prune": 0.0}
        return seeds

    def named_presets(self) -> dict[str, dict]:
        """int8, int8-dynamic and fp16 in the target's first format, those the target runs (an MCU:
        int8, and fp32 to compare with). Every parameter the space asks for is given, or Optuna
        would sample the rest."""
        fmt = self.formats[0]
        keep = {"keep_float": "none"} if self.layers else {}
        rule = {"layers": "rule"} if self.search and fmt == "onnx" else {}
        points = {
            "int8": {"format": fmt, "mode": "static", "calibration": "minmax", **keep, **rule},
            "int8-dynamic": {"format": fmt, "mode": "dynamic", **keep},
            "fp16": {"format": fmt, "mode": "fp16"},
            "fp32": {"format": fmt, "mode": "none"},
        }
        wanted = ["int8", "fp32"] if self.mcu else ["int8", "int8-dynamic", "fp16"]
        named = {k: points[k] for k in wanted if points[k]["mode"] in self.modes}
        if self.binarize:
            named = {k: {**p, "binarize": "none"} for k, p in named.items()}
        return {k: {**p, "prune": 0.0} if self.torch or self.transformer else p for k, p in named.items()}


def space_for(model: Path, target: str, calibration: str | None) -> Space:
    """The space for `model` on `target`: formats the target runs that an exporter is installed for."""
    import importlib.util

    from ..converter.frontends import kind_of
    from ..targets.spec import get

    spec = get(target)
    runs = spec.formats
    formats = tuple(
        f for suffix, f in SUFFIX_FORMATS.items()
        if suffix in runs and importlib.util.find_spec(FORMAT_MODULES[f]) is not None
    )  # fmt: skip
    if not formats:
        raise InputError(f"no exporter for a format {target} runs ({', '.join(runs)}) is installed; "
                         "run `pip install 'edgesmith[all]'`")  # fmt: skip
    kind = kind_of(model)
    small = model_bytes(model) <= SEARCH_MAX_BYTES
    return Space(formats, _compute_layers(model) if kind == "onnx" else (), kind in ("pt2", "torch"),
                 calibration is not None, search=small, mcu=spec.is_mcu,
                 transformer=kind == "hf" and calibration is not None)  # fmt: skip


def model_bytes(model: Path) -> int:
    """The model's size in bytes (a Hugging Face folder: its files')."""
    from ..converter.handle import file_info

    return file_info(model)["size_bytes"]


def _compute_layers(model: Path) -> tuple[str, ...]:
    onnx = require("onnx", "convert")
    graph = onnx.load(str(model), load_external_data=False).graph
    return tuple(n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"))


def recipe_for(params: dict, base: Recipe, space: Space) -> Recipe:
    """The recipe a trial's parameters stand for (what best-N.toml will hold)."""
    steps: list = []
    if params.get("prune") and space.transformer:  # distilled on the embeddings and every hidden state
        steps += [TransformerPruneConfig(heads=params["prune"], ffn=params["prune"]),
                  DistillConfig(losses=["embedding", "hidden"], epochs=1, min_steps=params["distill_steps"],
                                lr=2e-4, batch_size=32)]  # fmt: skip
    elif params.get("prune"):
        steps += [PruneConfig(target_macs=round(1 - params["prune"], 3)),
                  DistillConfig(epochs=1, min_steps=params["distill_steps"], lr=2e-3)]  # fmt: skip
    activations = BINARIZE[params.get("binarize", "none")]
    if activations is not None:
        steps.append(BinarizeConfig(activations=activations))
    mode = params.get("mode", "none")
    if mode != "none":
        keep = params.get("keep_float", "none")
        names = ([space.layers[0]] if "first" in keep else []) + (
            [space.layers[-1]] if "last" in keep else []
        )
        # the converter's default (`rescue`: sensitive layers back to float only when the artifact
        # misses the gate) unless the sensitivity search was drawn: the presets are the presets
        quantize = QuantizeConfig(mode=mode, exclude=[f"^{re.escape(n)}$" for n in names])
        steps.append(replace(quantize, search="auto") if params.get("layers") == "sensitivity" else quantize)
    calibration = base.calibration
    if params.get("calibration"):
        calibration = replace(calibration, method=params["calibration"])
    return replace(
        base, steps=steps, calibration=calibration, exports=[ExportConfig(format=params["format"])]
    )


def objectives(record: dict, target: str, latency_budget: float | None) -> dict:
    """The trial's objectives and whether it is feasible (verified within max_drop, in budget)."""
    if record["status"] != "ok":
        return {**WORST, "feasible": False}
    artifact = record["artifacts"][0]
    latency = artifact["p50_ms"] if target == "host" else artifact["target_p50_ms"]
    values = {"score": _score(artifact), "latency_ms": latency, "size_kb": artifact["size_bytes"] / 1024}
    feasible = None not in values.values() and (latency_budget is None or latency <= latency_budget)
    return {**values, "feasible": feasible} if feasible else {**WORST, "feasible": False}


def dominates(a: dict, b: dict) -> bool:
    """a is at least as good as b in every objective and better in one."""
    better = [(a[k] >= b[k]) if mode == "max" else (a[k] <= b[k]) for k, mode in OBJECTIVES.items()]
    strictly = [(a[k] > b[k]) if mode == "max" else (a[k] < b[k]) for k, mode in OBJECTIVES.items()]
    return all(better) and any(strictly)


def pareto_front(trials: list[dict]) -> list[dict]:
    """The feasible trials no other feasible trial dominates; one per distinct point, first found."""
    feasible = [t for t in trials if t["feasible"]]
    front, seen = [], set()
    for t in feasible:
        point = tuple(round(t[k], 6) for k in OBJECTIVES)
        if point not in seen and not any(dominates(o, t) for o in feasible):
            seen.add(point)
            front.append(t)
    return sorted(front, key=lambda t: t["latency_ms"])


# -- the trial, as Ray Tune runs it ----------------------------------------------------------------


def _trial(config: dict, job: dict) -> None:
    """One Ray Tune trial: convert the sampled recipe and report its objectives."""
    from ray import tune

    space, base = Space(**job["space"]), Recipe.from_dict(job["base"])
    params = {k: v for k, v in config.items() if v is not None}
    name = f"trial-{tune.get_context().get_trial_id()}"
    folder = str(Path(job["out"]) / "trials" / name)
    try:
        recipe = recipe_for(params, base, space)
    except Exception as exc:  # a bug, but one trial's: the search goes on and the report says it
        record = {
            "status": "error",
            "folder": folder,
            "error": f"internal error: {type(exc).__name__}: {exc}",
        }
        tune.report(
            {**WORST, "feasible": False, "params": params, "recipe": base.to_dict(), "record": record}
        )
        return
    record = run_task(Task(job["model"], name, recipe.to_dict(), job["target"], folder), job["cache"])
    scores = objectives(record, job["target"], job["latency_ms"])
    tune.report({**scores, "params": params, "recipe": recipe.to_dict(), "record": record})


def tune(model: str, target: str, out: Path, max_drop: float, latency_ms: float | None = None,
         trials: int = 12, evaluation: str | None = None, calibration: str | None = None,
         address: str | None = None, workers: int | None = None, use_cache: bool = True,
         sampler: str = "tpe", seed: int = 0, metric: str | None = None,
         time_budget_s: float | None = None) -> dict:  # fmt: skip
    """Search, then write report.json, report.html and best-N.toml into `out`; returns the report.
    With `time_budget_s`, trials still running when it is spent are stopped and the report holds
    those that finished."""
    model_path = Path(model).absolute()
    space = space_for(model_path, target, calibration)
    base = base_recipe(model_path, target, max_drop, evaluation, calibration, metric)
    metrics.resolve(base.verify.metric)  # a user's function that does not import fails before Ray starts
    if space.torch and not calibration:
        raise InputError("pruning a PyTorch model needs data to distill on: pass --calibration PATH")
    out.mkdir(parents=True, exist_ok=True)
    job = {"model": str(model_path), "target": target, "out": str(out), "latency_ms": latency_ms,
           "time_budget_s": time_budget_s,
           "cache": str(cache_dir()) if use_cache else None, "base": base.to_dict(), "space": space.__dict__}  # fmt: skip
    from .sweep import start_ray

    started = time.perf_counter()
    start_ray(address, workers)
    results = _run_search(job, space, trials, sampler, seed, out)
    report = _report(job, results, space, sampler, trials, time.perf_counter() - started)
    _write_outputs(out, report)
    return report


def base_recipe(
    model: Path,
    target: str,
    max_drop: float,
    evaluation: str | None,
    calibration: str | None,
    metric: str | None = None,
) -> Recipe:
    """What every trial's recipe starts from: fp32, the data, the target's cost model, the budget (in
    `metric`, [verify] metric: a user's file.py:function is made absolute, as trials run elsewhere)."""
    if metric and ".py:" in metric:
        where, _, function = metric.rpartition(":")
        metric = f"{os.path.abspath(where)}:{function}"
    base = build_recipe(None, "fp32", calibration and os.path.abspath(calibration),
                        evaluation and os.path.abspath(evaluation), model=str(model), targets=[target],
                        metric=metric)  # fmt: skip
    return replace(base, verify=replace(base.verify, max_drop=max_drop))


def searcher(space: Space, trials: int, sampler: str, seed: int):
    """Optuna's sampler behind Ray Tune's searcher, the seeds (`Space.named_seeds`) asked first."""
    optuna = require("optuna", "scale", "tune's multi-objective sampler")
    from ray.tune.search.optuna import OptunaSearch

    population = max(4, min(8, trials // 2))
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(population_size=population, seed=seed),
        # multivariate + group: the space is conditional (prune -> distill_steps, static -> layers);
        # constant_liar: two workers asking at once got the same or next-door points (a trial wasted
        # on a cache hit, prune 70 % fp16 as ONNX and as TFLite side by side)
        "tpe": lambda: optuna.samplers.TPESampler(
            n_startup_trials=population, seed=seed, multivariate=True, group=True, constant_liar=True
        ),  # fmt: skip
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate, group
    seeds = list(space.named_seeds().values())[:trials]
    return OptunaSearch(space=space.sample, metric=list(OBJECTIVES), mode=list(OBJECTIVES.values()),
                        sampler=samplers[sampler](), points_to_evaluate=seeds)  # fmt: skip


def _run_search(job: dict, space: Space, trials: int, sampler: str, seed: int, out: Path) -> list[dict]:
    """Ray Tune with Optuna's sampler; the trials' records in the order they finished."""
    from ray import tune as ray_tune

    search = searcher(space, trials, sampler, seed)
    # Tune's own console tables and its TensorBoard/CSV loggers: the report is ours
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if job["time_budget_s"] is not None:
        # a trial reports once, at its end: at the budget Tune can only stop it by ending its actor,
        # which it does after this many seconds (default 600: ten minutes past the user's budget)
        os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "5")
    from ray.tune.logger import JsonLoggerCallback

    storage = Path(tempfile.mkdtemp(prefix=".tune-", dir=out))  # Ray Tune's bookkeeping, removed after
    try:
        tuner = ray_tune.Tuner(
            ray_tune.with_resources(ray_tune.with_parameters(_trial, job=job), {"cpu": 1}),
            tune_config=ray_tune.TuneConfig(
                search_alg=search, num_samples=trials, reuse_actors=True, time_budget_s=job["time_budget_s"]
            ),
            run_config=ray_tune.RunConfig(
                storage_path=str(storage), name="tune", verbose=0, callbacks=[JsonLoggerCallback()]
            ),  # fmt: skip
        )
        grid = tuner.fit()
        results = [r for r in grid if r.metrics and "record" in r.metrics]
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return [_trial_entry(r.metrics) for r in sorted(results, key=lambda r: r.metrics.get("timestamp", 0))]


def _trial_entry(metrics: dict) -> dict:
    record = metrics["record"]
    entry = {k: metrics[k] for k in (*OBJECTIVES, "feasible", "params", "recipe")}
    entry |= {"status": record["status"], "error": record.get("error"), "folder": record["folder"],
              "how": record.get("how"), "steps_cached": record.get("steps_cached"),
              "seconds": record.get("seconds")}  # fmt: skip
    if not entry["feasible"]:
        entry |= {k: None for k in OBJECTIVES}
    if record["status"] == "ok":
        artifact = record["artifacts"][0]
        entry["measured"] = {"score": _score(artifact), "p50_ms": artifact["p50_ms"],
                             "target_p50_ms": artifact["target_p50_ms"], "size_bytes": artifact["size_bytes"],
                             "precision": artifact["precision"], "format": artifact["format"]}  # fmt: skip
    return entry


def _score(artifact: dict):
    """The metric objective: the task metric on labelled eval data; else, for an embedding model, the
    mean cosine to the original's embeddings (their arg-max means nothing); else the arg-max agreement."""
    keys = ("score", "cosine", "agreement", "cosine_min")
    return next((artifact[k] for k in keys if artifact.get(k) is not None), None)


def _report(job: dict, trials: list[dict], space: Space, sampler: str, asked: int, wall: float) -> dict:
    seeds = space.named_seeds()
    for t in trials:  # which trials were seeded rather than sampled (a sampled repeat of a seed too)
        t["seed"] = next((name for name, params in seeds.items() if params == t["params"]), None)
    front = pareto_front(trials)
    for i, point in enumerate(front, 1):
        point["best"] = f"best-{i}.toml"
    presets = preset_standing(trials, front, space)
    return {
        "model": job["model"], "target": job["target"], "objectives": OBJECTIVES,
        "constraints": {"max_drop": job["base"]["verify"]["max_drop"], "latency_ms": job["latency_ms"]},
        "space": {"formats": list(space.formats), "layers": list(space.layers), "torch": space.torch,
                  "static": space.static, "search": space.search, "mcu": space.mcu,
                  "transformer": space.transformer},
        "sampler": sampler, "trials_asked": asked, "trials_run": len(trials),
        "time_budget_s": job.get("time_budget_s"),
        "feasible": sum(t["feasible"] for t in trials), "wall_s": round(wall, 1),
        "seeds": list(seeds)[:asked],
        "front": [{k: p[k] for k in (*OBJECTIVES, "params", "seed", "best", "folder")} for p in front],
        "presets": presets,
        "dominates_every_preset": [p["best"] for p in front
                                   if presets and all(p["best"] in r["dominated_by"] for r in presets.values())],
        "trials": trials,
    }  # fmt: skip


def preset_standing(trials: list[dict], front: list[dict], space: Space) -> dict:
    """For each preset the search ran (its first trials), its objectives and the front points that
    dominate it: the question a user asks of a search, did it beat what I would try by hand?
    Infeasible presets are left out (anything feasible beats them)."""
    standing = {}
    for name, params in space.named_presets().items():
        trial = next((t for t in trials if t["params"] == params and t["feasible"]), None)
        if trial is not None:
            standing[name] = {k: trial[k] for k in OBJECTIVES} | {
                "dominated_by": [p["best"] for p in front if dominates(p, trial)]
            }
    return standing


def _write_outputs(out: Path, report: dict) -> None:
    """report.json, report.html and one best-N.toml per front point, each written whole."""
    from .._io import atomic_path

    for stale in out.glob("best-*.toml"):
        stale.unlink()
    by_folder = {t["folder"]: t for t in report["trials"]}
    for point in report["front"]:
        with atomic_path(out / point["best"]) as tmp:
            tmp.write_text(Recipe.from_dict(by_folder[point["folder"]]["recipe"]).to_toml())
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(render_html(report))


def render_html(report: dict) -> str:
    """The Pareto front over all trials: latency (x, log) against the metric, marker area ~ size."""
    from html import escape

    from ..targets.svg import scatter

    front = {p["folder"] for p in report["front"]}

    def point(t: dict) -> dict:
        return {"x": t["latency_ms"], "y": t["score"], "size": t["size_kb"], "label": t.get("best", "")}

    series = {
        "Pareto front": [point(t) for t in report["trials"] if t["folder"] in front],
        "other feasible trials": [
            point(t) for t in report["trials"] if t["feasible"] and t["folder"] not in front
        ],
    }
    where = "measured on this machine" if report["target"] == "host" else "cost-model estimate"
    plot = scatter(series, f"p50 latency on {report['target']}, ms ({where})", "metric",
                   title=f"{Path(report['model']).name}: {report['trials_run']} trials")  # fmt: skip
    rows = "".join(
        f"<tr><td>{escape(p['best'])}</td><td>{p['score']:.2f}</td><td>{p['latency_ms']:.4f}</td>"
        f"<td>{p['size_kb']:.1f}</td><td><code>{escape(json.dumps(p['params'], sort_keys=True))}</code></td></tr>"
        for p in report["front"]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgesmith tune</title></head><body>"
        f"<h1>edgesmith tune: {escape(Path(report['model']).name)} for {escape(report['target'])}</h1>"
        f"<p>{report['trials_run']} trials ({report['feasible']} feasible) in {report['wall_s']} s; "
        f"max drop {report['constraints']['max_drop']}, latency budget {report['constraints']['latency_ms']}</p>"
        f"{plot}<table border='1' cellpadding='4'><tr><th>recipe</th><th>metric</th><th>latency ms</th>"
        f"<th>size KB</th><th>parameters</th></tr>{rows}</table></body></html>\n"
    )
