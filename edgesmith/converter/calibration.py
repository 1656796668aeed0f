"""ONNX Runtime's static-INT8 calibration in bounded memory: the ranges `quantize_static` would compute,
from activations held one small piece of a batch at a time, written as its calibration cache.

Why: ONNX Runtime's calibrators keep every intermediate tensor of the batches they are given (the
graph augmented with all of them as outputs). Fed a few batches at a time (`CalibStridedMinMax`),
ResNet-50 with 16-sample batches still held GBs, and its histogram calibrators (percentile, entropy)
copy and flatten each chunk again (benchmarks/calibration_memory.py). Here:

- minmax: ONNX Runtime's own MinMaxCalibrater, given one piece (`PIECE` samples) per `collect_data`;
  it merges each piece's min/max into its running range, which is exact (min of mins).
- percentile / entropy: two passes over the pieces with ONNX Runtime's augmented session. Pass 1: each
  tensor's running min/max (of |x| for symmetric percentile). Pass 2: each piece's histogram over the
  fixed range that `np.histogram` would take for all data at once, summed. A histogram with fixed
  bins is additive, so the sums are the all-at-once histograms, bit for bit, and ONNX Runtime's
  HistogramCollector turns them into the same thresholds. (ONNX Runtime's own merging of histograms
  collected chunk by chunk rebins as the range grows: close to, not equal to, all at once.)

Peak memory is one piece's activations plus ONNX Runtime's arena and the histograms (2048 bins per
tensor), whatever the number of samples; the cost is one more pass over the data for histograms.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

PIECE = 4  # samples per inference of the augmented model


def pieces(source, piece: int = PIECE) -> Iterator[dict[str, np.ndarray]]:
    """The calibration batches cut along the batch axis into feeds of at most `piece` samples (a source
    that feeds inputs whole, e.g. a scalar sample rate, gives one sample per batch: kept as it is)."""
    for index in range(source.num_batches()):
        batch = source.batch(index)
        count = source.feed_size(batch)
        if count == 1:
            yield batch
            continue
        for start in range(0, count, piece):
            yield {k: v[start : start + piece] for k, v in batch.items()}


class _One:
    """A CalibrationDataReader over a single feed."""

    def __init__(self, feed):
        self._feed = feed

    def get_next(self):
        feed, self._feed = self._feed, None
        return feed


def write_cache(model_path: Path, op_types, method: str, options: dict, source, cache: Path, progress=None):
    """Calibrate `model_path` on `source` as quantize_static(calibrate_method=method, extra_options=
    `options`) would, and save ONNX Runtime's calibration cache to `cache` (quantize_static then reads it)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calib_options = {"percentile": options["CalibPercentile"]} if "CalibPercentile" in options else {}
    if not op_types:  # quantize_static's default: every op it can quantize (QOperator or QDQ)
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    with tempfile.TemporaryDirectory(prefix="edgesmith-calib-") as tmp:
        calibrator = create_calibrator(
            Path(model_path),
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=calib_options,
        )
        if method == "MinMax":
            for feed in pieces(source):
                calibrator.collect_data(_One(feed))
                _advance(progress, feed)
        else:
            calibrator.collector = _histograms(calibrator, source, progress)
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache, smooth_quant=False)


def _advance(progress, feed) -> None:
    if progress is not None:
        progress.update(len(next(iter(feed.values()))))


def _histograms(calibrator, source, progress):
    """ONNX Runtime's HistogramCollector holding the all-at-once histograms of every calibrated tensor,
    built in two streaming passes (see the module docstring)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(method=calibrator.method, symmetric=calibrator.symmetric,
                                   num_bins=calibrator.num_bins, num_quantized_bins=calibrator.num_quantized_bins,
                                   percentile=calibrator.percentile, scenario=calibrator.scenario)  # fmt: skip
    absolute = calibrator.method == "percentile" and calibrator.symmetric  # ORT: collect_absolute_value
    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()]
    wanted = [i for i, name in enumerate(names) if name in calibrator.tensors_to_calibrate]
    lows: dict[str, np.ndarray] = {}  # raw min/max, and of |x| when absolute
    highs: dict[str, np.ndarray] = {}
    abs_lows: dict[str, np.ndarray] = {}
    abs_highs: dict[str, np.ndarray] = {}
    for feed in pieces(source):
        outputs = session.run(None, feed)
        for i in wanted:
            x = outputs[i]
            _extend(lows, highs, names[i], np.nanmin(x), np.nanmax(x))
            if absolute:
                a = np.absolute(x)
                _extend(abs_lows, abs_highs, names[i], np.nanmin(a), np.nanmax(a))
        _advance(progress, feed)
    counts: dict[str, np.ndarray] = {}
    edges: dict[str, np.ndarray] = {}
    for feed in pieces(source):
        outputs = session.run(None, feed)
        for i in wanted:
            name = names[i]
            x = np.absolute(outputs[i]) if absolute else outputs[i]
            if absolute:
                bounds = (abs_lows[name], abs_highs[name])
            else:
                threshold = np.array(max(abs(lows[name]), abs(highs[name])), dtype=x.dtype)
                bounds = (-threshold, threshold)
            hist, edges[name] = np.histogram(x.ravel(), calibrator.num_bins, range=bounds)
            counts[name] = counts[name] + hist if name in counts else hist
    for name in counts:
        if absolute:  # (hist, edges, min, max), as collect_absolute_value stores them
            collector.histogram_dict[name] = (
                counts[name],
                edges[name].astype(highs[name].dtype),
                lows[name],
                highs[name],
            )
        else:  # (hist, edges, min, max, threshold), as collect_value does
            threshold = np.array(max(abs(lows[name]), abs(highs[name])), dtype=highs[name].dtype)
            collector.histogram_dict[name] = (counts[name], edges[name], lows[name], highs[name], threshold)
    return collector


def _extend(lows: dict, highs: dict, name: str, low, high) -> None:
    lows[name] = low if name not in lows else min(lows[name], low)
    highs[name] = high if name not in highs else max(highs[name], high)
