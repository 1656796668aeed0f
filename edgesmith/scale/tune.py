"""Search recipes for a device: Optuna proposes, Ray Tune runs the trials, each trial a conversion.

A trial is a recipe built from the sampled parameters, converted like any sweep task (so it shares
the conversion cache and the one-line errors), and scored on three objectives: the metric on the
eval data (higher is better), the latency on the target (the cost model's estimate from the recipe's
`[profile] targets`, or measured on this machine for the target `host`) and the artifact's size. A
trial is feasible when it passed verification with `[verify] max_drop` (the recipe carries it, so
a run over budget fails like `convert` would) and is under `--latency-ms`. The Pareto front of the
feasible trials is the result, each point written as a `best-N.toml` that replays with
`edgesmith convert --recipe`.

The space, what a recipe can vary, and the recipe each point stands for are in `space.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ..converter import build_recipe, metrics
from ..converter.recipe import Recipe
from ..errors import InputError, require
from .cache import cache_dir
from .deadline import run_within
from .device import Device, measured
from .space import Space, recipe_for, space_for
from .sweep import Task, run_task

OBJECTIVES = {"score": "max", "latency_ms": "min", "size_kb": "min"}
WORST = {"score": -1.0, "latency_ms": 1e9, "size_kb": 1e9}  # what an infeasible trial reports to the sampler
DRAWS = 20  # draws the searcher makes for a trial before it accepts a point already run


def objectives(record: dict, target: str, latency_budget: float | None) -> dict:
    """The trial's objectives and whether it is feasible (verified within max_drop, in budget)."""
    if record["status"] != "ok":
        return {**WORST, "feasible": False}
    artifact = record["artifacts"][0]
    latency = artifact.get("device_p50_ms")  # measured on the --ssh/--adb device
    if latency is None:
        latency = artifact["p50_ms"] if target == "host" else artifact["target_p50_ms"]
    values = {"score": _score(artifact), "latency_ms": latency, "size_kb": artifact["size_bytes"] / 1024}
    feasible = None not in values.values() and (latency_budget is None or latency <= latency_budget)
    return {**values, "feasible": feasible} if feasible else {**WORST, "feasible": False}


def dominates(a: dict, b: dict, tolerance: float = 0.0) -> bool:
    """a is at least as good as b in every objective and better in one. With `tolerance`, scores that
    differ by up to that many points count as equal (additive epsilon-dominance on the metric): a
    metric measured on a few hundred samples does not rank two points 0.08 apart."""
    tol = {"score": tolerance}
    better = [
        (a[k] >= b[k] - tol.get(k, 0)) if mode == "max" else (a[k] <= b[k]) for k, mode in OBJECTIVES.items()
    ]
    strictly = [
        (a[k] > b[k] + tol.get(k, 0)) if mode == "max" else (a[k] < b[k]) for k, mode in OBJECTIVES.items()
    ]
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
        recipe = recipe_for(params, base, space, job.get("train"))
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
    task = Task(job["model"], name, recipe.to_dict(), job["target"], folder)
    if job.get("trial_timeout_s") is None:
        record = run_task(task, job["cache"])
    else:  # in a process of its own, killed at the limit (Tune cannot stop a trial that never reports)
        record = run_within(task, job["cache"], job["trial_timeout_s"])
    if job.get("device"):
        record = measured(record, Device(**job["device"]))
    scores = objectives(record, job["target"], job["latency_ms"])
    tune.report({**scores, "params": params, "recipe": recipe.to_dict(), "record": record})


def tune(model: str, target: str, out: Path, max_drop: float, latency_ms: float | None = None,
         trials: int = 12, evaluation: str | None = None, calibration: str | None = None,
         address: str | None = None, workers: int | None = None, use_cache: bool = True,
         sampler: str = "tpe", seed: int = 0, metric: str | None = None,
         time_budget_s: float | None = None, train: str | None = None, tolerance: float = 0.0,
         trial_timeout_s: float | None = None, device: Device | None = None) -> dict:  # fmt: skip
    """Search, then write report.json, report.html and best-N.toml into `out`; returns the report.
    With `time_budget_s`, trials still running when it is spent are stopped and the report holds
    those that finished. Pruned models are distilled on `train` (default: the calibration data).
    `tolerance`: metric points within which the front and the presets count as equally accurate.
    `trial_timeout_s`: a trial still converting after that long is stopped (status `stopped`).
    `device`: the latency objective is measured there (over SSH or adb), one trial at a time."""
    model_path = Path(model).absolute()
    space = space_for(model_path, target, calibration, train)
    base = base_recipe(model_path, target, max_drop, evaluation, calibration, metric)
    metrics.resolve(base.verify.metric)  # a user's function that does not import fails before Ray starts
    if device is not None:
        device.check()  # unreachable: one line now, not a failed measurement in every trial
    if space.torch and not calibration:
        raise InputError("pruning a PyTorch model needs data to distill on: pass --calibration PATH")
    if train is not None:
        if not (space.torch or space.transformer):
            raise InputError("--train-data is what pruned models are distilled on, and this model is not "
                             "pruned (an ONNX/TFLite source, or an encoder without --calibration): drop it")  # fmt: skip
        train = check_train_data(train, space)
    out.mkdir(parents=True, exist_ok=True)
    job = {"model": str(model_path), "target": target, "out": str(out), "latency_ms": latency_ms,
           "time_budget_s": time_budget_s, "train": train, "tolerance": tolerance,
           "trial_timeout_s": trial_timeout_s, "device": None if device is None else dataclasses.asdict(device),
           "cache": str(cache_dir()) if use_cache else None, "base": base.to_dict(), "space": space.__dict__}  # fmt: skip
    from .sweep import start_ray

    started = time.perf_counter()
    start_ray(address, workers)
    results = _run_search(job, space, trials, sampler, seed, out)
    report = _report(job, results, space, sampler, trials, time.perf_counter() - started)
    _write_outputs(out, report)
    return report


