"""`edgesmith sweep`: convert every model with every recipe for every target, as parallel Ray tasks."""

from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Runs `edgesmith convert` for every MODEL x recipe x target, each as an independent Ray task, into
DIR/<model>--<recipe>[--<target>]/. One failing model does not stop the others: its one-line error
is in the summary. A sweep that stopped (crash, Ctrl-C) resumes: tasks whose folder already holds a
finished report of the same recipe are not run again. Finished conversions are also kept in a cache
($EDGESMITH_CACHE, default ~/.cache/edgesmith/steps) that re-runs and `edgesmith tune` share.

Ray starts locally with no set-up (--workers CPUs); --address joins a running cluster, whose nodes
must have edgesmith installed and see the same paths.

examples:
  edgesmith sweep models/mnist_cnn.onnx models/mnist_cnn.pt2 --preset int8 --preset fp16 \\
      --calibration calibration_data/mnist --target rpi4 --target pixel3a --out zoo/
  edgesmith sweep zoo/*.onnx --recipe edge.toml --address 10.0.0.5:6379 --out build/

exit codes: 0 every task succeeded; 1 some task failed (see the summary: its error and the other
tasks' results are in DIR/report.json); 2 bad input; 3 internal error
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep",
        help="convert many models x recipes x targets in parallel (Ray)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files (as for `edgesmith convert`)")
    p.add_argument("--recipe", action="append", default=[], metavar="R.toml", help="a recipe (repeatable)")
    p.add_argument("--preset", action="append", default=[], metavar="NAME", help="a preset (repeatable)")
    p.add_argument("--target", action="append", default=[], metavar="NAME", help="a device (repeatable)")
    p.add_argument("--calibration", metavar="PATH", help="calibration data for every recipe")
    p.add_argument("--eval", metavar="PATH", help="eval data (.npz with `labels`) for every recipe")
    p.add_argument(
        "--out", metavar="DIR", default="edgesmith-sweep", help="output folder (default: %(default)s)"
    )
    p.add_argument("--address", metavar="ADDR", help="join the Ray cluster at ADDR instead of starting one")
    p.add_argument("--workers", type=int, metavar="N", help="local Ray CPUs (default: all cores)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor fill the conversion cache")
    p.add_argument("--json", action="store_true", help="print the sweep's report.json instead of the table")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines or table")
    return p


def main(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..scale.sweep import error_lines, plan, summary_rows, sweep
    from .summary import print_table

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: give at least 1")
    if args.workers is not None and args.address:
        raise InputError("--workers sizes a local Ray; a cluster at --address has its own CPUs: drop one")
    out = Path(args.out).absolute()
    tasks = plan(args.models, args.recipe, args.preset, args.target, out, args.calibration, args.eval)

    def progress(record: dict) -> None:
        if not args.quiet and not args.json:
            done = record.get("how") or record["status"]
            print(
                f"  {Path(record['folder']).name}: {done} in {record.get('seconds', 0):.1f} s",
                file=sys.stderr,
            )

    report = sweep(tasks, out, args.address, args.workers, not args.no_cache, progress)
    records = report["results"]
    if args.json:
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        table = summary_rows(records)
        if len(table) > 1:
            print_table(table)
        for line in error_lines(records):
            print(line)
        counts = report["counts"]
        print(f"\n{counts['ok']} of {len(records)} conversions done in {report['wall_s']:.1f} s; "
              f"report: {out}/report.json")  # fmt: skip
    return 0 if all(r["status"] == "ok" for r in records) else 1
