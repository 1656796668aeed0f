"""The HTML + JSON report of a convert folder: per artifact its size, metric, host latency, and per
target the estimated (or measured) latency, energy and MCU fit; a Pareto plot (metric vs latency,
marker area = file size) and per-layer latency bars. One self-contained HTML file (see svg.py)."""

from __future__ import annotations

import json
import math
import time
from html import escape
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import svg
from .records import read_report


def target_results(path: str | Path, names: list[str], threads: int | None = None, top: int = 15,
                   shapes: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """{target: estimate (+ energy, MCU fit, the `top` slowest layers)} for one artifact file, its dynamic
    input axes sized by `shapes` (see graph.layers)."""
    from ..errors import EdgesmithError
    from . import costmodel, graph, mcu, power, spec

    path = Path(path)
    try:
        graph_layers = graph.layers(path, shapes=shapes)
    except EdgesmithError as exc:  # a format the cost model does not read (OpenVINO IR, C arrays), no sizes
        return {
            name: {"p50_ms": None, "source": "not estimated", "note": str(exc), "layers": []}
            for name in names
        }
    out = {}
    for name in names:
        target = spec.get(name)
        est = costmodel.estimate(graph_layers, target, threads)
        entry = est.to_json(per_layer=False) | power.estimate(target, est.p50_ms, est.threads).to_json()
        entry["runs_format"] = path.suffix.lower() in target.formats or target.kind == "host"
        entry["layers"] = sorted(est.layers, key=lambda r: -r["ms"])[:top]
        if target.is_mcu:
            entry["mcu_fit"] = mcu.fit(path, target, graph_layers)
        out[name] = entry
    return out


def host_layers(path: str | Path, top: int = 15) -> list[tuple[str, float]]:
    """Measured per-layer ms on this machine (ORT profiler), the `top` slowest; [] if unavailable (also
    for a model with dynamic sizes other than the batch: nothing here says which to time)."""
    from importlib.util import find_spec

    from ..errors import EdgesmithError
    from . import graph, hostprofile

    if Path(path).suffix.lower() != ".onnx" or find_spec("onnxruntime") is None:
        return []
    try:
        matched = hostprofile.match(
            graph.layers(path), hostprofile.ort_node_times(path, 1, runs=10, warmup=3)
        )
    except EdgesmithError:
        return []
    return sorted(matched.items(), key=lambda kv: -kv[1])[:top]


def collect(folder: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Everything the report shows. Targets: `names`, else the recipe's `[profile] targets` plus every
    target a saved measurement (DIR/measurements, see measurements.py) names."""
    from . import measurements, spec

    started = time.perf_counter()
    folder = Path(folder)
    source = folder / "report.json"
    if not source.is_file():
        raise InputError(f"{source}: no such file; point `edgesmith report` at a folder written by convert")
    report = read_report(source)
    measured = measurements.load(folder)
    if not names:
        names = list(((report.recipe or {}).get("profile") or {}).get("targets") or [])
        names += sorted({t for _, t in measured} - set(names))
        names = names or ["host"]
    for name in names:
        spec.get(name)  # unknown names fail before any work, with a suggestion
    original = report.original
    data: dict[str, Any] = {"folder": str(folder), "metric": original and original.metric, "targets": names, "artifacts": [],
            "measurements": sorted(r["file"] for r in measured.values())}  # fmt: skip
    if report.original_latency:
        data["original"] = {"size_bytes": original and original.size_bytes, "score": original and original.score,
                            "host_p50_ms": report.original_latency.p50_ms}  # fmt: skip
    for entry in report.artifacts:
        path = folder / Path(entry.path).name  # the folder may have moved since convert
        if not path.is_file():
            path = Path(entry.path)
        if not path.is_file():
            raise InputError(f"{source} lists the artifact {entry.path or '(no name)'}, which is in neither "
                             f"{folder} nor where it names; restore it or run `edgesmith convert` again")  # fmt: skip
        verify = entry.verify
        known = entry.targets or {}
        t0 = time.perf_counter()
        missing = [n for n in names if n not in known]
        results = known | (target_results(path, missing) if missing else {})
        for name in names:
            record = measured.get((path.name, name))
            if record is not None:
                threads = record.get("threads")  # compare like with like: the thread count measured
                same = threads in (None, results[name].get("threads"))
                estimate = results[name] if same else target_results(path, [name], threads)[name]
                results[name] = measurements.merge(estimate, record, path)
        t1 = time.perf_counter()
        layers = host_layers(path)
        data["artifacts"].append({
            "name": path.name, "precision": entry.precision, "size_bytes": entry.size_bytes,
            "score": verify and verify.artifact, "agreement": verify and verify.agreement,
            "cosine": verify and verify.cosine, "host_p50_ms": entry.latency and entry.latency.p50_ms,
            "targets": {n: results[n] for n in names}, "host_layers": layers,
            "timings_s": {"estimate": round(t1 - t0, 3), "host_layers": round(time.perf_counter() - t1, 3)},
        })  # fmt: skip
    data["stages"] = [stage.to_json() for stage in report.stages or ()]
    data["sensitivity"] = list(report.sensitivity or ())
    data["timings_s"] = {"report": round(time.perf_counter() - started, 3)}
    return data


def render(data: dict[str, Any]) -> str:
    cosine = any(a.get("cosine") is not None for a in data["artifacts"])
    metric = data.get("metric") or ("cosine to the original x 100" if cosine else "agreement %")
    series: dict[str, list[dict[str, Any]]] = {}
    host = [
        {"x": a["host_p50_ms"], "y": _y(a), "size": a["size_bytes"], "label": a["name"]}
        for a in data["artifacts"] if a["host_p50_ms"]
    ]  # fmt: skip
    if data.get("original") and data["original"]["score"] is not None:
        o = data["original"]
        host.append(
            {"x": o["host_p50_ms"], "y": o["score"], "size": o["size_bytes"] or 1, "label": "original"}
        )
    if host:
        series["host (measured)"] = host
    for name in data["targets"]:
        estimated, measured = [], []
        for a in data["artifacts"]:
            t = a["targets"][name]
            point = {"y": _y(a), "size": a["size_bytes"], "label": a["name"]}
            if t.get("source") == "measured":
                measured.append(point | {"x": t["p50_ms"]})
                estimated.append(point | {"x": t["estimate"]["p50_ms"]})
            else:
                estimated.append(point | {"x": t["p50_ms"]})
        series[f"{name} (estimated)"] = estimated
        if measured:
            devices = sorted(
                {
                    t.get("device", "?")
                    for a in data["artifacts"]
                    if (t := a["targets"][name]).get("source") == "measured"
                }
            )
            series[f"{name} (measured on {', '.join(devices)})"] = measured
    parts = [_HEAD, f"<h1>edgesmith report: {escape(data['folder'])}</h1>",
             "<p>Latencies marked <em>estimated</em> come from the cost model (docs/targets.md gives its "
             "measured error); <em>measured</em> ones were timed, on this machine or on the named device "
             "(saved by <code>edgesmith profile --save</code>), with the estimate's error against them. "
             "Marker area is proportional to file size.</p>",
             '<section id="pareto"><h2>Metric vs latency</h2>',
             svg.scatter(series, "p50 latency (ms, log scale)", metric, title=f"{metric} vs latency"),
             "</section>", '<section id="table"><h2>Artifacts x targets</h2>', _table(data), "</section>",
             _stages(data), _sensitivity(data), '<section id="layers"><h2>Per-layer latency</h2>']  # fmt: skip
    for a in data["artifacts"]:
        if a["host_layers"]:
            parts.append(
                svg.bars(a["host_layers"], title=f"{a['name']}: slowest layers on this machine (measured)")
            )
        first = data["targets"][0] if data["targets"] else None
        if first:
            rows = [(r["name"], r["ms"]) for r in a["targets"][first].get("layers", [])]
            if rows:
                parts.append(svg.bars(rows, title=f"{a['name']}: slowest layers on {first} (estimated)"))
    parts.append("</section></body></html>")
    return "\n".join(parts)


def _stages(data: dict[str, Any]) -> str:
    """What each compression step bought: the model before and after every step (convert's stages)."""
    if not data.get("stages"):
        return ""
    metric = escape(data.get("metric") or "metric")

    def cell(value: object, fmt: str) -> str:
        return "<td>-</td>" if value is None else f"<td>{fmt.format(value)}</td>"

    rows = "".join(
        f"<tr><td>{escape(s['after'])}</td>{cell(s.get('macs') and s['macs'] / 1e6, '{:.3f} M')}"
        f"{cell(s.get('params'), '{:,}')}{cell(s['size_bytes'] / 1024, '{:.1f} KB')}"
        f"{cell(s.get('score'), '{:.2f}')}{cell(s.get('p50_ms'), '{:.3f} ms')}</tr>"
        for s in data["stages"]
    )
    return ('<section id="stages"><h2>Step by step</h2><p>The model after each step of the recipe, '
            "measured on this machine (the last row is the first artifact).</p><table><tr><th>after step</th>"
            f"<th>MACs</th><th>params</th><th>size</th><th>{metric}</th><th>host p50</th></tr>{rows}</table>"
            "</section>")  # fmt: skip


def _sensitivity(data: dict[str, Any], top: int = 15) -> str:
    """The quantized tensors whose INT8 rounding costs most (converter/sensitivity.py): shortest bar
    (lowest SQNR, per channel) first."""
    rows = []
    for layer in data.get("sensitivity", [])[:top]:
        value = layer.get("channel_sqnr_db", layer.get("sqnr_db"))
        if value is None or not math.isfinite(value):
            continue
        change = layer.get("metric_change")
        label = f"{layer.get('what', layer['tensor'])} ({', '.join(layer['nodes'])})" + (
            f" {change:+.2f} if float" if change is not None else ""
        )
        rows.append((label, max(value, 0.0)))
    if not rows:
        return ""
    chart = svg.bars(rows, unit="dB", title="per-layer sensitivity: SQNR of each quantized tensor, worst first",
                     longest_first=False)  # fmt: skip
    return ('<section id="sensitivity"><h2>Per-layer sensitivity</h2><p>Signal over quantization noise of '
            "each INT8 tensor, averaged over its channels (higher is better, ~6 dB a bit), with the nodes "
            "that keep it float and, for the first few, the metric change when they do.</p>"
            f"{chart}</section>")  # fmt: skip


def _y(a: dict[str, Any]) -> float:
    score: float | None = a["score"]
    if score is not None:
        return score
    agreement: float = a["agreement"]
    cosine: float | None = a.get("cosine")
    return agreement if cosine is None else 100 * cosine


def _table(data: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(n)}</th>" for n in data["targets"])
    rows = []
    for a in data["artifacts"]:
        cells = []
        for n in data["targets"]:
            t = a["targets"][n]
            if t.get("p50_ms") is None:
                cells.append(f"<td><small>{escape(t.get('note', 'not estimated'))}</small></td>")
                continue
            if t.get("source") == "measured":
                text = f'<span class="measured">{t["p50_ms"]:.3g} ms <small>measured on {escape(t.get("device", "?"))}'
                text += "</small></span><br>"
                est = t["estimate"]
                if est.get("p50_ms") is not None:
                    error = f", {est['error_pct']:+.0f}%" if est.get("error_pct") is not None else ""
                    text += f'<small class="estimate">estimated {est["p50_ms"]:.3g} ms{error}</small><br>'
            else:
                text = f"{t['p50_ms']:.3g} ms <small>{escape(t.get('source', ''))}</small><br>"
            if t.get("energy_mj") is not None:
                text += f"{t['energy_mj']:.3g} mJ <small>{escape(t.get('energy_source', ''))}</small>"
            else:
                text += f"<small>energy {escape(t.get('energy_source') or 'unknown')}</small>"
            if t.get("stale_measurement"):
                text += f"<br><small>{escape(t['stale_measurement'])}</small>"
            if "mcu_fit" in t:
                fit = t["mcu_fit"]
                text += f"<br>{'fits' if fit['fits'] else 'does not fit'}: RAM {fit['ram_needed_bytes'] // 1024} KB, "
                text += f"flash {fit['flash_needed_bytes'] // 1024} KB"
            if not t.get("runs_format", True):
                text += "<br><small>needs another format for this target</small>"
            cells.append(f"<td>{text}</td>")
        score = "-" if a["score"] is None else f"{a['score']:.4g}"
        host = "-" if not a["host_p50_ms"] else f"{a['host_p50_ms']:.3g} ms"
        rows.append(f"<tr><td>{escape(a['name'])}</td><td>{escape(str(a['precision']))}</td>"
                    f"<td>{a['size_bytes'] / 1024:.1f} KB</td><td>{score}</td><td>{host}</td>{''.join(cells)}</tr>")  # fmt: skip
    return (f"<table><tr><th>artifact</th><th>precision</th><th>size</th><th>{escape(data.get('metric') or 'metric')}"
            f"</th><th>host p50</th>{head}</tr>{''.join(rows)}</table>")  # fmt: skip


_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>edgesmith report</title><style>
body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}small{color:#666}
</style></head><body>"""


def write(
    folder: str | Path, names: list[str] | None = None, out: str | Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write DIR/report.html and DIR/targets.json; returns the HTML path and the data."""
    from .measurements import atomic_write

    if not Path(folder).is_dir():
        raise InputError(
            f"{folder} is not a folder; point `edgesmith report` at the folder convert wrote (--out)"
        )
    html = Path(out) if out else Path(folder) / "report.html"
    if not html.parent.is_dir():
        raise InputError(f"{html.parent}: no such folder; create it or pick another --out")
    data = collect(folder, names)
    text = render(data)
    atomic_write(Path(folder) / "targets.json", json.dumps(data, indent=2) + "\n")
    atomic_write(html, text)
    return html, data
