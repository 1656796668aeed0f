"""The device-side API: `load(path) -> Session`, then `session.run(feeds) -> outputs`.

Only numpy crosses this boundary. This module imports numpy and the standard library; each backend
imports its framework when a session is opened, so a device needs numpy plus one backend only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InputError

# what a session's `run` is: feeds by input name -> outputs by name
Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None or a name for dynamic axes), numpy dtype name and quantization of a tensor."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with dynamic axes set to `batch` (the first) or 1 (the others)."""
        return tuple(
            d if isinstance(d, int) and d > 0 else (batch if i == 0 else 1) for i, d in enumerate(self.shape)
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None} | {"shape": list(self.shape)}


class Session(Protocol):
    """A loaded model. `run` takes and returns dicts of numpy arrays keyed by tensor name."""

    backend: str
    path: Path
    threads: int | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_feeds(session: Session, feeds: dict[str, np.ndarray]) -> None:
    """Raise InputError when `feeds` do not match the session's inputs by name, rank or fixed size.

    Kept out of `Session.run` so the hot path stays a plain call into the backend.
    """
    names = [spec.name for spec in session.inputs]
    missing = [n for n in names if n not in feeds]
    extra = [n for n in feeds if n not in names]
    if missing or extra:
        raise InputError(
            f"inputs do not match the model: model wants {names}, got {sorted(feeds)}; "
            "name the arrays after the model's inputs"
        )
    for spec in session.inputs:
        array = feeds[spec.name]
        if array.ndim != len(spec.shape) or any(
            isinstance(want, int) and want > 0 and want != got
            for want, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise InputError(
                f"input '{spec.name}' has shape {list(array.shape)} but the model expects "
                f"{list(spec.shape)}; reshape or preprocess the data to match"
            )


def check_feedable(inputs: tuple[TensorSpec, ...], path: str | Path) -> None:
    """Raise InputError unless edgesmith can make and feed each input: numbers (not text or objects),
    and one sample that fits in this machine's memory (a model may declare any size)."""
    from .._io import NOT_NUMBERS

    memory = _physical_memory()
    for spec in inputs:
        try:
            dtype = np.dtype(spec.dtype)
        except TypeError:
            dtype = np.dtype(object)
        if dtype.kind in NOT_NUMBERS:
            raise InputError(
                f"{path}: input '{spec.name}' takes {NOT_NUMBERS[dtype.kind]} ({spec.dtype}); edgesmith feeds models "
                "numeric tensors: do the encoding (tokenizing, hashing) outside the model and export it taking ids"
            )
        size = int(np.prod(spec.concrete_shape(1), dtype=object)) * dtype.itemsize
        if memory and size > memory:
            raise InputError(
                f"{path}: input '{spec.name}' declares shape {list(spec.shape)}, {size / 2**30:,.0f} GiB for one "
                f"sample, more than this machine's {memory / 2**30:,.0f} GiB; check the model's input shape"
            )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this OS
        return None


def run_in_chunks(run: Run, size: int) -> Run:
    """Wrap a model with a fixed batch `size` so it takes any batch: feeds are cut into chunks of
    `size` (the last one zero-padded, its extra rows dropped after) and the outputs concatenated."""

    def chunked(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        total = len(next(iter(feeds.values())))
        if total == size:
            return run(feeds)
        parts = []
        for start in range(0, total, size):
            chunk = {k: v[start : start + size] for k, v in feeds.items()}
            short = size - len(next(iter(chunk.values())))
            if short:
                chunk = {
                    k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()
                }
            parts.append(run(chunk))
        return {name: np.concatenate([p[name] for p in parts])[:total] for name in parts[0]}

    return chunked
