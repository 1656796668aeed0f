"""The host spec calibrated on this CPU: a few seconds of ONNX Runtime micro-benchmarks, cached.

`host.toml`'s efficiencies were fitted on one machine; on another CPU (an AMX Xeon instead of a
Zen 4 EPYC) the same table was +58..+101% off. So at first use `calibrated(target)` builds two
small networks that hold the kernels real models are made of (3x3 and 1x1 convolutions at 56x56 ..
7x7, depthwise convolutions, a residual add, pooling, a fully-connected layer) and a 7x7 RGB stem,
each as fp32 and as INT8 (QDQ, as `convert --preset int8` writes it), profiles them per layer with
ONNX Runtime at one thread, and fits the efficiencies, the depth constants (`costmodel.fit_depth`)
and the per-op and per-run overheads (chains of 1 and 40 tiny convolutions). Networks of one class
each (1x1, 3x3, depthwise convolutions, a fully-connected layer; fp32 and INT8) are then timed
whole, and each class's level is set so the whole-run estimates match them (`anchor_classes`).
Every time is the
fastest of many samples (contention on a shared machine only adds time), and the whole-network
anchors and the chains are measured in turns (`best_cpu_ms`), so they share the load they ran under.
The parallel fraction comes from timing the fp32 network at one thread and at all cores. Peaks are
read from the CPU flags (AVX-512: 32 fp32 MACs/cycle, VNNI: 4x that for INT8), so the efficiencies
stay near 1.

The result is cached per CPU in `~/.cache/edgesmith/host-<hash>.json` (the hash covers the CPU
model name, its flags, the core count, the ONNX Runtime version and `VERSION`), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cpu import cpu_flags
from .spec import Target

if TYPE_CHECKING:
    from .layer import Layer

VERSION = 12  # bump when the benchmark or the fit changes: old cache files are then ignored

# (kind, input channels, output channels, stride) at the spatial size reached so far: an RGB stem,
# two shallow 1x1 convolutions (16 and 32 deep), then a MobileNetV2 / ResNet mix from 56x56 down to
# 7x7, so stems, shallow and deep, large and small kernels all enter the fit.
LAYERS = [
    ("conv3", 3, 32, 2), ("conv1", 32, 16, 1), ("conv1", 16, 32, 1),
    ("conv3", 32, 64, 1), ("conv1", 64, 192, 1), ("dw", 192, 192, 1), ("conv1", 192, 64, 1), ("add",),
    ("dw", 64, 64, 2), ("conv3", 64, 128, 1), ("conv1", 128, 384, 1), ("dw", 384, 384, 1),
    ("conv1", 384, 128, 1), ("add",), ("pool",), ("conv3", 128, 256, 1), ("conv1", 256, 768, 1),
    ("dw", 768, 768, 2), ("conv1", 768, 160, 1), ("conv1", 160, 960, 1), ("dw", 960, 960, 1),
    ("conv3", 960, 256, 1), ("gap",), ("gemm", 256, 1000),
]  # fmt: skip
INPUT = (1, 3, 112, 112)
# A ResNet-style 7x7 RGB stem on the same input: with the network's 3x3 stem, two stem depths (27 and
# 147 MACs per output), so the stems' own depth constant can be fitted (ORT's x86 INT8 stem: 18
# GMAC/s at depth 27, 53 at depth 147 on an AMX Xeon).
STEM = [("conv7", 3, 64, 2)]
TINY = [("conv1", 8, 8, 1)] * 40  # 40 kernels of 64 MACs per pixel on 4x4: per-op dispatch cost
TINY_INPUT = (1, 8, 4, 4)
# Networks of one op class each (kinds, input shape), timed whole (fp32 and INT8) beside the
# calibration networks: their CPU times set each class's level (`anchor_classes`).
CLASS_NETS: dict[str, tuple[list[tuple[Any, ...]], tuple[int, ...]]] = {
    "pointwise": ([("conv1", 32, 128, 1), ("conv1", 128, 64, 1), ("conv1", 64, 256, 1), ("conv1", 256, 64, 1)],
                  (1, 32, 56, 56)),
    "dwconv": ([("dw", 96, 96, 1), ("dw", 96, 96, 2), ("dw", 96, 96, 1), ("dw", 96, 96, 1)], (1, 96, 56, 56)),
    "conv": ([("conv3", 32, 64, 1), ("conv3", 64, 64, 1), ("conv3", 64, 128, 2), ("conv3", 128, 128, 1)],
             (1, 32, 56, 56)),
    "gemm": ([("gap",), ("gemm", 512, 1000)], (1, 512, 7, 7)),
}  # fmt: skip
ANCHORED = tuple(CLASS_NETS)  # one whole-run scale each; every other class (stem, pool, add ...) shares one


def cache_path() -> Path:
    """`~/.cache/edgesmith/host-<hash>.json` (or under $XDG_CACHE_HOME) for this CPU and runtime."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgesmith" / f"host-{cpu_key()}.json"


