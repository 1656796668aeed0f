"""Verify artifacts against the original model: every output compared on the same samples.

Every artifact is checked, labels or not: the original and the artifact run on the same batches
(the eval set, else calibration samples, else seeded random inputs), and for each output the report
gives the cosine of each sample's output to the original's (min and mean) and the max abs error.
There is also the task metric, `[verify] metric` (converter/metrics.py): top-1 when the labels are class
ids, Spearman of sentence-pair cosines, or the user's `module:function`; with class scores the arg-max
agreement; with L2-normalised embeddings their mean cosine.

Without an eval set the samples come in parts (`Joined`): those held out from calibration, then
calibrated-on ones. An output's cosine (the gate's figure) is the worst of its cosines over each
part's samples, so a few held-out samples cannot pass an artifact the other samples show broken,
nor the calibrated-on samples one the held-out ones show broken.

A sample on which the artifact's output is within `QUIET` of the output's scale everywhere (the
largest magnitude the original's output reaches on any sample) matches whatever its cosine: when
the original's own output is near zero on it (a text detector's map of a crop without text, 4e-5
everywhere, beside maps reaching 1 on text), the cosine measures rounding, not the artifact. Such a
sample counts as cosine 1, and as an exact match in its part's cosine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import load as load_session
from ..targets.records import NOISE_FLOOR
from . import metrics
from .frontends import Source
from .metrics import Metric
from .precision import FP16, FP32, INT4_WEIGHT_ONLY, INT8, INT8_DYNAMIC, INT8_WEIGHT_ONLY
from .progress import bar

# What an artifact must keep of the original's outputs when the recipe sets no `min_cosine`: the
# cosine of every sample's output to the original's. Only for runs whose steps all aim to keep the
# function (quantization, export); pruning, distillation and binarization change it on purpose.
# INT4 weights (round-to-nearest) move a small model's outputs more than INT8 does without costing its
# task: all-MiniLM-L6-v2's embeddings keep cosine 0.95 to fp32 and STS-B Spearman within 0.1 point
# (docs/accuracy.md, "Weight-only"); a broken artifact sits far below 0.9.
DEFAULT_MIN_COSINE = {INT8: 0.98, INT8_DYNAMIC: 0.98, FP16: 0.999, FP32: 0.999,
                      INT8_WEIGHT_ONLY: 0.99, INT4_WEIGHT_ONLY: 0.9}  # fmt: skip


@dataclass
class Reference:
    """The original model's outputs on the verification samples, computed once for all artifacts."""

    outputs: list[list[np.ndarray]]  # per batch, every output
    names: list[str]  # the original's output names
    metric: str | None
    score: float | None
    data: str  # "eval", "calibration" or "random inputs": what the samples were
    scorer: Metric | None = None  # what `metric` names (converter/metrics.py)

    def score_of(self, outputs: list[np.ndarray], labels: np.ndarray | None) -> float | None:
        """The artifact's score on the same samples, by the metric the original was scored with."""
        return None if self.scorer is None else self.scorer(outputs, labels)


# An artifact's output on a sample within this share of the output's scale (its largest magnitude on
# any verification sample) is the original's up to rounding: half an INT8 step of a [0, 1] output is
# 2e-3; 1e-3 of the scale is below any error that changes what a model says.
QUIET = 1e-3


class Joined:
    """Verification samples made of parts, one after another (e.g. the samples held out from
    calibration, then calibrated-on ones): verify computes each output's cosine per part and keeps the
    worst (`batch_parts` says which part each batch belongs to)."""

    def __init__(self, parts, what: str):
        self.parts = [p for p in parts if p is not None and len(p)]
        self.what = what
        self.count = sum(len(p) for p in self.parts)
        labels = [p.labels for p in self.parts if getattr(p, "labels", None) is not None]
        self.labels: np.ndarray | None = np.concatenate(labels) if len(labels) == len(self.parts) else None
        self.batch_parts = [i for i, p in enumerate(self.parts) for _ in range(p.num_batches())]

    def __len__(self) -> int:
        return self.count

    def feed_size(self, feed: dict[str, np.ndarray]) -> int:
        return self.parts[0].feed_size(feed)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        for part in self.parts:
            yield from part.batches()

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        for part in self.parts:
            yield from part.samples()


