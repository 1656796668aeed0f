"""The cost model against published device figures: fit on some, check on the others.

A figure is one published latency (model, device, runtime, threads, ms, source) from
`benchmarks/data/device_figures.toml`; its `role` was decided before any error was computed: `fit`
(the stack's efficiencies, `costmodel.fit_figures`), `fit-threads` (its parallel fraction,
`costmodel.fit_parallel`), `held-out` (never fitted: the check) or `prior` (the only figure of its
stack, compared with the spec's unfitted values). `check` fits every stack on its fit figures and
returns one row per figure with its error; `benchmarks/costmodel_validation.py` prints them and
`tests/test_costmodel_figures.py` keeps the held-out median under the goal.

The graphs behind the figures (Keras and Ultralytics rebuilds, `benchmarks/device_graphs.py`) are
kept as their cost-model layers in `benchmarks/data/device_layers.json`, so the check needs neither
TensorFlow nor the graphs.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomllib

from . import costmodel, spec
from .layer import Layer

GOAL = 0.15  # median |error| on the held-out figures
LAYER_FIELDS = (
    "op",
    "op_class",
    "dtype",
    "macs",
    "param_bytes",
    "in_bytes",
    "out_bytes",
    "depth",
    "in_channels",
)


@dataclass(frozen=True)
class Figure:
    model: str  # a graph of benchmarks/device_graphs.py
    device: str
    runtime: str  # the software stack the figure was measured with
    threads: int
    ms: float
    role: str  # fit, fit-threads, held-out, prior
    target: str  # the spec whose core describes the device
    stack: str  # the kernel table the figure is evaluated with
    source: str
    board: str = ""  # another board with the target's core ...
    clock_ghz: float | None = None  # ... at this clock


def load(path: str | Path) -> list[Figure]:
    """The figures of a TOML file of `[[figure]]` tables."""
    with open(path, "rb") as f:
        return [Figure(**row) for row in tomllib.load(f)["figure"]]


def save_layers(graphs: dict[str, list[Layer]], path: str | Path) -> None:
    """Each graph's layers, one compact row per kernel (names and tensor lists are left out)."""
    rows = {
        name: [[getattr(lay, k) for k in LAYER_FIELDS] for lay in layers] for name, layers in graphs.items()
    }
    text = "{\n" + ",\n".join(
        f"{json.dumps(n)}: {json.dumps(r, separators=(',', ':'))}" for n, r in rows.items()
    )
    Path(path).write_text(text + "\n}\n")


def load_layers(path: str | Path) -> dict[str, list[Layer]]:
    data = json.loads(Path(path).read_text())
    return {
        name: [
            Layer(f"{name}/{i}", **dict(zip(LAYER_FIELDS, row, strict=True))) for i, row in enumerate(rows)
        ]
        for name, rows in data.items()
    }


def target_for(
    fig: Figure, table: dict[str, Any] | None = None, parallel: float | None = None
) -> spec.Target:
    """The spec describing the figure's device and stack (+ a fitted table to try)."""
    target = spec.get(fig.target)
    target = target.with_stack(fig.stack) if fig.stack in target.stacks else target
    if fig.clock_ghz:  # same core on another board: MCU buses run at the core clock
        scale = fig.clock_ghz / target.clock_ghz
        target = replace(
            target,
            clock_ghz=fig.clock_ghz,
            bandwidth_gbs=target.bandwidth_gbs * scale,
            op_overhead_us=target.op_overhead_us / scale,  # dispatch costs cycles
        )
    if table is not None:
        target = replace(target, efficiency=table)
    if parallel is not None:
        target = replace(target, parallel_fraction=parallel)
    return target


def fit_stacks(
    figures: list[Figure], layers: dict[str, list[Layer]]
) -> dict[str, tuple[dict[str, Any] | None, float | None]]:
    """Each stack's efficiency table and parallel fraction, from its fit figures only."""
    fitted: dict[str, tuple[dict[str, Any] | None, float | None]] = {}
    for stack in dict.fromkeys(f.stack for f in figures):
        figs = [f for f in figures if f.stack == stack]
        fit = [f for f in figs if f.role == "fit"]
        if not fit:
            fitted[stack] = (None, None)
            continue
        classes = ("conv", "dwconv") if stack.startswith("xnnpack") else ("conv", "dwconv", "gemm")
        table = costmodel.fit_figures(
            [(layers[f.model], f.ms, target_for(f), f.threads) for f in fit], classes
        )
        threads = [f for f in figs if f.role == "fit-threads"]
        parallel = None
        if threads:
            parallel = costmodel.fit_parallel(
                [(layers[f.model], f.ms, target_for(f, table), f.threads) for f in threads]
            )
        fitted[stack] = (table, parallel)
    return fitted


def check(
    figures: list[Figure], layers: dict[str, list[Layer]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fit every stack on its fit figures; one row per figure: published, estimated, error."""
    fitted = fit_stacks(figures, layers)
    rows = []
    for f in figures:
        table, parallel = fitted[f.stack]
        est = costmodel.estimate(layers[f.model], target_for(f, table, parallel), f.threads).p50_ms
        rows.append({"figure": f, "estimated_ms": est, "error": (est - f.ms) / f.ms})
    return fitted, rows


def median_error(rows: list[dict[str, Any]], role: str) -> float:
    """Median |error| of the rows of one role (`fit` includes `fit-threads`)."""
    errors = [abs(r["error"]) for r in rows if r["figure"].role.startswith(role)]
    return statistics.median(errors) if errors else float("nan")
