"""Latency estimate for a model on a target without the device: a per-layer roofline.

For each layer (see `graph.py`): compute time = MACs / (attainable MACs/s x the efficiency of the
kernel stack for that op class), memory time = bytes touched / sustained bandwidth; the layer takes
the larger of the two plus a fixed per-op overhead (dispatch, requantization, thread sync); the
model adds a fixed per-inference overhead (the host's runtime entry and I/O binding; 0 on devices).

The attainable rate is a property of the core AND the stack: `clock x min(macs_per_cycle[dtype],
issue_width x macs_per_instruction[class])`. The first term is the vector units' peak (the core's
optimisation guide); the second is how fast the core can decode the stack's inner loop (a kernel
whose loop is 1/3 loads cannot keep a 2-wide core's FMA pipes busy). So the same stack table
transfers across cores: efficiencies describe the software, the spec's cpu section the hardware.
Threads scale the compute term by Amdahl's law with the stack's parallel fraction. A device
measured with another stack (a 32-bit OS build, X-CUBE-AI instead of TFLM) uses `Target.with_stack`.

Efficiencies (and the parallel fraction) are the only fitted numbers: `fit` from per-layer
measurements, `fit_figures` / `fit_parallel` from end-to-end published figures; the spec's
`[model] fitted` says from which. docs/device_figures.md reports the fit and held-out errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .graph import layers
from .layer import Layer
from .spec import OP_CLASSES, Target


@dataclass
class Estimate:
    """The model's answer: total and per-layer milliseconds, and the inputs that produced them."""

    target: str
    threads: int
    p50_ms: float
    macs: int
    param_bytes: int
    peak_activation_bytes: int
    layers: list[dict[str, Any]] = field(default_factory=list)
    source: str = "estimated"

    def to_json(self, per_layer: bool = True) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not per_layer:
            out.pop("layers")
        return out


def kernel_class(layer: Layer, table: dict[str, Any] | None = None) -> str:
    """The layer's op class, refined where `table` (the dtype's efficiencies; None: always) has an
    entry for it, as a calibrated host table does; tables without the entry treat both as conv:

    - "stem": a convolution over fewer than 4 input channels (an RGB or grayscale image). ONNX
      Runtime's x86 INT8 convolution runs it ~20x slower per MAC than its others (the u8
      dot-product instructions take 4 channels at a time).
    - "pointwise": a 1x1 convolution (its depth is its input channels). ONNX Runtime's x86 fp32
      runs it with another kernel than its 3x3 convolutions (NCHWc pointwise vs direct): 55 against
      69 GMAC/s on MobileNet v1 and ResNet-18 on one AMX Xeon core.
    """
    if layer.op_class != "conv":
        return layer.op_class
    if 0 < layer.in_channels < 4:
        refined = "stem"
    elif layer.depth and layer.depth == layer.in_channels:
        refined = "pointwise"
    else:
        return "conv"
    return refined if table is None or refined in table else "conv"


def layer_ms(layer: Layer, target: Target, threads: int = 1) -> float:
    """The roofline time of one layer on `target`, in milliseconds."""
    op_class = kernel_class(layer, target.efficiency.get(layer.dtype) or target.efficiency["fp32"])
    rate = (
        target.peak_macs_per_s(layer.dtype, threads, op_class)
        * target.eff(layer.dtype, op_class)
        * target.depth_factor(layer.dtype, op_class, layer.depth)
    )
    compute = layer.macs / rate if rate > 0 else 0.0
    memory = target.memory_s(layer.bytes)
    return (max(compute, memory) + target.op_overhead_us * 1e-6) * 1e3


def estimate(model: str | Path | list[Layer], target: Target, threads: int | None = None) -> Estimate:
    """Estimate `model` (a file or its layers) on `target` with `threads` (default: all cores)."""
    graph = layers(model) if isinstance(model, (str, Path)) else model
    threads = threads or target.cores
    rows: list[dict[str, Any]] = [
        {
            "name": layer.name,
            "op": layer.op,
            "class": layer.op_class,
            "dtype": layer.dtype,
            "macs": layer.macs,
            "ms": layer_ms(layer, target, threads),
        }  # fmt: skip
        for layer in graph
    ]
    return Estimate(
        target=target.name,
        threads=min(threads, target.cores),
        p50_ms=sum(r["ms"] for r in rows) + target.run_overhead_us * 1e-3,
        macs=sum(layer.macs for layer in graph),
        param_bytes=sum(layer.param_bytes for layer in graph),
        peak_activation_bytes=max((layer.in_bytes + layer.out_bytes for layer in graph), default=0),
        layers=rows,
    )


