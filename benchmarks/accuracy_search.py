"""Accuracy-aware static INT8 (converter/accuracy.py) on all-MiniLM-L6-v2 (STS-B) and the shipped MNIST CNN.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/accuracy_search.py [--max-drop 1.0] [--json out.json]

MiniLM: the Hugging Face folder is exported to fp32 ONNX by the pipeline, then quantized by the
pipeline's quantize step (ONNX Runtime, QDQ, u8/s8 per-channel, minmax on 256 STS-B train sentences):
- "all ops": everything ONNX Runtime quantizes (what the search starts from);
- "transformer rule": quantize's default for transformers (MatMul/Gemm only, no budget given);
- "search": accuracy.run with max_drop = 1.0 Spearman points, the metric measured on the first 400
  STS-B *dev* pairs (the test set is never seen by the search).
Each is scored on the full STS-B test set (1,379 pairs; Spearman x 100 of embedding cosines, the
original scores 82.03) and timed with ONNX Runtime at batch 1, sequence length 128, one thread
(interleaved, calling thread's CPU time: `time_ort` from minilm_prune.py). The search's wall time is
what it took on this machine's cores.

MNIST: the shipped CNN, calibration_data/mnist, budget min_cosine on holdout.npz (INT8 of this model
loses no top-1, so a cosine budget is what makes it search).
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_prune import MODEL, STSB, log, time_ort

from edgesmith.converter import accuracy, budget
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.data.stsb import read_sts, spearman
from edgesmith.converter.frontends import hf_frontend
from edgesmith.converter.pipeline import run
from edgesmith.converter.recipe import CalibrationConfig, Recipe
from edgesmith.converter.steps import StepContext
from edgesmith.converter.steps.quantize import QuantizeConfig
from edgesmith.runtime import load

ROOT = Path(__file__).resolve().parents[1]


def sts_scorer(tokenize, pairs, batch: int = 32):
    """`path -> Spearman x 100` on sentence `pairs` (a, b, gold)."""

    def score(path: Path) -> float:
        session = load(path, exact=True)

        def embed(sentences):
            return np.concatenate([next(iter(session.run(tokenize(sentences[i : i + batch])).values()))
                                   for i in range(0, len(sentences), batch)])  # fmt: skip

        return round(spearman(embed(pairs[0]), embed(pairs[1]), pairs[2]), 2)

    return score


def minilm(args, tmp: Path) -> dict:
    tokenize = hf_frontend.tokenizer_for(MODEL)
    test, dev = read_sts(STSB / "sts-test.csv"), read_sts(STSB / "sts-dev.csv")
    dev = tuple(x[: args.dev_pairs] for x in dev)
    train_a, train_b, _ = read_sts(STSB / "sts-train.csv")
    calibration = sorted(set(train_a + train_b))[::37][: args.calibration]  # spread over the set
    np.savez(tmp / "calibration.npz", **tokenize(calibration))
    fp32 = tmp / "fp32" / "model.fp32.onnx"
    if not fp32.is_file():  # --work keeps it (and the calibration cache) for the next run
        report = run(Recipe.from_dict({"profile": {"enabled": False}}), str(MODEL), tmp / "fp32", quiet=True)
        fp32 = Path(report["artifacts"][0]["path"])
    inputs = load(fp32).inputs
    cal = ArraySource(tmp / "calibration.npz", inputs, "calibration", args.calibration, 16, None)
    ctx = StepContext(tmp, lambda: cal, CalibrationConfig(path=str(tmp / "calibration.npz")), quiet=True)
    config = QuantizeConfig()
    dev_score, test_score = sts_scorer(tokenize, dev), sts_scorer(tokenize, test)
    fp32_dev = args.fp32_dev or dev_score(fp32)
    log(f"fp32: dev {fp32_dev}")

    started = time.perf_counter()
    # --start rule: search from the transformer rule (MatMul/Gemm only) instead of every op
    float_model, quantize_with = budget.step_quantizer(config, fp32, ctx, everything=args.start == "all")

    def evaluate(path: Path) -> dict:
        score = dev_score(path)
        return {"score": score, "metric": "spearman (STS-B dev)", "drop": round(fp32_dev - score, 2)}

    def latency(path: Path) -> float:
        return time_ort({"x": path}, args.search_runs)["x"]

    search = accuracy.Search(
        quantize_with, evaluate, accuracy.Budget(max_drop=args.max_drop), float_model,
        lambda: _first(cal, args.sqnr_samples), latency, probe=args.probe, log=log,
    )  # fmt: skip
    outcome = accuracy.run(search)
    wall = time.perf_counter() - started
    log(
        json.dumps({**outcome, "sensitivity": outcome["sensitivity"][:15], "wall_s": round(wall, 1)})
    )  # before scoring
    everything = next(c for c in outcome["candidates"] if not c["float_nodes"])
    paths = {
        "fp32": fp32,
        f"start ({args.start})": quantize_with([]),
        "search": quantize_with(outcome["float_nodes"]),
    }
    p50 = time_ort(paths, args.runs)
    results = {}
    for name, path in paths.items():
        results[name] = {"spearman_test": args.fp32_test if name == "fp32" and args.fp32_test else test_score(path), "p50_ms": p50[name],
                         "speedup": round(p50["fp32"] / p50[name], 2), "size_bytes": path.stat().st_size}  # fmt: skip
        log(f"{name}: {results[name]}")
    results["search"].update(
        float_nodes=outcome["float_nodes"], float_layers=len(outcome["float_nodes"]),
        search_wall_s=round(wall, 1), candidates=outcome["candidates"], dev_start=everything["score"],
    )  # fmt: skip
    results["fp32"]["spearman_dev"] = fp32_dev
    results["sensitivity_top10"] = outcome["sensitivity"][:10]
    return results


def _first(source: ArraySource, samples: int):
    """The first `samples` calibration samples, in batches of 4 (the SQNR pass holds every tensor)."""
    for i in range(0, samples, 4):
        yield {k: v[:4] for k, v in source.batch(i // 4, 4).items()}


def mnist(tmp: Path) -> dict:
    """The shipped CNN through `edgesmith convert` with a cosine budget the all-INT8 model misses."""
    recipe = tmp / "mnist.toml"
    recipe.write_text(f"""[calibration]
