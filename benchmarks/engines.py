"""The ONNX export's quantization engines side by side on ccexam's trained MNISTNet (99.05 % top-1):
`engine = "onnxruntime"`, `"nncf"` and `"inc"`, each a static INT8 QDQ `.onnx` from the same
calibration data (calibration_data/mnist, 256 images).

    .venv/bin/python benchmarks/engines.py [--runs 300]

Top-1: on the real MNIST test set (10 000 images, data/mnist), scored by ONNX Runtime.
Latency: ONNX Runtime p50 at batch 1, one thread, ORT_ENABLE_ALL; sessions timed in interleaved
blocks with the calling thread's CPU time as the clock (see ort_int8_search.py for why).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from common import ROOT, interleaved_p50, load_mnistnet, mnist_test, ort_session

import edgesmith
from edgesmith.converter.recipe import Recipe

CALIBRATION = ROOT / "calibration_data" / "mnist"
ENGINES = ("onnxruntime", "nncf", "inc")


def convert(engine: str, out: Path) -> dict:
    steps = [{"kind": "quantize", "engine": engine}] if engine != "fp32" else []
    recipe = Recipe.from_dict({"steps": steps, "calibration": {"path": str(CALIBRATION)},
                               "profile": {"enabled": False}})  # fmt: skip
    example = (np.zeros((2, 1, 28, 28), np.float32),)
    return edgesmith.convert(load_mnistnet(), recipe=recipe, example_inputs=example, out=out)


def top1(sess, images: np.ndarray, labels: np.ndarray) -> float:
    name = sess.get_inputs()[0].name
    logits = np.concatenate(
        [sess.run(None, {name: images[i : i + 500]})[0] for i in range(0, len(images), 500)]
    )
    return float((logits.argmax(1) == labels).mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    images, labels = mnist_test()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("fp32", *ENGINES):
            t0 = time.perf_counter()
            report = convert(engine, Path(tmp) / engine)
            artifact = report["artifacts"][0]
            path = Path(tmp) / engine / artifact["path"]
            rows[engine] = {"seconds": time.perf_counter() - t0, "size": artifact["size_bytes"], "path": path}
        sessions = {k: ort_session(r["path"]) for k, r in rows.items()}
        for k, sess in sessions.items():
            rows[k]["top1"] = top1(sess, images, labels)
        runners = {k: partial(s.run, None, {s.get_inputs()[0].name: images[:1]}) for k, s in sessions.items()}
        latency = interleaved_p50(runners, args.runs, block=20)
    print(
        f"{'engine':12} {'top-1 %':>8} {'drop':>6} {'p50 ms':>7} {'x fp32':>6} {'size KB':>8} {'convert s':>9}"
    )
    for k, r in rows.items():
        print(f"{k:12} {r['top1']:8.2f} {rows['fp32']['top1'] - r['top1']:6.2f} {latency[k]:7.4f} "
              f"{latency[k] / latency['fp32']:6.2f} {r['size'] / 1024:8.1f} {r['seconds']:9.1f}")  # fmt: skip
    print(
        f"\nMNIST test set ({len(labels)} images); p50: batch 1, 1 thread, thread CPU time, {args.runs} runs"
    )


if __name__ == "__main__":
    main()
