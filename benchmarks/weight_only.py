"""Weight-only INT8/INT4 (`[quantize] mode = "weight-only"`) on all-MiniLM-L6-v2: size, STS-B test
Spearman and latency against the fp32 model, side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/weight_only.py [--pairs 1379] [--runs 40] [--work DIR]

The Hugging Face folder is exported to fp32 ONNX by the pipeline (sequence length 128, mean pooling
and L2 normalisation in the graph), then:
- ONNX: the pipeline's quantize step (ONNX Runtime's MatMulNBits quantizer, steps/weight_only.py);
- OpenVINO: the fp32 ONNX converted by OpenVINO, then NNCF's compress_weights (the openvino exporter's
  code path), saved as IR.
Spearman x 100 of the embedding cosines on the first `--pairs` STS-B test pairs (all 1,379 by default;
fp32 82.03). Latency at batch 1, sequence 128, one thread, interleaved with the fp32 model of the same
runtime: ONNX Runtime by the calling thread's CPU time (common.interleaved_p50); OpenVINO by wall
time (its CPU plugin computes in its own thread), fp32 IR in the CPU plugin's default precision
(bf16 on AMX CPUs: what a user gets by default) and pinned to f32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_p50, log, ort_session, table_header, table_row
from minilm_prune import MODEL, STSB

from edgesmith.converter.data.stsb import read_sts, spearman
from edgesmith.converter.frontends import hf_frontend
from edgesmith.converter.handle import ModelHandle
from edgesmith.converter.pipeline import run
from edgesmith.converter.recipe import CalibrationConfig, Recipe
from edgesmith.converter.steps import HANDLERS, StepContext
from edgesmith.converter.steps.quantize import QuantizeConfig
from edgesmith.converter.steps.weight_only import compress_openvino

VARIANTS = [(8, 128), (4, 128), (4, 32)]  # (bits, block_size)


def fp32_onnx(work: Path) -> Path:
    path = work / "fp32" / "model.fp32.onnx"
    if not path.is_file():  # --work keeps it for the next run
        run(Recipe.from_dict({"profile": {"enabled": False}}), str(MODEL), work / "fp32", quiet=True)
    return path


def onnx_variants(fp32: Path, work: Path) -> dict[str, Path]:
    paths = {"fp32": fp32}
    for bits, block in VARIANTS:
        folder = work / f"onnx-w{bits}-b{block}"
        folder.mkdir(exist_ok=True)
        ctx = StepContext(folder, lambda: None, CalibrationConfig(), quiet=True)
        config = QuantizeConfig(mode="weight-only", bits=bits, block_size=block)
        paths[f"int{bits} weight-only, block {block}"] = HANDLERS[QuantizeConfig](
            config, ModelHandle(fp32), ctx
        ).model.path
    return paths


def openvino_variants(fp32: Path, work: Path) -> dict[str, Path]:
    import openvino as ov

    paths = {"fp32": work / "ov-fp32.xml"}
    ov.save_model(ov.convert_model(str(fp32)), str(paths["fp32"]), compress_to_fp16=False)
    for bits, block in VARIANTS:
        config = QuantizeConfig(mode="weight-only", bits=bits, block_size=block)
        model, _ = compress_openvino(ov.convert_model(str(fp32)), config)
        name = f"int{bits} weight-only" + (f", group {block}" if bits == 4 else "")
        paths[name] = work / f"ov-w{bits}-b{block}.xml"
        ov.save_model(model, str(paths[name]), compress_to_fp16=False)
    return paths


def configurations(runtime: str, paths: dict[str, Path]):
    """(name, path, OpenVINO inference precision) to run: the fp32 IR twice, in the CPU plugin's default
    precision (bf16 here) and in f32; the fp32 row comes first, the speed base."""
    for name, path in paths.items():
        if runtime == "openvino" and name == "fp32":
            yield "fp32 (CPU default: bf16)", path, None
            yield "fp32 (f32)", path, "f32"
        else:
            yield name, path, None


def size(path: Path) -> int:
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


def ov_runner(path: Path, precision: str | None):
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda feed: request.infer(feed)[compiled.outputs[0]]


def embedder(path: Path, precision: str | None = None):
    if path.suffix == ".onnx":
        session = ort_session(path)
        return lambda feed: session.run(None, feed)[0]
    return ov_runner(path, precision)


def sts(embed, tokenize, pairs, batch: int = 32) -> float:
    def vectors(sentences):
        enc = tokenize(sentences)
        return np.concatenate([embed({k: v[i : i + batch] for k, v in enc.items()})
                               for i in range(0, len(sentences), batch)])  # fmt: skip

    return round(spearman(vectors(pairs[0]), vectors(pairs[1]), pairs[2]), 2)


def wall_p50(runners: dict, runs: int, block: int = 5) -> dict[str, float]:
    """Median wall ms of each runner, in alternating blocks (as interleaved_p50, by wall time)."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    for r in runners.values():
        r()
    while min(len(v) for v in times.values()) < runs:
        for k in order:
            for _ in range(block):
                t0 = time.perf_counter()
                runners[k]()
                times[k].append(time.perf_counter() - t0)
        order.reverse()
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1379)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--work", type=Path, default=None, help="keep the models here (reused by the next run)")
    args = ap.parse_args()
    tokenize = hf_frontend.tokenizer_for(MODEL)
    pairs = tuple(x[: args.pairs] for x in read_sts(STSB / "sts-test.csv"))
    feed = tokenize(["A man is playing a guitar on the stage while people dance."])
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fp32 = fp32_onnx(work)
        results = {}
        variants = {"onnxruntime": onnx_variants, "openvino": openvino_variants}
        for runtime in args.runtimes:
            paths = variants[runtime](fp32, work)
            runners, rows = {}, {}
            for key, path, precision in configurations(runtime, paths):
                embed = embedder(path, precision)
                rows[key] = {"size_mb": round(size(path) / 1e6, 1), "spearman": sts(embed, tokenize, pairs)}
                runners[key] = lambda e=embed: e(feed)
                log(f"{runtime} {key}: {rows[key]}")
            if runtime == "onnxruntime":
                p50 = interleaved_p50(runners, args.runs, 5, warmup=2)
            else:
                p50 = wall_p50(runners, args.runs)
            base = p50[next(iter(runners))]
            for key, ms in p50.items():
                rows[key].update(p50_ms=round(ms, 2), vs_fp32=round(base / ms, 2))
            results[runtime] = rows
    for runtime, rows in results.items():
        print(f"\n{runtime}, STS-B test first {args.pairs} pairs\n")
        print(table_header("model", "size MB", "STS-B", "p50 ms", "speed vs fp32"))
        for key, r in rows.items():
            print(table_row(key, r["size_mb"], r["spearman"], r["p50_ms"], f"{r['vs_fp32']}x"))
    print(json.dumps(results, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
