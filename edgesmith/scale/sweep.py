"""Convert many models with many recipes for many targets, each conversion an independent Ray task.

A task is `edgesmith.convert` into its own sub-folder of the sweep's output folder, and returns a
small record (what was made, its metric, size and latency, or the one-line error). Nothing a task
does can stop another: errors come back as records, and a worker that dies (killed, out of memory)
has its task retried by Ray (`max_retries`); the converter's all-or-nothing output folder makes a
retry start clean. A sweep that crashed resumes: a task whose sub-folder already holds a report.json
of the same recipe (hash) and the same model bytes is not run again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..converter import build_recipe
from ..converter.handle import sha256
from ..converter.recipe import Recipe
from ..errors import EdgesmithError, InputError
from .cache import Cache, cache_dir, clean_partials, recipe_hash
from .cache import key as cache_key

MAX_RETRIES = 3  # a task whose worker died is run again up to this many times


@dataclass(frozen=True)
class Task:
    """One conversion: a model, a recipe (a file's or a preset's) and a target, into `out`."""

    model: str
    label: str  # the recipe's name in the summary: a file stem or a preset name
    recipe: dict  # the resolved recipe (Recipe.to_dict()): plain data, cheap to send to a worker
    target: str | None
    out: str

    @property
    def recipe_sha256(self) -> str:
        return recipe_hash(Recipe.from_dict(self.recipe))


def plan(models: list[str], recipes: list[str], presets: list[str], targets: list[str], out: Path,
         calibration: str | None = None, evaluation: str | None = None) -> list[Task]:  # fmt: skip
    """Every model x recipe x target, with absolute paths (a worker's folder is not the caller's)."""
    if not models:
        raise InputError("no MODEL given: pass one or more model files")
    if not recipes and not presets:
        raise InputError("no recipe: pass --recipe R.toml or --preset NAME (repeatable)")
    choices = [(Path(r).stem, os.path.abspath(r), None) for r in recipes] + [(p, None, p) for p in presets]
    labels = [label for label, _, _ in choices]
    if len(set(labels)) != len(labels):
        raise InputError(f"two recipes share the name '{_first_dup(labels)}'; rename one of the files")
    stems = [Path(m).stem for m in models]
    if len(set(stems)) != len(stems):
        raise InputError(f"two models share the name '{_first_dup(stems)}'; sub-folders would collide")
    from ..converter.frontends import kind_of

    for model in models:  # a missing file or unknown format is bad input: fail before Ray starts
        kind_of(model)
    tasks = []
    per_target: list[str | None] = [*targets] or [None]  # no target: one task without
    for model in models:
        for label, path, preset in choices:
            for target in per_target:
                recipe = build_recipe(
                    path, preset, _abs(calibration), _abs(evaluation), model=os.path.abspath(model),
                    targets=[target] if target else None,
                )  # fmt: skip
                name = "--".join([Path(model).stem, label] + ([target] if target else []))
                tasks.append(Task(os.path.abspath(model), label, recipe.to_dict(), target, str(out / name)))
    return tasks


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def _first_dup(names: list[str]) -> str:
    return next(n for n in names if names.count(n) > 1)


def run_task(task: Task, cache: str | None = None) -> dict:
    """Convert one task (or take it from a finished earlier run, or the cache folder `cache`, None
    for no cache). Never raises for a problem of this task: the record says what went wrong, in one
    line. The caller names the cache: a worker on another node has another home folder."""
    started = time.perf_counter()
    record: dict[str, Any] = {"model": task.model, "recipe": task.label, "target": task.target, "folder": task.out,
              "recipe_sha256": task.recipe_sha256, "pid": os.getpid(), "started": round(time.time(), 3)}  # fmt: skip
    try:
        report, how, steps_cached = _converted(task, cache)
        record |= {"status": "ok", "how": how, "steps_cached": steps_cached,
                   "artifacts": artifact_rows(report, task.target)}  # fmt: skip
    except EdgesmithError as exc:  # bad input or verification failed: the user's one line
        record |= {"status": "failed" if exc.exit_code == 1 else "error", "error": _one_line(exc)}
    except Exception as exc:  # a bug in edgesmith or a framework: still one line; others go on
        record |= {"status": "error", "error": f"internal error: {type(exc).__name__}: {_one_line(exc)}"}
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _converted(task: Task, cache_root: str | None) -> tuple[dict, str, list[str]]:
    """The task's report, how it was obtained ('resumed', 'cached' or 'converted') and the kinds of
    the PyTorch steps whose results came from the step cache."""
    from .. import convert
    from ..converter import step_cache
    from ..converter.pipeline import input_paths

    out, model = Path(task.out), Path(task.model)
    done = finished_report(out, task.recipe_sha256, model)
    if done is not None:
        return done, "resumed", []
    recipe = Recipe.from_dict(task.recipe)
    cache = Cache(Path(cache_root)) if cache_root else None
    if cache is not None:
        model_key = cache_key(model, recipe)
        entry = cache.lookup(model_key)
        if entry is not None:
            return cache.restore(entry, out, input_paths(recipe, model)), "cached", []
    with step_cache.using(cache.steps() if cache is not None else None) as steps:
        report = convert(task.model, recipe=recipe, out=out, force=True, quiet=True)
    if cache is not None:
        cache.store(model_key, out)
    return report, "converted", steps["hits"]


def finished_report(out: Path, recipe_sha: str, model: Path) -> dict | None:
    """The report of an earlier run of the same task in `out`, if it finished (report.json is
    written last, and the folder is committed whole), else None."""
    try:
        report = json.loads((out / "report.json").read_text())
        same_recipe = recipe_hash(Recipe.from_dict(report["recipe"])) == recipe_sha
        same_model = report["source"]["sha256"] == sha256(model)
    except (OSError, ValueError, KeyError, TypeError, EdgesmithError):
        return None
    return report if same_recipe and same_model else None


def artifact_rows(report: dict, target: str | None) -> list[dict]:
    """What the summary shows of each artifact: small, so results travel cheaply back from workers."""
    rows = []
    for a in report["artifacts"]:
        verify, targets = a.get("verify") or {}, a.get("targets") or {}
        estimate = targets.get(target) if target else next(iter(targets.values()), None)
        rows.append({
            "file": Path(a["path"]).name, "format": a["format"], "precision": a["precision"],
            "metric": verify.get("metric"), "score": verify.get("artifact"), "drop": verify.get("drop"),
            "agreement": verify.get("agreement"), "cosine": verify.get("cosine"),
            "cosine_min": verify.get("cosine_min"), "size_bytes": a["size_bytes"], "sha256": a.get("sha256"),
            "p50_ms": (a.get("latency") or {}).get("p50_ms"),
            "target_p50_ms": (estimate or {}).get("p50_ms"),
        })  # fmt: skip
    return rows


# -- Ray -----------------------------------------------------------------------------------------


def start_ray(address: str | None, workers: int | None):
    """A local Ray with no set-up (no dashboard, worker logs kept out of the terminal), or the
    cluster at `address`."""
    from ..errors import require

    ray = require("ray", "scale", "sweep and tune run their conversions as Ray tasks")
    if ray.is_initialized():
        return ray
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:  # its nodes must import this edgesmith and see the same paths (a shared file system)
        ray.init(address=address, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": thread_limits(1)})  # fmt: skip
    else:
        cores = os.cpu_count() or 1
        workers = workers or cores
        env = {"env_vars": thread_limits(max(1, cores // workers))}
        # Ray starts its workers at niceness 15 (its control plane first); here the workers are the
        # job, and at 15 on a machine shared with other work they got a few % of a core each
        ray.init(num_cpus=workers, runtime_env=env, _system_config={"worker_niceness": 0}, **quiet)
    return ray


def thread_limits(threads: int) -> dict[str, str]:
    """Environment variables that keep each worker's kernels to `threads` threads: a task holds one
    CPU of the cluster (or cores / workers of this machine), and two workers whose ONNX Runtime,
    OpenVINO, torch and TensorFlow each start a thread per core would fight over the same cores."""
    from ..runtime import THREADS_ENV

    names = [
        THREADS_ENV,
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
    ]
    return {name: str(threads) for name in names} | {"TF_NUM_INTEROP_THREADS": "1"}


def run_tasks(tasks: list[Task], cache: str | None = None, on_result=None) -> list[dict]:
    """Run every task as a Ray task (one CPU each); records come back in the tasks' order."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(run_task)
    pending = {remote.remote(task, cache): i for i, task in enumerate(tasks)}
    records: dict[int, dict] = {}  # by the task's index: they finish in any order
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready[0])
        records[index] = _record_of(ray, ready[0], tasks[index])
        if on_result is not None:
            on_result(records[index])
    return [records[i] for i in range(len(tasks))]


