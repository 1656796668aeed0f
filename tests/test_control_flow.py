"""Static INT8 (ONNX Runtime) of a graph with an `If`, as silero-vad has on its sample rate: the branch the
calibration data takes is calibrated and quantized, the other stays float and still runs, the `If` and
the input that decides it stay (steps/onnx_branches.py)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesmith import runtime
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.handle import ModelHandle
from edgesmith.converter.recipe import CalibrationConfig
from edgesmith.converter.steps import HANDLERS, StepContext
from edgesmith.converter.steps.quantize import QuantizeConfig

FEATURES, HIDDEN = 32, 48


def _weights(rng, name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)


def _branch(rng, rate: str, nested: bool) -> onnx.GraphProto:
    """x -> MatMul -> Add -> Relu -> MatMul -> y, with its own weights (as silero-vad has one network per
    rate). With `nested`, the second MatMul sits in an `If` on the batch size that reads the Relu's
    output from outside: the quantizer must not hand that branch the Relu's input instead."""
    inits = [_weights(rng, f"{rate}_w1", FEATURES, HIDDEN), _weights(rng, f"{rate}_b1", HIDDEN),
             _weights(rng, f"{rate}_w2", HIDDEN, 4)]  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", f"{rate}_w1"], [f"{rate}_h"], name=f"{rate}/fc1"),
        helper.make_node("Add", [f"{rate}_h", f"{rate}_b1"], [f"{rate}_hb"], name=f"{rate}/bias1"),
        helper.make_node("Relu", [f"{rate}_hb"], [f"{rate}_r"], name=f"{rate}/relu"),
    ]
    head = helper.make_node("MatMul", [f"{rate}_r", f"{rate}_w2"], [f"{rate}_y"], name=f"{rate}/fc2")
    if nested:
        one = helper.make_graph([helper.make_node("Identity", [f"{rate}_y1"], [f"{rate}_one"])], f"{rate}_one", [],
                                [helper.make_tensor_value_info(f"{rate}_one", TensorProto.FLOAT, None)])  # fmt: skip
        many = helper.make_graph([head], f"{rate}_many", [],
                                 [helper.make_tensor_value_info(f"{rate}_y", TensorProto.FLOAT, None)])  # fmt: skip
        one.node.insert(
            0, helper.make_node("MatMul", [f"{rate}_r", f"{rate}_w2"], [f"{rate}_y1"], name=f"{rate}/fc2_1")
        )
        nodes += [
            helper.make_node("Shape", ["x"], [f"{rate}_shape"], start=0, end=1),
            helper.make_node("ReduceMax", [f"{rate}_shape"], [f"{rate}_n"], keepdims=0),
            helper.make_node("Greater", [f"{rate}_n", "one"], [f"{rate}_batched"]),
            helper.make_node(
                "If",
                [f"{rate}_batched"],
                [f"{rate}_out"],
                name=f"{rate}/per_batch",
                then_branch=many,
                else_branch=one,
            ),  # fmt: skip
        ]
    else:
        nodes += [head, helper.make_node("Identity", [f"{rate}_y"], [f"{rate}_out"])]
    out = helper.make_tensor_value_info(f"{rate}_out", TensorProto.FLOAT, None)
    return helper.make_graph(nodes, f"rate_{rate}", [], [out], initializer=inits)