def cpu_key() -> str:
    """What makes a calibration valid: CPU model, flags, cores, ONNX Runtime version, VERSION."""
    import onnxruntime

    facts = {"model": _cpu_model(), "flags": sorted(cpu_flags()), "cores": _cores(),
             "onnxruntime": onnxruntime.__version__, "version": VERSION}  # fmt: skip
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def calibrated(target: Target, refresh: bool = False) -> Target:
    """`target` (the host spec, cores and clock already read) with this CPU's fitted figures."""
    path = cache_path()
    data = None if refresh else _read(path)
    if data is None:
        data = calibrate(target)
        _write_atomic(path, data)
    return apply(target, data)


def apply(target: Target, data: dict[str, Any]) -> Target:
    """The host spec with a calibration's peaks, efficiencies, overhead and parallel fraction."""
    return replace(
        target,
        macs_per_cycle=dict(data["macs_per_cycle"]),
        efficiency={d: dict(t) for d, t in data["efficiency"].items()},
        op_overhead_us=float(data["op_overhead_us"]),
        run_overhead_us=float(data["run_overhead_us"]),
        parallel_fraction=float(data["parallel_fraction"]),
        depth_half={d: float(k) for d, k in data.get("depth_half", {}).items()},
        cache_kb=int(data.get("cache_kb", 0)),
        fitted=f"calibrated on this CPU ({data['cpu']}, {data['date']}; {cache_path().name})",
    )


def calibrate(target: Target) -> dict[str, Any]:
    """Benchmark this CPU (a few seconds) and fit the host spec's numbers to it."""
    from .._io import work_folder
    from . import costmodel, graph, hostprofile

    started = time.perf_counter()
    target = replace(target, macs_per_cycle=peak_macs_per_cycle(cpu_flags()), cache_kb=private_cache_kb())
    with work_folder("hostcal") as tmp:
        fp32 = build_net(Path(tmp) / "cal_fp32.onnx")
        int8 = quantize_net(fp32, Path(tmp) / "cal_int8.onnx")
        stem = build_net(Path(tmp) / "stem_fp32.onnx", STEM)
        nets = (fp32, int8, stem, quantize_net(stem, Path(tmp) / "stem_int8.onnx"))
        whole = dict(zip(("fp32", "int8", "stem_fp32", "stem_int8"), nets, strict=True))
        for name, (kinds, shape) in CLASS_NETS.items():
            whole[f"{name}_fp32"] = build_net(Path(tmp) / f"{name}_fp32.onnx", kinds, shape)
            whole[f"{name}_int8"] = quantize_net(
                whole[f"{name}_fp32"], Path(tmp) / f"{name}_int8.onnx", shape
            )
        chains = {"one": build_net(Path(tmp) / "tiny1.onnx", TINY[:1], TINY_INPUT),
                  "chain": build_net(Path(tmp) / "tiny.onnx", TINY, TINY_INPUT)}  # fmt: skip
        # whole runs before and after the per-kernel profile, the fastest of the two windows: a
        # calibration timed while another job held the core's sibling throughout one window came
        # out 1.4-1.8x slow in every estimate (host_estimate.py, load 13-17)
        before = best_cpu_ms(whole | chains)
        samples = []
        for path, times in zip(nets, fastest_node_times(nets), strict=True):
            layers = graph.layers(path)
            samples.append((layers, hostprofile.match(layers, times)))
        efficiency, _, depth_half = costmodel.fit_depth(samples, target, threads=1)
        best = {name: min(ms, before[name]) for name, ms in best_cpu_ms(whole | chains).items()}
        overhead, per_run = dispatch_costs(best["one"], best["chain"], len(TINY))
        target = replace(target, efficiency=efficiency, op_overhead_us=overhead, depth_half=depth_half,
                         run_overhead_us=per_run)  # fmt: skip
        efficiency = anchor_classes(
            efficiency, [(graph.layers(p), best[n]) for n, p in whole.items()], target
        )
        target = replace(target, efficiency=efficiency)
        parallel = parallel_fraction(fp32, target.cores, target.parallel_fraction)
    return {
        "cpu": _cpu_model(),
        "cores": target.cores,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "macs_per_cycle": target.macs_per_cycle,
        "efficiency": efficiency,
        "depth_half": depth_half,
        "op_overhead_us": overhead,
        "run_overhead_us": per_run,
        "parallel_fraction": parallel,
        "cache_kb": target.cache_kb,
        "anchor_ms": {"fp32": best["fp32"], "int8": best["int8"]},  # the networks' times, for checks
        "seconds": round(time.perf_counter() - started, 2),
        "version": VERSION,
    }


