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
