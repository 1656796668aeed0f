"""The table `convert` prints: size, metric, agreement and latency, before and after, from the run's
`Report` (targets/records.py)."""

from __future__ import annotations

from ..targets.records import Report


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MB"


def _num(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def rows(report: Report) -> list[list[str]]:
    original = report.original
    metric = (original and original.metric) or "metric"
    header = [
        "model",
        "precision",
        "size",
        metric,
        "agreement %",
        "min cos",
        "max abs err",
        "p50 ms",
        "p90 ms",
    ]
    if any(a.verify and a.verify.cosine is not None for a in report.artifacts):
        header[4] = "vs original"  # embeddings: mean cosine to the original's
    lat = report.original_latency
    size = original.size_bytes if original else report.source.size_bytes if report.source else None
    table = [
        header,
        [
            "original",
            "fp32",
            "-" if size is None else _size(size),
            _num(original and original.score),
            "-",
            "-",
            "-",
            _num(lat and lat.p50_ms, "{:.3f}"),
            _num(lat and lat.p90_ms, "{:.3f}"),
        ],
    ]
    for a in report.artifacts:
        v, lat = a.verify, a.latency
        table.append(
            [
                a.name,
                a.precision,
                _size(a.size_bytes),
                _num(v and v.artifact),
                f"cos {v.cosine:.4f}" if v and v.cosine is not None else _num(v and v.agreement),
                _num(v and v.cosine_min, "{:.4f}"),
                _num(v and v.max_abs_error, "{:.4f}"),
                _num(lat and lat.p50_ms, "{:.3f}"),
                _num(lat and lat.p90_ms, "{:.3f}"),
            ]
        )
    return table


def _count(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def stage_rows(report: Report) -> list[list[str]]:
    """One row per step: what the model costs and scores after it (the first row is the original)."""
    stages = report.stages or ()
    metric = next((s.metric for s in stages if s.metric), None)
    cosine = metric is None and any(s.cosine is not None for s in stages)
    table = [
        ["after step", "MACs", "params", "size", metric or ("cos vs orig" if cosine else "metric"), "p50 ms"]
    ]
    for s in stages:
        score = _num(s.cosine, "{:.4f}") if cosine else _num(s.score)
        table.append([s.after, _count(s.macs), _count(s.params), _size(s.size_bytes), score,
                      _num(s.p50_ms, "{:.3f}")])  # fmt: skip
    return table


def target_rows(report: Report) -> list[list[str]]:
    """Estimated p50 on each `[profile] targets` device: the original and each artifact (cost model)."""
    original = report.original_targets or {}
    artifacts = report.artifacts
    names = list(original) or list((artifacts and artifacts[0].targets) or {})
    if not names:
        return []
    table = [["estimated p50 ms", "original", *(a.name for a in artifacts)]]
    for name in names:
        cells = [original.get(name, {}), *((a.targets or {}).get(name, {}) for a in artifacts)]
        row = [name] + [_num(c.get("p50_ms"), "{:.3f}") for c in cells]
        fit = cells[-1].get("mcu_fit")
        if fit is not None:
            row[0] += " (fits)" if fit.get("fits") else " (does NOT fit)"
        table.append(row)
    return table


def sensitivity_rows(report: Report, top: int = 5) -> list[list[str]]:
    """The `top` quantized tensors whose INT8 rounding costs most (report.json `sensitivity`)."""
    layers = (report.sensitivity or ())[:top]
    if not layers:
        return []
    table = [["most sensitive (INT8)", "nodes", "SQNR dB/channel", "metric if float"]]
    for layer in layers:
        nodes = ", ".join(layer["nodes"])
        table.append([layer["what"], nodes if len(nodes) <= 50 else nodes[:47] + "...",
                      _num(layer.get("channel_sqnr_db"), "{:.1f}"), _num(layer.get("metric_change"), "{:+.2f}")])  # fmt: skip
    return table


def kept_float_lines(report: Report) -> list[str]:
    """One line per artifact whose quantizer kept layers in float to pass the verification gate (its
    quantization report's `kept_float`)."""
    lines = []
    for a in report.artifacts:
        kept = (a.quantization or {}).get("kept_float")
        if not kept or not kept.get("layers"):
            continue
        names = kept["layers"]
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        bar = a.verify.cosine_min if a.verify is not None else None
        held = f"cosine {bar:.4f}" if bar is not None else "the gate"
        # LiteRT runs 16-bit activations on reference kernels: say so, as the artifact may be slower than fp32
        wide = (" with 16-bit activations (for NPUs/MCUs with int16x8 kernels; on CPUs slower than fp32)"
                if kept.get("activations") == "int16" else "")  # fmt: skip
        lines.append(f"{a.name}: {len(names)} layer(s) kept in float{wide} to hold {held} ({shown}; "
                     f"{len(kept['tried'])} candidates, {kept['seconds']:.0f} s)")  # fmt: skip
    return lines


def branch_lines(report: Report) -> list[str]:
    """One line per INT8 artifact of a model with `If`s: the branches kept float, uncalibrated, and why
    (their quantization report's `branches`, steps/onnx_branches.py)."""
    lines = []
    for a in report.artifacts:
        kept = ((a.quantization or {}).get("branches") or {}).get("kept_float") or []
        if kept:
            shown = "; ".join(f"{k['branch']} ({k['why']})" for k in kept[:3])
            more = f"; and {len(kept) - 3} more (report.json)" if len(kept) > 3 else ""
            lines.append(f"{a.name}: {len(kept)} If branch(es) kept float: {shown}{more}")
    return lines


def print_sensitivity(report: Report) -> None:
    """The accuracy search's outcome (what stayed float) and the most sensitive layers, if computed."""
    search = report.accuracy_search
    if search:
        kept = search["float_nodes"]
        verdict = "meets" if search["within_budget"] else "could NOT meet"
        print(f"\naccuracy search: {verdict} {search['budget']} with {len(kept)} node(s) float"
              f"{': ' + ', '.join(kept[:8]) + (' ...' if len(kept) > 8 else '') if kept else ''} "
              f"({len(search['candidates'])} candidates, {search['wall_s']:.0f} s)")  # fmt: skip
    if sensitivity_rows(report):
        print()
        print_table(sensitivity_rows(report))


def print_table(table: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print(
            "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_summary(report: Report, out) -> None:
    print_table(rows(report))
    if report.stages:
        print()
        print_table(stage_rows(report))
    if target_rows(report):
        print()
        print_table(target_rows(report))
    print_sensitivity(report)
    kept = kept_float_lines(report) + branch_lines(report)
    if kept:
        print("\n" + "\n".join(kept))
    for step in report.steps:
        if "types" in step.details:
            t = step.details["types"]
            print(f"\nINT8 types: {t['activations']} activations x {t['weights']} weights: {t['reason']}")
    for a in report.artifacts:
        for target, emulated in (a.emulated or {}).items():
            worst = min(o["cosine"] for o in emulated["outputs"].values())
            verdict = "matches this host" if emulated["ok"] else "DIFFERS from this host"
            print(f"\n{a.name} on emulated ARM ({target}: {emulated['device']['cpu']}, "
                  f"{emulated['device']['backend']}): {verdict} (min cosine {worst:.6f})", end="")  # fmt: skip
    skipped = (report.emulation or {}).get("skipped")
    if skipped:
        print(f"\nnot run on emulated ARM: {skipped}", end="")
    if any(a.emulated for a in report.artifacts) or skipped:
        print()
    checked = report.verify
    if checked and checked.data != "eval":
        print(f"\nverified on {checked.samples} samples of {checked.data} (no labels: pass --eval "
              "DATA.npz with `labels` for the task metric)")  # fmt: skip
    lat = report.original_latency
    if lat:
        print(
            f"latency: {lat.runs} runs after {lat.warmup} warm-up, batch {lat.batch}, "
            f"{lat.threads or 'all'} thread(s), {lat.backend} on this machine"
        )
    if report.fastest:
        from ..converter.fastest import describe

        print("\n".join(describe(report.fastest)))
    print(f"report: {out}/report.json")
