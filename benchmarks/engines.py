"""The ONNX export's quantization engines side by side on ccexam's trained MNISTNet (99.05 % top-1):
`engine = "onnxruntime"`, `"nncf"` and `"inc"`, each a static INT8 QDQ `.onnx` from the same
calibration data (calibration_data/mnist, 256 images).

    .venv/bin/python benchmarks/engines.py [--runs 300]

Top-1: on the real MNIST test set (10 000 images, ../shared/data/mnist), scored by ONNX Runtime.
Latency: ONNX Runtime p50 at batch 1, one thread, ORT_ENABLE_ALL; sessions timed in interleaved
blocks with the calling thread's CPU time as the clock (see ort_int8_search.py for why).
"""

from __future__ import annotations

import argparse
import importlib.resources
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from ccexam.models import MNISTNet

import edgesmith
from edgesmith.converter.data.idx import load_mnist, normalize_mnist
from edgesmith.converter.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
CALIBRATION = ROOT / "calibration_data" / "mnist"
ENGINES = ("onnxruntime", "nncf", "inc")


def mnistnet() -> torch.nn.Module:
    model = MNISTNet(28)
    weights = importlib.resources.files("ccexam") / "weights" / "mnist.pth"
    model.load_state_dict(torch.load(str(weights), weights_only=True, map_location="cpu"))
    return model.eval()


def convert(engine: str, out: Path) -> dict:
    steps = [{"kind": "quantize", "engine": engine}] if engine != "fp32" else []
    recipe = Recipe.from_dict({"steps": steps, "calibration": {"path": str(CALIBRATION)},
                               "profile": {"enabled": False}})  # fmt: skip
    example = (np.zeros((2, 1, 28, 28), np.float32),)
    return edgesmith.convert(mnistnet(), recipe=recipe, example_inputs=example, out=out)


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def top1(sess: ort.InferenceSession, images: np.ndarray, labels: np.ndarray) -> float:
    name = sess.get_inputs()[0].name
    logits = np.concatenate(
        [sess.run(None, {name: images[i : i + 500]})[0] for i in range(0, len(images), 500)]
    )
    return float((logits.argmax(1) == labels).mean() * 100)


def p50(sessions: dict, x: np.ndarray, runs: int, block: int = 20) -> dict[str, float]:
    """Interleaved blocks (the order reversing each round); p50 of thread CPU time, in ms."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    keys = list(sessions)
    for rnd in range(runs // block):
        for k in keys if rnd % 2 == 0 else keys[::-1]:
            feeds = {sessions[k].get_inputs()[0].name: x}
            sessions[k].run(None, feeds)  # untimed: this session's weights back into cache
            for _ in range(block):
                t0 = time.thread_time()
                sessions[k].run(None, feeds)
                times[k].append(time.thread_time() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    images, labels = load_mnist(MNIST)
    images = normalize_mnist(images)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("fp32", *ENGINES):
            t0 = time.perf_counter()
            report = convert(engine, Path(tmp) / engine)
            artifact = report["artifacts"][0]
            path = Path(tmp) / engine / artifact["path"]
            rows[engine] = {"seconds": time.perf_counter() - t0, "size": artifact["size_bytes"], "path": path}
        sessions = {k: session(r["path"]) for k, r in rows.items()}
        for k, sess in sessions.items():
            rows[k]["top1"] = top1(sess, images, labels)
        latency = p50(sessions, images[:1], args.runs)
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
