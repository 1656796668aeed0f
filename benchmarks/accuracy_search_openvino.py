"""Accuracy-aware static INT8 on OpenVINO (issue 13): all-MiniLM-L6-v2 on STS-B with a metric budget.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/accuracy_search_openvino.py [--max-drop 1.0] [--json out.json]

The fp32 ONNX from the pipeline, converted by OpenVINO, quantized with the OpenVINO export's own NNCF
settings (steps/nncf_quantize.arguments: transformer mode, 256 STS-B train sentences) through
`nncf.quantize_with_accuracy_control`: the metric is Spearman x 100 of embedding cosines on the first
`--dev-pairs` STS-B *dev* pairs (the test set is never seen by the search), `max_drop` in its points.
NNCF ranks the quantizers by how far reverting each moves the embeddings (its output-based ranking:
Spearman has no per-sentence value) and reverts the worst until the budget holds. Then on the STS-B
test set (1,379 pairs; the original scores 82.03): the IRs in f32 and in the CPU plugin's default
precision (bf16 on an AMX CPU: what a user gets), and their latency with 1 inference thread, batch 1,
sequence 128 (wall time, interleaved blocks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from accuracy_search import cpu
from minilm_prune import MODEL, STSB, log
from weight_only import fp32_onnx, ov_runner, size, sts, wall_p50

from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.data.stsb import read_sts, spearman
from edgesmith.converter.frontends import hf_frontend
from edgesmith.converter.recipe import CalibrationConfig
from edgesmith.converter.steps import StepContext
from edgesmith.converter.steps.nncf_accuracy import quantized_ops
from edgesmith.converter.steps.nncf_quantize import Samples, arguments
from edgesmith.converter.steps.quantize import QuantizeConfig
from edgesmith.runtime import load


class DevSpearman:
    """NNCF's validation data and function: each dev sentence is an item (a batch-1 feed); the
    metric is Spearman x 100 over the pairs, and each item's embedding is its value (for ranking)."""

    def __init__(self, tokenize, pairs):
        sentences = list(pairs[0]) + list(pairs[1])
        enc = tokenize(sentences)
        self.feeds = [{k: v[i : i + 1] for k, v in enc.items()} for i in range(len(sentences))]
        self.gold, self.calls = pairs[2], 0

    def dataset(self):
        import nncf

        return nncf.Dataset(list(range(len(self.feeds))), lambda i: self.feeds[i])

    def __call__(self, compiled, items):
        self.calls += 1
        vectors = [np.asarray(compiled(self.feeds[i])[compiled.outputs[0]]) for i in items]
        half = len(vectors) // 2
        a, b = np.concatenate(vectors[:half]), np.concatenate(vectors[half:])
        return float(round(spearman(a, b, self.gold), 2)), [[v] for v in vectors]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--dev-pairs", type=int, default=200)
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--work", type=Path, help="a work folder to keep (the fp32 export)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(exist_ok=True)
        tokenize = hf_frontend.tokenizer_for(MODEL)
        test, dev = read_sts(STSB / "sts-test.csv"), read_sts(STSB / "sts-dev.csv")
        dev = tuple(x[: args.dev_pairs] for x in dev)
        train_a, train_b, _ = read_sts(STSB / "sts-train.csv")
        calibration = sorted(set(train_a + train_b))[::37][: args.calibration]  # spread over the set
        np.savez(work / "calibration.npz", **tokenize(calibration))
        fp32 = fp32_onnx(work)
        cal = ArraySource(
            work / "calibration.npz", load(fp32).inputs, "calibration", args.calibration, 16, None
        )
        ctx = StepContext(
            work, lambda: cal, CalibrationConfig(path=str(work / "calibration.npz")), quiet=True
        )
        model = ov.convert_model(str(fp32))
        kwargs, _ = arguments(model, QuantizeConfig(), ctx)
        kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")
        check = DevSpearman(tokenize, dev)
        started = time.perf_counter()
        searched = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(Samples(cal)), check.dataset(), check, max_drop=args.max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(num_ranking_workers=1),
            **kwargs,
        )  # fmt: skip
        wall = round(time.perf_counter() - started, 1)
        plain = nncf.quantize(ov.convert_model(str(fp32)), nncf.Dataset(Samples(cal)), **{
            k if k != "advanced_quantization_parameters" else "advanced_parameters": v for k, v in kwargs.items()})  # fmt: skip
        kept = [n for n in quantized_ops(plain) if n not in set(quantized_ops(searched))]
        log(f"search: {wall} s, {check.calls} validations, kept float: {kept}")
        paths = {"fp32": work / "ov-fp32.xml", "int8 searched": work / "ov-int8-searched.xml"}
        ov.save_model(ov.convert_model(str(fp32)), str(paths["fp32"]), compress_to_fp16=False)
        ov.save_model(searched, str(paths["int8 searched"]), compress_to_fp16=False)
        results = {"cpu": cpu(), "cores": os.cpu_count(), "search_wall_s": wall, "kept_float": kept,
                   "validations": check.calls, "max_drop": args.max_drop, "dev_pairs": args.dev_pairs}  # fmt: skip
        runners = {}
        for name, path in paths.items():
            for precision in ("f32", None):  # None: the CPU plugin's default (bf16 on AMX)
                label = f"{name} ({precision or 'CPU default'})"
                run = ov_runner(path, precision)
                results[label] = {"spearman_test": sts(run, tokenize, test), "size_bytes": size(path)}
                results[label]["spearman_dev"] = sts(run, tokenize, dev)
                log(f"{label}: {results[label]}")
                enc = tokenize(["a sentence of some words"] * 1)
                feed = {k: np.pad(v, ((0, 0), (0, 128 - v.shape[1]))) for k, v in enc.items()}
                runners[label] = (lambda r, f: lambda: r(f))(run, feed)
        p50 = wall_p50(runners, args.runs)
        base = p50["fp32 (CPU default)"]
        for label, ms in p50.items():
            results[label].update(p50_ms=round(ms, 2), vs_fp32_default=round(base / ms, 2))
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
