"""End to end on real trained models and the real MNIST test set."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgesmith.converter.handle import sha256

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL


@pytest.fixture(scope="module")
def shipped_int8(mnist_eval_npz, tmp_path_factory):
    from edgesmith.cli import main

    out = tmp_path_factory.mktemp("shipped") / "out"
    before = sha256(SHIPPED_MODEL)
    code = main(
        [
            "convert",
            str(SHIPPED_MODEL),
            "--preset",
            "int8",
            "--calibration",
            str(SHIPPED_CALIBRATION),
            "--eval",
            str(mnist_eval_npz),
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    assert sha256(SHIPPED_MODEL) == before, "the input model must never be modified"
    return out, json.loads((out / "report.json").read_text())


def test_shipped_model_int8_drop_at_most_0_1_point(shipped_int8):
    _, report = shipped_int8
    verify = report["verify"]
    assert verify["metric"] == "top1" and verify["samples"] == 10_000
    assert verify["original"] > 98.0
    assert verify["original"] - verify["artifact"] <= 0.1, verify
    assert verify["agreement"] > 99.0


def test_shipped_model_int8_size_at_most_0_30(shipped_int8):
    _, report = shipped_int8
    (artifact,) = report["artifacts"]
    assert artifact["size_bytes"] <= 0.30 * report["source"]["size_bytes"]


def test_report_schema_and_manifest(shipped_int8):
    out, report = shipped_int8
    assert set(report["source"]) >= {"path", "size_bytes", "sha256"}
    (artifact,) = report["artifacts"]
    assert set(artifact) >= {"format", "path", "size_bytes", "sha256"} and artifact["format"] == "onnx"
    assert sha256(Path(artifact["path"])) == artifact["sha256"]
    assert set(report["verify"]) >= {"metric", "original", "artifact", "agreement"}
    (step,) = report["steps"]
    assert step["kind"] == "quantize" and step["types"]["reason"]
    assert set(artifact["latency"]) >= {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "runs", "threads"}
    manifest = json.loads(Path(artifact["path"] + ".json").read_text())
    assert manifest["inputs"][0]["name"] == "input" and manifest["precision"] == "int8"
    assert manifest["provenance"]["source_sha256"] == report["source"]["sha256"]
    assert not list(out.parent.glob(".out.*")), "no staging folder may be left behind"


def test_same_inputs_give_byte_identical_artifacts(shipped_int8, cli, tmp_path, mnist_eval_npz):
    out, report = shipped_int8
    code, _, _ = cli(
        "convert",
        SHIPPED_MODEL,
        "--preset",
        "int8",
        "--calibration",
        SHIPPED_CALIBRATION,
        "--eval",
        mnist_eval_npz,
        "--out",
        tmp_path / "again",
        "-q",
    )
    assert code == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["artifacts"][0]["sha256"] == report["artifacts"][0]["sha256"]
    name = Path(report["artifacts"][0]["path"]).name
    assert (out / f"{name}.json").read_bytes() == (tmp_path / "again" / f"{name}.json").read_bytes()


def test_run_and_profile_the_artifact(shipped_int8, cli, mnist_test, tmp_path):
    out, report = shipped_int8
    artifact = report["artifacts"][0]["path"]
    images, labels = mnist_test
    np.savez(tmp_path / "batch.npz", images[:64])
    code, _, _ = cli("run", artifact, "--input", tmp_path / "batch.npz", "--output", tmp_path / "o.npz")
    assert code == 0
    logits = np.load(tmp_path / "o.npz")["logits"]
    assert logits.shape == (64, 10) and (logits.argmax(1) == labels[:64]).mean() > 0.95
    code, stdout, _ = cli("profile", artifact, "--runs", "20", "--threads", "1", "--json")
    measured = json.loads(stdout)
    assert code == 0 and measured["runs"] == 20 and measured["threads"] == 1 and measured["backend"] == "ort"
    assert 0 < measured["p50_ms"] <= measured["p90_ms"] <= measured["p99_ms"]


def test_verification_gate_exits_1_when_the_drop_is_too_big(cli, tmp_path, mnist_eval_npz):
    """Calibrating on data 100x too narrow clips every activation: max_drop must catch it."""
    narrow = np.random.default_rng(0).normal(0, 0.01, (64, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "narrow.npy", narrow)
    recipe = tmp_path / "r.toml"
    recipe.write_text(  # quantized as configured: the default rescue would keep layers float
        "[verify]\nmax_drop = 0.5\nmax_samples = 2000\n[profile]\nenabled = false\n"
        '[[steps]]\nkind = "quantize"\nmode = "static"\nsearch = "off"\n'
    )
    code, _, stderr = cli(
        "convert",
        SHIPPED_MODEL,
        "--recipe",
        recipe,
        "--calibration",
        tmp_path / "narrow.npy",
        "--eval",
        mnist_eval_npz,
        "--out",
        tmp_path / "out",
        "-q",
    )
    assert code == 1, stderr
    assert "more than [verify] max_drop = 0.5" in stderr and "this run is in" in stderr
    assert "calibration.method = 'percentile'" in stderr  # a quantizer's remedy for a quantizer's drop
    assert json.loads((tmp_path / "out.rejected" / "report.json").read_text())["verify"]["drop"] > 0.5
    assert not (tmp_path / "out").exists(), "a rejected run never takes the output folder's place"


def test_a_drop_after_binarizing_names_that_step_not_calibration(cli, tmp_path, mnist_eval_npz):
    """1-bit weights without training lose far more than 0.5 points; calibration has nothing to do
    with it, so the hint says to compress less or train longer."""
    recipe = tmp_path / "r.toml"
    recipe.write_text("[verify]\nmax_drop = 0.5\nmax_samples = 500\n[profile]\nenabled = false\n"
                      '[[steps]]\nkind = "binarize"\nactivations = "float"\nepochs = 0\n')  # fmt: skip
    code, _, stderr = cli("convert", SHIPPED_MODEL.with_suffix(".pt2"), "--recipe", recipe, "--format", "onnx",
                          "--calibration", SHIPPED_CALIBRATION, "--eval", mnist_eval_npz, "--out", tmp_path / "out",
                          "-q")  # fmt: skip
    assert code == 1, stderr
    assert "compress less or train longer after binarize" in stderr and "percentile" not in stderr


@pytest.mark.parametrize(("preset", "max_drop"), [("int8-dynamic", 0.3), ("fp16", 0.02)])
def test_other_presets_on_real_data(cli, tmp_path, mnist_eval_npz, preset, max_drop):
    code, _, _ = cli(
        "convert",
        SHIPPED_MODEL,
        "--preset",
        preset,
        "--eval",
        mnist_eval_npz,
        "--out",
        tmp_path / "out",
        "-q",
        "--json",
    )
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verify"]["drop"] <= max_drop
    assert report["artifacts"][0]["size_bytes"] < report["source"]["size_bytes"]
