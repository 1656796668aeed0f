"""The `edgesmith` command. Each subcommand is a module with `add_parser(sub)` and `main(args) -> int`.

Errors the user can fix print one line and exit 2; heavy imports happen inside each `main`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import EdgesmithError

COMMANDS = ("convert", "run", "profile", "doctor", "targets", "report", "verify")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgesmith",
        description="Compress trained models, export them for edge runtimes, verify and profile them.",
        epilog="Start with: edgesmith convert models/mnist_cnn.onnx --preset int8 "
        "--calibration calibration_data/mnist --eval calibration_data/mnist/holdout.npz. "
        "Run `edgesmith COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        module.add_parser(sub).set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._main(args)
    except EdgesmithError as exc:
        print(f"edgesmith: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgesmith: interrupted; nothing was written", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
