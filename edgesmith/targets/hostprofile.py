"""Per-layer timings on this machine from ONNX Runtime's profiler, matched to `graph.Layer`s.

ORT names a profiled kernel after its node, or (after layout transforms and fusions) after the
tensor it writes, with suffixes such as `_nchwc`. Matching on both lets per-layer measurements
line up with the cost model's layers, which is what `costmodel.fit` and the report's per-layer
bars need. Kernels ORT inserts itself (layout reorders) are reported under `(runtime)`.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._io import work_folder
from .latency import input_shape
from .layer import Layer

SUFFIXES = ("_kernel_time", "_nchwc", "_token", "/WithoutBiases")


def ort_node_times(path: str | Path, threads: int = 1, runs: int = 20, warmup: int = 5,
                   quantile: float = 0.5, shapes: dict[str, Any] | None = None) -> dict[str, float]:  # fmt: skip
    """Milliseconds per ORT kernel name over `runs` runs on random inputs (dynamic axes sized by
    `shapes`, see latency.input_shape): the median, or another `quantile` (a low one estimates the
    uncontended time on a shared machine)."""
    import numpy as np

    from ..errors import require
    from ..runtime.backends.ort_backend import DTYPES

    ort = require("onnxruntime", "ort")
    with work_folder("prof") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {}
        for arg in session.get_inputs():
            shape = input_shape(arg.name, [d if isinstance(d, int) else None for d in arg.shape], 1, shapes)
            feeds[arg.name] = rng.standard_normal(shape).astype(DTYPES.get(arg.type, "float32"))
        for _ in range(warmup):
            session.run(None, feeds)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["name"]].append(event["dur"] / 1000.0)
    return {name: quantile_of(times[1:] or times, quantile) for name, times in per_node.items()}


def openvino_node_times(path: str | Path, threads: int = 1, runs: int = 20, shapes: dict[str, Any] | None = None
                        ) -> dict[str, float]:  # fmt: skip
    """Median milliseconds per executed OpenVINO node (performance counters, CPU plugin), dynamic axes
    sized by `shapes`."""
    import numpy as np

    from ..errors import require

    ov = require("openvino", "openvino")
    compiled = ov.Core().compile_model(
        str(path), "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": threads}
    )
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    feeds = {}
    for i, port in enumerate(compiled.inputs):
        dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        shape = input_shape(port.get_any_name(), dims, 1, shapes)
        feeds[i] = rng.standard_normal(shape).astype(port.get_element_type().to_dtype())
    per_node: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs + 3):
        request.infer(feeds)
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                per_node[info.node_name].append(info.real_time.total_seconds() * 1e3)
    return {name: statistics.median(times[3:] or times) for name, times in per_node.items()}


def quantile_of(values: list[float], q: float) -> float:
    if q == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def match(graph: list[Layer], node_times: dict[str, float]) -> dict[str, float]:
    """{layer name: ms}; kernels that match no layer are summed under '(runtime)'."""
    keys: dict[str, str] = {}
    for layer in graph:
        for key in [layer.name, *layer.outputs]:
            keys[key] = layer.name
    out: dict[str, float] = defaultdict(float)
    for name, ms in node_times.items():
        base = name
        for suffix in SUFFIXES:
            base = base.split(suffix)[0] if suffix in base else base
        out[keys.get(base, "(runtime)")] += ms
    return dict(out)
