"""`edgesmith tune`: search recipes for a device; the Pareto front of metric, latency and size."""

from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Searches what a recipe can vary (quantization mode, calibration method, the first/last layer kept
in float, the format the target runs, weight-only INT4/INT8 for transformers, and for PyTorch
sources and Hugging Face encoders pruning with distillation) for MODEL on TARGET. Optuna's
multi-objective sampler proposes, Ray Tune runs the trials (locally, or on the cluster at
--address), each trial a full conversion with verification. Objectives: the metric on
--eval (else the arg-max agreement with the original), the latency on the target (cost-model
estimate; measured here for --target host, or on the board given by --ssh/--adb) and the size. Trials over --max-drop or --latency-ms are
infeasible. Writes DIR/report.json (every trial and the front), DIR/report.html (the front as a
plot) and DIR/best-N.toml, one recipe per front point: `edgesmith convert --recipe DIR/best-1.toml`.

examples:
  edgesmith tune models/mnist_cnn.onnx --target rpi4 --max-drop 1.0 --trials 12 \\
      --calibration calibration_data/mnist --eval calibration_data/mnist/holdout.npz --out tuned/
  edgesmith tune MINILM_FOLDER --target rpi4 --max-drop 1.0 --metric spearman --eval dev-pairs.tsv \\
      --calibration 256-sentences.txt --train-data 4000-sentences.txt --time-budget 60

exit codes: 0 a front was found; 1 no trial was feasible; 2 bad input; 3 internal error
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tune",
        help="search recipes for a device: Pareto front of metric, latency, size (Optuna on Ray Tune)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="a model file or Hugging Face folder, as for convert "
                   "(pruning is searched for .pt2 and, with --calibration, Hugging Face encoders)")  # fmt: skip
    p.add_argument("--target", required=True, metavar="NAME", help="the device (`edgesmith targets`)")
    p.add_argument(
        "--max-drop", type=float, required=True, metavar="POINTS", help="largest metric drop allowed"
    )
    p.add_argument("--latency-ms", type=float, metavar="MS", help="latency budget on the target")
    p.add_argument("--tolerance", type=float, default=0.0, metavar="POINTS",
                   help="when the front is compared with the presets, metrics this close count as equal: "
                        "the noise of your eval set (default: 0, strict)")  # fmt: skip
    p.add_argument("--trials", type=int, default=12, metavar="N", help="trials to run (default: %(default)s)")
    p.add_argument("--time-budget", type=float, metavar="MIN",
                   help="stop the search after MIN minutes: trials still running are stopped, the report "
                        "and best-N.toml hold those that finished")  # fmt: skip
    p.add_argument("--trial-timeout", type=float, metavar="MIN",
                   help="stop a trial still converting after MIN minutes (it counts as infeasible, the "
                        "search goes on); each trial then runs in a process of its own")  # fmt: skip
    p.add_argument("--eval", metavar="PATH", help=".npz with the model inputs plus `labels`")
    p.add_argument("--metric", metavar="NAME", help="the metric objective on --eval, as convert --metric: auto, top1, spearman (sentence pairs), or module:function / file.py:function")  # fmt: skip
    p.add_argument("--calibration", metavar="PATH", help="calibration data (opens static INT8 and pruning)")
    p.add_argument("--train-data", metavar="PATH",
                   help="what pruned models are distilled on (default: the calibration data); a few "
                        "thousand samples generalize where a few hundred are learnt by heart")  # fmt: skip
    p.add_argument(
        "--sampler", choices=("nsga2", "tpe"), default="tpe", help="Optuna sampler (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: %(default)s)")
    p.add_argument(
        "--out", metavar="DIR", default="edgesmith-tune", help="output folder (default: %(default)s)"
    )
    p.add_argument("--ssh", metavar="USER@HOST[:PORT]",
                   help="measure each trial's latency on this Linux board over SSH (as `edgesmith profile "
                        "--ssh`), one trial at a time, instead of the cost model's estimate")  # fmt: skip
    p.add_argument("--adb", metavar="SERIAL", help="measure each trial's latency on this Android device")
    p.add_argument("--ssh-config", metavar="FILE", help="ssh_config file for --ssh (ssh -F)")
    p.add_argument("--remote-python", default="python3", help="the board's Python (default python3)")
    p.add_argument("--address", metavar="ADDR", help="join the Ray cluster at ADDR instead of starting one")
    p.add_argument("--workers", type=int, metavar="N", help="local Ray CPUs (default: all cores)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor fill the conversion cache")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    return p


