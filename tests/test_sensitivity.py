"""Per-layer sensitivity and the accuracy-budget search (converter/sensitivity.py, converter/accuracy.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesmith.converter import accuracy, budget, sensitivity
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.recipe import CalibrationConfig
from edgesmith.converter.steps import StepContext
from edgesmith.converter.steps.quantize import QuantizeConfig
from edgesmith.runtime import load

ROOT = Path(__file__).resolve().parents[1]


def outlier_mlp(path: Path) -> Path:
    """x -> MatMul -> Add(bias with one 1000.0 channel) -> MatMul -> logits. The huge channel meets a zero
    row of the second weight, so it changes nothing in float; in INT8 it sets the scale of the Add's
    output and the other 31 channels round to zero."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (16, 32)).astype(np.float32)
    bias = np.zeros(32, np.float32)
    bias[0] = 1000.0
    w2 = rng.normal(0, 0.5, (32, 10)).astype(np.float32)
    w2[0] = 0.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
            helper.make_node("Add", ["h1", "bias"], ["h2"], name="shift"),
            helper.make_node("MatMul", ["h2", "w2"], ["logits"], name="fc2"),
        ],  # fmt: skip
        "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (bias, "bias"), (w2, "w2"))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outlier")
    model = outlier_mlp(tmp / "mlp.onnx")
    x = np.random.default_rng(1).normal(0, 1, (128, 16)).astype(np.float32)
    np.save(tmp / "cal.npy", x)
    data = ArraySource(tmp / "cal.npy", load(model).inputs, "calibration", 128, 32)
    ctx = StepContext(tmp, lambda: data, CalibrationConfig(path=str(tmp / "cal.npy")), quiet=True)
    float_model, quantize = budget.step_quantizer(QuantizeConfig(), model, ctx)
    labels = load(model).run({"x": x})["logits"].argmax(1)

    def top1(path: Path) -> float:
        return float((load(path).run({"x": x})["logits"].argmax(1) == labels).mean() * 100)

    return float_model, quantize, data, top1


def test_sensitivity_ranks_the_outlier_first_and_excluding_it_fixes_the_drop(outlier):
    float_model, quantize, data, top1 = outlier
    everything = quantize([])
    baseline = top1(everything)
    assert baseline < 80  # the outlier channel ruins the all-INT8 model
    ranked = sensitivity.analyse(everything, float_model, data.batches())
    first = ranked[0]
    # the Add's output: quant_pre_process fused fc1 and the Add into one Gemm, its producer
    assert first.kind == "activation" and first.op_types == ["Gemm", "MatMul"] and first.nodes[1] == "fc2"
    assert first.channel_sqnr_db < min(la.channel_sqnr_db for la in ranked[1:]) - 10
    assert first.sqnr_db > first.channel_sqnr_db + 20  # the plain SQNR is fooled by the huge channel
    sensitivity.metric_changes(ranked, 2, quantize, top1, baseline)
    assert top1(quantize(first.nodes)) >= 97
    assert first.metric_change > 20 and first.metric_change > ranked[1].metric_change


def test_search_meets_the_budget_by_itself(outlier):
    float_model, quantize, data, top1 = outlier

    def evaluate(path: Path) -> dict:
        score = top1(path)
        return {"score": score, "drop": 100 - score}

    search = accuracy.Search(quantize, evaluate, accuracy.Budget(max_drop=3.0), float_model, data.batches)
    outcome = accuracy.run(search)
    assert outcome["within_budget"] and outcome["chosen"]["drop"] <= 3.0
    outlier_nodes = outcome["sensitivity"][0]["nodes"]
    assert "fc2" in outlier_nodes and outcome["float_nodes"] == outlier_nodes  # those, and only those
    assert outcome["candidates"][0]["float_nodes"] == [] and not outcome["candidates"][0]["within_budget"]


@pytest.mark.slow
def test_convert_searches_on_real_mnist(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""[calibration]
path = "{ROOT / "calibration_data/mnist"}"
[[steps]]
kind = "quantize"
search = "auto"
[verify]
eval = "{ROOT / "calibration_data/mnist/holdout.npz"}"
max_drop = 0.5
min_cosine = 0.99995
[profile]
runs = 5
""")  # the all-INT8 CNN's logits have a cosine of ~0.9999 to fp32 on holdout.npz: the budget needs a search
    code, _, err = cli(
        "convert", str(ROOT / "models/mnist_cnn.onnx"), "--recipe", str(recipe), "--out", str(tmp_path / "o")
    )
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    search = report["accuracy_search"]
    assert search["within_budget"] and search["float_nodes"]
    assert not search["candidates"][0]["within_budget"]  # all INT8 missed it
    artifact = report["artifacts"][0]
    assert artifact["verify"]["cosine_min"] >= 0.99995 and artifact["verify"]["drop"] <= 0.5
    assert set(artifact["quantization"]["excluded_nodes"]) == set(search["float_nodes"])
    assert artifact["size_bytes"] < 0.8 * report["original"]["size_bytes"]  # not simply all float
    assert report["sensitivity"][0]["rank"] == 1


def test_inspect_gives_json(tmp_path, cli, outlier):
    float_model, quantize, _, _ = outlier
    artifact = quantize([])
    x = np.random.default_rng(2).normal(0, 1, (64, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    code, out, err = cli("inspect", str(artifact), "--against", str(float_model), "--data", str(tmp_path / "d.npz"),
                         "--top", "1", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["layers"][0]["nodes"][1] == "fc2" and result["layers"][0]["metric_change"] > 0
    assert result["metric"] == "agreement"


def test_inspect_refuses_a_float_artifact(tmp_path, cli):
    model = outlier_mlp(tmp_path / "float.onnx")
    code, _, err = cli("inspect", str(model), "--against", str(model), "--data", str(tmp_path / "none.npz"))
    assert code == 2 and "has no DequantizeLinear" in err and "Traceback" not in err
