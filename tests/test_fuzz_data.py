"""Fuzzed calibration/eval arrays and image folders (the contract: tests/fuzzkit.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fuzzkit import (
    NO_PROFILE,
    cli,
    examples,
    sandbox_factory,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import SHIPPED_MODEL


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    return sandbox_factory(tmp_path_factory.mktemp("fuzz"))


# -- data: npz/npy files and image folders --------------------------------------------------------------

DTYPES = [
    "float32",
    "float64",
    "float16",
    "int8",
    "uint8",
    "int64",
    "bool",
    "complex64",
    "<U3",
    "S2",
    "object",
]
SHAPES = [(4, 1, 28, 28), (0, 1, 28, 28), (4, 28, 28), (4, 1, 28, 28, 1), (4, 1, 14, 14), (4, 3, 28, 28), (), (7,),
          (1, 1, 28, 28), (4, 28, 28, 1)]  # fmt: skip


@st.composite
def arrays(draw, shapes=SHAPES, dtypes=DTYPES):
    """Half of the time a plausible batch (the first shape, a numeric dtype), else anything."""
    if draw(st.booleans()):
        shapes, dtypes = shapes[:1], dtypes[:5]
    dtype, shape = draw(st.sampled_from(dtypes)), draw(st.sampled_from(shapes))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.normal(size=shape)
    if draw(st.integers(0, 4)) == 0 and values.size:
        values.flat[draw(st.integers(0, values.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf, 1e30])
        )
    if dtype == "object":
        return np.array(values.tolist() if values.ndim else values.item(), dtype=object)
    with np.errstate(all="ignore"):
        return values.astype(dtype)


@st.composite
def array_file(draw, name: str):
    """(file name, bytes): an .npy, or an .npz of arrays named after the model input or not, with
    `labels` of any dtype and length; sometimes truncated."""
    buffer = io.BytesIO()
    if draw(st.booleans()):
        np.save(buffer, draw(arrays()), allow_pickle=True)
        suffix = ".npy"
    else:
        names = st.sampled_from(["input", "x", "labels", "input_ids"])
        keys = draw(st.just(["input", "labels"]) | st.lists(names, min_size=1, max_size=3, unique=True))
        labels = arrays(
            shapes=[(4,), (3,), (4, 1), (), (0,)], dtypes=["int64", "float32", "<U3", "bool", "object"]
        )
        np.savez(buffer, allow_pickle=True, **{k: draw(labels if k == "labels" else arrays()) for k in keys})
        suffix = ".npz"
    data = buffer.getvalue()
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data) - 1))]
    return name + suffix, data


@settings(max_examples=examples(15))
@given(calibration=array_file("cal"), evaluation=st.one_of(st.none(), array_file("eval")))
@example(calibration=("cal.npy", b""), evaluation=None)
def test_odd_arrays_as_calibration_and_eval(sandboxes, calibration, evaluation):
    with sandboxes() as box:
        model = box.write("model.onnx", SHIPPED_MODEL.read_bytes())
        recipe = box.write("r.toml", NO_PROFILE)
        argv = ["convert", model, "--preset", "fp32", "--recipe", recipe, "--out", box.out, "-q"]
        argv += ["--calibration", box.write(*calibration)]
        if evaluation is not None:
            argv += ["--eval", box.write(*evaluation)]
        cli(box, *argv)


def _image(draw) -> tuple[str, bytes]:
    from PIL import Image

    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "1", "P", "I;16", "I", "F", "CMYK", "LA"]))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    suffix = draw(st.sampled_from([".png", ".bmp", ".tif", ".jpg", ".webp", ".pgm"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    image = Image.new(mode, size)
    image.putdata([int(v) for v in rng.integers(0, 255, size[0] * size[1])] if mode not in ("RGB", "RGBA", "CMYK", "LA")
                  else [tuple(int(c) for c in rng.integers(0, 255, len(mode))) for _ in range(size[0] * size[1])])  # fmt: skip
    buffer = io.BytesIO()
    try:
        image.save(
            buffer, format={".jpg": "JPEG", ".pgm": "PPM", ".tif": "TIFF"}.get(suffix, suffix[1:].upper())
        )
    except (OSError, KeyError, ValueError):  # this mode cannot be written in this format: keep random bytes
        return suffix, rng.bytes(64)
    data = buffer.getvalue()
    if draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data) - 1))]
    return suffix, data


PREPROCESS = [
    None,
    'size = [28, 28]\nchannels = 1\nmean = [0.1307]\nstd = [0.3081]\nlayout = "NCHW"\n',
    "size = [28, 28]\nchannels = 3\n",
    'layout = "NHWC"\n',
    "size = [0, 28]\n",
    "std = [0.0]\n",
    "mean = ['x']\n",
    "size = [28, 28\n",
    b"size = [28, 28]\n# \xff\xfe not UTF-8\n",
    "channels = 2\n",
    'dtype = "float16"\n',
]


@settings(max_examples=examples(12))
@given(data=st.data(), spec=st.sampled_from(PREPROCESS))
def test_odd_image_folders(sandboxes, data, spec):
    with sandboxes() as box:
        folder = box.root / "images"
        folder.mkdir()
        for i in range(data.draw(st.integers(0, 4), label="images")):
            suffix, content = _image(data.draw)
            box.write(f"images/{i}{suffix}", content)
        if spec is not None:
            box.write("images/preprocess.toml", spec)
        model = box.write("model.onnx", SHIPPED_MODEL.read_bytes())
        recipe = box.write("r.toml", NO_PROFILE)
        cli(
            box,
            "convert",
            model,
            "--preset",
            "fp32",
            "--recipe",
            recipe,
            "--calibration",
            folder,
            "--out",
            box.out,
            "-q",
        )