def main(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..scale.tune import tune
    from ..targets.spec import get
    from .summary import print_table

    get(args.target)  # an unknown name fails now, with a suggestion
    if args.trials < 1 or (args.workers is not None and args.workers < 1):
        raise InputError("--trials and --workers take a number of at least 1")
    if args.max_drop < 0 or args.tolerance < 0 or (args.latency_ms is not None and args.latency_ms <= 0):
        raise InputError("--max-drop and --tolerance must be >= 0, --latency-ms > 0")
    if any(m is not None and m <= 0 for m in (args.time_budget, args.trial_timeout)):
        raise InputError("--time-budget and --trial-timeout take minutes, more than 0")
    if args.workers is not None and args.address:
        raise InputError("--workers sizes a local Ray; a cluster at --address has its own CPUs: drop one")
    device = None
    if args.ssh or args.adb:
        from ..scale.device import Device

        config = args.ssh_config and str(Path(args.ssh_config).absolute())  # trials run in other folders
        device = Device(args.ssh, args.adb, config, args.remote_python)
    out = Path(args.out).absolute()
    report = tune(args.model, args.target, out, args.max_drop, args.latency_ms, args.trials, args.eval,
                  args.calibration, args.address, args.workers, not args.no_cache, args.sampler, args.seed, args.metric,
                  None if args.time_budget is None else 60 * args.time_budget, args.train_data, args.tolerance,
                  None if args.trial_timeout is None else 60 * args.trial_timeout, device)  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        table = [["recipe", "metric", f"p50 ms on {args.target}", "size KB", "from", "parameters"]]
        for p in report["front"]:
            params = ", ".join(f"{k}={v}" for k, v in sorted(p["params"].items()))
            table.append([p["best"], f"{p['score']:.2f}", f"{p['latency_ms']:.4f}", f"{p['size_kb']:.1f}",
                          f"seed: {p['seed']}" if p["seed"] else "sampled", params])  # fmt: skip
        if len(table) > 1:
            print_table(table)
            print(presets_line(report))
        for t in report["trials"]:
            if t["status"] != "ok":
                print(f"{Path(t['folder']).name}: {t['status']}: {t['error']}", file=sys.stderr)
        stopped = report["trials_asked"] - report["trials_run"]
        budget = (
            f" ({stopped} not finished within --time-budget)" if stopped and report["time_budget_s"] else ""
        )
        print(f"\n{report['trials_run']} trials{budget}, {report['feasible']} feasible, {len(report['front'])} on the "
              f"front, in {report['wall_s']:.0f} s; report: {out}/report.html")  # fmt: skip
    return 0 if report["front"] else 1


def presets_line(report: dict) -> str:
    """Whether the search beat the presets: which front points dominate each, or that none does."""
    presets = report["presets"]
    if not presets:
        return "\nno preset was feasible: every front point is better than the presets"
    every = report["dominates_every_preset"]
    each = "; ".join(f"{name}: {', '.join(r['dominated_by']) or 'not dominated (on the front or beside it)'}"
                     for name, r in presets.items())  # fmt: skip
    verdict = (
        f"{', '.join(every)} dominates every preset" if every else "no front point dominates every preset"
    )
    if report.get("tolerance"):
        verdict += f" (metrics within {report['tolerance']:g} points counted as equal: --tolerance)"
    return f"\npresets dominated by: {each}\n{verdict}"
