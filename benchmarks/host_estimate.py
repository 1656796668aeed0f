"""The host estimate (`profile --target host --estimate`) against single-thread times on this CPU.

The host spec is fitted only on hostcal.py's synthetic calibration networks; every model here is
held out: the demo CNN (models/mnist_cnn.onnx), a small CNN, MobileNet v1 and v2, ResNet-18 and
ResNet-50 (plain torch, seeded weights: benchmarks/zoo.py, costmodel_validation.py) and their ONNX
Runtime QDQ INT8 twins (what `convert --preset int8` writes), at one thread.

On a machine shared with other jobs a single measurement says as much about the load as about the
model, so each round calibrates afresh (as a first use on this CPU would) and then times every model
right after it, as single-thread CPU time (the waits for a core are left out), the fastest sample of
several turns through all the models (hostcal.best_cpu_ms, the statistic the calibration's own
anchors use: contention only adds time). Every model's error is printed per round with the load
average, then per model the median over the rounds and the median over the models. With `--wall`
the wall-time p50 of the last round is printed beside it; `meas/est max/min` says how far the
measurement and the estimate each moved between rounds. The calibration networks are timed in the
same turns as the models: their time over the calibration's own says how far the load moved between
the two, and an error corrected by that ratio is printed beside each round's; with `--cli` the estimates are also taken
through the CLI (`profile --target host --estimate --json`) once, to show it gives the same figure.

    .venv/bin/python benchmarks/host_estimate.py [--rounds 3] [--passes 4] [--wall] [--cli]
    .venv/bin/python benchmarks/host_estimate.py --estimates-only --rounds 3  # the estimate's spread
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ["mnist_cnn", "mnist_cnn_int8", "small_cnn", "mobilenet_v1", "mobilenet_v1_int8", "mobilenet_v2",
          "mobilenet_v2_int8", "resnet18", "resnet18_int8", "resnet50"]  # fmt: skip
GOAL = 0.15


def cli_estimate(path: Path) -> float:
    """The CLI's `profile --target host --estimate --json` p50 for `path` at one thread."""
    cmd = [sys.executable, "-m", "edgesmith", "profile", str(path), "--threads", "1", "--json", "--no-save",
           "--target", "host", "--estimate"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout)[
        "p50_ms"
    ]


def calibration_nets(folder: Path) -> dict[str, Path]:
    """hostcal's fp32 calibration network and its INT8 twin (the same bytes the calibration timed),
    timed in turns with the models: how much slower they run now than when the calibration timed
    them says how much the load moved between calibration and check."""
    from edgesmith.targets import hostcal

    fp32 = hostcal.build_net(folder / "hostcal_fp32.onnx")
    return {
        "calibration fp32": fp32,
        "calibration int8": hostcal.quantize_net(fp32, folder / "hostcal_int8.onnx"),
    }


def estimate_spread(paths: dict[str, Path], rounds: int) -> None:
    """How far the estimate alone moves between fresh calibrations (no model is timed): what the load
    during calibration does to it."""
    from edgesmith.targets import costmodel, hostcal, spec

    estimates: dict[str, list[float]] = {name: [] for name in MODELS}
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        target = hostcal.calibrated(spec.get("host"), refresh=True)
        for name in MODELS:
            estimates[name].append(costmodel.estimate(paths[name], target, 1).p50_ms)
    print(
        f"hostcal VERSION {hostcal.VERSION}, load at each calibration {', '.join(f'{x:.1f}' for x in loads)}"
    )
    for name, values in estimates.items():
        print(
            f"{name:20} "
            + " ".join(f"{v:9.3f}" for v in values)
            + f"   max/min {max(values) / min(values):.2f}x"
        )


