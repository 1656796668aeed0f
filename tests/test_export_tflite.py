"""TFLite export of the shipped MNIST CNN, from its ONNX file and its `.pt2`, on the real MNIST test set."""

import json

import numpy as np
import pytest

from edgesmith.converter.handle import sha256
from edgesmith.errors import InputError

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

pytest.importorskip("litert_torch")
pytestmark = pytest.mark.torch

# Models from PyTorch/ONNX sources have batch 1 (tflite_torch.py); the LiteRT backend runs the
# eval batches in chunks. The profile is off to keep the file fast.
RECIPE = """
[[exports]]
format = "tflite"
[[exports]]
format = "tflite"
name = "int8-io"
io = "int8"
[profile]
enabled = false
"""
PT2_RECIPE = '[[exports]]\nformat = "tflite"\n[profile]\nenabled = false\n'


def convert(model, tmp, recipe=RECIPE, evaluation=None, preset="int8"):
    import edgesmith

    (tmp / "r.toml").write_text(recipe)
    return edgesmith.convert(model, recipe=tmp / "r.toml", preset=preset, calibration=SHIPPED_CALIBRATION,
                             evaluation=evaluation, out=tmp / "out")  # fmt: skip


@pytest.fixture(scope="module")
def shipped(mnist_eval_npz, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tflite")
    before = sha256(SHIPPED_MODEL)
    report = convert(SHIPPED_MODEL, tmp, evaluation=mnist_eval_npz)
    assert sha256(SHIPPED_MODEL) == before
    return tmp / "out", report


def test_shipped_onnx_int8_tflite_drop_at_most_0_2_point(shipped):
    _, report = shipped
    for row in report["artifacts"]:
        verify = row["verify"]
        assert verify["samples"] == 10_000 and verify["original"] > 98.0
        assert verify["drop"] <= 0.2 and verify["agreement"] > 99.5, verify
        assert row["engine"] == "ai-edge-quantizer" and row["precision"] == "int8"
        assert row["size_bytes"] <= 0.35 * report["source"]["size_bytes"]
        assert row["quantization"]["converter"] == "onnx2torch + litert-torch"


def test_int8_io_model_takes_integers_and_its_manifest_says_how(shipped):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = shipped
    float_io, int8_io = (
        Interpreter(str(out / "mnist_cnn.int8.tflite")),
        Interpreter(str(out / "int8-io.tflite")),
    )
    assert float_io.get_input_details()[0]["dtype"] == np.float32
    assert int8_io.get_input_details()[0]["dtype"] == np.int8
    assert int8_io.get_output_details()[0]["dtype"] == np.int8
    manifest = json.loads((out / "int8-io.tflite.json").read_text())
    (spec,) = manifest["inputs"]
    # NCHW, as the ONNX file; the file's batch is 1, the session takes any batch (in chunks)
    assert spec["name"] == "input" and spec["shape"][1:] == [1, 28, 28] and spec["shape"][0] in (1, None)
    assert 0 < spec["scale"] < 0.1 and manifest["quantization"]["io"] == "int8"


def test_same_inputs_give_byte_identical_tflite(shipped, tmp_path, mnist_eval_npz):
    out, report = shipped
    again = convert(SHIPPED_MODEL, tmp_path, evaluation=mnist_eval_npz)  # the same inputs as `shipped`
    assert [a["sha256"] for a in again["artifacts"]] == [a["sha256"] for a in report["artifacts"]]


def test_shipped_pt2_int8_tflite_drop_at_most_0_2_point(mnist_eval_npz, tmp_path):
    report = convert(SHIPPED_MODEL.with_suffix(".pt2"), tmp_path, PT2_RECIPE, evaluation=mnist_eval_npz)
    (row,) = report["artifacts"]
    assert row["quantization"]["converter"] == "litert-torch"
    verify = row["verify"]
    assert verify["samples"] == 10_000 and verify["original"] > 98.0  # scored by torch itself
    assert verify["drop"] <= 0.2 and verify["agreement"] > 99.5, verify


def test_integer_io_needs_full_integer_quantization(tmp_path):
    with pytest.raises(InputError, match="io = 'int8' needs full-integer INT8"):
        convert(SHIPPED_MODEL, tmp_path, RECIPE, preset="fp16")