def check_train_data(train: str, space: Space) -> str:
    """`train` as an absolute path, after the checks the distill step would make in every pruned trial
    (an InputError now instead of the same failure in each): a PyTorch model's is an .npz of inputs,
    an encoder's a .txt of sentences or an .npz of token arrays."""
    path = Path(train)
    if not path.is_file():
        raise InputError(f"--train-data {train}: no such file")
    if space.torch:
        from ..converter.steps.binarize import load_training_data

        load_training_data(path, "--train-data")  # one input array (and maybe labels), readable
    elif path.suffix.lower() not in (".txt", ".npz"):
        from ..converter.steps.torch_steps import TEXT_DATA

        raise InputError(f"--train-data {train}: an encoder is distilled on {TEXT_DATA}")
    return str(path.absolute())


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

    class Distinct(OptunaSearch):
        """Never a point a finished trial ran: in a small categorical space TPE redraws them (8 of 24
        draws in the MCU space of models/mnist_cnn.pt2), each a trial of the budget spent on a cache
        hit. Such a draw is told the finished trial's objectives at once, and another is asked."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.done: dict[str, list] = {}  # a point (its parameters, as JSON) -> its objectives
            self.asked: dict[str, str] = {}  # trial id -> its point

        def suggest(self, trial_id: str):
            for _ in range(DRAWS):
                config = super().suggest(trial_id)
                point = json.dumps(config, sort_keys=True)
                if point not in self.done or not hasattr(self, "_ot_trials"):
                    break
                self._ot_study.tell(self._ot_trials.pop(trial_id), self.done[point])  # Optuna learns it again
            self.asked[trial_id] = point  # after DRAWS repeats the space is spent: run it (a cache hit)
            return config

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            if result and all(k in result for k in OBJECTIVES) and trial_id in self.asked:
                self.done[self.asked[trial_id]] = [result[k] for k in OBJECTIVES]
            super().on_trial_complete(trial_id, result, error)

    return Distinct(space=space.sample, metric=list(OBJECTIVES), mode=list(OBJECTIVES.values()),
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
                             "target_p50_ms": artifact["target_p50_ms"], "device_p50_ms": artifact.get("device_p50_ms"),
                             "size_bytes": artifact["size_bytes"],
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
    tolerance = job.get("tolerance", 0.0)
    presets = preset_standing(trials, front, space, tolerance)
    return {
        "model": job["model"], "target": job["target"], "objectives": OBJECTIVES,
        "constraints": {"max_drop": job["base"]["verify"]["max_drop"], "latency_ms": job["latency_ms"]},
        "tolerance": tolerance,
        "space": {"formats": list(space.formats), "layers": list(space.layers), "torch": space.torch,
                  "static": space.static, "search": space.search, "mcu": space.mcu,
                  "transformer": space.transformer, "weight_only": space.weight_only,
                  "matmuls": space.matmuls, "trained": space.trained},
        "sampler": sampler, "trials_asked": asked, "trials_run": len(trials),
        "time_budget_s": job.get("time_budget_s"), "trial_timeout_s": job.get("trial_timeout_s"),
        "device": job.get("device") and Device(**job["device"]).name,  # where latency was measured, if not estimated
        "feasible": sum(t["feasible"] for t in trials), "wall_s": round(wall, 1),
        "seeds": list(seeds)[:asked],
        "front": [{k: p[k] for k in (*OBJECTIVES, "params", "seed", "best", "folder")} for p in front],
        "presets": presets,
        "dominates_every_preset": [p["best"] for p in front
                                   if presets and all(p["best"] in r["dominated_by"] for r in presets.values())],
        "trials": trials,
    }  # fmt: skip


def preset_standing(trials: list[dict], front: list[dict], space: Space, tolerance: float = 0.0) -> dict:
    """For each preset the search ran (its first trials), its objectives and the front points that
    dominate it (metrics within `tolerance` points counting as equal): the question a user asks of a
    search, did it beat what I would try by hand? Infeasible presets are left out (anything feasible
    beats them). The front itself is strict: its most accurate point stays on it."""
    standing = {}
    for name, params in space.named_presets().items():
        trial = next((t for t in trials if t["params"] == params and t["feasible"]), None)
        if trial is not None:
            standing[name] = {k: trial[k] for k in OBJECTIVES} | {
                "dominated_by": [p["best"] for p in front if dominates(p, trial, tolerance)]
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
    where = f"measured on {report['device']}" if report.get("device") else where
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
