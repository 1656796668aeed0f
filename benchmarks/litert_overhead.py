"""Overhead of `edgesmith.runtime` Session.run (LiteRT backend) over the raw interpreter calls.

Goal: <= 1 microsecond per call. "Raw" is what a user of `ai_edge_litert` writes by hand:
`set_tensor`, `invoke`, `get_tensor` on an Interpreter of the same file with the same thread count.
Both are timed in the same process, interleaved in rounds so machine noise hits them alike; the
figure is the median over rounds of the per-call difference. The model is tests/models.py's small
CNN written as a .tflite (tests/backend_models.py), so the calls are tiny and the overhead shows.

    .venv/bin/python benchmarks/litert_overhead.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from backend_models import small_cnn_tflite
from common import overhead_us

import edgesmith.runtime

from models import small_cnn


def main(rounds: int = 30, calls: int = 2000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = small_cnn_tflite(small_cnn(Path(tmp) / "tiny.onnx"), Path(tmp) / "tiny.tflite")
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        ours = edgesmith.runtime.load(path, backend="litert", threads=1)
        x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
        feeds = {"input": x}
        in_index, out_index = inp["index"], out["index"]

        def raw_call():
            interpreter.set_tensor(in_index, x)
            interpreter.invoke()
            return interpreter.get_tensor(out_index)

        def our_call():
            return ours.run(feeds)

        np.testing.assert_array_equal(raw_call(), our_call()["logits"])
        raw, wrapped, overhead = overhead_us(raw_call, our_call, rounds, calls)
    print(f"raw set_tensor/invoke/get_tensor : {raw:8.2f} us/call (median of {rounds} rounds)")
    print(f"edgesmith Session.run (litert)   : {wrapped:8.2f} us/call")
    print(f"overhead                         : {overhead:8.2f} us/call (goal <= 1.00)")
    return overhead


if __name__ == "__main__":
    sys.exit(0 if main() <= 1.0 else 1)