def fit(
    samples: list[tuple[list[Layer], dict[str, float]]], target: Target, threads: int = 1
) -> tuple[dict[str, Any], float]:
    """Efficiencies per dtype and op class, and the per-op overhead (us), from per-layer times.

    `samples`: (layers, {layer name: measured ms}) per model. Each measured layer gives one equation
    t = overhead + MACs / depth_factor x s[dtype, class], with s = 1 / (peak x efficiency) and the
    target's `depth_half` in the depth factor; least squares on relative residuals (each equation
    divided by its t), so small and large layers both count. Image stems get their own class.
    Kernels the runtime adds (the '(runtime)' entry) are spread over the layers as overhead.
    """
    return _solve(samples, target, threads)[:2]


def fit_depth(
    samples: list[tuple[list[Layer], dict[str, float]]], target: Target, threads: int = 1,
    grid: tuple[float, ...] = (0, 8, 16, 32, 64, 96, 128, 192, 256),
) -> tuple[dict[str, Any], float, dict[str, float]]:  # fmt: skip
    """`fit`, with each dtype's depth constant K0 (see `Target.depth_half`) chosen from `grid` as the
    one whose least-squares fit leaves the smallest relative residual; and, for a dtype whose stems
    come in two depths or more (a 3x3 and a 7x7 RGB stem), the stems' own K0 ("int8.stem") from
    `grid` and its doubles (a stem's per-output cost can be larger than any other kernel's). One
    constant at a time, the others held, twice over: each is identified by its own layers."""
    from dataclasses import replace

    dtypes = sorted({lay.dtype for graph, _ in samples for lay in graph if lay.macs})
    keys = [(d, grid) for d in dtypes]
    for dtype in dtypes:
        stems = {lay.depth for graph, _ in samples for lay in graph
                 if lay.dtype == dtype and lay.macs and kernel_class(lay) == "stem"}  # fmt: skip
        if len(stems) > 1:
            keys.append((f"{dtype}.stem", tuple(sorted({*grid, *(2 * g for g in grid)}))))
    depth_half: dict[str, float] = {}
    best = (*_solve(samples, target, threads), depth_half)
    for _ in range(2):
        for key, values in keys:
            for k in values:
                trial = {**best[3], key: float(k)}
                table, overhead, residual = _solve(samples, replace(target, depth_half=trial), threads)
                if residual < best[2] - 1e-9:
                    best = (table, overhead, residual, trial)
    chosen = {k: v for k, v in best[3].items() if v or "." in k}  # a stem's 0 overrides its dtype's K0
    return best[0], best[1], chosen


def _solve(
    samples: list[tuple[list[Layer], dict[str, float]]], target: Target, threads: int
) -> tuple[dict[str, Any], float, float]:
    """The least-squares fit behind `fit`: table, overhead (us) and the residual's squared norm."""
    import numpy as np

    keys: list[tuple[str, str]] = []
    rows, times = [], []
    for graph, measured in samples:
        extra = measured.get("(runtime)", 0.0) / max(len(graph), 1)
        for layer in graph:
            if layer.name not in measured or not layer.macs:
                continue
            op_class = kernel_class(layer)
            key = (layer.dtype, op_class)
            if key not in keys:
                keys.append(key)
            rows.append(
                (keys.index(key), layer.macs / target.depth_factor(layer.dtype, op_class, layer.depth))
            )
            times.append((measured[layer.name] + extra) * 1e-3)
    a = np.zeros((len(rows), len(keys) + 1))
    for i, (k, macs) in enumerate(rows):
        a[i, 0], a[i, k + 1] = 1.0, macs
    t = np.array(times)
    solution, residual, *_ = np.linalg.lstsq(a / t[:, None], np.ones_like(t), rcond=None)
    rss = float(residual[0]) if len(residual) else float(np.sum((a / t[:, None] @ solution - 1) ** 2))
    table: dict[str, dict[str, float]] = {d: dict(v) for d, v in target.efficiency.items()}
    for (dtype, op_class), inv in zip(keys, solution[1:], strict=True):
        if inv > 0:
            table.setdefault(dtype, {})[op_class] = round(
                1 / (inv * target.peak_macs_per_s(dtype, threads, op_class)), 4
            )
    overhead_us = round(max(float(solution[0]), 0.0) * 1e6, 2)
    return {d: {c: v[c] for c in OP_CLASSES if c in v} for d, v in table.items()}, overhead_us, rss


