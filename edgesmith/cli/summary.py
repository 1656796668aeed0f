"""The table `convert` prints: size, metric, agreement and latency, before and after."""

from __future__ import annotations


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MB"


def _num(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def rows(report: dict) -> list[list[str]]:
    original = report.get("original", {})
    metric = original.get("metric") or "metric"
    header = ["model", "precision", "size", metric, "agreement %", "max abs err", "p50 ms", "p90 ms"]
    lat = report.get("original_latency", {})
    table = [
        header,
        [
            "original",
            "fp32",
            _size(original.get("size_bytes", report["source"]["size_bytes"])),
            _num(original.get("score")),
            "-",
            "-",
            _num(lat.get("p50_ms"), "{:.3f}"),
            _num(lat.get("p90_ms"), "{:.3f}"),
        ],
    ]
    for a in report["artifacts"]:
        v, lat = a.get("verify", {}), a.get("latency", {})
        table.append(
            [
                a["path"].rsplit("/", 1)[-1],
                a["precision"],
                _size(a["size_bytes"]),
                _num(v.get("artifact")),
                _num(v.get("agreement")),
                _num(v.get("max_abs_error"), "{:.4f}"),
                _num(lat.get("p50_ms"), "{:.3f}"),
                _num(lat.get("p90_ms"), "{:.3f}"),
            ]
        )
    return table


def print_summary(report: dict, out) -> None:
    table = rows(report)
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
    for step in report["steps"]:
        if "types" in step:
            t = step["types"]
            print(f"\nINT8 types: {t['activations']} activations x {t['weights']} weights: {t['reason']}")
    lat = report.get("original_latency")
    if lat:
        print(
            f"latency: {lat['runs']} runs after {lat['warmup']} warm-up, batch {lat['batch']}, "
            f"{lat['threads'] or 'all'} thread(s), {lat['backend']} on this machine"
        )
    print(f"report: {out}/report.json")
