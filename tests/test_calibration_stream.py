"""Calibration in bounded memory (converter/calibration.py): the ranges and the quantized model are
those of ONNX Runtime's calibration over all samples at once, for minmax, percentile and entropy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantType, quantize_static
from onnxruntime.quantization.calibrate import load_tensors_data

from edgesmith import runtime
from edgesmith.converter import calibration
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.recipe import CalibrationConfig

from models import small_cnn


class AllAtOnce:
    """Every sample in one feed: ONNX Runtime calibrates on all activations together."""

    def __init__(self, data):
        self._feeds = iter([{"input": data}])

    def get_next(self):
        return next(self._feeds, None)


@pytest.mark.parametrize("method", ["MinMax", "Percentile", "Entropy"])
def test_streamed_ranges_and_model_equal_all_at_once(tmp_path, method):
    model = small_cnn(tmp_path / "cnn.onnx")
    data = np.random.default_rng(0).normal(0, 1, (40, 1, 28, 28)).astype(np.float32)
    data[7, 0, 3, 3] = 25.0  # an outlier in one batch: streamed histograms must still match
    np.save(tmp_path / "cal.npy", data)
    source = ArraySource(str(tmp_path / "cal.npy"), runtime.load(model).inputs, batch_size=16)
    options = {"CalibPercentile": 99.9}
    streamed = tmp_path / "streamed.json"
    calibration.write_cache(model, None, method, options, source, streamed)

    def quantize(out, **kwargs):
        quantize_static(str(model), str(out), activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method), extra_options=options, **kwargs)  # fmt: skip
        return out.read_bytes()

    reference = tmp_path / "reference.json"
    expected = quantize(tmp_path / "ref.onnx", calibration_data_reader=AllAtOnce(data),
                        calibration_cache_path=reference)  # fmt: skip
    got = quantize(tmp_path / "got.onnx", calibration_data_reader=None, calibration_cache_path=streamed)
    ranges, reference_ranges = load_tensors_data(streamed).data, load_tensors_data(reference).data
    assert ranges.keys() == reference_ranges.keys() and len(ranges) > 4
    for name, tensor in reference_ranges.items():
        np.testing.assert_array_equal(ranges[name].range_value, tensor.range_value, err_msg=name)
    assert got == expected  # scales and zero points too
    scales = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "got.onnx")).graph.initializer
              if t.name.endswith("_scale")]  # fmt: skip
    assert len(scales) > 4 and all(np.all(s > 0) for s in scales)


def test_pieces_cut_batches_without_losing_samples(tmp_path):
    model = small_cnn(tmp_path / "cnn.onnx")
    data = np.arange(10 * 28 * 28, dtype=np.float32).reshape(10, 1, 28, 28)
    np.save(tmp_path / "cal.npy", data)
    source = ArraySource(str(tmp_path / "cal.npy"), runtime.load(model).inputs, batch_size=6)
    feeds = [f["input"] for f in calibration.pieces(source, piece=4)]
    assert [len(f) for f in feeds] == [4, 2, 4]  # batches of 6 and 4
    np.testing.assert_array_equal(np.concatenate(feeds), data)
    assert CalibrationConfig().batch_size >= calibration.PIECE
