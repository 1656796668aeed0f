"""The `edgesmith` command. Each subcommand is a module with `add_parser(sub)` and `main(args) -> int`.

Exit codes, the same for every command:
  0  done
  1  verification failed (an artifact is further from the original than the recipe allows)
  2  bad input: one line saying what is wrong and how to fix it; nothing is written
  3  internal error (a bug in edgesmith or a framework it drives): one line, and the traceback in a log
Heavy imports happen inside each `main`, and `cli/__init__` imports only the module of the command that
runs: `run`, `profile` and `verify` import no converter module (a contract in pyproject.toml).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from pathlib import Path

from .._signals import Terminated, raise_terminated
from ..errors import EdgesmithError

# name -> the line `edgesmith --help` lists (the same as the module's own `help`: tests/test_layering.py).
# A command's module is imported only when that command runs, so `edgesmith run` on a device never
# imports the converter.
COMMANDS = {
    "convert": "compress, export, verify and profile a model",
    "run": "run an artifact on inputs from an .npz",
    "profile": "latency and energy of an artifact: here, on a device, or estimated for a target",
    "doctor": "show installed extras and backends",
    "targets": "list the devices edgesmith knows, or explain one",
    "report": "write an HTML report (Pareto plot, per-layer bars, per-target table) for a convert folder",
    "verify": "run an artifact on emulated ARM or on TensorFlow Lite Micro and compare the outputs",
    "inspect": "rank the layers of a static INT8 ONNX model by the error their quantization adds",
    "sweep": "convert many models x recipes x targets in parallel (Ray)",
    "tune": "search recipes for a device: Pareto front of metric, latency, size (Optuna on Ray Tune)",
}

EXIT_CODES = """\
exit codes: 0 done, 1 verification failed, 2 bad input (one line: what is wrong and how to fix it),
3 internal error (one line and the path of a log with the traceback)"""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: every command is listed, but only the one `argv` names is built from its
    module (all of them when `argv` is None)."""
    parser = argparse.ArgumentParser(
        prog="edgesmith",
        description="Compress trained models, export them for edge runtimes, verify and profile them.",
        epilog="Start with: edgesmith convert models/mnist_cnn.onnx --preset int8 "
        "--calibration calibration_data/mnist --eval calibration_data/mnist/holdout.npz. "
        "Run `edgesmith COMMAND --help` for each command.\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # the top level takes no option but --help, so the first other word names the command
    chosen = next((word for word in argv if not word.startswith("-")), None) if argv is not None else None
    for name, summary in COMMANDS.items():
        if argv is None or name == chosen:
            _add_command(sub, name)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _add_command(sub, name: str) -> None:
    """Build command `name`'s parser from its module, with the options and epilog every command has."""
    module = importlib.import_module(f".{name}", __name__)
    command = module.add_parser(sub)
    command.set_defaults(_main=module.main)
    command.add_argument(
        "--verbose", action="store_true", help="show the frameworks' own log lines (hidden by default)"
    )
    if EXIT_CODES.split(":")[0] not in (command.epilog or "") + (command.description or ""):
        command.epilog = ((command.epilog or "") + "\n\n" + EXIT_CODES).strip()
        command.formatter_class = argparse.RawDescriptionHelpFormatter


def log_dir() -> Path:
    """Where tracebacks of internal errors go: $EDGESMITH_LOG_DIR, else ~/.local/state/edgesmith/logs."""
    if os.environ.get("EDGESMITH_LOG_DIR"):
        return Path(os.environ["EDGESMITH_LOG_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "edgesmith" / "logs"


def _write_log(argv: list[str]) -> Path | None:
    """The current exception's traceback, with the command line, in a log file; None if unwritable."""
    import time

    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"edgesmith-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        from .._quiet import CAPTURED

        logs = "".join(f"\n--- framework output ---\n{text}" for text in CAPTURED)
        path.write_text("edgesmith " + " ".join(argv) + "\n\n" + traceback.format_exc() + logs)
        return path
    except OSError:
        return None


def _internal_error(exc: BaseException, argv: list[str]) -> int:
    log = _write_log(argv)
    cause = (str(exc).strip().splitlines() or [""])[0]
    what = f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__
    where = f"the traceback is in {log}" if log else "and the log could not be written"
    print(
        f"edgesmith: internal error ({what}); this is a bug in edgesmith or a framework it drives, not "
        f"in your input: {where}; please report it with that file",
        file=sys.stderr,
    )
    return 3


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    from .. import _quiet

    _quiet.set_verbose(getattr(args, "verbose", False))
    previous = signal.getsignal(signal.SIGTERM)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        try:
            signal.signal(signal.SIGTERM, raise_terminated)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
    try:
        with _quiet.hushed_process():
            return args._main(args)
    except EdgesmithError as exc:
        print(f"edgesmith: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("edgesmith: terminated; nothing was written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("edgesmith: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:
        return _internal_error(exc, argv)
    finally:
        if previous is not None and signal.getsignal(signal.SIGTERM) is raise_terminated:
            signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    sys.exit(main())
