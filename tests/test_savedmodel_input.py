"""A TensorFlow SavedModel folder as the source (`frontends/savedmodel_frontend.py`): a small one made
here with `tf.saved_model.save`, converted to ONNX (tf2onnx) and TFLite (TensorFlow's converter) and
compared output by output with TensorFlow running the folder; basic-pitch's SavedModel from its wheel;
and the folders that are refused in one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgesmith.errors import InputError

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")


def _save(module, folder: Path) -> Path:
    tf.saved_model.save(module, str(folder), signatures=module.__call__.get_concrete_function())
    return folder


def _small_net(folder: Path) -> Path:
    """A conv net with a dynamic batch and two outputs of the same shape, named out of alphabetical
    order (tf2onnx sorts a signature's outputs: they must still meet by name)."""
    rng = np.random.default_rng(0)

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(rng.standard_normal((3, 3, 3, 8)).astype(np.float32) * 0.3)
            self.dense = tf.Variable(rng.standard_normal((8, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 16, 16, 3), tf.float32, name="image")])
        def __call__(self, image):
            features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(image, self.kernel, 2, "SAME")), axis=[1, 2])
            logits = tf.matmul(features, self.dense)
            return {"scores": tf.nn.softmax(logits), "logits": logits}

    return _save(Net(), folder)


@pytest.fixture(scope="module")
def small_savedmodel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sm")
    path = _small_net(folder / "net")
    images = np.random.default_rng(1).random((8, 16, 16, 3), dtype=np.float32)
    np.savez(folder / "eval.npz", image=images)
    return path


def _tf_outputs(folder: Path, images: np.ndarray) -> dict:
    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(image=tf.constant(images)).items()}


def test_a_savedmodel_folder_is_its_own_kind(small_savedmodel, tmp_path):
    from edgesmith.converter.frontends import kind_of

    assert kind_of(small_savedmodel) == "savedmodel"
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        InputError, match=r"neither config.json nor saved_model.pb; .*TensorFlow SavedModel"
    ) as e:
        kind_of(tmp_path / "empty")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_small_savedmodel_to_onnx_and_tflite_matches_tensorflow(small_savedmodel, tmp_path):
    import edgesmith

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[exports]]\nformat = "onnx"\n[[exports]]\nformat = "tflite"\n[profile]\nenabled = false\n'
    )
    eval_npz = small_savedmodel.parent / "eval.npz"
    report = edgesmith.convert(small_savedmodel, recipe=recipe, preset="fp32", evaluation=eval_npz,
                               out=tmp_path / "o")  # fmt: skip
    assert report["source"]["kind"] == "savedmodel"
    images = np.load(eval_npz)["image"]
    want = _tf_outputs(small_savedmodel, images)
    rows = {r["format"]: r for r in report["artifacts"]}
    assert set(rows) == {"onnx", "tflite"}
    assert rows["tflite"]["quantization"]["converter"] == "tensorflow.lite (TFLiteConverter.from_saved_model)"
    for fmt, row in rows.items():
        session = edgesmith.load(row["path"], exact=True)
        assert [s.name for s in session.inputs] == ["image"]
        got = {name: [] for name in want}
        for x in images:  # the .tflite is written at batch 1
            for name, value in session.run({"image": x[None]}).items():
                got[name].append(value)
        assert set(got) == {"scores", "logits"}, fmt
        for name in want:
            np.testing.assert_allclose(
                np.concatenate(got[name]), want[name], atol=1e-5, err_msg=f"{fmt} {name}"
            )


def test_a_corrupt_saved_model_pb_is_one_line_exit_2(tmp_path, cli):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x0a\xff\xff this is not a protobuf")
    before = (folder / "saved_model.pb").read_bytes()
    code, out, err = cli("convert", folder, "--format", "onnx", "--preset", "fp32", "--out", tmp_path / "o")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is not a loadable TensorFlow SavedModel" in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    assert (folder / "saved_model.pb").read_bytes() == before


def test_a_signature_that_reads_files_is_refused_before_loading(tmp_path):
    """tf.io.read_file inside the serving function: refused from saved_model.pb, nothing run."""
    from edgesmith.converter.frontends import savedmodel_frontend

    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((), tf.string)])
        def __call__(self, name):
            return {"n": tf.strings.length(tf.io.read_file(name))}

    folder = _save(Reader(), tmp_path / "reader")
    with pytest.raises(InputError, match=r"signature 'serving_default' runs op ReadFile, .*\(unsafe\)"):
        savedmodel_frontend.load(folder, tmp_path)


@pytest.mark.slow
def test_basic_pitch_savedmodel_matches_tensorflow_in_onnx_and_tflite(tmp_path):
    """basic-pitch's SavedModel (a Keras 2 model saved with its optimizer): its tf2onnx ONNX and
    TensorFlow-converted float .tflite give TensorFlow's outputs on recorded-length audio windows."""
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None:
        pytest.skip("basic-pitch is not installed: pip install --no-deps basic-pitch")
    from edgesmith.converter import frontends
    from edgesmith.runtime import load

    folder = Path(next(iter(spec.submodule_search_locations))) / "saved_models" / "icassp_2022" / "nmp"
    source = frontends.load(folder, tmp_path)
    assert source.kind == "savedmodel" and [s.name for s in source.inputs] == ["input_2"]
    x = (np.random.default_rng(0).standard_normal((1, 43844, 1)) * 0.1).astype(np.float32)
    want = dict(zip(["contour", "note", "onset"], source.reference({"input_2": x}), strict=True))
    (tmp_path / "nmp.tflite").write_bytes(source.native.float_tflite())
    for path in (source.onnx.path, tmp_path / "nmp.tflite"):
        got = load(path, exact=True).run({"input_2": x})
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=f"{path.name} {name}")