def fit_figures(
    figures: list[tuple[list[Layer], float, Target, int]], classes: tuple[str, ...] = ("conv", "dwconv")
) -> dict[str, Any]:
    """Efficiencies from end-to-end times only (published figures), shared by every figure's target.

    `figures`: (layers, measured ms, target, threads). One unknown 1/efficiency per (dtype, class)
    in `classes` that occurs in the layers; every other layer keeps its target's roofline time.
    Least squares on relative residuals (each figure's equation divided by its time), so a 1 ms and
    a 500 ms figure weigh the same. A fitted-class layer that the current solution puts on the memory
    roof counts as fixed memory time; a few rounds settle which side each layer is on. Returns the
    first figure's table with the fitted classes set.
    """
    from dataclasses import replace

    import numpy as np

    keys = sorted({(lay.dtype, lay.op_class) for g, *_ in figures for lay in g if lay.op_class in classes})
    table = {d: dict(v) for d, v in figures[0][2].efficiency.items()}
    for _ in range(6):
        rows, rhs = [], []
        for graph, measured_ms, target, threads in figures:
            current = replace(target, efficiency=table)
            row, fixed = [0.0] * len(keys), 0.0
            for layer in graph:
                key = (layer.dtype, layer.op_class)
                peak = target.peak_macs_per_s(layer.dtype, threads, layer.op_class)
                peak *= target.depth_factor(layer.dtype, layer.op_class, layer.depth)
                memory = target.memory_s(layer.bytes)
                if key in keys and layer.macs / (peak * current.eff(*key)) >= memory:
                    row[keys.index(key)] += layer.macs / peak
                    fixed += target.op_overhead_us * 1e-6
                else:
                    fixed += layer_ms(layer, current, threads) * 1e-3
            t = measured_ms * 1e-3
            rows.append([r / t for r in row])
            rhs.append((t - fixed) / t)
        inverse, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
        for (dtype, op_class), inv in zip(keys, inverse, strict=True):
            if inv > 0:
                table.setdefault(dtype, {})[op_class] = round(float(1 / inv), 4)
    return table


def fit_parallel(figures: list[tuple[list[Layer], float, Target, int]]) -> float:
    """The Amdahl parallel fraction that best matches multi-thread figures (mean relative error
    zero), by bisection: the estimate falls monotonically as the fraction grows."""
    from dataclasses import replace

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        bias = sum(
            estimate(g, replace(t, parallel_fraction=mid), n).p50_ms / ms - 1 for g, ms, t, n in figures
        )
        lo, hi = (mid, hi) if bias > 0 else (lo, mid)
    return round((lo + hi) / 2, 3)


def fit_totals(models: list[tuple[list[Layer], float]], target: Target, threads: int = 1,
               classes: tuple[str, ...] = ("conv", "dwconv")) -> dict[str, Any]:  # fmt: skip
    """Efficiencies from end-to-end times only (published figures): one unknown per class in
    `classes` (the rest keep the spec's values), solved by least squares on 1/efficiency."""
    import numpy as np

    rows, rhs = [], []
    for graph, measured_ms in models:
        fixed = 0.0
        row = [0.0] * len(classes)
        for layer in graph:
            peak = target.peak_macs_per_s(layer.dtype, threads, layer.op_class)
            if layer.op_class in classes:
                row[classes.index(layer.op_class)] += layer.macs / peak
                fixed += target.op_overhead_us * 1e-6
            else:
                fixed += layer_ms(layer, target, threads) * 1e-3
        rows.append(row)
        rhs.append(measured_ms * 1e-3 - fixed)
    inverse, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    dtype = models[0][0][0].dtype if models and models[0][0] else "fp32"
    table = {d: dict(t) for d, t in target.efficiency.items()}
    for op_class, inv in zip(classes, inverse, strict=True):
        table[dtype][op_class] = round(float(1 / inv), 4) if inv > 0 else table[dtype][op_class]
    return table