class RandomSamples:
    """Seeded random inputs of the model's shapes, for verifying when the user gave no data: enough to
    catch an artifact that computes something else (overflow in fp16, a broken graph)."""

    what = "random inputs"
    labels = None

    def __init__(self, inputs, count: int = 8, seed: int = 0):
        from types import SimpleNamespace

        from ..targets.latency import random_feeds

        specs: Any = SimpleNamespace(inputs=inputs)  # random_feeds reads only `inputs` off a session
        batch = inputs[0].shape[0] if inputs and isinstance(inputs[0].shape[0], int) else 1
        self._batches = [random_feeds(specs, batch=max(batch, 1), seed=seed + i) for i in range(count)]
        self.count = sum(len(next(iter(b.values()))) for b in self._batches)

    def __len__(self) -> int:
        return self.count

    def feed_size(self, feed: dict[str, np.ndarray]) -> int:
        return len(next(iter(feed.values())))

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        yield from self._batches


def _output_names(source: Source) -> list[str]:
    return [s.name for s in load_session(source.onnx.path).outputs]  # a .tflite when tf2onnx could not


def reference(source: Source, data, quiet: bool = False, metric: str | None = None) -> Reference:
    """The original's outputs on `data` and its score by `metric` ([verify] metric: "auto", "top1",
    "spearman" or "module:function"; converter/metrics.py)."""
    named = metrics.resolve(metric)  # a wrong name or module fails before the original runs
    outputs = []
    with bar(len(data), "evaluating original", "sample", quiet) as progress:
        for batch in data.batches():
            outputs.append([np.asarray(o) for o in source.reference(batch)])
            progress.update(data.feed_size(batch))
    labels = getattr(data, "labels", None)
    whole = _concatenated(outputs)
    scorer = metrics.choose(named, labels, whole[0]) if whole is not None else None
    score = scorer(whole, labels) if scorer is not None and whole is not None else None
    return Reference(outputs, _output_names(source), scorer.name if scorer else None, score,
                     getattr(data, "what", "eval"), scorer)  # fmt: skip


def _concatenated(batches: list[list[np.ndarray]]) -> list[np.ndarray] | None:
    """Every output over all batches (samples on the first axis); None when an output is a scalar."""
    if any(np.ndim(o) == 0 for o in batches[0]):
        return None
    return [np.concatenate([b[i] for b in batches]) for i in range(len(batches[0]))]


def _aligned(got: dict[str, np.ndarray], names: list[str], want: list[np.ndarray]) -> list[np.ndarray]:
    """The artifact's outputs in the original's order: by name when the names are kept (ONNX,
    OpenVINO), else by position, unless shapes then disagree and each shape is unique (TFLite
    converters rename outputs and may reorder them)."""
    if all(n in got for n in names):
        return [got[n] for n in names]
    values = list(got.values())
    if len(values) != len(want):
        raise RuntimeError(f"the artifact has {len(values)} outputs, the original {len(want)}")
    if all(v.shape == w.shape for v, w in zip(values, want, strict=True)):
        return values
    by_shape = {v.shape: v for v in values}
    if len(by_shape) == len(values) and all(w.shape in by_shape for w in want):
        return [by_shape[w.shape] for w in want]
    return values


def _rows(array: np.ndarray, samples: int) -> np.ndarray:
    """One row per sample when the output has a batch axis, else the whole output as one row."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim >= 1 and array.shape[0] == samples:
        return array.reshape(samples, -1)
    return array.reshape(1, -1)


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Cosine of each row of `got` to the same row of `want` (1 when both are zero, 0 when one is)."""
    dot = (got * want).sum(1)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    both_zero = (np.linalg.norm(got, axis=1) < 1e-12) & (np.linalg.norm(want, axis=1) < 1e-12)
    cos = np.where(norms > 0, dot / np.maximum(norms, 1e-300), 0.0)
    return np.where(both_zero, 1.0, np.clip(cos, -1.0, 1.0))


def scales(ref: Reference) -> list[float]:
    """Each output's scale: the largest magnitude the original's output reaches on any sample."""
    return [
        max((float(np.abs(np.asarray(b[i], np.float64)).max(initial=0.0)) for b in ref.outputs), default=0.0)
        for i in range(len(ref.names))
    ]