def fastest_node_times(paths: tuple[Path, ...], passes: int = 3, runs: int = 10) -> list[dict[str, float]]:
    """Per network, ONNX Runtime's per-kernel milliseconds at one thread: each kernel's fastest run
    over `passes` turns through the networks (`runs` profiled runs each). The depth constants and
    class efficiencies are fitted on these ratios, so a burst of load during one network's profile
    must not make its kernels look slow (one profile per network swung the fitted INT8 K0 between
    32 and 64 and a ResNet-18 INT8 estimate by 60% from one calibration to the next at load 13)."""
    from .hostprofile import ort_node_times

    best: list[dict[str, float]] = [{} for _ in paths]
    for _ in range(passes):
        for fastest, path in zip(best, paths, strict=True):
            for node, ms in ort_node_times(path, threads=1, runs=runs, warmup=2, quantile=0.0).items():
                fastest[node] = min(ms, fastest.get(node, ms))
    return best


def dispatch_costs(one_ms: float, chain_ms: float, length: int) -> tuple[float, float]:
    """(per-op, per-run) overhead in us, from the CPU times of a model of 1 tiny convolution and of a
    chain of `length` of them (measured together, `best_cpu_ms`).

    The fit's intercept soaks up whatever small kernels cost beyond their MACs; the chains measure
    the dispatch cost itself, which small models pay per layer, and what one `run` costs beyond its
    kernels (most of a 3-layer model's 20 us on this Xeon)."""
    per_op = max(chain_ms - one_ms, 0.0) * 1e3 / (length - 1)
    return round(per_op, 2), round(max(one_ms * 1e3 - per_op, 0.0), 2)


def anchor_classes(
    efficiency: dict[str, Any], nets: list[tuple[list[Layer], float]], target: Target
) -> dict[str, Any]:
    """The efficiencies with each class's level set by whole runs: per dtype, one scale per class of
    `ANCHORED` and one shared by every other class, least squares on relative residuals so that
    each network's estimate matches its measured CPU time (`nets`: (layers, ms)).

    The per-layer profile gives the shape within a class (the depth constants, the stems) but not
    its level: the profiler's per-kernel times miss what runs between kernels, and the miss differs
    by class (on an AMX Xeon the profile-fitted table over-estimated whole runs of 1x1-only and
    3x3-only fp32 networks by 1.3x, depthwise-only by 1.15x, INT8 depthwise under-estimated at 0.7x).
    One scale per dtype, set on one mixed network, carried those differences into every model."""
    import numpy as np

    from . import costmodel

    table = {d: dict(t) for d, t in efficiency.items()}
    current = replace(target, efficiency=table)
    groups = [*ANCHORED, "rest"]
    for dtype in table:
        rows, rhs = [], []
        for layers, measured_ms in nets:
            if _dtype(layers) != dtype:
                continue
            row, fixed = [0.0] * len(groups), target.run_overhead_us * 1e-3
            for lay in layers:
                ms = costmodel.layer_ms(lay, current, 1)
                compute = ms - target.op_overhead_us * 1e-3
                if lay.dtype == dtype and lay.macs and compute > target.memory_s(lay.bytes) * 1e3:
                    op_class = costmodel.kernel_class(lay, table[dtype])
                    row[groups.index(op_class if op_class in ANCHORED else "rest")] += compute
                    ms -= compute
                fixed += ms
            rows.append([r / measured_ms for r in row])
            rhs.append((measured_ms - fixed) / measured_ms)
        if not rows:
            continue
        scales, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
        for op_class, value in table[dtype].items():
            scale = float(scales[groups.index(op_class if op_class in ANCHORED else "rest")])
            if scale > 0:  # 0: no network timed the class (nothing to say); < 0: noise, keep it
                table[dtype][op_class] = round(float(value) / scale, 4)
    return table


