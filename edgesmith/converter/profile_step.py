"""Host latency of the original and of each artifact, as the pipeline's last stage."""

from __future__ import annotations

from pathlib import Path

from ..runtime import load as load_session
from ..targets.latency import measure
from .recipe import ProfileConfig


def profile(path: Path, config: ProfileConfig) -> dict:
    session = load_session(path, threads=config.threads or None)
    return measure(session, runs=config.runs, warmup=config.warmup).to_json()
