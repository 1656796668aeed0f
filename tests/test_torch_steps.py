"""PyTorch-level steps through the whole pipeline: prune + distill + INT8, and 1-bit weights, on
ccexam's trained MNISTNet, verified on the real MNIST test set."""

import numpy as np
import pytest

import edgesmith
from edgesmith.converter.recipe import Recipe

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

pytestmark = pytest.mark.torch
EXAMPLE = (np.zeros((2, 1, 28, 28), np.float32),)


@pytest.fixture(scope="module")
def eval_npz(mnist_test, tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "mnist_3000.npz"
    np.savez(path, input=mnist_test[0][:3000], labels=mnist_test[1][:3000])
    return path


def test_prune_distill_int8_halves_macs_and_keeps_accuracy(mnistnet, eval_npz, tmp_path):
    recipe = Recipe.from_dict({
        "steps": [{"kind": "prune", "target_macs": 0.5}, {"kind": "distill", "epochs": 2},
                  {"kind": "quantize"}],
        "calibration": {"path": str(SHIPPED_CALIBRATION)},
        "verify": {"eval": str(eval_npz)},
        "profile": {"enabled": False},
    })  # fmt: skip
    report = edgesmith.convert(mnistnet, recipe=recipe, out=tmp_path / "out", example_inputs=EXAMPLE)
    prune, distill, quantize = report["steps"]
    assert (prune["kind"], distill["kind"], quantize["kind"]) == ("prune", "distill", "quantize")
    assert 0.45 <= prune["macs_after"] / prune["macs_before"] <= 0.51
    assert report["verify"]["drop"] <= 1.2, report["verify"]
    assert report["artifacts"][0]["size_bytes"] < 0.2 * report["original"]["size_bytes"]


def test_binary_weights_reach_onnx_and_openvino_as_bits(mnistnet, eval_npz, tmp_path):
    recipe = Recipe.from_dict({
        "steps": [{"kind": "binarize", "activations": "float", "epochs": 1}],
        "calibration": {"path": str(SHIPPED_CALIBRATION)},
        "exports": [{"format": "onnx"}, {"format": "openvino"}, {"format": "c-array"}],
        "verify": {"eval": str(eval_npz)},
        "profile": {"enabled": False},
    })  # fmt: skip
    report = edgesmith.convert(mnistnet, recipe=recipe, out=tmp_path / "out", example_inputs=EXAMPLE)
    onnx_row, openvino_row, firmware = report["artifacts"]
    assert onnx_row["precision"] == openvino_row["precision"] == "binary"
    for row in (onnx_row, openvino_row):  # the hidden layers hold ~97% of the weights: 1 bit each now
        assert row["size_bytes"] < 0.08 * report["original"]["size_bytes"], row
        assert row["verify"]["drop"] <= 2.0, row["verify"]
    # TFLite (Micro) has no 1-bit type: +-1 weights as full-integer int8, and the report says so
    assert firmware["precision"] == "int8" and "1-bit" in firmware["quantization"]["binary"]
    assert firmware["size_bytes"] < 0.3 * report["original"]["size_bytes"]
    assert firmware["verify"]["drop"] <= 2.0, firmware["verify"]
    assert onnx_row["verify"]["agreement"] == openvino_row["verify"]["agreement"]


def test_torch_steps_on_an_onnx_file_say_what_to_do(cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[steps]]\nkind = "prune"\ntarget_macs = 0.5\n')
    code, _, err = cli("convert", SHIPPED_MODEL, "--recipe", recipe, "--out", tmp_path / "out", "-q")
    assert code == 2 and "edgesmith.convert(module" in err and len(err.strip().splitlines()) == 1
