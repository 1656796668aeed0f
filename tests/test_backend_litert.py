"""LiteRT backend: full-integer models behind float I/O (and raw ints on request), dynamic batch,
threads, the tflite_runtime fallback and bad files."""

import importlib.util
import sys
import types

import numpy as np
import pytest
from backend_models import small_cnn_tflite
from test_cli_bad_input import assert_refused

import edgesmith.runtime as runtime
from edgesmith.errors import InputError, MissingExtra
from edgesmith.runtime.backends import litert_backend

from models import small_cnn

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("litert")
    onnx_path = small_cnn(folder / "cnn.onnx")
    return {
        "onnx": onnx_path,
        "float": small_cnn_tflite(onnx_path, folder / "cnn.tflite"),
        "int8": small_cnn_tflite(onnx_path, folder / "cnn_int8.tflite", int8=True),
        "batch2": small_cnn_tflite(onnx_path, folder / "cnn_b2.tflite", batch=2),
    }


def feeds(batch=4, seed=0, scale=1.0):
    x = np.random.default_rng(seed).standard_normal((batch, 1, 28, 28)).astype(np.float32) * scale
    return {"input": x}


def test_full_integer_model_takes_and_gives_float(files):
    session = runtime.load(files["int8"], threads=1)
    (spec_in,), (spec_out,) = session.inputs, session.outputs
    assert (spec_in.dtype, spec_out.dtype) == ("float32", "float32")
    assert spec_in.scale > 0 and isinstance(spec_in.zero_point, int) and spec_out.scale > 0
    got = session.run(feeds())["logits"]
    want = runtime.load(files["onnx"], backend="numpy").run(feeds())["logits"]
    assert got.dtype == np.float32 and got.shape == (4, 10)
    # INT8 error: a few output quantization steps, and the same arg-max on most samples.
    assert np.abs(got - want).max() < 8 * spec_out.scale
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_raw_io_gives_the_integers_and_the_float_path_is_their_exact_conversion(files):
    plain = runtime.load(files["int8"])
    raw = runtime.load(files["int8"], raw_io=True)
    (spec_in,), (spec_out,) = raw.inputs, raw.outputs
    assert (spec_in.dtype, spec_out.dtype) == ("int8", "int8")
    x = feeds(batch=2, seed=3, scale=100.0)["input"]  # far out of range: must clip, not wrap
    q = np.clip(np.rint(x / spec_in.scale) + spec_in.zero_point, -128, 127).astype(np.int8)
    assert q.min() == -128 and q.max() == 127
    raw_out = raw.run({"input": q})["logits"]
    assert raw_out.dtype == np.int8
    expected = (raw_out.astype(np.float32) - spec_out.zero_point) * spec_out.scale
    np.testing.assert_array_equal(plain.run({"input": x})["logits"], expected)


def test_batch_size_changes_between_calls(files):
    session = runtime.load(files["float"], threads=2)
    assert session.threads == 2
    for batch in (1, 7, 2):
        assert session.run(feeds(batch))["logits"].shape == (batch, 10)


def test_fixed_batch_model_runs_any_batch_in_chunks(files):
    """litert-torch writes a fixed batch; the session splits other batches (padding the last chunk)."""
    session = runtime.load(files["batch2"])
    assert session.inputs[0].shape == (None, 1, 28, 28)
    reference = runtime.load(files["onnx"], backend="numpy")
    for batch in (5, 2, 1):
        got, want = session.run(feeds(batch))["logits"], reference.run(feeds(batch))["logits"]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_falls_back_to_tflite_runtime(files, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    real = importlib.util.find_spec
    spec = real("json")  # any non-None spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name == "ai_edge_litert" else spec if name == "tflite_runtime" else real(name, *a)
        ),
    )
    assert litert_backend.available()
    assert litert_backend._interpreter_module() is fake
    assert runtime.load(files["float"]).run(feeds(1))["logits"].shape == (1, 10)
    monkeypatch.setattr(litert_backend, "available", lambda: False)
    with pytest.raises(MissingExtra, match=r"pip install 'edgesmith\[litert\]'"):
        runtime.load(files["float"])


def test_corrupt_tflite_exits_2_with_one_line(files, tmp_path, cli):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(files["float"].read_bytes()[:300])
    with pytest.raises(InputError, match="truncated.tflite is not a valid TFLite model"):
        runtime.load(truncated)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_text("not a model")
    data = tmp_path / "x.npz"
    np.savez(data, input=np.zeros((1, 1, 28, 28), np.float32))
    assert_refused(cli("run", garbage, "--input", data), "garbage.tflite is not a valid TFLite model")
