"""TFLite INT8 vs FP32 on LiteRT, 1 thread, batch 1: edgesmith's tflite export of the shipped MNIST CNN
and of MobileNetV2 (zoo.py), measured side by side.

    .venv/bin/python benchmarks/tflite_int8.py [--models mnist_cnn,mobilenet_v2] [--runs 100]

Artifacts come from `edgesmith.convert(..., [[exports]] format = "tflite")`: fp32 (no quantize step)
and full-integer INT8 with float I/O (preset int8; the AI Edge Quantizer, calibrated on
calibration_data/mnist for the CNN and on 64 "structured" images for MobileNetV2: a 3x14x14 normal
field upsampled to 224x224 plus pixel noise, standardised).

Latency: both interpreters are loaded at once and timed in interleaved blocks (`--block` runs each in
turn, the order reversing every round) until each has `--runs` timed runs; the clock is the calling
thread's CPU time (LiteRT computes on the calling thread at 1 thread), so time spent waiting while
other tenants hold the shared cores is left out. Accuracy proxy: top-1 agreement of INT8 with FP32
and the largest logit difference (beside the FP32 logits' spread), on 2000 MNIST test images (CNN)
or 100 other structured images (MobileNetV2: random weights give 1000 near-equal logits, so its
agreement is a weak proxy; the logit error against their spread is the figure to read).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, mnist_test, structured_images, table_header

RECIPE = '[[exports]]\nformat = "tflite"\n[profile]\nenabled = false\n'


def convert(name: str, work: Path) -> tuple[dict[str, Path], np.ndarray]:
    """{'fp32': path, 'int8': path} and the evaluation images."""
    import edgesmith

    (work / "r.toml").write_text(RECIPE)
    if name == "mnist_cnn":
        model, calibration, extra = (
            ROOT / "models" / "mnist_cnn.onnx",
            ROOT / "calibration_data" / "mnist",
            {},
        )
        images = mnist_test()[0][:2000]
    else:
        import zoo

        model = zoo.build(name)
        calibration = work / "calibration.npy"
        np.save(calibration, structured_images(64, seed=1))
        images, extra = structured_images(100, seed=2), {"example_inputs": (structured_images(2, seed=3),)}
    paths = {}
    for precision, preset in (("fp32", None), ("int8", "int8")):
        report = edgesmith.convert(model, recipe=work / "r.toml", preset=preset, calibration=calibration,
                                   out=work / f"{name}-{precision}", **extra)  # fmt: skip
        paths[precision] = Path(report["artifacts"][0]["path"])
    return paths, images


def _runner(path: Path):
    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()
    (detail,), out = interpreter.get_input_details(), interpreter.get_output_details()[0]
    return interpreter, detail["index"], out["index"]


def outputs(path: Path, images: np.ndarray) -> np.ndarray:
    interpreter, i, o = _runner(path)
    rows = []
    for k in range(len(images)):
        interpreter.set_tensor(i, images[k : k + 1])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(o).copy())
    return np.concatenate(rows)


def latency(paths: dict[str, Path], sample: np.ndarray, runs: int, block: int) -> dict[str, float]:
    runners = {k: _runner(p) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for interpreter, i, _ in runners.values():
        interpreter.set_tensor(i, sample)
        for _ in range(5):
            interpreter.invoke()  # warm-up
    order = list(paths)
    while min(len(t) for t in times.values()) < runs:
        for key in order:
            interpreter = runners[key][0]
            for _ in range(block):
                start = time.thread_time_ns()
                interpreter.invoke()
                times[key].append((time.thread_time_ns() - start) / 1e6)
        order.reverse()
    return {k: statistics.median(t[:runs]) for k, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist_cnn,mobilenet_v2")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--block", type=int, default=10)
    args = parser.parse_args()
    print(table_header("model", "FP32 p50 ms", "INT8 p50 ms", "INT8/FP32", "FP32 KB", "INT8 KB", "top-1 agreement",
                       "logit diff mean / max", "FP32 logit std"))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            paths, images = convert(name, Path(tmp))
            fp32, int8 = outputs(paths["fp32"], images), outputs(paths["int8"], images)
            agreement = (fp32.argmax(1) == int8.argmax(1)).mean() * 100
            p50 = latency(paths, images[:1], args.runs, args.block)
            sizes = {k: p.stat().st_size / 1024 for k, p in paths.items()}
            print(f"| {name} | {p50['fp32']:.3f} | {p50['int8']:.3f} | {p50['int8'] / p50['fp32']:.2f} | "
                  f"{sizes['fp32']:.0f} | {sizes['int8']:.0f} | {agreement:.1f}% | "
                  f"{np.abs(fp32 - int8).mean():.3f} / {np.abs(fp32 - int8).max():.3f} | {fp32.std():.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
