"""Verify artifacts against the original model on real data: task metric, agreement, max error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runtime import load as load_session
from .data.arrays import ArraySource
from .frontends import Source
from .progress import bar


@dataclass
class Reference:
    """The original model's outputs on the eval set, computed once for all artifacts."""

    outputs: list[np.ndarray]  # first output, one array per batch
    metric: str | None
    score: float | None


def _metric(labels: np.ndarray | None, outputs: np.ndarray) -> str | None:
    if labels is None:
        return None
    if labels.ndim == 1 and labels.dtype.kind in "iu" and outputs.ndim == 2:
        return "top1"
    return None


def _score(metric: str | None, labels: np.ndarray, outputs: np.ndarray) -> float | None:
    if metric == "top1":
        return round(float((outputs.argmax(1) == labels[: len(outputs)]).mean() * 100), 4)
    return None


def reference(source: Source, data: ArraySource, quiet: bool = False) -> Reference:
    outputs = []
    with bar(len(data), "evaluating original", "sample", quiet) as progress:
        for batch in data.batches():
            outputs.append(np.asarray(source.reference(batch)[0]))
            progress.update(len(outputs[-1]))
    stacked = np.concatenate(outputs)
    metric = _metric(data.labels, stacked)
    return Reference(outputs, metric, _score(metric, data.labels, stacked) if metric else None)


def verify(artifact: Path, ref: Reference, data: ArraySource, quiet: bool = False) -> dict:
    session = load_session(artifact, exact=True)
    outputs = []
    with bar(len(data), f"evaluating {artifact.name}", "sample", quiet) as progress:
        for batch in data.batches():
            outputs.append(next(iter(session.run(batch).values())))
            progress.update(len(outputs[-1]))
    got, want = np.concatenate(outputs), np.concatenate(ref.outputs)
    error = np.abs(got.astype(np.float64) - want.astype(np.float64))
    result = {
        "metric": ref.metric,
        "original": ref.score,
        "artifact": _score(ref.metric, data.labels, got) if ref.metric else None,
        "samples": len(data),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
    }
    if got.ndim == 2 and np.allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-3):
        # L2-normalised rows are embeddings (a sentence encoder): what matters is their direction
        cosine = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1), 1e-12)
        result["cosine"] = round(float(cosine.mean()), 6)
        result["cosine_min"] = round(float(cosine.min()), 6)
    elif got.ndim == 2:
        result["agreement"] = round(float((got.argmax(1) == want.argmax(1)).mean() * 100), 4)
    if ref.metric:
        result["drop"] = round(ref.score - result["artifact"], 4)
    return result
