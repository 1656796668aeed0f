"""One way to hush a framework's chatter for the length of a call."""

from __future__ import annotations

import contextlib
import logging
import warnings


@contextlib.contextmanager
def quiet(*loggers: str, python_warnings: bool = True):
    """Keep only errors from these loggers (e.g. "torch.onnx", "neural_compressor"), and ignore Python
    warnings unless `python_warnings=False`, until the block ends; levels are restored after."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if python_warnings:
                warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


# `--verbose` shows the frameworks' own log lines; by default they are hidden.
VERBOSE = False


def set_verbose(verbose: bool) -> None:
    """Called once by the CLI. Hidden by default: TensorFlow's C++ logs and ONNX Runtime's warnings."""
    import os

    global VERBOSE
    VERBOSE = bool(verbose)
    if not VERBOSE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read when TensorFlow is first imported


def onnxruntime_log_level() -> int:
    """ONNX Runtime's severity threshold: 0 verbose ... 3 errors only (its warnings are noise here)."""
    return 2 if VERBOSE else 3
