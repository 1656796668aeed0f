"""One way to hush a framework's chatter for the length of a call, and one switch to let it through.

Frameworks talk on three channels: Python loggers (absl, tensorflow, torch.onnx ...), Python
warnings, and C++ code writing straight to file descriptors 1 and 2 (TensorFlow's oneDNN/CUDA/CPU
feature lines, absl's "All log messages before absl::InitializeLog()"). The last bypasses
`sys.stderr`, so `quiet(output=True)` redirects the descriptors themselves into a temporary file.
What it captured is kept in `CAPTURED`, for a log file; with `VERBOSE` set (the CLI's `--verbose`)
nothing is hushed and everything reaches the terminal as it is written.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import io
import logging
import os
import sys
import tempfile
import warnings

VERBOSE = False  # True: framework logs and warnings reach the terminal untouched
CAPTURED: collections.deque[str] = collections.deque(maxlen=64)  # the latest captured outputs, oldest first

# TensorFlow's C++ logging reads this once, when TensorFlow is imported: 3 keeps INFO and WARNING
# lines from being written at all (errors are still raised as exceptions)
TF_LOG_LEVEL = ("TF_CPP_MIN_LOG_LEVEL", "3")
TENSORFLOW = ("absl", "jax", "litert_torch", "tensorflow", "tf2onnx", "keras", "tf_keras")  # Python loggers


@contextlib.contextmanager
def quiet(*loggers: str, python_warnings: bool = True, output: bool = False):
    """Keep only errors from these loggers (e.g. "torch.onnx", "absl"), ignore Python warnings unless
    `python_warnings=False`, and with `output=True` capture whatever is printed to stdout/stderr,
    C++ included, until the block ends. Levels, filters and descriptors are restored after, also on
    an exception. Does nothing when `VERBOSE` is set."""
    if VERBOSE:
        yield
        return
    with (
        _errors_only(loggers),
        warnings.catch_warnings(),
        _captured_output() if output else contextlib.nullcontext(),
    ):
        if python_warnings:
            warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _errors_only(names):
    """These loggers keep only errors until the block ends; their levels are restored after."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in names]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def tensorflow():
    """The TensorFlow family's chatter (TensorFlow, Keras, tf2onnx, LiteRT, litert-torch, JAX): its
    loggers, warnings and C++ output, captured. Import TensorFlow inside the block: its C++ logging
    level is read once, at import."""
    return quiet(*TENSORFLOW, output=True)


@contextlib.contextmanager
def _captured_output():
    """Descriptors 1 and 2 into one temporary file, and sys.stdout/sys.stderr (which pytest or a
    notebook may have replaced by objects that are not those descriptors) into a buffer."""
    name, value = TF_LOG_LEVEL
    os.environ.setdefault(name, value)
    buffer = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        _flush()
        kept = [os.dup(fd) for fd in (1, 2)]
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                yield
        finally:
            _flush()
            for fd, copy in zip((1, 2), kept, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            text = sink.read().decode(errors="replace") + buffer.getvalue()
            if text:
                CAPTURED.append(text)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:  # sys.__stdout__ is None under pythonw and some embedders
                stream.flush()


def set_verbose(verbose: bool) -> None:
    """Called once by the CLI. Hidden by default: TensorFlow's C++ logs and ONNX Runtime's warnings."""
    global VERBOSE
    VERBOSE = bool(verbose)
    if not VERBOSE:
        os.environ.setdefault(*TF_LOG_LEVEL)  # read when TensorFlow is first imported


def onnxruntime_log_level() -> int:
    """ONNX Runtime's severity threshold: 0 verbose ... 3 errors only (its warnings are noise here)."""
    return 2 if VERBOSE else 3


# Loggers of the frameworks edgesmith drives; below ERROR they only talk about themselves.
FRAMEWORK_LOGGERS = (*TENSORFLOW, "torch", "torch.utils._pytree", "torchao", "onnxscript", "onnx_ir", "nncf", "openvino",
                     "neural_compressor", "ai_edge_quantizer", "transformers", "ray")  # fmt: skip


@contextlib.contextmanager
def hushed_process():
    """For a whole CLI command: what frameworks write straight to descriptors 1 and 2 (C++ logs,
    absl, oneDNN notes) goes to a temporary file kept in `CAPTURED` (for the internal-error log),
    their loggers keep only errors, while edgesmith's own output (tables, progress bars, the error
    line) still reaches the terminal through sys.stdout/sys.stderr, re-pointed at copies of the
    original descriptors. Where sys.stdout/sys.stderr are not the descriptors (pytest, notebooks)
    they are left alone. Does nothing with `VERBOSE`."""
    if VERBOSE:
        yield
        return
    with _errors_only(FRAMEWORK_LOGGERS), _descriptors_captured():
        yield


@contextlib.contextmanager
def _descriptors_captured():
    """hushed_process's capture of descriptors 1 and 2 (see there)."""
    last_resort = logging.lastResort
    if last_resort is not None:
        logging.lastResort = logging.StreamHandler()
        logging.lastResort.setLevel(logging.ERROR)
    streams = {1: "stdout", 2: "stderr"}
    _flush()
    copies = {fd: os.dup(fd) for fd in streams}
    replaced = {}
    for fd, name in streams.items():
        stream = getattr(sys, name)
        try:
            is_fd = stream.fileno() == fd
        except (AttributeError, OSError, ValueError):
            is_fd = False
        if is_fd:
            replaced[name] = stream
            setattr(sys, name, io.TextIOWrapper(os.fdopen(os.dup(copies[fd]), "wb", buffering=0),
                                                encoding=stream.encoding, errors=stream.errors,
                                                line_buffering=True, write_through=True))  # fmt: skip
    # a crash in C code (SIGSEGV, abort) shows Python's stack on the terminal, not in the hidden sink
    crash_report = replaced.get("stderr") and sys.stderr
    was_enabled = faulthandler.is_enabled()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for fd in streams:
            os.dup2(sink.fileno(), fd)
        if crash_report:
            faulthandler.enable(crash_report)
        try:
            yield
        finally:
            if crash_report:
                faulthandler.disable()
                if was_enabled:
                    faulthandler.enable()
            _flush()
            for fd, copy in copies.items():
                os.dup2(copy, fd)
                os.close(copy)
            for name, stream in replaced.items():
                getattr(sys, name).close()
                setattr(sys, name, stream)
            logging.lastResort = last_resort
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if text:
                CAPTURED.append(text)