def wall_p50(path: Path, runs: int) -> float:
    from edgesmith.targets.hostcal import run_times_ms

    return statistics.median(run_times_ms(path, threads=1, runs=runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="calibrate + measure this many times")
    parser.add_argument("--passes", type=int, default=4, help="turns through the models per round")
    parser.add_argument("--wall", action="store_true", help="also print the wall-time p50 (30 runs)")
    parser.add_argument("--cli", action="store_true", help="also estimate through the CLI, once")
    parser.add_argument("--estimates-only", action="store_true",
                        help="calibrate --rounds times, print each model's estimates and their spread")  # fmt: skip
    args = parser.parse_args()
    import costmodel_validation

    from edgesmith.targets import costmodel, hostcal, spec

    paths = costmodel_validation.models()
    cpu = hostcal._cpu_model()
    print(f"{cpu} ({platform.machine()}, {hostcal._cores()} cores)")
    if args.estimates_only:
        return estimate_spread(paths, args.rounds)
    errors: dict[str, list[float]] = {name: [] for name in MODELS}
    rows: dict[str, tuple[float, float]] = {}
    spread: dict[str, list[tuple[float, float]]] = {name: [] for name in MODELS}  # (measured, estimated)
    corrected: dict[str, list[float]] = {name: [] for name in MODELS}
    for r in range(args.rounds):
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        target = hostcal.calibrated(spec.get("host"), refresh=True)
        seconds = time.perf_counter() - started
        timed = {name: paths[name] for name in MODELS} | calibration_nets(costmodel_validation.CACHE)
        measured = hostcal.best_cpu_ms(timed, passes=args.passes)
        anchors = hostcal._read(hostcal.cache_path())["anchor_ms"]
        drift = {d: measured[f"calibration {d}"] / anchors[d] for d in anchors}
        for name in MODELS:
            estimated = costmodel.estimate(paths[name], target, 1).p50_ms
            errors[name].append(estimated / measured[name] - 1)
            corrected[name].append(
                estimated * drift["int8" if "int8" in name else "fp32"] / measured[name] - 1
            )
            rows[name] = (measured[name], estimated)
            spread[name].append(rows[name])
        print(f"round {r + 1}: calibrated in {seconds:.1f} s (load {load_before:.1f} -> "
              f"{os.getloadavg()[0]:.1f}); overhead {target.op_overhead_us} us/op + "
              f"{target.run_overhead_us} us/run, K0 {target.depth_half}; "
              + ", ".join(f"{n} {rows[n][0]:.3f}/{rows[n][1]:.3f} ms {e[-1]:+.1%}" for n, e in errors.items()))  # fmt: skip
        absolute = sorted(abs(e[-1]) for e in errors.values())
        steady = sorted(abs(e[-1]) for e in corrected.values())
        print(f"  round {r + 1} median |error| {statistics.median(absolute):.1%}, "
              f"{sum(e <= GOAL for e in absolute)} of {len(absolute)} within {GOAL:.0%}; the calibration "
              f"networks ran {drift['fp32']:.2f}x / {drift['int8']:.2f}x (fp32 / int8) their calibration "
              f"time here: corrected for that, median {statistics.median(steady):.1%}, "
              f"{sum(e <= GOAL for e in steady)} within {GOAL:.0%}")  # fmt: skip
    print(f"\n{'model':20} {'cpu ms':>8} {'estimated':>10} {'wall p50':>9} {'meas/est max/min':>16}"
          "   error per round -> median")  # fmt: skip
    medians = {}
    for name in MODELS:
        medians[name] = statistics.median(errors[name])
        measured, estimated = rows[name]
        per_round = " ".join(f"{e:+6.1%}" for e in errors[name])
        wall = wall_p50(paths[name], 30) if args.wall else float("nan")
        # how far the measurement and the estimate each moved between rounds (max / min)
        moved = [max(v) / min(v) for v in zip(*spread[name], strict=True)]
        print(f"{name:20} {measured:8.3f} {estimated:10.3f} {wall:9.3f} {moved[0]:7.2f}x/{moved[1]:.2f}x"
              f"   {per_round} -> {medians[name]:+6.1%}")  # fmt: skip
    absolute = sorted(abs(e) for e in medians.values())
    within = sum(e <= GOAL for e in absolute)
    print(f"median |error| over the models {statistics.median(absolute):.1%}, max {absolute[-1]:.1%}, "
          f"{within} of {len(absolute)} within {GOAL:.0%} ({cpu}, load {os.getloadavg()[0]:.1f})")  # fmt: skip
    if args.cli:
        for name in ("mobilenet_v2", "resnet18_int8"):
            print(f"CLI estimate {name}: {cli_estimate(paths[name]):.3f} ms (in-process {rows[name][1]:.3f})")


if __name__ == "__main__":
    main()
