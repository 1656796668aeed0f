"""The HTML + JSON report of a convert folder: per artifact its size, metric, host latency, and per
target the estimated (or measured) latency, energy and MCU fit; a Pareto plot (metric vs latency,
marker area = file size) and per-layer latency bars. One self-contained HTML file (see svg.py)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from ..errors import InputError
from . import svg


def target_results(path: str | Path, names: list[str], threads: int | None = None, top: int = 15) -> dict:
    """{target: estimate (+ energy, MCU fit, the `top` slowest layers)} for one artifact file."""
    from ..errors import EdgesmithError
    from . import costmodel, graph, mcu, power, spec

    path = Path(path)
    try:
        graph_layers = graph.layers(path)
    except EdgesmithError as exc:  # a format the cost model does not read (OpenVINO IR, C arrays)
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
    """Measured per-layer ms on this machine (ORT profiler), the `top` slowest; [] if unavailable."""
    from importlib.util import find_spec

    from . import graph, hostprofile

    if Path(path).suffix.lower() != ".onnx" or find_spec("onnxruntime") is None:
        return []
    matched = hostprofile.match(graph.layers(path), hostprofile.ort_node_times(path, 1, runs=10, warmup=3))
    return sorted(matched.items(), key=lambda kv: -kv[1])[:top]


def collect(folder: str | Path, names: list[str] | None = None) -> dict:
    folder = Path(folder)
    source = folder / "report.json"
    if not source.is_file():
        raise InputError(f"{source}: no such file; point `edgesmith report` at a folder written by convert")
    report = json.loads(source.read_text())
    names = names or report.get("recipe", {}).get("profile", {}).get("targets") or ["host"]
    from . import spec

    for name in names:
        spec.get(name)  # unknown names fail before any work, with a suggestion
    original = report.get("original", {})
    data = {"folder": str(folder), "metric": original.get("metric"), "targets": names, "artifacts": []}
    if report.get("original_latency"):
        data["original"] = {"size_bytes": original.get("size_bytes"), "score": original.get("score"),
                            "host_p50_ms": report["original_latency"]["p50_ms"]}  # fmt: skip
    for entry in report["artifacts"]:
        path = folder / Path(entry["path"]).name  # the folder may have moved since convert
        if not path.is_file():
            path = Path(entry["path"])
        verify = entry.get("verify", {})
        known = entry.get("targets", {})
        missing = [n for n in names if n not in known]
        results = known | (target_results(path, missing) if missing else {})
        data["artifacts"].append({
            "name": path.name, "precision": entry.get("precision"), "size_bytes": entry["size_bytes"],
            "score": verify.get("artifact"), "agreement": verify.get("agreement"),
            "host_p50_ms": entry.get("latency", {}).get("p50_ms"),
            "targets": {n: results[n] for n in names}, "host_layers": host_layers(path),
        })  # fmt: skip
    return data


def render(data: dict) -> str:
    metric = data.get("metric") or "agreement %"
    series: dict[str, list[dict]] = {}
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
        series[f"{name} ({_source(data, name)})"] = [
            {"x": a["targets"][name]["p50_ms"], "y": _y(a), "size": a["size_bytes"], "label": a["name"]}
            for a in data["artifacts"]
        ]
    parts = [_HEAD, f"<h1>edgesmith report: {escape(data['folder'])}</h1>",
             "<p>Latencies marked <em>estimated</em> come from the cost model (docs/targets.md gives its "
             "measured error); <em>measured</em> ones were timed. Marker area is proportional to file size.</p>",
             '<section id="pareto"><h2>Metric vs latency</h2>',
             svg.scatter(series, "p50 latency (ms, log scale)", metric, title=f"{metric} vs latency"),
             "</section>", '<section id="table"><h2>Artifacts x targets</h2>', _table(data), "</section>",
             '<section id="layers"><h2>Per-layer latency</h2>']  # fmt: skip
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


def _y(a: dict):
    return a["score"] if a["score"] is not None else a["agreement"]


def _source(data: dict, name: str) -> str:
    sources = {a["targets"][name].get("source", "estimated") for a in data["artifacts"]}
    return "/".join(sorted(sources)) or "estimated"


def _table(data: dict) -> str:
    head = "".join(f"<th>{escape(n)}</th>" for n in data["targets"])
    rows = []
    for a in data["artifacts"]:
        cells = []
        for n in data["targets"]:
            t = a["targets"][n]
            if t.get("p50_ms") is None:
                cells.append(f"<td><small>{escape(t.get('note', 'not estimated'))}</small></td>")
                continue
            text = f"{t['p50_ms']:.3g} ms <small>{escape(t.get('source', ''))}</small><br>"
            text += f"{t.get('energy_mj', 0):.3g} mJ <small>{escape(t.get('energy_source', ''))}</small>"
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
) -> tuple[Path, dict]:
    """Write DIR/report.html and DIR/targets.json; returns the HTML path and the data."""
    data = collect(folder, names)
    html = Path(out) if out else Path(folder) / "report.html"
    html.write_text(render(data))
    (Path(folder) / "targets.json").write_text(json.dumps(data, indent=2) + "\n")
    return html, data
