"""The device-side benchmark runner: one self-contained file, pushed next to the model and run with
the device's own Python. It needs numpy and one backend (onnxruntime for .onnx; ai_edge_litert or
tflite_runtime for .tflite) and nothing from edgesmith, so a bare Raspberry Pi OS with
`pip install numpy onnxruntime` is enough. It prints one JSON object (a Measurement) on stdout.
Only `--probe` (energy) imports edgesmith's power module, pushed beside it by `ssh.profile`.

Python 3.6+ for timing (boards keep old Pythons, so no newer syntax here), 3.7+ with --probe.
Exit codes: 0 measured; 3 the backend for this file is not installed (JSON says which); 4 the model
could not be loaded. Usage: python3 runner.py MODEL [--runs N] [--warmup N] [--threads N] [--probe P]
"""

import argparse
import importlib
import json
import platform
import resource
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typed with comments: annotations would not run on the boards' Python 3.6
    from collections.abc import Callable
    from typing import Any, NoReturn  # noqa: F401  (used in the type comments)

    Run = Callable[[], Any]

MISSING_BACKEND, BAD_MODEL = 3, 4
BACKENDS = {".onnx": [("onnxruntime", "ort")], ".tflite": [("ai_edge_litert.interpreter", "litert"),
            ("tflite_runtime.interpreter", "litert"), ("tensorflow.lite", "litert")]}  # fmt: skip


def fail(code, **info):
    # type: (int, **Any) -> NoReturn
    print(json.dumps(info))
    sys.exit(code)


def open_model(path, threads):
    # type: (str, int | None) -> tuple[str, Run]
    suffix = "." + path.rsplit(".", 1)[-1].lower()
    for module_name, name in BACKENDS.get(suffix, []):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            return name, (_ort if name == "ort" else _litert)(module, path, threads)
        except Exception as exc:  # the backend's own error types
            fail(BAD_MODEL, error="bad_model", detail=str(exc).splitlines()[0][:300] if str(exc) else "")
    wanted = [m.split(".")[0] for m, _ in BACKENDS.get(suffix, [])] or ["(no backend reads " + suffix + ")"]
    fail(MISSING_BACKEND, error="missing_backend", wanted=wanted, python=sys.version.split()[0])


def _feeds(np, specs):
    # type: (Any, list[tuple[Any, list[Any], Any]]) -> dict[Any, Any]
    rng = np.random.default_rng(0)
    feeds = {}
    for name, shape, dtype in specs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
        dt = np.dtype(dtype)
        if dt.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dt)
        else:
            feeds[name] = rng.integers(0, 100, shape).astype(dt)
    return feeds


def _ort(ort, path, threads):
    # type: (Any, str, int | None) -> Run
    import numpy as np

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(float16)": "float16"}  # fmt: skip
    feeds = _feeds(np, [(a.name, a.shape, types.get(a.type, "float32")) for a in session.get_inputs()])
    return lambda: session.run(None, feeds)


def _litert(module, path, threads):
    # type: (Any, str, int | None) -> Run
    import numpy as np

    interpreter = module.Interpreter(model_path=path, num_threads=threads or None)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    feeds = _feeds(np, [(d["index"], list(d["shape"]), d["dtype"]) for d in details])

    def run():
        # type: () -> None
        for index, value in feeds.items():
            interpreter.set_tensor(index, value)
        interpreter.invoke()

    return run


def _energy(name, run, runs):
    # type: (str, Run, int) -> dict[str, Any]
    """Energy per inference with edgesmith's probes, in a second loop after the timed one (the
    sampler thread never runs during timing). Needs the `edgesmith` files pushed beside this script."""
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        from edgesmith.errors import EdgesmithError
        from edgesmith.targets import power
    except ImportError:
        return {"energy_error": "the edgesmith power module was not pushed with the runner"}
    try:
        probe = power.find_probe(name)
    except EdgesmithError as exc:
        return {"energy_error": str(exc)}
    if probe is None:
        return {}
    return power.measure(probe, run, max(runs, 20)).to_json()


def main(argv=None):
    # type: (list[str] | None) -> None
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--probe", default=None, help="measure energy too: auto, rapl, pi5-pmic, android-battery ..."
    )
    args = p.parse_args(argv)
    try:
        import numpy as np
    except ImportError:
        fail(MISSING_BACKEND, error="missing_backend", wanted=["numpy"], python=sys.version.split()[0])
    backend, run = open_model(args.model, args.threads)
    for _ in range(args.warmup):
        run()
    times = np.empty(args.runs)
    clock = time.perf_counter
    for i in range(args.runs):
        start = clock()
        run()
        times[i] = clock() - start
    times *= 1000.0
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1024 * 1024 if platform.system() == "Darwin" else 1024
    )
    energy = _energy(args.probe, run, args.runs) if args.probe else {}
    print(json.dumps(dict(energy, **{
        "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(times.mean()),
        "stdev_ms": float(times.std(ddof=1)) if args.runs > 1 else 0.0, "min_ms": float(times.min()),
        "runs": args.runs, "warmup": args.warmup, "threads": args.threads, "backend": backend, "batch": 1,
        "peak_rss_mb": round(peak, 1), "source": "measured", "machine": platform.machine(),
        "python": sys.version.split()[0],
    })))  # fmt: skip


if __name__ == "__main__":
    main()
