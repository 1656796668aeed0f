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
@pytest.mark.parametrize("fmt, backend, precision", [("onnx", "ort", "int8"), ("tflite", "litert", "int8"),
                                                     ("original", "ort", "fp32")])  # fmt: skip
def test_mnist_runs_on_emulated_arm_like_on_x86(
    arm64, mnist_int8_artifacts, digits, cli, fmt, backend, precision
):
    artifact = SHIPPED_MODEL if fmt == "original" else mnist_int8_artifacts[fmt]
    code, out, _ = cli("verify", artifact, "--emulate", "aarch64", "--input", digits, "--json")
    result = json.loads(out)
    device = result["device"]
    assert (device["machine"], device["cpu"], device["backend"]) == ("aarch64", "cortex-a72", backend)
    assert result["precision"] == precision  # from the manifest, or the graph for the original
    logits = result["outputs"]["logits"]
    # Measured: INT8 identical to x86 (max abs error 0) for both runtimes on these digits; float32
    # differs in rounding only (2e-6: NEON FMA against AVX-512 summation order).
    assert logits["agreement"] == 1.0 and logits["cosine"] > 0.99999 and logits["max_abs_rel"] < 1e-3
    assert code == 0 and result["ok"]


@pytest.fixture(scope="module")
def rpi4_int8(tmp_path_factory):
    """The shipped CNN quantized by the quantize step for a recipe whose target is rpi4."""
    from edgesmith import runtime
    from edgesmith.converter.data.arrays import ArraySource
    from edgesmith.converter.handle import ModelHandle
    from edgesmith.converter.recipe import CalibrationConfig
    from edgesmith.converter.steps import HANDLERS, StepContext
    from edgesmith.converter.steps.quantize import QuantizeConfig

    cal = CalibrationConfig(path=str(SHIPPED_CALIBRATION), max_samples=128)
    source = ArraySource(cal.path, runtime.load(SHIPPED_MODEL).inputs, "calibration", cal.max_samples,
                         cal.batch_size, cal.preprocess)  # fmt: skip
    ctx = StepContext(tmp_path_factory.mktemp("rpi4"), lambda: source, cal, quiet=True, devices=("rpi4",))
    return HANDLERS[QuantizeConfig](QuantizeConfig(), ModelHandle(SHIPPED_MODEL), ctx)


def test_a_rpi4_target_picks_arm_types(rpi4_int8):
    types = rpi4_int8.report["types"]
    assert (types["activations"], types["weights"], types["symmetric_activations"]) == ("int8", "int8", True)
    assert types["reason"].startswith("the recipe's target rpi4 (Cortex-A72 armv8-a)")


def test_mixed_isas_say_which_target_decided_and_quantize_target_overrides():
    from edgesmith.converter.steps.int8_types import choose, resolve_target

    mixed = choose(devices=["host", "rpi4"])
    assert mixed.target == "arm" and "mix ISAs: rpi4 decides" in mixed.reason
    assert f"host would take {resolve_target('host')} types" in mixed.reason
    assert choose(devices=["host"]).target == resolve_target("host")
    assert choose(devices=["stm32f746"]).activations == "int8"  # TFLite Micro's int8 x int8 kernels
    override = choose("x86", devices=["rpi4"])
    assert (override.target, override.reduce_range) == ("x86", True)
    assert "quantize.target overrides the recipe's targets: rpi4" in override.reason


@pytest.mark.slow
@needs_qemu
def test_rpi4_types_run_on_emulated_arm_like_on_x86(arm64, rpi4_int8):
    """The s8 x s8 artifact a rpi4 recipe makes, on ARM kernels: same outputs as here (measured:
    identical on 256 digits). Other inputs give other outputs: the guest computes, nothing is copied."""
    from edgesmith import runtime

    with np.load(SHIPPED_CALIBRATION / "holdout.npz") as data:
        digits, labels = {"input": data["input"][:32]}, data["labels"][:32]
    arm, info = emulate.run_aarch64(rpi4_int8.model.path, digits)
    host = runtime.load(rpi4_int8.model.path, exact=True).run(digits)
    assert info["machine"] == "aarch64" and info["backend"] == "ort"
    assert emulate.compare(host, arm, "int8")["ok"]
    assert (arm["logits"].argmax(1) == labels).mean() > 0.9
    zeros, _ = emulate.run_aarch64(rpi4_int8.model.path, {"input": np.zeros((2, 1, 28, 28), np.float32)})
    assert not np.allclose(zeros["logits"], arm["logits"][:2])


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


def test_agreement_counts_only_rows_with_a_decisive_winner():
    """An embedding's largest components are near-equal: INT8 kernels may swap them within
    tolerance (all-MiniLM-L6-v2 on emulated ARM: 0.83 arg-max agreement at cosine 0.996). Such rows
    are not counted; a classifier's confident rows still are."""
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((64, 384)).astype(np.float32) * 0.05
    jitter = embeddings + rng.uniform(-0.004, 0.004, embeddings.shape).astype(np.float32)
    raw = (jitter.argmax(-1) == embeddings.argmax(-1)).mean()
    result = emulate.compare({"e": embeddings}, {"e": jitter}, "int8")
    assert raw < 0.98 and result["ok"], (raw, result)
    assert result["outputs"]["e"]["agreement_rows"] < 64
    logits = np.zeros((20, 10), np.float32)
    logits[np.arange(20), np.arange(20) % 10] = 8.0  # one confident class per row
    flipped = logits.copy()
    flipped[0] = np.roll(flipped[0], 1)  # one confident row now wins elsewhere
    result = emulate.compare({"logits": logits}, {"logits": flipped}, "int8")
    row = result["outputs"]["logits"]
    assert row["agreement_rows"] == 20 and row["agreement"] == 19 / 20 and not result["ok"]


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


def test_targets_map_to_emulated_cores():
    from edgesmith.targets import spec

    assert emulate.cpu_for(spec.get("rpi4")) == "cortex-a72"  # its own core
    assert emulate.cpu_for(spec.get("rpi5")) == "cortex-a76"
    assert emulate.cpu_for(spec.get("pixel3a")) == "cortex-a76"  # Kryo 360 (A75): armv8.2-a, dot product


@pytest.mark.slow
@needs_qemu
def test_convert_for_an_arm_target_runs_each_artifact_on_arm(arm64, cli, tmp_path):
    """`convert --target rpi4`: ARM INT8 types, and the artifact also run on emulated ARM kernels."""
    out = tmp_path / "out"
    code, stdout, stderr = cli("convert", SHIPPED_MODEL, "--preset", "int8", "--target", "rpi4",
                               "--calibration", SHIPPED_CALIBRATION, "--out", out, "--quiet")  # fmt: skip
    assert code == 0, stderr
    [artifact] = json.loads((out / "report.json").read_text())["artifacts"]
    assert artifact["quantization"]["types"]["activations"] == "int8"
    emulated = artifact["emulated"]["rpi4"]
    assert emulated["device"]["machine"] == "aarch64" and emulated["device"]["cpu"] == "cortex-a72"
    assert emulated["ok"] and emulated["outputs"]["logits"]["agreement"] == 1.0
    assert emulated["samples"] == 8  # of the first verification batch: enough to compare kernels
