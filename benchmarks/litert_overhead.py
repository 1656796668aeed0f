"""Overhead of `edgesmith.runtime` Session.run (LiteRT backend) over the raw interpreter calls.

Goal: <= 1 microsecond per call. "Raw" is what a user of `ai_edge_litert` writes by hand:
`set_tensor`, `invoke`, `get_tensor` on an Interpreter of the same file with the same thread count.
Both are timed in the same process, interleaved in rounds so machine noise hits them alike; the
figure is the median over rounds of the per-call difference. The model is tests/models.py's small
CNN written as a .tflite (tests/backend_models.py), so the calls are tiny and the overhead shows.

    .venv/bin/python benchmarks/litert_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from backend_models import small_cnn_tflite

import edgesmith.runtime

from models import small_cnn


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main(rounds: int = 30, calls: int = 2000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = small_cnn_tflite(small_cnn(Path(tmp) / "tiny.onnx"), Path(tmp) / "tiny.tflite")
        raw = Interpreter(model_path=str(path), num_threads=1)
        raw.allocate_tensors()
        (inp,), (out,) = raw.get_input_details(), raw.get_output_details()
        ours = edgesmith.runtime.load(path, backend="litert", threads=1)
        x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
        feeds = {"input": x}
        in_index, out_index = inp["index"], out["index"]

        def raw_call():
            raw.set_tensor(in_index, x)
            raw.invoke()
            return raw.get_tensor(out_index)

        def our_call():
            return ours.run(feeds)

        np.testing.assert_array_equal(raw_call(), our_call()["logits"])
        for _ in range(500):
            raw_call(), our_call()
        raws, wrapped = [], []
        for _ in range(rounds):
            raws.append(per_call_us(raw_call, calls))
            wrapped.append(per_call_us(our_call, calls))
    diffs = [w - r for w, r in zip(wrapped, raws, strict=True)]
    overhead = statistics.median(diffs)
    print(
        f"raw set_tensor/invoke/get_tensor : {statistics.median(raws):8.2f} us/call (median of {rounds} rounds)"
    )
    print(f"edgesmith Session.run (litert)   : {statistics.median(wrapped):8.2f} us/call")
    print(f"overhead                         : {overhead:8.2f} us/call (goal <= 1.00)")
    return overhead


if __name__ == "__main__":
    sys.exit(0 if main() <= 1.0 else 1)
