"""The quantize step on a small CNN: structure of the result, types per target, closeness to fp32."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgesmith import runtime
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.handle import ModelHandle
from edgesmith.converter.recipe import CalibrationConfig
from edgesmith.converter.steps import HANDLERS, StepContext
from edgesmith.converter.steps.int8_types import choose
from edgesmith.converter.steps.quantize import QuantizeConfig

from models import small_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    model = small_cnn(tmp / "cnn.onnx")
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (64, 1, 28, 28)).astype(np.float32)
    data[0, 0, 0, 0] = 40.0  # one outlier: percentile calibration should clip it, minmax should not
    np.save(tmp / "cal.npy", data)
    return tmp, model, data


def quantize(setup, method="minmax", **config):
    tmp, model, _ = setup
    work = tmp / f"work-{method}-{'-'.join(f'{k}{v}' for k, v in config.items())}"
    work.mkdir(exist_ok=True)
    cal_cfg = CalibrationConfig(path=str(tmp / "cal.npy"), method=method, percentile=99.9, batch_size=8)
    inputs = runtime.load(model).inputs
    source = ArraySource(cal_cfg.path, inputs, batch_size=8)
    ctx = StepContext(work, lambda: source, cal_cfg, quiet=True)
    cfg = QuantizeConfig(**config)
    result = HANDLERS[QuantizeConfig](cfg, ModelHandle(model), ctx)
    return result, onnx.load(str(result.model.path))


def qparams(model, node: str, index: int):
    """(quantized values, scale, zero point) of the DequantizeLinear feeding input `index` of `node`."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    consumer = next(n for n in model.graph.node if n.name == node)
    dq = producer[consumer.input[index]]
    assert dq.op_type == "DequantizeLinear"
    return inits.get(dq.input[0]), inits[dq.input[1]], inits[dq.input[2]]  # values: None for activations


def test_static_int8_is_qdq_per_channel_and_close(setup):
    result, model = quantize(setup, target="x86-vnni")
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights, weight_scale, _ = qparams(model, "conv", 1)
    assert weight_scale.shape == (8,)  # one scale per output channel
    assert weights.dtype == np.int8
    assert qparams(model, "conv", 0)[2].dtype == np.uint8  # VNNI: u8 activations
    assert result.report["types"]["activations"] == "uint8"
    _, _, data = setup
    fp32 = runtime.load(setup[1]).run({"input": data[1:]})["logits"]
    int8 = runtime.load(result.model.path).run({"input": data[1:]})["logits"]
    assert np.abs(int8 - fp32).max() < 0.05 * np.abs(fp32).max()


def test_arm_target_gets_signed_activations(setup):
    result, model = quantize(setup, target="arm")
    assert qparams(model, "conv", 0)[2].dtype == np.int8
    assert "ARM" in result.report["types"]["reason"]


def test_type_choice_per_target():
    vnni, plain, arm = choose("x86-vnni"), choose("x86"), choose("arm")
    assert (vnni.activations, vnni.reduce_range) == ("uint8", False)
    assert (plain.activations, plain.reduce_range) == ("uint8", True)  # ORT's advice without VNNI
    assert (arm.activations, arm.symmetric_activations) == ("int8", True)
    assert choose("x86", activations="uint8").reason == "set explicitly in the recipe"


@pytest.fixture(scope="module")
def rgb_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rgb")
    model = small_cnn(tmp / "cnn.onnx", channels=3)
    data = np.random.default_rng(0).normal(0, 1, (64, 3, 28, 28)).astype(np.float32)
    np.save(tmp / "cal.npy", data)
    return tmp, model, data


def test_one_channel_stem_is_not_padded(setup):
    """Padding pays only for RGB stems; a 1-channel stem padded to 4 ran slower (the shipped CNN)."""
    result, model = quantize(setup, target="x86-vnni")
    assert result.report["stem_channels_padded"] is False
    assert qparams(model, "conv", 1)[0].shape == (8, 1, 3, 3)


def test_x86_stem_is_padded_to_four_channels_with_identical_results(rgb_setup, tmp_path):
    """The pad-stem pass (for MLAS ConvSym) must not change a single output bit."""
    setup = rgb_setup
    result, padded = quantize(setup, target="x86-vnni")
    assert result.report["stem_channels_padded"] is True
    weights = qparams(padded, "conv", 1)[0]
    assert weights.shape == (8, 4, 3, 3) and not weights[:, 3:].any()  # 3 channels + 1 zero channel
    # Undo the pass by hand: drop the Pad and the zero filter channels.
    unpadded = onnx.ModelProto()
    unpadded.CopyFrom(padded)
    pad = next(n for n in unpadded.graph.node if n.name == "stem_channel_pad")
    for node in unpadded.graph.node:
        node.input[:] = [pad.input[0] if name == pad.output[0] else name for name in node.input]
    unpadded.graph.node.remove(pad)
    producer = {out: n for n in unpadded.graph.node for out in n.output}
    conv = next(n for n in unpadded.graph.node if n.name == "conv")
    init = next(i for i in unpadded.graph.initializer if i.name == producer[conv.input[1]].input[0])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:, :3], init.name))
    onnx.save(unpadded, str(tmp_path / "unpadded.onnx"))
    data = setup[2][1:]
    got = runtime.load(result.model.path).run({"input": data})["logits"]
    want = runtime.load(tmp_path / "unpadded.onnx").run({"input": data})["logits"]
    np.testing.assert_array_equal(got, want)
    arm, _ = quantize(setup, target="arm")
    assert arm.report["stem_channels_padded"] is False


def test_percentile_clips_the_outlier_minmax_keeps(setup):
    _, minmax = quantize(setup, "minmax", target="arm")
    _, pct = quantize(setup, "percentile", target="arm")
    s_minmax, s_pct = qparams(minmax, "conv", 0)[1], qparams(pct, "conv", 0)[1]
    assert s_minmax * 255 >= 40.0  # the int8 range (asymmetric for activations) covers the outlier
    assert s_pct < s_minmax / 3
    _, _, data = setup
    fp32 = runtime.load(setup[1]).run({"input": data[1:]})["logits"].argmax(1)
    entropy_result, _ = quantize(setup, "entropy", target="arm")
    int8 = runtime.load(entropy_result.model.path).run({"input": data[1:]})["logits"].argmax(1)
    assert (int8 == fp32).mean() > 0.9


def test_excluded_nodes_stay_float(setup):
    result, model = quantize(setup, target="arm", exclude=["^fc$"])
    assert result.report["excluded_nodes"] == ["fc"]
    fc = next(n for n in model.graph.node if n.name == "fc")
    weight = next(i for i in model.graph.initializer if i.name == fc.input[1])  # no DequantizeLinear
    assert numpy_helper.to_array(weight).dtype == np.float32


def test_dynamic_and_fp16(setup):
    dyn, model = quantize(setup, mode="dynamic")
    assert dyn.model.precision == "int8-dynamic"
    assert any(
        n.op_type in ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear") for n in model.graph.node
    )
    half, model = quantize(setup, mode="fp16")
    assert (
        next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "conv_w").dtype
        == np.float16
    )
    session = runtime.load(half.model.path)
    assert session.inputs[0].dtype == "float32"  # I/O stays float32