def _dtype(layers: list[Layer]) -> str:
    """A network's dtype: int8 if any kernel with MACs is INT8 (a QDQ network), else fp32."""
    return max((lay.dtype for lay in layers if lay.macs), key=lambda d: d == "int8", default="fp32")


def cpu_ms(path: Path, runs: int = 15, quantile: float = 0.0) -> float:
    """Single-thread CPU milliseconds of one run of `path`: the fastest of `runs` samples (or another
    `quantile` of them), after warm-up. `best_cpu_ms` measures several models in turns."""
    from .hostprofile import quantile_of

    timer = RunTimer(path)
    return quantile_of([timer.sample() for _ in range(runs)], quantile)


def best_cpu_ms(paths: dict[str, Path], passes: int = 4, runs: int = 5) -> dict[str, float]:
    """{name: single-thread CPU ms of one run}: the fastest sample of each model over `passes` turns
    through all of them (`runs` samples per model per turn).

    On a shared machine a busy sibling hyperthread or a shared cache slows every run down for as
    long as the other job runs, and contention only ever adds time. Taking turns spreads each
    model's samples over the whole measurement, so every model gets the same chances to catch a
    quiet moment and two figures compared with each other (a calibration network and the chain of
    tiny kernels; an estimate's anchor and a check) were taken under the same load; the minimum is
    the figure closest to the uncontended time."""
    timers = {name: RunTimer(path) for name, path in paths.items()}
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(passes):
        for name, timer in timers.items():
            best[name] = min(best[name], *(timer.sample() for _ in range(runs)))
    return best


class RunTimer:
    """One ONNX Runtime session of `path` at one thread on random inputs, timed by CPU time.

    CPU time of the calling thread (ONNX Runtime at one thread runs there) leaves out the waits for
    a core, which wall time on a loaded machine does not (2-8x the CPU time at load average 10-20 on
    2 vCPUs). Reading a thread's CPU clock is a system call (~10-20 us in a VM, as long as a small
    model's whole run), so a sample times as many runs as take ~2 ms and divides."""

    def __init__(self, path: Path, warmup: int = 3) -> None:
        from ..runtime import load
        from .latency import random_feeds

        self.session = load(path, backend="ort", threads=1)
        self.feeds = random_feeds(self.session)
        start = time.perf_counter()
        for _ in range(warmup):
            self.session.run(self.feeds)
        self.repeat = max(1, int(0.002 / max((time.perf_counter() - start) / warmup, 1e-6)))

    def sample(self) -> float:
        """CPU milliseconds of one run, averaged over one batch of `repeat` runs."""
        start = time.thread_time()
        for _ in range(self.repeat):
            self.session.run(self.feeds)
        return (time.thread_time() - start) / self.repeat * 1e3


