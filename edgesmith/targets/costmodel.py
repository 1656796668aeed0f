"""Latency estimate for a model on a target without the device: a per-layer roofline.

For each layer (see `graph.py`): compute time = MACs / (peak MACs/s of the dtype x the efficiency
of the runtime's kernels for that op class), memory time = bytes touched / sustained bandwidth;
the layer takes the larger of the two plus a fixed per-op overhead (dispatch, requantization,
thread sync). Threads scale the compute term by Amdahl's law with the target's parallel fraction.
Efficiencies are the only fitted numbers; `fit` derives them from per-layer measurements, and
the spec's `[model] fitted` says from which. docs/targets.md reports the measured error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .graph import Layer, layers
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
    layers: list[dict] = field(default_factory=list)
    source: str = "estimated"

    def to_json(self, per_layer: bool = True) -> dict:
        out = dict(self.__dict__)
        if not per_layer:
            out.pop("layers")
        return out


def layer_ms(layer: Layer, target: Target, threads: int = 1) -> float:
    """The roofline time of one layer on `target`, in milliseconds."""
    rate = target.peak_macs_per_s(layer.dtype, threads) * target.eff(layer.dtype, layer.op_class)
    compute = layer.macs / rate if rate > 0 else 0.0
    memory = layer.bytes / (target.bandwidth_gbs * 1e9)
    return (max(compute, memory) + target.op_overhead_us * 1e-6) * 1e3


def estimate(model: str | Path | list[Layer], target: Target, threads: int | None = None) -> Estimate:
    """Estimate `model` (a file or its layers) on `target` with `threads` (default: all cores)."""
    graph = layers(model) if isinstance(model, (str, Path)) else model
    threads = threads or target.cores
    rows = [
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
        p50_ms=sum(r["ms"] for r in rows),
        macs=sum(layer.macs for layer in graph),
        param_bytes=sum(layer.param_bytes for layer in graph),
        peak_activation_bytes=max((layer.in_bytes + layer.out_bytes for layer in graph), default=0),
        layers=rows,
    )


def fit(
    samples: list[tuple[list[Layer], dict[str, float]]], target: Target, threads: int = 1
) -> tuple[dict, float]:
    """Efficiencies per dtype and op class, and the per-op overhead (us), from per-layer times.

    `samples`: (layers, {layer name: measured ms}) per model. Each measured layer gives one equation
    t = overhead + MACs x s[dtype, class], with s = 1 / (peak x efficiency); least squares on
    relative residuals (each equation divided by its t), so small and large layers both count.
    Kernels the runtime adds (the '(runtime)' entry) are spread over the layers as overhead.
    """
    import numpy as np

    keys: list[tuple[str, str]] = []
    rows, times = [], []
    for graph, measured in samples:
        extra = measured.get("(runtime)", 0.0) / max(len(graph), 1)
        for layer in graph:
            if layer.name not in measured or not layer.macs:
                continue
            key = (layer.dtype, layer.op_class)
            if key not in keys:
                keys.append(key)
            rows.append((keys.index(key), layer.macs))
            times.append((measured[layer.name] + extra) * 1e-3)
    a = np.zeros((len(rows), len(keys) + 1))
    for i, (k, macs) in enumerate(rows):
        a[i, 0], a[i, k + 1] = 1.0, macs
    t = np.array(times)
    solution, *_ = np.linalg.lstsq(a / t[:, None], np.ones_like(t), rcond=None)
    table: dict[str, dict[str, float]] = {d: dict(v) for d, v in target.efficiency.items()}
    for (dtype, op_class), inv in zip(keys, solution[1:], strict=True):
        if inv > 0:
            table.setdefault(dtype, {})[op_class] = round(
                1 / (inv * target.peak_macs_per_s(dtype, threads)), 4
            )
    overhead_us = round(max(float(solution[0]), 0.0) * 1e6, 2)
    return {d: {c: v[c] for c in OP_CLASSES if c in v} for d, v in table.items()}, overhead_us


def fit_totals(models: list[tuple[list[Layer], float]], target: Target, threads: int = 1,
               classes=("conv", "dwconv")) -> dict:  # fmt: skip
    """Efficiencies from end-to-end times only (published figures): one unknown per class in
    `classes` (the rest keep the spec's values), solved by least squares on 1/efficiency."""
    import numpy as np

    rows, rhs = [], []
    for graph, measured_ms in models:
        fixed = 0.0
        row = [0.0] * len(classes)
        for layer in graph:
            peak = target.peak_macs_per_s(layer.dtype, threads)
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
