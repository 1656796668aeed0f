"""Host latency of the original and of each artifact, as the pipeline's last stage."""

from __future__ import annotations

import time
from pathlib import Path

from ..runtime import load as load_session
from ..targets.latency import measure
from .recipe import ProfileConfig


def profile(path: Path, config: ProfileConfig, inputs=(), feeds: dict | None = None) -> dict:
    """Host latency at the shapes of `inputs` (the source's, dynamic axes sized: input_shapes.py), plus
    `profile_s`: how long loading and timing took. On `feeds` (one real sample) when they name the
    model's inputs: random values can take a branch real inputs never do (silero-vad's `If` on its
    integer sample rate runs its 8 kHz branch on a 16 kHz chunk and fails)."""
    started = time.perf_counter()
    # exact: time what verify checked (OpenVINO would otherwise run float layers in bf16 here)
    session = load_session(path, threads=config.threads or None, exact=True)
    names = {spec.name for spec in session.inputs}  # an artifact may name its inputs its own way
    shapes = {spec.name: spec.shape for spec in inputs if spec.name in names}
    real = feeds if feeds and set(feeds) == names else None
    result = measure(session, real, runs=config.runs, warmup=config.warmup, shapes=shapes).to_json()
    return result | {"profile_s": round(time.perf_counter() - started, 3)}


def per_target(path: Path, config: ProfileConfig, inputs=()) -> dict:
    """Estimated latency, energy and MCU fit on each `[profile] targets` device (cost model), at the
    shapes of `inputs`."""
    from ..targets.report import target_results

    return target_results(path, config.targets, top=10, shapes={spec.name: spec.shape for spec in inputs})