def private_cache_kb(cpu: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The size of the first core's L2 in KiB (Linux sysfs; 0 where it is not readable): kernels
    whose working set fits there are not held to the DRAM bandwidth (`Target.cache_kb`)."""
    for index in sorted(cpu.glob("index*")):
        try:
            level, kind, size = ((index / n).read_text().strip() for n in ("level", "type", "size"))
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data") and size[:-1].isdigit():
            return int(size[:-1]) * {"K": 1, "M": 1024}.get(size[-1], 0)
    return 0


def peak_macs_per_cycle(flags: frozenset[str]) -> dict[str, float]:
    """Nominal per-core MACs/cycle from the vector ISA: two FMA pipes of the widest vectors; VNNI
    (or AMX, which implies it) does 4 u8 x s8 MACs per 32-bit lane."""
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fp32 = 2 * lanes if "fma" in flags or "avx512f" in flags or "asimd" in flags else lanes
    vnni = flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}
    return {"fp32": float(fp32), "int8": float(fp32 * (4 if vnni else 2))}


def parallel_fraction(path: Path, cores: int, default: float) -> float:
    """Amdahl's p from the fp32 network's best time at 1 thread and at `cores` threads."""
    if cores < 2:
        return default
    best = {n: _best_ms(path, n) for n in (1, cores)}
    speedup = best[1] / best[cores]
    p = (1 - 1 / speedup) / (1 - 1 / cores)
    return round(min(max(p, 0.0), 0.99), 3)


def run_times_ms(path: Path, threads: int, runs: int) -> list[float]:
    """Wall time of each of `runs` ONNX Runtime runs of `path` on random inputs, after 3 warm-up runs."""
    from ..runtime import load
    from .latency import random_feeds

    session = load(path, backend="ort", threads=threads)
    feeds = random_feeds(session)
    for _ in range(3):
        session.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _best_ms(path: Path, threads: int, runs: int = 15) -> float:
    """The fastest of `runs` (a shared machine only adds time), after warm-up."""
    return min(run_times_ms(path, threads, runs))


def build_net(path: Path, spec: list[tuple[Any, ...]] = LAYERS, shape: tuple[int, ...] = INPUT) -> Path:
    """The fp32 calibration network (`LAYERS` on a `INPUT`-shaped input; others for tests), random
    weights, seeded: the same file every time."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = []
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0.0), ("six", 6.0))]
    x = "input"

    def weight(name: str, shape: tuple[int, ...]) -> str:
        fan_in = int(np.prod(shape[1:]))
        inits.append(
            numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)
        )
        return name

    for i, (kind, *args) in enumerate(spec):
        out = f"t{i}"
        if kind.startswith("conv") or kind == "dw":  # conv1, conv3, conv7: the kernel size
            cin, cout, stride = args
            k, group = (3, cin) if kind == "dw" else (int(kind[4:]), 1)
            w = weight(f"w{i}", (cout, cin // group, k, k))
            b = weight(f"b{i}", (cout,))
            nodes.append(helper.make_node("Conv", [x, w, b], [f"c{i}"], f"conv{i}", kernel_shape=[k, k],
                                          pads=[k // 2] * 4, strides=[stride] * 2, group=group))  # fmt: skip
            if k > 1 and kind != "dw":  # ResNet-style ReLU; MobileNet-style ReLU6 (Clip) on the others
                nodes.append(helper.make_node("Relu", [f"c{i}"], [out], f"relu{i}"))
            else:
                nodes.append(helper.make_node("Clip", [f"c{i}", "zero", "six"], [out], f"relu6_{i}"))
        elif kind == "add":  # closes an expand -> depthwise -> project block: adds the block's input
            nodes.append(helper.make_node("Add", [x, f"t{i - 4}"], [out], f"add{i}"))
        elif kind == "pool":
            nodes.append(
                helper.make_node("MaxPool", [x], [out], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
            )
        elif kind == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [f"g{i}"], f"gap{i}"))
            nodes.append(helper.make_node("Flatten", [f"g{i}"], [out], f"flat{i}"))
        else:  # gemm
            w, b = weight(f"w{i}", (args[1], args[0])), weight(f"b{i}", (args[1],))
            nodes.append(helper.make_node("Gemm", [x, w, b], [out], f"gemm{i}", transB=1))
        x = out
    graph = helper.make_graph(
        nodes, "edgesmith_host_calibration",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def quantize_net(src: Path, dest: Path, shape: tuple[int, ...] = INPUT) -> Path:
    """The INT8 twin: ONNX Runtime's static QDQ quantizer, per-channel s8 weights, u8 activations
    (what `convert --preset int8` writes)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    # onnxruntime is not followed by mypy: its classes are Any, and this protocol is a base class
    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(2)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    logging.disable(logging.WARNING)  # its advice to pre-process a model it quantizes fine
    try:
        quantize_static(str(src), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)
    return dest


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == VERSION else None


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename: a reader sees the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
