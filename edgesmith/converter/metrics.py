"""The task metric verification scores a model with, named by `[verify] metric` (or `--metric`).

One protocol for every metric: a function of the model's outputs on the verification samples (every
output, all samples concatenated on the first axis, in the original model's output order) and the
samples' `labels` (None when the data has none), returning a score in points where higher is better.
`[verify] max_drop` is the largest drop of that score from the original to an artifact.

- "auto" (the default): top-1 when the labels are class ids and the first output holds class scores,
  else no task metric (verification still gives each output's cosine, and the arg-max agreement or
  the embedding cosine where they apply).
- "top1": top-1 accuracy x 100 of the first output's arg-max against class-id labels.
- "spearman": sentence pairs, as STS-B scores them: samples 2i and 2i+1 are a pair, their
  embeddings (the first output, one row per sentence) are compared by cosine, and the Spearman
  correlation x 100 with the gold scores (`labels[2i]`) is the score. A `.tsv` of
  `sentence<TAB>sentence<TAB>score` lines is read as such pairs.
- "module:function" or "path/to/file.py:function": the user's own function of the same signature,
  `function(outputs: list[numpy.ndarray], labels: numpy.ndarray | None) -> float`. It is imported
  (it is code the user asks to run, like a test); it is never given a pickle.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

BUILTIN = ("auto", "top1", "spearman")

Score = Callable[[list[np.ndarray], "np.ndarray | None"], float]


@dataclass(frozen=True)
class Metric:
    """A named score of a model's outputs: `name` is what reports print ("top1", "spearman",
    "mymetrics:f1")."""

    name: str
    score: Score

    def __call__(self, outputs: list[np.ndarray], labels: np.ndarray | None) -> float:
        try:
            value = self.score(outputs, labels)
        except InputError:
            raise
        except Exception as exc:  # the user's function failed: their code, named, not our crash
            cause = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise InputError(f"the metric {self.name} raised {cause}; fix the function or its data") from None
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(
                f"the metric {self.name} returned {type(value).__name__}, not a number; return a float"
            ) from None
        if not np.isfinite(value):
            raise InputError(f"the metric {self.name} returned {value}; return a finite number")
        return round(value, 4)


def top1(outputs: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Top-1 accuracy x 100: the first output's arg-max against class-id labels."""
    if labels is None:
        raise InputError("the metric top1 needs class-id `labels` in the eval data (.npz)")
    first = np.asarray(outputs[0])
    if first.ndim != 2 or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(
            f"the metric top1 needs class scores (samples, classes) and 1-D integer labels; got an output "
            f"of shape {list(first.shape)} and labels of shape {list(labels.shape)} ({labels.dtype})"
        )
    return float((first.argmax(1) == labels[: len(first)]).mean() * 100)


def spearman(outputs: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Spearman x 100 of each sentence pair's embedding cosine against its gold score (STS-B)."""
    from scipy.stats import spearmanr

    if labels is None:
        raise InputError("the metric spearman needs gold `labels` (one score per sentence, same for a pair)")
    embeddings = np.asarray(outputs[0], dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) % 2 or len(embeddings) < 4:
        raise InputError(
            f"the metric spearman compares sentence pairs (samples 2i and 2i+1): the first output has "
            f"shape {list(embeddings.shape)}; give an even number (>= 4) of sentences, one embedding each"
        )
    a, b = embeddings[0::2], embeddings[1::2]
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(100 * spearmanr(cosine, np.asarray(labels[0 : len(embeddings) : 2], np.float64)).statistic)


def resolve(name: str | None) -> Metric | None:
    """The metric `name` names; None for "auto" (chosen from the data by `choose`). A user function is
    imported now, so a wrong name fails before any long work."""
    if name in (None, "auto"):
        return None
    if name == "top1":
        return Metric("top1", top1)
    if name == "spearman":
        return Metric("spearman", spearman)
    if ":" not in name:
        raise InputError(
            f"unknown metric {name!r}: use one of {', '.join(BUILTIN)}, or 'module:function' for your own "
            "function(outputs, labels) -> float"
        )
    return Metric(name, _import(name))


def choose(metric: Metric | None, labels: np.ndarray | None, first: np.ndarray) -> Metric | None:
    """The metric a run scores with: the named one, else top-1 when the labels are class ids and the
    first output holds class scores, else none."""
    if metric is not None:
        return metric
    if labels is not None and labels.ndim == 1 and labels.dtype.kind in "iu" and first.ndim == 2:
        return Metric("top1", top1)
    return None


def _import(name: str) -> Score:
    where, _, function = name.rpartition(":")
    if not where or not function.isidentifier():
        raise InputError(f"metric {name!r}: write it as module:function or path/to/file.py:function")
    if where.endswith(".py"):
        module = _load_file(Path(where), name)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise InputError(
                f"metric {name!r}: cannot import {where} ({exc}); run from the folder that holds it, "
                "or give path/to/file.py:function"
            ) from None
    found = getattr(module, function, None)
    if not callable(found):
        raise InputError(f"metric {name!r}: {where} has no function {function}")
    return found


def _load_file(path: Path, name: str):
    if not path.is_file():
        raise InputError(f"metric {name!r}: no such file {path}")
    spec = importlib.util.spec_from_file_location(f"edgesmith_user_metric_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"metric {name!r}: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise InputError(f"metric {name!r}: importing {path} failed ({cause})") from None
    return module