def if_model(path):
    """A two-rate model: `sr == 16000` picks the 16 kHz network, else the 8 kHz one."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Equal", ["sr", "rate16k"], ["is16k"], name="is16k"),
        helper.make_node("If", ["is16k"], ["y"], name="rate_if",
                         then_branch=_branch(rng, "16k", nested=True), else_branch=_branch(rng, "8k", nested=False)),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "two_rates",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(16000, np.int64), "rate16k"),
         numpy_helper.from_array(np.array(1, np.int64), "one")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def features(rng, count: int) -> np.ndarray:
    """Real-ish inputs: correlated, with an offset per feature and a few larger values."""
    mix = rng.standard_normal((FEATURES, FEATURES)).astype(np.float32) / np.sqrt(FEATURES)
    return (
        rng.standard_normal((count, FEATURES)).astype(np.float32) @ mix + np.linspace(-1, 1, FEATURES)
    ).astype(np.float32)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("if")
    model = if_model(tmp / "two_rates.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp / "cal.npz", x=features(rng, 48), sr=np.full(48, 16000))  # calibrated at 16 kHz only

    def run(name: str):
        work = tmp / name
        work.mkdir()
        config = CalibrationConfig(path=str(tmp / "cal.npz"), method="minmax", batch_size=8)
        source = ArraySource(tmp / "cal.npz", runtime.load(model).inputs, batch_size=8)
        result = HANDLERS[QuantizeConfig](
            QuantizeConfig(target="x86-vnni"),
            ModelHandle(model),
            StepContext(work, lambda: source, config, quiet=True),
        )
        return result

    return model, run("first"), run("second"), features(np.random.default_rng(2), 32)


def qdq_count(graph) -> int:
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


def branches(node) -> dict:
    return {a.name: a.g for a in node.attribute}


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_taken_branch_is_int8_and_the_other_stays_float(quantized):
    _, result, _, _ = quantized
    model = onnx.load(str(result.model.path))
    onnx.checker.check_model(model, full_check=True)  # nodes sorted, every name defined in its scope
    rate = branches(next(n for n in model.graph.node if n.op_type == "If"))
    taken, other = rate["then_branch"], rate["else_branch"]
    assert qdq_count(model.graph) == 0 and qdq_count(other) == 0
    assert qdq_count(taken) >= 4
    weights = {i.name: numpy_helper.to_array(i) for i in taken.initializer}
    assert weights["16k_w1_quantized"].dtype == np.int8  # per-channel int8 weights, in the branch itself
    # one sample per call (sr is fed whole): the nested If on the batch size always takes `else_branch`
    nested = branches(next(n for n in taken.node if n.op_type == "If"))
    assert qdq_count(nested["else_branch"]) >= 2 and qdq_count(nested["then_branch"]) == 0
    report = result.report["branches"]
    assert report["quantized"] == ["rate_if:then_branch", "rate_if:then_branch > 16k/per_batch:else_branch"]
    assert report["kept_float"] == [
        {"branch": "rate_if:else_branch", "why": "no calibration sample takes it (48 take then_branch)"},
        {"branch": "rate_if:then_branch > 16k/per_batch:then_branch",
         "why": "no calibration sample takes it (48 take else_branch)"},
    ]  # fmt: skip


def test_the_artifact_matches_the_float_model_for_both_rates(quantized):
    original, result, _, x = quantized
    fp32, int8 = runtime.load(original), runtime.load(result.model.path)
    for sr in (16000, 8000):
        feed = {"x": x, "sr": np.array(sr, np.int64)}
        want, got = fp32.run(feed)["y"], int8.run(feed)["y"]
        if sr == 16000:  # INT8 (fc1; fc2 is float in the nested branch a batch > 1 takes): close
            assert cosine(got, want) > 0.995 and 0 < np.abs(got - want).max() < 0.1 * np.abs(want).max()
        else:  # the branch no calibration sample took: float, unchanged
            np.testing.assert_array_equal(got, want)
    for row in x[:8]:  # one sample at a time, as calibrated: fc1 and fc2 in INT8
        feed = {"x": row[None], "sr": np.array(16000, np.int64)}
        want, got = fp32.run(feed)["y"], int8.run(feed)["y"]
        assert cosine(got, want) > 0.99 and not np.array_equal(got, want)


def test_quantizing_twice_gives_the_same_bytes(quantized):
    _, first, second, _ = quantized
    assert first.model.path.read_bytes() == second.model.path.read_bytes()


# -- silero-vad's op15 export: its Ifs are on sizes, so they go away once the sizes are fixed ----------


@pytest.fixture(scope="module")
def silero_op15():
    """silero-vad's 16 kHz op15 export and one real-ish 512-sample chunk with a carried state."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("silero_vad")
    if spec is None:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad)")
    model = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad_16k_op15.onnx"
    t = np.arange(2 * 512) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    original = runtime.load(model, exact=True)
    first = {"input": audio[None, :512], "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000)}
    feed = {**first, "input": audio[None, 512:], "state": original.run(first)["stateN"]}
    return model, feed, original.run(feed)


def test_openvino_converts_it_at_the_data_sizes_with_its_ifs_unrolled(silero_op15, tmp_path):
    """OpenVINO's frontend needs a static rank after its squeeze-if-size-1 Ifs: converted at the data's
    sizes (batch still dynamic), the Ifs on sizes unrolled (NNCF then quantizes it), same outputs."""
    import openvino as ov

    from edgesmith.converter.exporters.openvino_export import _converted, _unroll_constant_ifs
    from edgesmith.runtime.session import TensorSpec

    model, feed, want = silero_op15
    inputs = (TensorSpec("input", (None, 512), "float32"), TensorSpec("state", (2, 1, 128), "float32"),
              TensorSpec("sr", (), "int64"))  # fmt: skip
    converted, report = _converted(ov, model, inputs)
    assert report["fixed_shapes"]["inputs"] == {"input": [-1, 512], "state": [2, 1, 128], "sr": []}
    assert "Conv" in report["fixed_shapes"]["why"]  # OpenVINO's own reason, as converted with dynamic axes
    unrolled = _unroll_constant_ifs(converted)
    assert "/model/decoder/If_1: then" in unrolled  # the If around the LSTM
    assert [op.get_type_name() for op in converted.get_ordered_ops()].count("If") == 1  # on the batch size
    ov.save_model(converted, str(tmp_path / "vad.xml"), compress_to_fp16=False)
    got = runtime.load(tmp_path / "vad.xml", exact=True).run(feed)  # `sr` stays a 0-d input
    for name in ("output", "stateN"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)


def test_tflite_path_folds_the_ifs_and_translates_the_lstm(silero_op15, tmp_path):
    """To torch for litert-torch: the Ifs fold at batch 1 and 512 samples, the LSTM (which onnx2torch
    lacks) becomes matmuls and gates, the state's constant-index Gathers are baked; same outputs."""
    import torch

    from edgesmith.converter.exporters.tflite_onnx import to_torch
    from edgesmith.runtime.session import TensorSpec

    model, feed, want = silero_op15
    inputs = (TensorSpec("input", (1, 512), "float32"), TensorSpec("state", (2, 1, 128), "float32"),
              TensorSpec("sr", (), "int64"))  # fmt: skip
    module = to_torch(model, inputs, tmp_path)
    kinds = {
        type(module.get_submodule(n.target)).__name__ for n in module.graph.nodes if n.op == "call_module"
    }
    assert {"OnnxLSTM", "Gather"} <= kinds and "OnnxGather" not in kinds  # the LSTM, the baked Gathers
    with torch.no_grad():
        output, state = module(*(torch.from_numpy(np.asarray(feed[n])) for n in ("input", "state", "sr")))
    np.testing.assert_allclose(output.numpy(), want["output"], atol=1e-5)
    np.testing.assert_allclose(state.numpy(), want["stateN"], atol=1e-4)


def test_a_conversion_reports_the_branches_kept_float(quantized, tmp_path):
    """Through `convert` (verification gate included): the summary names the uncalibrated branches."""
    import edgesmith
    from edgesmith.cli.summary import branch_lines
    from edgesmith.targets.records import read_report

    model = quantized[0]
    (tmp_path / "r.toml").write_text('[profile]\nenabled = false\n[[exports]]\nformat = "onnx"\n')
    report = edgesmith.convert(model, recipe=tmp_path / "r.toml", preset="int8", calibration=model.parent / "cal.npz",
                               out=tmp_path / "out")  # fmt: skip
    assert report["artifacts"][0]["verify"]["cosine_min"] > 0.99
    [line] = branch_lines(read_report(tmp_path / "out" / "report.json"))
    assert line.startswith(
        "two_rates.int8.onnx: 2 If branch(es) kept float: rate_if:else_branch (no calibration sample takes it"
    ), line
