"""`edgesmith report DIR`: one self-contained HTML file (plus JSON) from DIR/report.json."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="write an HTML report (Pareto plot, per-layer bars, per-target table) for a convert folder",
        description="Reads DIR/report.json (written by `edgesmith convert`), estimates each artifact on "
        "the given targets, puts the device measurements saved in DIR/measurements/ (by `edgesmith "
        "profile DIR/ARTIFACT --target T --ssh ...|--adb ...`) beside the estimates, and writes "
        "DIR/report.html (self-contained: inline SVG, no scripts) and DIR/targets.json. "
        "Example: edgesmith report out/ --target rpi4 --target stm32f746",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--target", action="append", metavar="NAME",
                   help="a target to estimate on, repeatable (default: the recipe's [profile] targets "
                   "and the targets of saved measurements)")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="HTML path (default DIR/report.html)")
    return p


def main(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..targets import report

    if args.out and Path(args.out).is_dir():
        raise InputError(
            f"--out {args.out} is a folder; give the HTML file's name, e.g. {Path(args.out) / 'report.html'}"
        )
    html, data = report.write(args.dir, args.target, args.out)
    measured = sum(t.get("source") == "measured" for a in data["artifacts"] for t in a["targets"].values())
    print(f"report: {html}  ({len(data['artifacts'])} artifact(s) x {len(data['targets'])} target(s), "
          f"{measured} measured, {data['timings_s']['report']:.2f} s)")  # fmt: skip
    return 0