class _OutputStats:
    """One output over the batches: its cosine to the original's over the samples of each part (the
    outputs of a part's samples as one vector; the worst part's is what the verification gate checks),
    each sample's own cosine (the worst and the mean: where an artifact drifts on a few inputs) and the
    max abs error. Samples within `QUIET` of the output's scale count as cosine 1 (module docstring)."""

    def __init__(self, name: str, scale: float = 0.0):
        self.name, self.max_err = name, 0.0
        self.quiet = max(NOISE_FLOOR, QUIET * scale)
        self.per_sample: list[np.ndarray] = []
        self.shape_error: str | None = None
        self.sums: dict[int, np.ndarray] = {}  # part -> (dot, got^2, want^2) over its samples

    def add(self, got: np.ndarray, want: np.ndarray, samples: int, part: int = 0) -> None:
        if np.shape(got) != np.shape(want):
            self.shape_error = f"shape {list(np.shape(got))}, the original's {list(np.shape(want))}"
            return
        g, w = _rows(got, samples), _rows(want, samples)
        error = np.abs(g - w).max(1, initial=0.0) if g.size else np.zeros(len(g))
        error = np.where(np.isnan(error), np.inf, error)  # NaN in the artifact's output: never quiet
        counts = ~(error <= self.quiet)
        self.per_sample.append(np.where(counts, cosines(g, w), 1.0))
        g = np.where(counts[:, None], g, w)  # a quiet sample adds to its part as an exact match
        sums = self.sums.setdefault(part, np.zeros(3))
        sums += ((g * w).sum(), (g * g).sum(), (w * w).sum())
        if error.size:  # max() would drop a NaN: it is an infinite error
            self.max_err = max(self.max_err, float(error.max()))

    def cosine(self) -> float:
        """The worst part's cosine."""
        return min((_cosine_of(*sums) for sums in self.sums.values()), default=1.0)

    def to_json(self) -> dict:
        if self.shape_error:
            return {"name": self.name, "cosine": 0.0, "error": self.shape_error}
        per_sample = np.concatenate(self.per_sample)
        return {"name": self.name, "cosine": round(self.cosine(), 6),
                "cosine_worst_sample": round(float(per_sample.min()), 6),
                "cosine_mean_sample": round(float(per_sample.mean()), 6),
                "max_abs_error": self.max_err}  # fmt: skip


def _cosine_of(dot: float, got_sq: float, want_sq: float) -> float:
    if got_sq < 1e-24 and want_sq < 1e-24:
        return 1.0  # both all zeros
    return float(np.clip(dot / max(np.sqrt(got_sq * want_sq), 1e-300), -1.0, 1.0))


def _failed(stats: list[_OutputStats], exc: Exception) -> None:
    """Every output marked as failed: the artifact raised on a sample the original runs (an INT8 TFLite
    Div whose quantized divisor is zero on one real input): a verification failure, not a crash."""
    cause = " ".join(str(exc).split())
    for stat in stats:
        stat.shape_error = f"the artifact fails on a sample the original runs ({cause})"


def verify(artifact: Path, ref: Reference, data, quiet: bool = False) -> dict:
    session = load_session(artifact, exact=True)
    stats = [_OutputStats(n, scale) for n, scale in zip(ref.names, scales(ref), strict=True)]
    parts = getattr(data, "batch_parts", None) or [0] * len(ref.outputs)
    everything: list[list[np.ndarray]] = []
    with bar(len(data), f"evaluating {artifact.name}", "sample", quiet) as progress:
        for batch, want, part in zip(data.batches(), ref.outputs, parts, strict=True):
            samples = data.feed_size(batch)
            try:
                got = _aligned(session.run(batch), ref.names, want)
            except Exception as exc:  # the runtime's own types: a kernel that fails on this input
                _failed(stats, exc)
                break
            for stat, g, w in zip(stats, got, want, strict=True):
                stat.add(g, w, samples, part)
            everything.append([np.asarray(g) for g in got])
            progress.update(samples)
    outputs = [s.to_json() for s in stats]
    result = {
        "data": ref.data,
        "metric": ref.metric,
        "original": ref.score,
        "artifact": None,
        "samples": len(data),
        "outputs": outputs,
        "cosine_min": min(o["cosine"] for o in outputs),  # the gate: the least similar output
        "max_abs_error": max(o.get("max_abs_error", float("inf")) for o in outputs),
    }
    if any("error" in o for o in outputs):
        return result
    first, expected = np.concatenate([b[0] for b in everything]), np.concatenate([b[0] for b in ref.outputs])
    whole = _concatenated(everything)
    if ref.scorer is not None and whole is not None:
        result["artifact"] = ref.score_of(whole, getattr(data, "labels", None))
    if first.ndim == 2 and np.allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-3):
        # L2-normalised rows are embeddings (a sentence encoder): what matters is their direction
        cosine = (first * expected).sum(1) / np.maximum(np.linalg.norm(first, axis=1), 1e-12)
        result["cosine"] = round(float(cosine.mean()), 6)
    elif first.ndim == 2 and first.shape[1] > 1:
        result["agreement"] = round(float((first.argmax(1) == expected.argmax(1)).mean() * 100), 4)
    if ref.metric and ref.score is not None and result["artifact"] is not None:
        result["drop"] = round(ref.score - result["artifact"], 4)
    return result
