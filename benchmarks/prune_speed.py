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
from functools import partial
from pathlib import Path

import numpy as np
import openvino as ov
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo
from common import interleaved_p50, log, ort_session

from edgesmith.converter.steps.prune import PruneConfig, prune_module


def ort_runner(path: Path):
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def ov_runner(path: Path):
    config = {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32"}  # fmt: skip
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda x: request.infer([x])


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
            x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
            p50 = interleaved_p50(
                {k: partial(run, x) for k, run in runners.items()}, args.runs, block=5, warmup=3
            )
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
