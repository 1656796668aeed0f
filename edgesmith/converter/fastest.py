"""The fastest artifact per target: every backend x precision the target runs, timed or estimated.

`resolve` runs once in `pipeline.run`, before the exports, when the recipe names targets or asks for
`format = "auto"`. The candidates are the model at fp32 and at the recipe's precision (the ONNX
exporter's quantized file, written to the work folder):

- `host` (this machine): measured. ONNX Runtime on each ONNX file; OpenVINO on the same graphs
  (`openvino.convert_model`, so an INT8 QDQ file runs on OpenVINO's INT8 kernels) at f32 and at the
  CPU plugin's default precision (bf16 on CPUs with AMX/AVX-512 BF16). Candidates are timed in
  interleaved rounds, so a burst of load on a shared machine hits all of them alike.
- a device: estimated by the cost model of its default kernel stack (e.g. XNNPACK, LiteRT's on a Pi)
  on the same ONNX graphs, for each precision its cores have MACs for. The row names the stack and
  the graph (`format` "onnx"): the .tflite a device would load is not estimated, its graph differs.
  `exports` is the format `--format auto` writes for it (what the device's stack runs).

Every candidate names what was timed or estimated: `runtime` (or `cost model (STACK)`), `precision`,
`format` and `graph` (the file).

The speed-up of each candidate is against what a user gets by default on that CPU: the fp32 model in
the fastest runtime at its default settings (here OpenVINO's bf16), not against fp32 ONNX Runtime.
`format = "auto"` exports the first target's fastest (the host's when the recipe has no target).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ..runtime.backends.openvino_backend import OpenVINOSession
    from ..runtime.session import Session

FORMAT = "auto"  # `exports.format = "auto"` passes the recipe's format check; resolve() replaces it
SUFFIX = ""
RUNTIME_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}


KIND = None  # not a format of its own: converter/plan.py plans what it resolves to


def convert(config, model, ctx):
    raise RuntimeError(
        "internal error: format 'auto' must be resolved (converter/fastest.resolve) before export"
    )


def resolve(recipe, handle, quantize, ctx, report: dict):
    """The recipe with `auto` exports replaced by each's fastest format; `report["fastest"]` gets the
    comparison per target. Does nothing (and costs nothing) for a recipe without targets or auto."""
    auto = any(e.format == FORMAT for e in recipe.exports)
    if not auto and not (recipe.profile.enabled and recipe.profile.targets):
        return recipe
    folder = ctx.step.workdir / "fastest"
    folder.mkdir(exist_ok=True)
    from .precision import of_mode

    models = {"fp32": Path(handle.path)}
    if quantize is not None:
        precision = of_mode(quantize.mode, quantize.bits)
        models[precision] = _quantized_onnx(
            handle, quantize, folder / f"{Path(handle.path).stem}.{precision}", ctx
        )
    names = list(recipe.profile.targets) or ["host"]
    threads = recipe.profile.threads or None
    report["fastest"] = {name: compare(name, models, folder, threads) for name in names}
    if not auto:
        return recipe
    best = fastest_at(
        report["fastest"][names[0]], of_mode(quantize.mode, quantize.bits) if quantize else of_mode(None)
    )
    exports = []
    for config in recipe.exports:  # an auto that lands on a format already exported adds nothing
        chosen = best.get("exports", best["format"])  # an estimate names the format a device runs
        config = dataclasses.replace(config, format=chosen) if config.format == FORMAT else config
        exports += [] if config in exports else [config]
    report["fastest"][names[0]]["exported"] = best
    return dataclasses.replace(recipe, exports=exports)


def fastest_at(result: dict, precision: str) -> dict:
    """The fastest candidate that runs the recipe's precision: `auto` picks a format, the recipe's
    steps keep deciding the precision (an fp32 recipe may run in the runtime's default bf16)."""
    fits = [
        r
        for r in result["candidates"]
        if r["precision"] == precision or (precision == "fp32" and r["default"])
    ]
    return min(fits or result["candidates"], key=lambda r: r["ms"])


def compare(name: str, models: dict[str, Path], folder: Path, threads: int | None) -> dict:
    """{"source", "candidates" (fastest first), "fastest", "default"} for target `name`."""
    from ..targets import spec

    target = spec.get(name)
    skipped: list[str] = []
    rows = (
        _measured(models, folder, threads, skipped) if target.kind == "host" else _estimated(models, target)
    )
    rows.sort(key=lambda r: r["ms"])
    default = min((r for r in rows if r["default"]), key=lambda r: r["ms"])
    for row in rows:
        row["speedup_vs_default"] = round(default["ms"] / row["ms"], 2)
    source = "measured" if target.kind == "host" else f"estimated ({target.stack})"
    threads = threads if target.kind == "host" else target.cores  # devices: all cores, as per_target
    result = {
        "source": source,
        "threads": threads,
        "candidates": rows,
        "fastest": rows[0],
        "default": default,
    }
    return result | ({"skipped": skipped} if skipped else {})


def _measured(models: dict[str, Path], folder: Path, threads: int | None, skipped: list[str]) -> list[dict]:
    """Every runtime x precision on this machine, timed in interleaved rounds; what could not run is
    appended to `skipped`."""
    from ..runtime import backends, load

    sessions: list[tuple[dict[str, Any], Session]] = []
    for precision, path in models.items():
        sessions.append(({"runtime": "onnxruntime", "precision": precision, "default": precision == "fp32",
                          "graph": path.name}, load(path, backend="ort", threads=threads)))  # fmt: skip
        if not backends.get("openvino").available() or precision not in ("fp32", "int8"):
            continue
        try:
            xml = _openvino_ir(path, folder / f"{precision}.xml")
        except Exception as exc:  # a model OpenVINO cannot read: compare the others
            from ..runtime.backends.openvino_backend import error_line

            skipped.append(f"openvino {precision}: {error_line(exc)}")
            continue
        graph = f"{xml.name} (from {path.name})"
        if precision == "fp32":
            auto = cast("OpenVINOSession", load(xml, backend="openvino", threads=threads))
            label = f"{auto.precision} (default)" if auto.precision != "f32" else "f32"
            sessions.append(
                ({"runtime": "openvino", "precision": label, "default": True, "graph": graph}, auto)
            )
            if auto.precision != "f32":
                pinned = load(xml, backend="openvino", threads=threads, precision="f32")
                sessions.append(({"runtime": "openvino", "precision": "f32", "default": False, "graph": graph},
                                 pinned))  # fmt: skip
        else:  # int8: OpenVINO runs the QDQ graph on its INT8 kernels
            sessions.append(({"runtime": "openvino", "precision": precision, "default": False, "graph": graph},
                             load(xml, backend="openvino", threads=threads)))  # fmt: skip
    times = _interleaved([s for _, s in sessions])
    return [row | {"format": RUNTIME_FORMAT[row["runtime"]], "ms": round(ms, 3)}
            for (row, _), ms in zip(sessions, times, strict=True)]  # fmt: skip


def _interleaved(sessions, rounds: int = 5, runs: int = 10) -> list[float]:
    """Each session's best round median (ms): rounds alternate between sessions, and contention on a
    shared machine only adds time."""
    from ..targets.latency import random_feeds

    feeds = [random_feeds(s) for s in sessions]
    for session, feed in zip(sessions, feeds, strict=True):
        for _ in range(3):
            session.run(feed)
    best = [float("inf")] * len(sessions)
    for _ in range(rounds):
        for i, (session, feed) in enumerate(zip(sessions, feeds, strict=True)):
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                session.run(feed)
                times.append(time.perf_counter() - start)
            best[i] = min(best[i], statistics.median(times) * 1e3)
    return best


def _estimated(models: dict[str, Path], target) -> list[dict]:
    """The cost model's figure for each precision, on the target's default kernel stack.

    What is estimated is the ONNX graph at that precision (a QDQ file for INT8) with the stack's
    efficiencies, not the .tflite a LiteRT device would load (that file does not exist yet, and its
    graph differs: a QDQ ONNX and its .tflite can estimate 0.18 vs 0.22 ms). So each row names the
    stack and the graph it estimated; `exports` is the format `--format auto` writes for it."""
    from ..targets import costmodel, graph

    exports = "tflite" if ".tflite" in target.formats else target.formats[0].lstrip(".")
    rows = []
    for precision, path in models.items():
        layers = graph.layers(path)
        ms = costmodel.estimate(layers, target).p50_ms
        rows.append(_row(target.stack, precision, path, ms, precision == "fp32", exports))
        if precision == "fp32" and "fp16" in target.macs_per_cycle:  # LiteRT's fp16 path on ARMv8.2 cores
            half = [dataclasses.replace(lay, dtype="fp16") for lay in layers]
            ms = costmodel.estimate(half, target).p50_ms
            rows.append(_row(target.stack, "fp16", path, ms, False, exports))
    return rows


def _row(stack: str, precision: str, path: Path, ms: float, default: bool, exports: str) -> dict:
    """An estimated candidate: the cost model of `stack` on the ONNX graph `path` at `precision`."""
    return {
        "runtime": f"cost model ({stack})",
        "precision": precision,
        "default": default,
        "format": Path(path).suffix.lstrip("."),  # the graph estimated, not the artifact exported
        "graph": Path(path).name,
        "exports": exports,
        "ms": round(ms, 3),
    }


def _quantized_onnx(handle, quantize, stem: Path, ctx) -> Path:
    """The recipe's quantized model as the ONNX export writes it (calibrated on the recipe's data), at
    `stem`.onnx: the name the summary gives the graph it estimated (model.int8.onnx)."""
    from . import plan
    from .recipe import ExportConfig

    return plan.export(ExportConfig(format="onnx"), handle, quantize, stem, ctx).path


def _openvino_ir(onnx_path: Path, xml: Path) -> Path:
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


def describe(fastest: dict) -> list[str]:
    """Summary lines: per target, the fastest candidate and its speed-up over the default."""
    lines = []
    for name, result in fastest.items():
        best, default = result["fastest"], result["default"]
        lines.append(
            f"fastest on {name} ({result['source']}): {label(best)} {best['ms']:.2f} ms, "
            f"{best['speedup_vs_default']:.2f}x the default ({label(default)} {default['ms']:.2f} ms)"
        )
        if "exported" in result:
            chosen = result["exported"]
            lines.append(
                f"  --format auto exported {chosen.get('exports', chosen['format'])} ({label(chosen)})"
            )
    return lines


def label(row: dict) -> str:
    """What a candidate timed or estimated: runtime (or cost model), precision and the graph's file."""
    return f"{row['runtime']} {row['precision']} on {row.get('graph', row['format'])}"
