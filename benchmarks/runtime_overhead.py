"""Overhead of `edgesmith.runtime` Session.run over a raw onnxruntime InferenceSession.run.

Goal: <= 1 microsecond per call on a tiny model. Both are timed in the same process, interleaved in
rounds so machine noise hits them alike; the figure is the median over rounds of the per-call
difference.

    .venv/bin/python benchmarks/runtime_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import edgesmith.runtime

from models import small_cnn


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main(rounds: int = 30, calls: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = small_cnn(Path(tmp) / "tiny.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        raw = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ours = edgesmith.runtime.load(path, backend="ort", threads=1)
        x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
        feeds = {"input": x}
        names = [o.name for o in raw.get_outputs()]

        def raw_call():
            return raw.run(names, feeds)

        def our_call():
            return ours.run(feeds)

        np.testing.assert_array_equal(raw_call()[0], our_call()["logits"])
        for _ in range(500):
            raw_call(), our_call()
        raws, wrapped = [], []
        for _ in range(rounds):
            raws.append(per_call_us(raw_call, calls))
            wrapped.append(per_call_us(our_call, calls))
    diffs = [w - r for w, r in zip(wrapped, raws, strict=True)]
    print(f"raw InferenceSession.run : {statistics.median(raws):8.2f} us/call (median of {rounds} rounds)")
    print(f"edgesmith Session.run    : {statistics.median(wrapped):8.2f} us/call")
    print(f"overhead                 : {statistics.median(diffs):8.2f} us/call (goal <= 1.00)")


if __name__ == "__main__":
    main()
