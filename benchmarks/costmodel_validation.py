"""How good is the latency cost model? Error against this host and against published device figures.

Host: per-layer ONNX Runtime profiles of the FIT models give the host efficiencies
(costmodel.fit); every model is then predicted end to end and compared with a measured p50
(1 thread, the machine's noise is what it is: it is shared). Errors are reported separately for the
fit set and the held-out set.

Devices: XNNPACK's published MobileNet v1/v2 figures (docs/device_figures.md). The shared arm64
efficiencies (conv, dwconv) are fitted to Pixel 2 single-thread v1 + v2, the parallel fraction to
Pixel 2 4-thread v1; every other figure (Pixel 2 4-thread v2, Pixel 3a, Raspberry Pi 4) is held out.
esp-dl's ESP32-S3 MobileNetV2 INT8 is the only ESP32-S3 figure: reported with the spec's prior
efficiencies (no held-out check possible).

    .venv/bin/python benchmarks/costmodel_validation.py [--fit-only]

Prints the fitted tables as TOML to paste into the specs, then the error tables and timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
CACHE = Path(os.environ.get("EDGESMITH_BENCH_CACHE", "/tmp/edgesmith-costmodel"))

from edgesmith.runtime import load  # noqa: E402
from edgesmith.targets import costmodel, graph, hostprofile, spec  # noqa: E402
from edgesmith.targets.latency import random_feeds  # noqa: E402

# Published figures (ms). Sources in docs/device_figures.md.
XNNPACK = {  # (target, model, threads): ms
    ("pixel2", "mobilenet_v1", 1): 86, ("pixel2", "mobilenet_v2", 1): 53,
    ("pixel3a", "mobilenet_v1", 1): 88, ("pixel3a", "mobilenet_v2", 1): 55,
    ("pixel2", "mobilenet_v1", 4): 27, ("pixel2", "mobilenet_v2", 4): 18,
    ("pixel3a", "mobilenet_v1", 2): 46, ("pixel3a", "mobilenet_v2", 2): 28,
    ("rpi4", "mobilenet_v1", 4): 75, ("rpi4", "mobilenet_v2", 4): 44,
}  # fmt: skip
ARM_FIT = {("pixel2", "mobilenet_v1", 1), ("pixel2", "mobilenet_v2", 1)}
ARM_FIT_THREADS = ("pixel2", "mobilenet_v1", 4)
ESP_DL = {("esp32-s3", "mobilenet_v2_int8", 1): 423.3}


def mobilenet_v1(path: Path) -> Path:
    """MobileNet v1 1.0 224 (569 M MACs) in plain torch, exported like benchmarks/zoo.py does."""
    import torch
    import zoo
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(zoo._conv_bn(cin, cin, 3, stride, groups=cin), zoo._conv_bn(cin, cout, 1))

    cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    cfg += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    torch.manual_seed(0)
    body = nn.Sequential(zoo._conv_bn(3, 32, 3, 2), *[block(*c) for c in cfg], nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(1024, 1000))  # fmt: skip
    return zoo.export_onnx(zoo.realistic_bn(body), path)


def int8(src: Path, dest: Path, shape) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    return dest


def models() -> dict[str, Path]:
    import zoo

    from models import small_cnn

    CACHE.mkdir(parents=True, exist_ok=True)
    out = {"mnist_cnn": ROOT / "models" / "mnist_cnn.onnx", "small_cnn": small_cnn(CACHE / "small_cnn.onnx")}
    for name in ("mobilenet_v2", "resnet50"):
        out[name] = CACHE / f"{name}.onnx"
        if not out[name].exists():
            zoo.export_onnx(zoo.build(name), out[name])
    out["mobilenet_v1"] = CACHE / "mobilenet_v1.onnx"
    if not out["mobilenet_v1"].exists():
        mobilenet_v1(out["mobilenet_v1"])
    for name, shape in (("mobilenet_v2", (1, 3, 224, 224)), ("mnist_cnn", (1, 1, 28, 28)),
                        ("mobilenet_v1", (1, 3, 224, 224))):  # fmt: skip
        q = CACHE / f"{name}_int8.onnx"
        out[f"{name}_int8"] = q if q.exists() else int8(out[name], q, shape)
    return out


HOST_FIT = ["mnist_cnn", "mobilenet_v2", "mobilenet_v2_int8", "mnist_cnn_int8"]
HOST_HELD_OUT = ["small_cnn", "mobilenet_v1", "mobilenet_v1_int8", "resnet50"]


def host(paths: dict[str, Path]) -> None:
    target = spec.get("host")
    t0 = time.perf_counter()
    samples = [(graph.layers(paths[n]), hostprofile.match(graph.layers(paths[n]),
               hostprofile.ort_node_times(paths[n], 1, runs=30, quantile=0.1))) for n in HOST_FIT]  # fmt: skip
    fitted, overhead = costmodel.fit(samples, target, threads=1)
    target = dataclasses.replace(target, efficiency=fitted, op_overhead_us=overhead)
    print(f"\n# host efficiencies fitted on {HOST_FIT} ({time.perf_counter() - t0:.1f} s of profiling)")
    print(f"op_overhead_us = {overhead}")
    _toml(fitted)
    print(
        f"\nhost ({target.clock_ghz:.2f} GHz, ORT CPU, 1 thread)   p10 ms   p50 ms  estimated  error vs p10 (vs p50)"
    )
    for group, names in (("fit", HOST_FIT), ("held-out", HOST_HELD_OUT)):
        errors = []
        for name in names:
            session = load(paths[name], threads=1)
            start = time.perf_counter()
            # the machine is shared: contention only adds time, so p10 of 3 rounds approximates the
            # quiet-machine latency the model predicts; p50 is shown beside it
            times = np.concatenate([_times(session, 20 if "resnet" in name else 100) for _ in range(3)])
            seconds = time.perf_counter() - start
            p10, p50 = np.percentile(times, [10, 50])
            start = time.perf_counter()
            est = costmodel.estimate(paths[name], target, 1).p50_ms
            est_s = time.perf_counter() - start
            err = (est - p10) / p10
            errors.append(abs(err))
            print(f"  {group:9} {name:18} {p10:9.3f} {p50:8.3f} {est:10.3f} {err:+7.1%} ({(est - p50) / p50:+.1%})"
                  f"   measuring {seconds:.1f} s, estimating {est_s:.2f} s")  # fmt: skip
        print(f"  {group}: median |error| {statistics.median(errors):.1%}, max {max(errors):.1%}")


def _times(session, runs: int) -> np.ndarray:
    """Milliseconds per run (after 3 warm-up runs), as latency.measure times them."""
    feeds = random_feeds(session)
    for _ in range(3):
        session.run(feeds)
    out = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.run(feeds)
        out[i] = (time.perf_counter() - start) * 1e3
    return out


def devices(paths: dict[str, Path]) -> None:
    layers = {n: graph.layers(paths[n]) for n in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v2_int8")}
    base = spec.get("pixel2")
    table = costmodel.fit_totals([(layers[m], ms) for (t, m, th), ms in XNNPACK.items()
                                  if (t, m, th) in ARM_FIT], base, threads=1)  # fmt: skip
    fitted = dataclasses.replace(base, efficiency=table)
    t, m, th = ARM_FIT_THREADS
    p = _fit_parallel(fitted, layers[m], XNNPACK[ARM_FIT_THREADS], th)
    print("\n# arm64 (xnnpack) efficiencies fitted on Pixel 2 single-thread MobileNet v1 + v2,")
    print(f"# parallel_fraction on Pixel 2 4-thread v1: parallel_fraction = {p:.3f}")
    _toml(table)
    print("\npublished figure                         published  estimated  error")
    for group in ("fit", "held-out"):
        errors = []
        for (name, model, threads), ms in XNNPACK.items():
            is_fit = (name, model, threads) in ARM_FIT or (name, model, threads) == ARM_FIT_THREADS
            if is_fit != (group == "fit"):
                continue
            target = dataclasses.replace(spec.get(name), efficiency=table, parallel_fraction=p)
            est = costmodel.estimate(layers[model], target, threads).p50_ms
            errors.append(abs(est - ms) / ms)
            print(
                f"  {group:8} XNNPACK {name:8} {model:13} {threads}t {ms:8.1f} {est:10.1f} {(est - ms) / ms:+7.1%}"
            )
        print(f"  {group}: median |error| {statistics.median(errors):.1%}, max {max(errors):.1%}")
    for (name, model, threads), ms in ESP_DL.items():
        est = costmodel.estimate(layers[model], spec.get(name), threads).p50_ms
        print(f"  prior    esp-dl  {name:8} {model:13} {threads}t {ms:8.1f} {est:10.1f} {(est - ms) / ms:+7.1%}"
              "   (spec priors, not fitted; the only ESP32-S3 figure)")  # fmt: skip


def _fit_parallel(target, layers, ms: float, threads: int) -> float:
    """Bisection on the Amdahl fraction so the estimate at `threads` matches `ms`."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        est = costmodel.estimate(layers, dataclasses.replace(target, parallel_fraction=mid), threads).p50_ms
        lo, hi = (mid, hi) if est > ms else (lo, mid)
    return round((lo + hi) / 2, 3)


def _toml(table: dict) -> None:
    for dtype, classes in table.items():
        print(f"[model.efficiency.{dtype}]")
        for op_class, value in classes.items():
            print(f"{op_class} = {value:.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-host", action="store_true", help="only the published-figure comparison")
    parser.add_argument("--skip-devices", action="store_true", help="only the host comparison")
    args = parser.parse_args()
    start = time.perf_counter()
    paths = models()
    print(f"models ready in {time.perf_counter() - start:.1f} s (cache {CACHE})")
    if not args.skip_devices:
        devices(paths)
    if not args.skip_host:
        host(paths)


if __name__ == "__main__":
    main()
