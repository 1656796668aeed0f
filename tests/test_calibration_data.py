import numpy as np
import pytest
from PIL import Image

from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.recipe import PreprocessConfig
from edgesmith.errors import InputError
from edgesmith.runtime.session import TensorSpec

IMAGE = (TensorSpec("input", (None, 1, 28, 28), "float32"),)
TWO = (TensorSpec("a", (None, 4), "float32"), TensorSpec("b", (None, 4), "float32"))


def test_npz_named_after_inputs_streams_batches(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, a=np.arange(40, dtype=np.float64).reshape(10, 4), b=np.ones((10, 4)), labels=np.arange(10))
    source = ArraySource(path, TWO, batch_size=4)
    batches = list(source.batches())
    assert [len(b["a"]) for b in batches] == [4, 4, 2]
    assert batches[0]["a"].dtype == np.float32 and batches[2]["a"][-1, -1] == 39
    assert source.labels.tolist() == list(range(10))


def test_single_array_feeds_single_input_whatever_its_name(tmp_path):
    path = tmp_path / "c.npy"
    np.save(path, np.zeros((5, 1, 28, 28), np.float32))
    assert list(ArraySource(path, IMAGE, max_samples=3).batches())[0]["input"].shape == (3, 1, 28, 28)
    np.savez(tmp_path / "x.npz", whatever=np.zeros((2, 1, 28, 28)))
    assert len(ArraySource(tmp_path / "x.npz", IMAGE)) == 2


def test_mismatched_names_and_shapes(tmp_path):
    np.savez(tmp_path / "n.npz", a=np.zeros((2, 4)), c=np.zeros((2, 4)))
    with pytest.raises(InputError, match=r"has arrays \['a', 'c'\] but the model's inputs are \['a', 'b'\]"):
        ArraySource(tmp_path / "n.npz", TWO)
    np.save(tmp_path / "s.npy", np.zeros((2, 1, 32, 32)))
    with pytest.raises(InputError, match=r"shape \[2, 1, 32, 32\] but the model expects \[None, 1, 28, 28\]"):
        ArraySource(tmp_path / "s.npy", IMAGE)


def test_nan_and_inf_are_rejected_with_the_sample_index(tmp_path):
    data = np.zeros((6, 1, 28, 28), np.float32)
    data[4, 0, 3, 3] = np.inf
    np.save(tmp_path / "bad.npy", data)
    with pytest.raises(InputError, match="NaN or Inf at sample 4"):
        list(ArraySource(tmp_path / "bad.npy", IMAGE, batch_size=4).batches())


def test_image_folder_with_spec(tmp_path):
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    for i in range(3):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    Image.fromarray(pixels).resize((56, 56)).convert("RGB").save(tmp_path / "big.jpg")
    spec = PreprocessConfig(scale=1 / 255, mean=[0.5], std=[0.25])
    source = ArraySource(tmp_path, IMAGE, preprocess=spec, batch_size=8)
    (batch,) = source.batches()
    assert batch["input"].shape == (4, 1, 28, 28)
    np.testing.assert_allclose(batch["input"][1, 0], (pixels / 255 - 0.5) / 0.25, atol=1e-5)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(InputError, match="holds no images"):
        ArraySource(tmp_path, IMAGE)
    with pytest.raises(InputError, match="no such file or folder"):
        ArraySource(tmp_path / "nope", IMAGE)


def test_not_a_numpy_file(tmp_path):
    (tmp_path / "c.npz").write_text("hello")
    with pytest.raises(InputError, match="not a readable numpy file"):
        ArraySource(tmp_path / "c.npz", IMAGE)
