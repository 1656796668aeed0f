"""`edgesmith convert`: compress a model, export it, verify it on real data, profile it."""

from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Runs a recipe on MODEL: compression steps, export, verification against the original on
labelled data, and latency on this machine. Writes the artifacts, a manifest beside each,
and DIR/report.json; prints a summary table (or the report with --json).

presets:
{presets}

examples:
  edgesmith convert models/mnist_cnn.onnx --preset int8 \\
      --calibration calibration_data/mnist --eval calibration_data/mnist/holdout.npz
  edgesmith convert models/mnist_cnn.pt2 --preset pruned50-int8 \
      --calibration calibration_data/mnist --format onnx --format tflite
  edgesmith convert path/to/hf_model_folder --recipe prune_heads.toml   # BERT-like, .txt data
  edgesmith convert model.pt2 --recipe my.toml --out build/ --force
  edgesmith convert model.onnx --preset int8 --dump-recipe > my.toml   # save, edit, replay

exit codes: 0 done; 1 verification failed (an artifact's outputs are further from the original's
than [verify] min_cosine, or its metric dropped more than max_drop: it is kept in DIR.rejected/);
2 bad input (one line: what is wrong and how to fix it; nothing written); 3 internal error (one
line and the path of a log with the traceback)
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..converter.presets import PRESETS

    presets = "\n".join(f"  {name:13} {desc}" for name, (desc, _) in PRESETS.items())
    p = sub.add_parser(
        "convert",
        help="compress, export, verify and profile a model",
        description=HELP.format(presets=presets),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="an .onnx file, a torch.export .pt2, a Keras .keras/.h5, or a Hugging Face model folder (config.json)",
    )
    p.add_argument("--recipe", metavar="R.toml", help="recipe file (steps, calibration, exports ...)")
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="named steps (see above); replaces the recipe's steps; without a recipe the default is int8 "
        "when --calibration is given, else fp32 (export, verify, profile)",
    )
    p.add_argument(
        "--calibration",
        metavar="PATH",
        help=".npz/.npy (arrays named after the model inputs) or a folder of images with preprocess.toml",
    )
    p.add_argument("--eval", metavar="PATH", help=".npz with the model inputs plus `labels`")
    p.add_argument(
        "--metric",
        metavar="NAME",
        help="the task metric on the eval data: auto (top-1 for class-id labels), top1, spearman (sentence "
        "pairs, e.g. a .tsv of sentence/sentence/score), or module:function / file.py:function of your own, "
        "f(outputs, labels) -> float, higher is better ([verify] metric)",
    )
    p.add_argument(
        "--format",
        action="append",
        metavar="FMT",
        help="artifact format, repeatable: onnx (default), the formats of installed exporters, or auto (the "
        "fastest on the first --target, else on this machine, among every runtime x precision: see report.json "
        "`fastest`)",
    )
    p.add_argument(
        "--target",
        action="append",
        metavar="NAME",
        help="also estimate latency, energy and MCU fit on this device (repeatable; `edgesmith targets` "
        "lists them); sets [profile] targets",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default="edgesmith-out",
        help="output folder (default: %(default)s); refused if it holds files, unless --force",
    )
    p.add_argument("--force", action="store_true", help="replace the output folder's contents")
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=DIMS",
        help="sizes of an input's dynamic axes, e.g. images=1x3x320x320 (repeatable; default: the data's)",
    )
    p.add_argument(
        "--dump-recipe",
        action="store_true",
        help="print the resolved recipe as TOML and exit without converting",
    )
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or table")
    return p


def main(args) -> int:
    from ..converter import build_recipe
    from ..converter.pipeline import run
    from ..targets.latency import parse_shapes
    from .summary import print_summary

    recipe = build_recipe(args.recipe, args.preset, args.calibration, args.eval, args.format, args.model,
                          targets=args.target, input_shapes=parse_shapes(args.input_shape),
                          metric=args.metric)  # fmt: skip
    if args.dump_recipe:
        sys.stdout.write(recipe.to_toml())
        return 0
    report = run(recipe, None, args.out, force=args.force, quiet=args.quiet)
    if not (args.recipe or args.preset or args.calibration) and not args.quiet:
        print(
            "edgesmith: no --preset or --calibration: exported fp32, verified and profiled it. For INT8 pass "
            "--preset int8 --calibration DATA (static, the fastest on CPUs), or --preset int8-dynamic "
            "(no data; pays off for MatMul-heavy models)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print_summary(report, args.out)
    return 0
