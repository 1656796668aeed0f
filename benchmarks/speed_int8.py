"""edgesmith INT8 vs ONNX Runtime's own settings: p50 INT8 / p50 FP32, batch 1, one thread.

Goals: MobileNetV2 <= 0.46 and ResNet-50 <= 0.29. Printed beside ORT's default `quantize_static`
and ORT's best plain setting (quant_pre_process + U8S8 per-channel QDQ), all measured in one run
with the interleaved, CPU-time clock of `ort_int8_search.py` (see its docstring for why).

    .venv/bin/python benchmarks/speed_int8.py [--runs 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zoo
from onnxruntime.quantization import QuantFormat, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from ort_int8_search import U8S8_PC, Config, RandomReader, make_session, time_sessions

import edgesmith

CONFIGS = {
    "fp32": Config("fp32", "FP32, ORT_ENABLE_ALL", None),
    "ort default": Config("ort default", "quantize_static defaults", {}),
    "ort best plain": Config("ort best plain", "quant_pre_process + U8S8 per-channel QDQ", U8S8_PC),
    "edgesmith int8": Config("edgesmith int8", "edgesmith convert --preset int8", {}),
}


def build(name: str, work: Path, calib: int) -> dict[str, Path]:
    fp32 = zoo.export_onnx(zoo.build(name), work / f"{name}.onnx")
    rng = np.random.default_rng(1)  # the same 16 random-normal inputs for every quantizer
    np.save(work / "calib.npy", rng.standard_normal((calib, 3, 224, 224), dtype=np.float32))
    paths = {"fp32": fp32}
    quantize_static(str(fp32), str(work / "default.onnx"), RandomReader(calib), quant_format=QuantFormat.QDQ)
    paths["ort default"] = work / "default.onnx"
    quant_pre_process(str(fp32), str(work / "pp.onnx"))
    quantize_static(str(work / "pp.onnx"), str(work / "best.onnx"), RandomReader(calib),
                    quant_format=QuantFormat.QDQ, **U8S8_PC)  # fmt: skip
    paths["ort best plain"] = work / "best.onnx"
    report = edgesmith.convert(fp32, preset="int8", calibration=work / "calib.npy", out=work / "es", quiet=True,
                               recipe=None)  # fmt: skip
    paths["edgesmith int8"] = Path(report["artifacts"][0]["path"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--models", default="mobilenet_v2,resnet50")
    args = parser.parse_args()
    goals = {"mobilenet_v2": 0.46, "resnet50": 0.29}
    rows = {}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            paths = build(name, Path(tmp), calib=16)
            sessions = {k: make_session(p, CONFIGS[k]) for k, p in paths.items()}
            for s in sessions.values():
                for _ in range(5):
                    s.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})
            timing = time_sessions(sessions, dict.fromkeys(sessions, args.runs), args.block, time.thread_time)
            rows[name] = {k: v["p50"] / timing["fp32"]["p50"] for k, v in timing.items()} | {
                "fp32 ms": timing["fp32"]["p50"]
            }
    print(
        f"{'model':14} {'fp32 p50 ms':>11} {'ORT default':>11} {'ORT best plain':>14} {'edgesmith':>9} {'goal':>5}"
    )
    for name, r in rows.items():
        print(f"{name:14} {r['fp32 ms']:11.2f} {r['ort default']:11.3f} {r['ort best plain']:14.3f} "
              f"{r['edgesmith int8']:9.3f} {goals[name]:5.2f}")  # fmt: skip
    print("\nratio = p50 INT8 / p50 FP32 (CPU time of the calling thread), batch 1, 1 thread, interleaved")


if __name__ == "__main__":
    main()
