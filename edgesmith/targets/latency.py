"""Measure a session's latency on this machine: warm-up, N timed runs, percentiles, peak memory."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

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

    def to_json(self) -> dict:
        return asdict(self)


def random_feeds(session: Session, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs of the session's shapes (dynamic axes: `batch` first, 1 elsewhere)."""
    check_feedable(session.inputs, getattr(session, "path", "the model"))
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.inputs:
        shape = spec.concrete_shape(batch)
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
) -> Measurement:
    """Time `session.run(feeds)`; random inputs of batch `batch` when `feeds` is None."""
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    feeds = feeds if feeds is not None else random_feeds(session, batch)
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
