"""Run edgesmith artifacts on a device: `load(path, backend="auto").run(feeds)`.

Needs numpy plus one backend (`pip install edgesmith[ort]`); never torch, TensorFlow or onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._io import check_utf8_path
from ..errors import InputError, MissingExtra, closest
from . import backends
from .session import Session, TensorSpec, check_feeds

__all__ = ["Session", "TensorSpec", "check_feeds", "load", "available_backends"]


def available_backends() -> dict[str, bool]:
    """Every known backend and whether it is installed here."""
    return {name: backends.get(name).available() for name in backends.BACKENDS}


def load(
    path: str | Path, backend: str = "auto", threads: int | None = None, exact: bool = False, **options: Any
) -> Session:
    """Open a model file with a backend (`"auto"` picks the first installed one that reads it).

    `threads`: intra-op threads (None: $EDGESMITH_THREADS, which a process sharing the cores with
    others sets, e.g. a `sweep` worker; else the backend's default, all cores). `exact`: no reduced-precision execution
    (a backend that would run float32 layers in bf16 or fp16 for speed runs them in float32); the
    verifier uses it. Other keyword options go to the backend.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    check_utf8_path(path, "the model")
    if backend == "auto":
        names = backends.for_suffix(path.suffix.lower())
        if not names:
            known = sorted({s for n in backends.BACKENDS for s in backends.get(n).SUFFIXES})
            raise InputError(f"{path}: no backend reads '{path.suffix}' files; expected one of {known}")
        installed = [n for n in names if backends.get(n).available()]
        if not installed:
            raise MissingExtra(backends.get(names[0]).EXTRA, why=f"needed to run {path.name}")
        backend = installed[0]
    elif backend not in backends.BACKENDS:
        raise InputError(
            f"unknown backend '{backend}'{closest(backend, backends.BACKENDS)}; "
            f"choose from {sorted(backends.BACKENDS)} or 'auto'"
        )
    module = backends.get(backend)
    if not module.available():
        raise MissingExtra(module.EXTRA, why=f"the '{backend}' backend")
    session: Session = module.open(path, threads or default_threads(), exact=exact, **options)
    return session


THREADS_ENV = "EDGESMITH_THREADS"


def default_threads() -> int | None:
    """$EDGESMITH_THREADS as a positive number, else None (the backend decides)."""
    import os

    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None
