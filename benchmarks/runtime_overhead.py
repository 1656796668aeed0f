"""Overhead of `edgesmith.runtime` Session.run over a raw onnxruntime InferenceSession.run.

Goal: <= 1 microsecond per call on a tiny model. Both are timed in the same process, interleaved in
rounds so machine noise hits them alike; the figure is the median over rounds of the per-call
difference.

    .venv/bin/python benchmarks/runtime_overhead.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ort_session, overhead_us

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import edgesmith.runtime

from models import small_cnn


def main(rounds: int = 30, calls: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = small_cnn(Path(tmp) / "tiny.onnx")
        raw = ort_session(path)
        ours = edgesmith.runtime.load(path, backend="ort", threads=1)
        x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
        feeds = {"input": x}
        names = [o.name for o in raw.get_outputs()]

        def raw_call():
            return raw.run(names, feeds)

        def our_call():
            return ours.run(feeds)

        np.testing.assert_array_equal(raw_call()[0], our_call()["logits"])
        raw, wrapped, overhead = overhead_us(raw_call, our_call, rounds, calls)
    print(f"raw InferenceSession.run : {raw:8.2f} us/call (median of {rounds} rounds)")
    print(f"edgesmith Session.run    : {wrapped:8.2f} us/call")
    print(f"overhead                 : {overhead:8.2f} us/call (goal <= 1.00)")


if __name__ == "__main__":
    main()
