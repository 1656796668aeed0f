"""`profile --target host --estimate` against `profile` on this machine, fp32 and INT8.

The demo CNN (models/mnist_cnn.onnx), a MobileNetV2 and a ResNet-18 (plain torch, seeded weights,
benchmarks/zoo.py and costmodel_validation.py) and their ONNX Runtime QDQ INT8 twins (what
`convert --preset int8` writes), all at one thread. Each model is measured with the CLI (`profile
--threads 1 --json`, wall-time p50) and estimated with the CLI (the host spec calibrated on this CPU,
targets/hostcal.py); the single-thread CPU time per run (hostcal.cpu_ms) is printed beside it, since
on a machine shared with other jobs the wall time also holds the waits for a core.

    .venv/bin/python benchmarks/host_estimate.py [--recalibrate] [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ["mnist_cnn", "mnist_cnn_int8", "mobilenet_v2", "mobilenet_v2_int8", "resnet18", "resnet18_int8"]


def profile(path: Path, *extra: str) -> dict:
    """The CLI's `profile --json` answer for `path` at one thread."""
    cmd = [
        sys.executable,
        "-m",
        "edgesmith",
        "profile",
        str(path),
        "--threads",
        "1",
        "--json",
        "--no-save",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recalibrate", action="store_true", help="benchmark this CPU again first")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    import costmodel_validation

    from edgesmith.targets import hostcal, spec

    if args.recalibrate:
        hostcal.calibrated(spec.get("host"), refresh=True)
    paths = costmodel_validation.models()
    print(
        f"{hostcal._cpu_model()} ({platform.machine()}, {hostcal._cores()} cores); load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'model':20} {'measured p50':>12} {'cpu ms':>8} {'estimated':>10} {'est/meas':>9} {'est/cpu':>8}")
    for name in MODELS:
        measured = profile(paths[name], "--runs", str(args.runs))["p50_ms"]
        estimated = profile(paths[name], "--target", "host", "--estimate")["p50_ms"]
        cpu = hostcal.cpu_ms(paths[name], runs=args.runs)
        print(
            f"{name:20} {measured:12.3f} {cpu:8.3f} {estimated:10.3f} {estimated / measured:9.2f} {estimated / cpu:8.2f}"
        )


if __name__ == "__main__":
    main()
