"""Structured pruning to 50% of the MACs: measured p50 speedup on ONNX Runtime and OpenVINO.

MobileNetV2 and ResNet-50 (benchmarks/zoo.py, torchvision's topologies, seeded weights) are pruned with
`edgesmith.converter.steps.prune.prune_module(target_macs=0.5)` (the defaults: L1, channels ranked
across the network, counts rounded to multiples of 16), exported to ONNX, and timed side by side with the unpruned
model: batch 1, one thread, interleaved blocks, the calling thread's CPU time as the clock (the
machine is shared; see benchmarks/ort_int8_search.py). Accuracy is not the point here (random weights);
see prune_mnist.py for that.

    .venv/bin/python benchmarks/prune_speed.py [--runs 200] [--models mobilenet_v2 resnet50]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo

from edgesmith.converter.steps.prune import PruneConfig, prune_module


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ort_runner(path: Path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def ov_runner(path: Path):
    config = {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32"}  # fmt: skip
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda x: request.infer([x])


def time_interleaved(runners: dict, runs: int, block: int = 5) -> dict[str, float]:
    """p50 ms per runner by thread CPU time, in alternating blocks so background load hits all alike."""
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in runners}
    keys = list(runners)
    for fn in runners.values():
        for _ in range(3):
            fn(x)
    rnd = 0
    while min(len(v) for v in times.values()) < runs:
        for k in keys if rnd % 2 == 0 else keys[::-1]:
            runners[k](x)
            for _ in range(block):
                t0 = time.thread_time()
                runners[k](x)
                times[k].append(time.thread_time() - t0)
        rnd += 1
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=150)
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50"])
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=16)
    ap.add_argument("--scope", default="global")
    ap.add_argument("--criterion", default="l1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = zoo.build(name)
            t0 = time.time()
            pruned, report = prune_module(
                model,
                PruneConfig(
                    target_macs=args.target,
                    round_to=args.round_to,
                    scope=args.scope,
                    criterion=args.criterion,
                ),
                (torch.zeros(1, 3, 224, 224),),
            )
            log(f"[{name}] pruned in {time.time() - t0:.0f} s: MACs kept {report['macs_kept']}")
            paths = {
                k: zoo.export_onnx(m, Path(tmp) / f"{name}_{k}.onnx")
                for k, m in (("dense", model), ("pruned", pruned))
            }
            runners = {
                f"{eng} {k}": mk(p)
                for k, p in paths.items()
                for eng, mk in (("ort", ort_runner), ("ov", ov_runner))
            }
            p50 = time_interleaved(runners, args.runs)
            row = {
                "macs_kept": report["macs_kept"],
                "params": [report["params_before"], report["params_after"]],
                **{k: round(v, 2) for k, v in p50.items()},
                "ort_speedup": round(p50["ort dense"] / p50["ort pruned"], 2),
                "ov_speedup": round(p50["ov dense"] / p50["ov pruned"], 2),
            }
            results[name] = row
            log(f"[{name}] {row}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
