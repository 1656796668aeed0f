"""`edgesmith verify --emulate aarch64`: artifacts run on ARM kernels (qemu-user, an arm64 Debian
userland and the aarch64 wheels of ONNX Runtime and LiteRT) and are compared with the host's run.

The userland is built once into ~/.cache/edgesmith (about a minute on a 2-core machine, then cached);
each emulated run starts an arm64 Python under qemu, so these tests take tens of seconds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgesmith.targets import emulate

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-aarch64-static") is None or shutil.which("mmdebstrap") is None,
    reason="needs the Debian packages qemu-user-static and mmdebstrap (.ci/run installs them)",
)


@pytest.fixture(scope="session")
def arm64():
    """The cached arm64 userland for a Cortex-A72 (built on first use)."""
    return emulate.userland("cortex-a72")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """64 real MNIST digits from the shipped hold-out set, as `--input`."""
    with np.load(SHIPPED_CALIBRATION / "holdout.npz") as data:
        images = data["input"][:64]
    path = tmp_path_factory.mktemp("emulate") / "digits.npz"
    np.savez(path, input=images)
    return path


@pytest.mark.slow
@needs_qemu
@pytest.mark.parametrize("fmt, backend", [("onnx", "ort"), ("tflite", "litert")])
def test_int8_mnist_runs_on_emulated_arm_like_on_x86(arm64, mnist_int8_artifacts, digits, cli, fmt, backend):
    code, out, _ = cli(
        "verify", mnist_int8_artifacts[fmt], "--emulate", "aarch64", "--input", digits, "--json"
    )
    result = json.loads(out)
    device = result["device"]
    assert (device["machine"], device["cpu"], device["backend"]) == ("aarch64", "cortex-a72", backend)
    assert result["precision"] == "int8"
    logits = result["outputs"]["logits"]
    # Measured: identical to x86 (max abs error 0) for both runtimes on these digits.
    assert logits["agreement"] == 1.0 and logits["cosine"] > 0.999 and logits["max_abs_rel"] < 0.02
    assert code == 0 and result["ok"]


@pytest.mark.slow
@needs_qemu
def test_the_guest_really_runs_arm_code(arm64, mnist_int8_artifacts):
    """The emulated run returns the host's numbers only because the kernels agree: feeding it other
    inputs changes its outputs (it computes; nothing is copied back from the host)."""
    zero_images = {"input": np.zeros((2, 1, 28, 28), np.float32)}
    zeros, info = emulate.run_aarch64(mnist_int8_artifacts["onnx"], zero_images)
    with np.load(SHIPPED_CALIBRATION / "holdout.npz") as data:
        digits, labels = {"input": data["input"][:2]}, data["labels"][:2]
    real, _ = emulate.run_aarch64(mnist_int8_artifacts["onnx"], digits)
    assert info["machine"] == "aarch64" and zeros["logits"].shape == (2, 10)
    assert not np.array_equal(zeros["logits"], real["logits"])
    assert (real["logits"].argmax(1) == labels).all()


def test_compare_flags_outputs_beyond_the_precision_tolerance():
    rng = np.random.default_rng(0)
    ref = {"logits": rng.standard_normal((50, 10)).astype(np.float32)}
    close = {"logits": ref["logits"] + np.float32(1e-6)}
    assert emulate.compare(ref, close, "fp32")["ok"]
    shuffled = {"logits": ref["logits"][:, ::-1].copy()}  # same values, other classes win
    result = emulate.compare(ref, shuffled, "int8")
    assert not result["ok"] and result["outputs"]["logits"]["agreement"] < 0.5
    off_by_steps = {"logits": ref["logits"] + np.float32(0.05)}  # fine for int8, not for fp32
    assert emulate.compare(ref, off_by_steps, "int8")["ok"]
    assert not emulate.compare(ref, off_by_steps, "fp32")["ok"]


def test_missing_tools_name_the_packages_to_install(cli, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    code, out, err = cli("verify", SHIPPED_MODEL, "--emulate", "aarch64")
    assert code == 2 and out == ""
    assert "apt-get install qemu-user-static mmdebstrap" in err and "Traceback" not in err


def test_cpuinfo_names_the_emulated_core():
    """ONNX Runtime's aarch64 build crashes on an x86 /proc/cpuinfo; the one written names an Arm core."""
    text = emulate._cpuinfo("cortex-a72")
    assert "CPU implementer\t: 0x41" in text and "CPU part\t: 0xd08" in text
    assert text.count("processor\t:") == 4
