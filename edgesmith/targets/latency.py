"""Measure a session's latency on this machine: warm-up, N timed runs, percentiles, peak memory."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.session import Session, check_feedable


@dataclass(frozen=True)
class Measurement:
    """Latency of one model on one device, and how it was obtained."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    runs: int
    warmup: int
    threads: int | None
    backend: str
    batch: int
    peak_rss_mb: float
    source: str = "measured"
    device: str = "host"
    machine: str = platform.machine()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_shapes(texts: list[str] | None) -> dict[str, list[int]]:
    """`--input-shape NAME=1x3x320x320` values (repeatable) as {name: [1, 3, 320, 320]}."""
    shapes: dict[str, list[int]] = {}
    for text in texts or []:
        name, _, dims = text.rpartition("=")
        try:
            shape = [int(d) for d in dims.lower().split("x")] if name and dims else []
        except ValueError:
            shape = []
        if not shape or min(shape) < 1:
            raise InputError(
                f"--input-shape {text!r} is not NAME=DIMS: write e.g. images=1x3x320x320 (sizes >= 1, "
                "the input's name as the model has it)"
            )
        shapes[name] = shape
    return shapes


def input_shape(
    name: str,
    shape: Sequence[int | str | None],
    batch: int = 1,
    given: Mapping[str, Sequence[int]] | None = None,
) -> tuple[int, ...]:
    """The shape to feed input `name` at: its fixed sizes, then `given` (from --input-shape or the data),
    then `batch` for a dynamic first axis. Any other dynamic axis is refused (never guessed as 1: a
    detector at 1x1 is not timed, it crashes or folds its pooling to nothing)."""
    wanted = list((given or {}).get(name) or [])
    if wanted and len(wanted) != len(shape):
        raise InputError(
            f"--input-shape {name} has {len(wanted)} dims but the model's input has {len(shape)} "
            f"({_dims(shape)}); give one size per axis"
        )
    out = []
    for axis, size in enumerate(shape):
        fixed = size if isinstance(size, int) and size > 0 else None
        want = wanted[axis] if wanted and isinstance(wanted[axis], int) and wanted[axis] > 0 else None
        if fixed is not None and want is not None and want != fixed:
            raise InputError(
                f"--input-shape {name}={'x'.join(map(str, wanted))} does not fit the model's input "
                f"{_dims(shape)} (axis {axis} is fixed at {fixed}); give its fixed sizes as they are"
            )
        if fixed is None and want is None and axis > 0:
            hint = "x".join(str(d) if isinstance(d, int) and d > 0 else ("1" if i == 0 else "N")
                            for i, d in enumerate(shape))  # fmt: skip
            raise InputError(
                f"input '{name}' has a dynamic size on axis {axis} ({_dims(shape)}) and nothing says which: "
                f"pass --input-shape {name}={hint} with the real sizes"
            )
        out.append(fixed or want or batch)
    return tuple(out)


def check_names(shapes: Mapping[str, Sequence[int]] | None, names: Sequence[str]) -> None:
    """Refuse sizes given for an input the model does not have (a typo would otherwise go unnoticed)."""
    unknown = sorted(set(shapes or {}) - set(names))
    if unknown:
        raise InputError(
            f"--input-shape names {unknown}, but the model's inputs are {list(names)}; use those"
        )


def _dims(shape: Sequence[int | str | None]) -> str:
    return "x".join(str(d) if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else "?")
                    for d in shape)  # fmt: skip


def random_feeds(
    session: Session,
    batch: int = 1,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random inputs of the session's shapes, dynamic axes from `shapes` ({name: sizes}, e.g.
    from --input-shape), else `batch` for the first; see `input_shape`."""
    check_names(shapes, [spec.name for spec in session.inputs])
    check_feedable(session.inputs, getattr(session, "path", "the model"))
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.inputs:
        shape = input_shape(spec.name, spec.shape, batch, shapes)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            info = np.iinfo(dtype)
            feeds[spec.name] = rng.integers(max(info.min, 0), min(info.max, 100), shape).astype(dtype)
    return feeds


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if platform.system() == "Darwin" else 1024)


def measure(
    session: Session,
    feeds: dict[str, np.ndarray] | None = None,
    runs: int = 100,
    warmup: int = 10,
    batch: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> Measurement:
    """Time `session.run(feeds)`; random inputs of batch `batch` (and dynamic sizes from `shapes`) when
    `feeds` is None."""
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    feeds = feeds if feeds is not None else random_feeds(session, batch, shapes=shapes)
    for _ in range(warmup):
        session.run(feeds)
    times = np.empty(runs)
    clock = time.perf_counter
    for i in range(runs):
        start = clock()
        session.run(feeds)
        times[i] = clock() - start
    times *= 1000.0
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return Measurement(
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(times.mean()),
        stdev_ms=float(statistics.stdev(times)) if runs > 1 else 0.0,
        min_ms=float(times.min()),
        runs=runs,
        warmup=warmup,
        threads=session.threads,
        backend=session.backend,
        batch=next(iter(feeds.values())).shape[0] if feeds else batch,
        peak_rss_mb=round(peak_rss_mb(), 1),
    )
