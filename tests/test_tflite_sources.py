"""TFLite from third-party models: ccexam's trained MNISTNet (a torch module), basic-pitch's ONNX CNN
against basic-pitch's own `.tflite` of the same network, and silero-vad's ONNX (control flow)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgesmith.errors import InputError

from conftest import SHIPPED_CALIBRATION

pytest.importorskip("litert_torch")
pytestmark = pytest.mark.torch

RECIPE = '[[exports]]\nformat = "tflite"\n[profile]\nenabled = false\n'


def package_file(package: str, relative: str) -> Path:
    """A data file shipped in a wheel, found without importing the package (basic-pitch's
    __init__ wants librosa; these tests need only its model files)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (pip install --no-deps {package})")
    return Path(spec.submodule_search_locations[0]) / relative


def convert(model, tmp, preset=None, **kwargs):
    import edgesmith

    (tmp / "r.toml").write_text(RECIPE)
    return edgesmith.convert(model, recipe=tmp / "r.toml", preset=preset, out=tmp / "out", **kwargs)


def test_ccexam_mnistnet_int8_tflite_drop_at_most_0_2_point(mnistnet, mnist_eval_npz, tmp_path):
    report = convert(mnistnet, tmp_path, "int8", calibration=SHIPPED_CALIBRATION, evaluation=mnist_eval_npz,
                     example_inputs=(np.zeros((2, 1, 28, 28), np.float32),))  # fmt: skip
    verify = report["artifacts"][0]["verify"]
    assert verify["samples"] == 10_000
    assert abs(verify["original"] - 99.05) < 0.01  # torch's own score on the real test set
    assert verify["drop"] <= 0.2 and verify["agreement"] > 99.5, verify


def test_basic_pitch_onnx_through_edgesmith_matches_its_own_tflite(tmp_path):
    """basic-pitch ships one CNN as ONNX and as TFLite (both made from its SavedModel): the ONNX
    through edgesmith's TFLite path must give the outputs of basic-pitch's own .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesmith.runtime import load

    folder = package_file("basic_pitch", "saved_models/icassp_2022")
    report = convert(folder / "nmp.onnx", tmp_path)
    ours = load(report["artifacts"][0]["path"], backend="litert")
    rate, samples = 22050, 43844  # basic-pitch's sample rate and window
    t = np.arange(samples) / rate
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63))  # A major
    audio = (chord + 0.01 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)
    audio = audio.reshape(1, samples, 1)
    got = ours.run({ours.inputs[0].name: audio})
    theirs = Interpreter(str(folder / "nmp.tflite"))
    theirs.allocate_tensors()
    theirs.set_tensor(theirs.get_input_details()[0]["index"], audio)
    theirs.invoke()
    expected = {d["name"]: theirs.get_tensor(d["index"]) for d in theirs.get_output_details()}
    assert set(got) == set(expected)  # both keep the SavedModel's output names
    for name, want in expected.items():
        assert got[name].shape == want.shape and want.max() > 0.05, name  # real activations, not zeros
        np.testing.assert_allclose(got[name], want, atol=1e-5, err_msg=name)


def test_silero_vad_control_flow_fails_naming_the_op(tmp_path):
    model = package_file("silero_vad", "data/silero_vad.onnx")
    with pytest.raises(InputError, match=r"input 'input' has a dynamic size on axis 1"):
        convert(model, tmp_path)  # a TFLite file has one shape: nothing here says which
    recipe = RECIPE + "[model]\ninput_shapes = {input = [1, 512], state = [2, 1, 128]}\n"
    (tmp_path / "sized.toml").write_text(recipe)
    import edgesmith

    # an If on an input's value: a TFLite file holds one branch; the message says what would convert
    with pytest.raises(
        InputError, match=r"op 'If' \(node 'If_0', on input 'sr'\) has no TFLite .* one value of 'sr'"
    ):
        edgesmith.convert(model, recipe=tmp_path / "sized.toml", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
