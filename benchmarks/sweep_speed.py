"""`edgesmith sweep` and `edgesmith tune` figures, measured side by side in one run.

1. 8 conversions (models/mnist_cnn.onnx x int8, int8-dynamic, fp16, fp32 x rpi4, pixel3a) one after
   another as `edgesmith convert` commands (a shell loop: each a new process), one after another in
   this process (Python API: the frameworks imported once), then as a sweep on a local Ray with 2
   workers (goal: <= 0.6x the wall time), then the same sweep again into a new folder with the
   cache warm (goal: >= 10x faster).
   Ray's start is timed apart: a sweep pays it once, and a cluster pays it never. A third sweep
   without the cache on the same (now warm) workers shows the cost of further batches. With
   --mnistnet, the same for ccexam's MNISTNet as a .pt2 (longer conversions: export from PyTorch).
2. The step cache: 3 conversions of models/mnist_cnn.pt2 sharing their pruning and distillation,
   without a cache, with a cold cache, and again (warm).
3. `tune` on models/mnist_cnn.onnx for rpi4 (~12 trials): the Pareto front against the presets
   int8, fp16 and int8-dynamic converted the same way; does one front point dominate every preset?

    .venv/bin/python benchmarks/sweep_speed.py [--trials 12] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "mnist_cnn.onnx"
CALIBRATION = ROOT / "calibration_data" / "mnist"
EVAL = CALIBRATION / "holdout.npz"
PRESETS = ["int8", "int8-dynamic", "fp16", "fp32"]
TARGETS = ["rpi4", "pixel3a"]


def cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?"
    )


def one_after_another(tasks, out: Path) -> float:
    """The baseline: the same conversions with the Python API, in a loop, without Ray or cache."""
    import edgesmith
    from edgesmith.converter.recipe import Recipe

    started = time.perf_counter()
    for task in tasks:
        edgesmith.convert(
            task.model, recipe=Recipe.from_dict(task.recipe), out=out / Path(task.out).name, quiet=True
        )
    return time.perf_counter() - started


def one_command_after_another(tasks, out: Path) -> float:
    """What a user without `sweep` runs: `edgesmith convert --recipe` once per conversion, in a shell
    loop, each a new process that imports the frameworks again (the recipes are the tasks' own)."""
    from edgesmith.converter.recipe import Recipe

    out.mkdir(parents=True)
    for i, task in enumerate(tasks):
        (out / f"{i}.toml").write_text(Recipe.from_dict(task.recipe).to_toml())
    started = time.perf_counter()
    for i, task in enumerate(tasks):
        cmd = [sys.executable, "-m", "edgesmith", "convert", "--recipe", str(out / f"{i}.toml"),
               "--out", str(out / Path(task.out).name), "--quiet"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


def sweeps(work: Path, model: Path = MODEL) -> dict:
    from edgesmith.scale import sweep as sw

    tasks = sw.plan([str(model)], [], PRESETS, TARGETS, work / "cold", str(CALIBRATION), str(EVAL))
    commands = one_command_after_another(tasks, work / "commands")
    serial = one_after_another(tasks, work / "serial")
    started = time.perf_counter()
    ray = sw.start_ray(None, 2)
    ray_start = time.perf_counter() - started
    cold = sw.sweep(tasks, work / "cold")
    warm_tasks = sw.plan([str(model)], [], PRESETS, TARGETS, work / "warm", str(CALIBRATION), str(EVAL))
    warm = sw.sweep(warm_tasks, work / "warm")
    # the same 8 conversions again without the cache, on the workers that have imported everything:
    # what each further batch of a long sweep costs
    again_tasks = sw.plan([str(model)], [], PRESETS, TARGETS, work / "again", str(CALIBRATION), str(EVAL))
    again = sw.sweep(again_tasks, work / "again", use_cache=False)
    assert cold["counts"]["ok"] == warm["counts"]["ok"] == len(tasks), (cold["counts"], warm["counts"])
    assert {r["how"] for r in warm["results"]} == {"cached"}
    identical = all(
        a["sha256"] == b["sha256"]
        for x, y in zip(cold["results"], warm["results"], strict=True)
        for a, b in zip(x["artifacts"], y["artifacts"], strict=True)
    )
    ray.shutdown()
    return {
        "model": model.name, "conversions": len(tasks), "one_after_another_s": round(serial, 1), "ray_start_s": round(ray_start, 1),
        "sweep_2_workers_s": cold["wall_s"], "ratio_sweep_vs_serial": round(cold["wall_s"] / serial, 2),
        "one_command_after_another_s": round(commands, 1),
        "ratio_sweep_vs_commands": round(cold["wall_s"] / commands, 2),
        "ratio_sweep_with_ray_start_vs_commands": round((cold["wall_s"] + ray_start) / commands, 2),
        "sweep_2_warm_workers_no_cache_s": again["wall_s"],
        "ratio_warm_workers_vs_serial": round(again["wall_s"] / serial, 2),
        "warm_cache_s": warm["wall_s"], "speedup_warm_vs_cold": round(cold["wall_s"] / warm["wall_s"], 1),
        "warm_artifacts_identical": identical,
        "why": {"cold": task_seconds(cold["results"]), "warm_workers": task_seconds(again["results"])},
    }  # fmt: skip


def task_seconds(records: list[dict]) -> dict:
    """Where a sweep's time goes: each worker's first task (it imports the frameworks) against the
    others, and the sum of the tasks' own times (more than the serial loop's: the workers competed)."""
    firsts, others, seen = [], [], set()
    for r in sorted(records, key=lambda r: r["started"]):
        (others if r["pid"] in seen else firsts).append(r["seconds"])
        seen.add(r["pid"])
    return {"workers": len(seen), "first_task_s": [round(x, 1) for x in firsts],
            "other_tasks_mean_s": round(sum(others) / max(1, len(others)), 2),
            "sum_of_tasks_s": round(sum(r["seconds"] for r in records), 1)}  # fmt: skip


def shared_prefix(work: Path) -> dict:
    """What trials sharing a prefix of steps save (the PyTorch step cache): models/mnist_cnn.pt2 with the
    same pruning (50 % of the MACs) and distillation (100 steps), then dynamic INT8, fp16 or no
    quantization: one after another through `run_task` (no Ray) without a cache, then with a cold
    cache (the first conversion computes the steps, the others load them), then again into new
    folders (whole conversions from the cache: a warm re-run)."""
    from dataclasses import replace

    from edgesmith.converter import build_recipe
    from edgesmith.converter.steps.distill import DistillConfig
    from edgesmith.converter.steps.prune import PruneConfig
    from edgesmith.converter.steps.quantize import QuantizeConfig
    from edgesmith.scale.sweep import Task, run_task

    model = MODEL.with_suffix(".pt2")
    base = build_recipe(None, "fp32", str(CALIBRATION), str(EVAL), model=str(model))
    prefix = [PruneConfig(target_macs=0.5), DistillConfig(epochs=1, min_steps=100, lr=2e-3)]
    recipes = {mode: replace(base, steps=prefix + ([QuantizeConfig(mode=mode)] if mode else []))
               for mode in ("dynamic", "fp16", None)}  # fmt: skip

    def run_all(name: str, cache: Path | None) -> tuple[float, list[dict]]:
        started, records = time.perf_counter(), []
        for mode, recipe in recipes.items():
            task = Task(str(model), str(mode), recipe.to_dict(), None, str(work / name / str(mode)))
            records.append(run_task(task, str(cache) if cache else None))
            assert records[-1]["status"] == "ok", records[-1]
        return time.perf_counter() - started, records

    plain, plain_records = run_all("prefix-no-cache", None)
    cold, cold_records = run_all("prefix-cold-cache", work / "prefix-cache")
    warm, warm_records = run_all("prefix-warm-cache", work / "prefix-cache")
    identical = (
        [a["sha256"] for r in plain_records for a in r["artifacts"]]
        == [a["sha256"] for r in cold_records for a in r["artifacts"]]
        == [a["sha256"] for r in warm_records for a in r["artifacts"]]
    )
    return {
        "conversions": len(recipes), "no_cache_s": round(plain, 1), "step_cache_cold_s": round(cold, 1),
        "ratio_step_cache_vs_no_cache": round(cold / plain, 2),
        "per_conversion_s": {"no_cache": [r["seconds"] for r in plain_records],
                             "step_cache": [r["seconds"] for r in cold_records]},
        "steps_from_the_cache": [r["steps_cached"] for r in cold_records],
        "warm_rerun_s": round(warm, 2), "speedup_warm_rerun_vs_no_cache": round(plain / warm, 1),
        "artifacts_identical": identical,
    }  # fmt: skip


def tune_vs_presets(work: Path, trials: int, sampler: str) -> dict:
    from edgesmith.scale import sweep as sw
    from edgesmith.scale.tune import dominates, objectives, tune

    presets = sw.plan([str(MODEL)], [], ["int8", "fp16", "int8-dynamic"], ["rpi4"], work / "presets",
                      str(CALIBRATION), str(EVAL))  # fmt: skip
    preset_points = {}
    for task in presets:
        record = sw.run_task(task, os.environ["EDGESMITH_CACHE"])
        preset_points[task.label] = objectives(record, "rpi4", None)
    report = tune(
        str(MODEL),
        "rpi4",
        work / "tuned",
        1.0,
        None,
        trials,
        str(EVAL),
        str(CALIBRATION),
        workers=2,
        sampler=sampler,
    )
    front = report["front"]
    per_preset = {
        name: [p["best"] for p in front if dominates(p, point)] for name, point in preset_points.items()
    }
    one_for_all = [p["best"] for p in front if all(dominates(p, point) for point in preset_points.values())]
    return {
        "trials": report["trials_run"], "feasible": report["feasible"], "wall_s": report["wall_s"],
        "front": [{k: p[k] for k in ("best", "score", "latency_ms", "size_kb", "params")} for p in front],
        "sampler": sampler, "trials_tried": [_trial_row(t) for t in report["trials"]],
        "presets": preset_points, "dominated_by": per_preset, "dominates_every_preset": one_for_all,
    }  # fmt: skip


def _trial_row(t: dict) -> str:
    """One trial in a line: its parameters and objectives (or why it was infeasible)."""
    params = ",".join(f"{k}={v}" for k, v in sorted(t["params"].items()))
    if not t["feasible"]:
        return f"{params}: infeasible ({t['status']}{': ' + t['error'][:80] if t['error'] else ''})"
    return f"{params}: {t['score']:.2f}, {t['latency_ms']:.4f} ms, {t['size_kb']:.1f} KB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sampler", choices=("nsga2", "tpe"), default="tpe")
    parser.add_argument("--skip-sweep", action="store_true", help="only the tune figures")
    parser.add_argument(
        "--mnistnet",
        action="store_true",
        help="also sweep ccexam's MNISTNet (.pt2 with a dynamic batch): longer conversions",
    )
    parser.add_argument("--skip-tune", action="store_true", help="only the sweep figures")
    parser.add_argument("--skip-prefix", action="store_true", help="no shared-prefix (step cache) figure")
    parser.add_argument(
        "--only-prefix", action="store_true", help="only the shared-prefix (step cache) figure"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as tmp:
        work = Path(tmp)
        os.environ["EDGESMITH_CACHE"] = str(work / "cache")  # a cold cache, inherited by the workers
        result = {"cpu": cpu(), "cores": os.cpu_count(), "load_before": os.getloadavg()}
        if not args.skip_prefix:
            result["shared_prefix"] = shared_prefix(work)
        if not args.skip_sweep and not args.only_prefix:
            result["sweep"] = sweeps(work)
            if args.mnistnet:  # the same 8 conversions of a larger third-party model, from its .pt2
                from common import mnistnet_pt2

                result["sweep_mnistnet"] = sweeps(work / "mnistnet", mnistnet_pt2(work))
        if not args.skip_tune and not args.only_prefix:
            result["tune"] = tune_vs_presets(work, args.trials, args.sampler)
        result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