def _record_of(ray, ref, task: Task) -> dict:
    """A task's record; a task Ray gave up on (its worker died every time) becomes an error record."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        return {"model": task.model, "recipe": task.label, "target": task.target, "folder": task.out,
                "recipe_sha256": task.recipe_sha256, "status": "error",
                "error": f"the worker died {MAX_RETRIES + 1} times: {_one_line(exc)}"}  # fmt: skip


def sweep(tasks: list[Task], out: Path, address: str | None = None, workers: int | None = None,
          use_cache: bool = True, on_result=None) -> dict:  # fmt: skip
    """Run the tasks and write `out/report.json` (atomically); returns that report."""
    from .._io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ray = start_ray(address, workers)
    if use_cache:
        clean_partials(cache_dir())  # what killed writers left, an hour or more ago
    records = run_tasks(tasks, str(cache_dir()) if use_cache else None, on_result)
    report = {
        "sweep": {
            "tasks": len(tasks),
            "cluster_cpus": ray.cluster_resources().get("CPU"),
            "address": address,
            "cache": use_cache,
        },  # fmt: skip
        "wall_s": round(time.perf_counter() - started, 3),
        "counts": {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "error")},
        "results": records,
    }
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary_rows(records: list[dict]) -> list[list[str]]:
    """The sweep's table: one row per artifact of the tasks that succeeded (see `error_lines`)."""
    table = [["model", "recipe", "target", "precision", "metric", "min cos", "size", "p50 ms", "est. p50 ms"]]
    for r in records:
        head = [Path(r["model"]).name, r["recipe"], r["target"] or "-"]
        for a in r.get("artifacts") or []:
            metric = "-" if a["score"] is None else f"{a['metric']} {a['score']:.2f}"
            table.append(head + [a["precision"], metric, _fmt(a["cosine_min"], "{:.4f}"),
                                 f"{a['size_bytes'] / 1024:.1f} KB", _fmt(a["p50_ms"], "{:.3f}"),
                                 _fmt(a["target_p50_ms"], "{:.3f}")])  # fmt: skip
    return table


def _fmt(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def error_lines(records: list[dict]) -> list[str]:
    """One line per task that did not succeed: which one, and its one-line error."""
    return [f"{Path(r['model']).name} / {r['recipe']} / {r['target'] or '-'}: {r['status']}: {r['error']}"
            for r in records if r["status"] != "ok"]  # fmt: skip
