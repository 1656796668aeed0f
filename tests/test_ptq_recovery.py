"""PTQ recovery keys (`bias_correction`, `smooth_quant`; steps/recovery.py): validated, applied by NNCF,
refused with the fix where the engine has no such thing."""

from __future__ import annotations

import numpy as np
import pytest

from edgesmith import runtime
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.handle import ModelHandle
from edgesmith.converter.recipe import CalibrationConfig, Recipe
from edgesmith.converter.steps import HANDLERS, StepContext
from edgesmith.converter.steps.quantize import QuantizeConfig
from edgesmith.errors import InputError


def context(model, cal, work):
    work.mkdir(exist_ok=True)
    source = ArraySource(str(cal), runtime.load(model).inputs, batch_size=4)
    return StepContext(work, lambda: source, CalibrationConfig(path=str(cal)), quiet=True)


@pytest.mark.parametrize(
    ("keys", "match"),
    [({"bias_correction": "fastest"}, r"bias_correction = 'fastest' is not valid.*did you mean 'fast'"),
     ({"smooth_quant": 1.5}, r"smooth_quant = 1.5 must be a number in \[0, 1\] \(closest valid: 1.0\)")],
)  # fmt: skip
def test_recipe_keys_are_validated(keys, match):
    with pytest.raises(InputError, match=match):
        Recipe.from_dict({"steps": [{"kind": "quantize", **keys}]})


@pytest.mark.parametrize("key", [{"bias_correction": "full"}, {"smooth_quant": 0.5}])
def test_onnxruntime_refuses_them_naming_nncf(cnn, cal, tmp_path, key):
    with pytest.raises(InputError, match=r"engine = 'nncf'"):
        HANDLERS[QuantizeConfig](QuantizeConfig(**key), ModelHandle(cnn), context(cnn, cal, tmp_path / "w"))


def test_smooth_quant_on_a_cnn_is_refused(cnn, cal, tmp_path):
    from edgesmith.converter.steps.nncf_quantize import quantize_onnx

    with pytest.raises(InputError, match="applies to transformers"):
        quantize_onnx(
            QuantizeConfig(engine="nncf", smooth_quant=0.5),
            ModelHandle(cnn),
            context(cnn, cal, tmp_path / "w"),
        )


@pytest.mark.slow
def test_bias_correction_changes_the_biases_nncf_writes(cnn, cal, tmp_path):
    """off / fast on the same calibration: the report says which ran and the quantized biases differ
    (fast bias correction shifts each bias by the mean error of its layer's INT8 output)."""
    import onnx
    from onnx import numpy_helper

    from edgesmith.converter.steps.nncf_quantize import quantize_onnx

    biases, reports = {}, {}
    for mode in ("off", "fast"):
        result = quantize_onnx(QuantizeConfig(engine="nncf", bias_correction=mode), ModelHandle(cnn),
                               context(cnn, cal, tmp_path / mode))  # fmt: skip
        model = onnx.load(str(result.model.path))
        biases[mode] = {
            t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_b")
        }
        reports[mode] = result.report
    assert reports["off"]["bias_correction"] == "off" and reports["fast"]["bias_correction"] == "fast"
    assert biases["off"].keys() == biases["fast"].keys() and biases["off"]
    assert any(not np.array_equal(biases["off"][k], biases["fast"][k]) for k in biases["off"])
