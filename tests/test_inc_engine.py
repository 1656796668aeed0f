"""`engine = "inc"`: Intel Neural Compressor's PT2E static INT8, exported to a QDQ ONNX model."""

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

pytestmark = pytest.mark.torch


def _recipe(eval_path=None):
    from edgesmith.converter.recipe import Recipe

    recipe = {
        "steps": [{"kind": "quantize", "engine": "inc"}],
        "calibration": {"path": str(SHIPPED_CALIBRATION)},
        "profile": {"enabled": False},
    }
    if eval_path is not None:
        recipe["verify"] = {"eval": str(eval_path)}
    return Recipe.from_dict(recipe)


def test_ccexam_mnistnet_inc_int8_drop_at_most_0_2_point(mnistnet, mnist_test, tmp_path):
    import onnx

    import edgesmith

    images, labels = mnist_test
    np.savez(tmp_path / "eval.npz", input=images[:2000], labels=labels[:2000])
    example = np.zeros((2, 1, 28, 28), np.float32)
    report = edgesmith.convert(
        mnistnet, recipe=_recipe(tmp_path / "eval.npz"), example_inputs=(example,), out=tmp_path / "out"
    )
    (artifact,) = report["artifacts"]
    assert (artifact["engine"], artifact["precision"]) == ("neural-compressor", "int8")
    quantization = artifact["quantization"]
    assert (quantization["engine"], quantization["mode"]) == ("neural-compressor", "static")
    assert quantization["folded_weights"] == 4  # two convs, two linears: int8 weights in the file
    verify = report["verify"]
    assert verify["samples"] == 2000
    assert verify["original"] - verify["artifact"] <= 0.2, verify
    proto = onnx.load(str(tmp_path / "out" / artifact["path"]))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Clip" not in ops
    assert artifact["size_bytes"] <= 0.30 * report["original"]["size_bytes"]


def test_onnx_source_is_refused(tmp_path):
    import edgesmith
    from edgesmith.errors import InputError

    with pytest.raises(InputError, match="engine 'inc' quantizes PyTorch models .*this source is onnx"):
        edgesmith.convert(SHIPPED_MODEL, recipe=_recipe(), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