path = "{ROOT / 'calibration_data/mnist'}"
[[steps]]
kind = "quantize"
search = "auto"
[verify]
eval = "{ROOT / 'calibration_data/mnist/holdout.npz'}"
max_drop = 0.5
min_cosine = 0.9997
""")  # fmt: skip
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "edgesmith", "convert", str(ROOT / "models/mnist_cnn.onnx"), "--recipe", str(recipe),
           "--out", str(tmp / "mnist"), "--json"]  # fmt: skip
    subprocess.run(cmd, check=False, capture_output=True)
    wall = time.perf_counter() - started
    report = json.loads((tmp / "mnist" / "report.json").read_text())
    search = report["accuracy_search"]
    return {"convert_wall_s": round(wall, 1), "search_wall_s": search["wall_s"], "float_nodes": search["float_nodes"],
            "candidates": search["candidates"], "sensitivity_top3": report["sensitivity"][:3]}  # fmt: skip


def cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--dev-pairs", type=int, default=400)
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--sqnr-samples", type=int, default=32)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--search-runs", type=int, default=20)
    ap.add_argument("--start", choices=("all", "rule"), default="all", help="what the search starts from")
    ap.add_argument("--probe", type=int, default=accuracy.PROBE, help="layers probed alone in float")
    ap.add_argument("--fp32-dev", type=float, help="the fp32 dev score, if known (saves scoring it)")
    ap.add_argument("--fp32-test", type=float, help="the fp32 test score, if known (82.03, docs/pruning.md)")
    ap.add_argument("--work", type=Path, help="a work folder to keep (fp32 export, calibration cache)")
    ap.add_argument("--skip", choices=("minilm", "mnist"), default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {"cpu": cpu(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.skip != "mnist":
            (tmp / "m").mkdir()
            results["mnist"] = mnist(tmp / "m")
            log(json.dumps(results["mnist"]["float_nodes"]))
        if args.skip != "minilm":
            work = args.work or tmp / "l"
            work.mkdir(exist_ok=True)
            results["minilm"] = minilm(args, work)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
