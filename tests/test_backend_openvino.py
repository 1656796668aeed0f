"""OpenVINO: the runtime backend (precision, threads, bad files) and the IR exporter (fp32, fp16,
NNCF INT8 on the real MNIST test set, determinism), plus NNCF as an engine for ONNX."""

import json
from pathlib import Path

import numpy as np
import pytest
from backend_models import small_cnn_openvino
from test_cli_bad_input import assert_refused

import edgesmith.runtime as runtime
from edgesmith.converter.handle import sha256
from edgesmith.errors import InputError

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL
from models import small_cnn

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def xml(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov")
    return small_cnn_openvino(small_cnn(folder / "cnn.onnx"), folder / "cnn.xml")


def test_precision_default_exact_and_explicit(xml):
    assert runtime.load(xml, exact=True).precision == "f32"
    assert runtime.load(xml, precision="bf16").precision == "bf16"
    assert runtime.load(xml, precision="f32", exact=True).precision == "f32"
    with pytest.raises(InputError, match="choose from"):
        runtime.load(xml, precision="int4")
    with pytest.raises(InputError, match="cannot be combined"):
        runtime.load(xml, exact=True, precision="bf16")


def test_exact_matches_reference_and_threads_are_set(xml):
    session = runtime.load(xml, threads=1, exact=True)
    assert session._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    feeds = {"input": np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)}
    want = runtime.load(xml.with_suffix(".onnx"), backend="numpy").run(feeds)["logits"]
    np.testing.assert_allclose(session.run(feeds)["logits"], want, rtol=1e-5, atol=1e-6)


def test_read_only_memory_mapped_inputs_run(xml, tmp_path):
    """Calibration .npy files are memory-mapped read-only; OpenVINO wraps inputs without a copy and
    refused those slices ("array is not writeable", PP-OCR's detector in the conformance run)."""
    data = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")[:2]
    assert not mapped.flags.writeable
    session = runtime.load(xml, exact=True)
    np.testing.assert_array_equal(
        session.run({"input": mapped})["logits"], session.run({"input": data[:2]})["logits"]
    )


def _copy(xml: Path, folder: Path, name: str, xml_bytes=None, bin_bytes=None) -> Path:
    target = folder / f"{name}.xml"
    target.write_bytes(xml.read_bytes() if xml_bytes is None else xml_bytes)
    if bin_bytes is not False:
        bin_data = xml.with_suffix(".bin").read_bytes()
        target.with_suffix(".bin").write_bytes(bin_data if bin_bytes is None else bin_bytes)
    return target


def test_bad_files_exit_2_with_one_line(xml, tmp_path, cli):
    feeds = tmp_path / "x.npz"
    np.savez(feeds, input=np.zeros((1, 1, 28, 28), np.float32))
    no_bin = _copy(xml, tmp_path, "nobin", bin_bytes=False)
    assert_refused(cli("run", no_bin, "--input", feeds), "nobin.bin is missing", "copy the .bin")
    bad_xml = _copy(xml, tmp_path, "badxml", xml_bytes=xml.read_bytes()[:300])
    assert_refused(cli("run", bad_xml, "--input", feeds), "is not a valid OpenVINO model", "badxml.xml")
    bad_bin = _copy(xml, tmp_path, "badbin", bin_bytes=b"\0" * 16)
    assert_refused(cli("run", bad_bin, "--input", feeds), "Incorrect weights in bin file")


# -- exporter ----------------------------------------------------------------------------------


def _convert(cli, out, *args):
    code, _, err = cli(
        "convert", SHIPPED_MODEL, "--calibration", SHIPPED_CALIBRATION, "--out", out, "-q", *args
    )
    assert code == 0, err
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def int8_report(mnist_eval_npz, tmp_path_factory):
    from edgesmith.cli import main

    out = tmp_path_factory.mktemp("int8") / "out"
    args = ["convert", SHIPPED_MODEL, "--preset", "int8", "--calibration", SHIPPED_CALIBRATION, "--eval",
            mnist_eval_npz, "--format", "onnx", "--format", "openvino", "--out", out, "-q"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_openvino_int8_on_real_mnist_drops_at_most_0_2_point(int8_report):
    _, report = int8_report
    onnx_row, ov_row = report["artifacts"]
    assert (onnx_row["format"], onnx_row["engine"]) == ("onnx", "onnxruntime")
    assert (ov_row["format"], ov_row["engine"], ov_row["precision"]) == ("openvino", "nncf", "int8")
    verify = ov_row["verify"]
    assert verify["samples"] == 10_000 and verify["original"] > 98.0
    assert verify["drop"] <= 0.2, verify
    assert verify["agreement"] >= 99.5, verify
    quantization = ov_row["quantization"]
    assert quantization["engine"] == "nncf" and quantization["nncf_version"]
    assert quantization["calibration"]["samples"] == 256
    assert report["steps"][-1]["engines"] == {"onnx": "onnxruntime", "openvino": "nncf"}


def test_openvino_int8_files_and_manifest(int8_report):
    out, report = int8_report
    row = report["artifacts"][1]
    xml_path = Path(row["path"])
    (companion,) = row["files"]
    assert xml_path.suffix == ".xml" and Path(companion["path"]) == xml_path.with_suffix(".bin")
    assert sha256(Path(companion["path"])) == companion["sha256"]
    manifest = json.loads(Path(row["path"] + ".json").read_text())
    assert manifest["format"] == "openvino" and manifest["precision"] == "int8"
    assert manifest["inputs"][0]["name"] == "input" and manifest["quantization"]["engine"] == "nncf"
    assert b"FakeQuantize" in xml_path.read_bytes()  # INT8 for real, not a float copy


def test_openvino_int8_is_byte_identical_across_runs(int8_report, cli, tmp_path, mnist_eval_npz):
    """The same inputs (without --eval, a quarter of the calibration samples would verify instead of
    calibrating: other inputs, other bytes)."""
    out, report = int8_report
    again = _convert(
        cli, tmp_path / "again", "--preset", "int8", "--format", "openvino", "--eval", mnist_eval_npz
    )
    first, second = report["artifacts"][1], again["artifacts"][0]
    assert second["sha256"] == first["sha256"]
    assert second["files"][0]["sha256"] == first["files"][0]["sha256"]


def test_openvino_fp32_agrees_fully_and_fp16_halves_the_weights(cli, tmp_path, mnist_eval_npz):
    report = _convert(
        cli, tmp_path / "fp32", "--preset", "fp32", "--format", "openvino", "--eval", mnist_eval_npz
    )
    (row,) = report["artifacts"]
    assert (row["precision"], row["engine"]) == ("fp32", None)
    assert row["verify"]["agreement"] == 100.0 and row["verify"]["max_abs_error"] < 1e-4, row["verify"]
    fp16 = _convert(cli, tmp_path / "fp16", "--preset", "fp16", "--format", "openvino")["artifacts"][0]
    assert (fp16["precision"], fp16["engine"]) == ("fp16", "openvino")
    fp32_bin, fp16_bin = row["files"][0]["size_bytes"], fp16["files"][0]["size_bytes"]
    assert 0.45 < fp16_bin / fp32_bin < 0.55, (fp16_bin, fp32_bin)


def test_dynamic_int8_and_foreign_engines_are_refused(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", SHIPPED_MODEL, "--preset", "int8-dynamic", "--format", "openvino", "--out", out)
    assert_refused(result, "OpenVINO has no dynamic INT8", "--preset int8", out=out)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[steps]]\nkind = "quantize"\nengine = "onnxruntime"\n[[exports]]\nformat = "openvino"\n'
    )
    result = cli(
        "convert", SHIPPED_MODEL, "--recipe", recipe, "--calibration", SHIPPED_CALIBRATION, "--out", out
    )
    assert_refused(result, "quantized by NNCF", out=out)
    recipe.write_text('[[steps]]\nkind = "quantize"\n[[exports]]\nformat = "openvino"\nio = "int8"\n')
    result = cli(
        "convert", SHIPPED_MODEL, "--recipe", recipe, "--calibration", SHIPPED_CALIBRATION, "--out", out
    )
    assert_refused(result, "takes and gives float", out=out)


def test_nncf_engine_for_onnx(cli, tmp_path, mnist_eval_npz):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[steps]]\nkind = "quantize"\nengine = "nncf"\n[[exports]]\nformat = "onnx"\n')
    report = _convert(cli, tmp_path / "nncf", "--recipe", recipe, "--eval", mnist_eval_npz)
    (row,) = report["artifacts"]
    assert (row["format"], row["engine"], row["precision"]) == ("onnx", "nncf", "int8")
    assert row["verify"]["drop"] <= 0.2 and row["verify"]["agreement"] >= 99.5, row["verify"]
    recipe.write_text('[[steps]]\nkind = "quantize"\nengine = "inc"\n')
    out = tmp_path / "inc"
    result = cli(
        "convert", SHIPPED_MODEL, "--recipe", recipe, "--calibration", SHIPPED_CALIBRATION, "--out", out
    )
    assert_refused(result, "engine 'inc' quantizes PyTorch models", out=out)


@pytest.mark.torch
def test_ccexam_mnistnet_openvino_int8_drop_at_most_0_2_point(mnistnet, mnist_eval_npz, tmp_path):
    """A real third-party trained model given as an nn.Module, through NNCF to OpenVINO INT8."""
    import edgesmith
    from edgesmith.converter import build_recipe

    recipe = build_recipe(None, "int8", SHIPPED_CALIBRATION, mnist_eval_npz, ["openvino"])
    example = (np.zeros((2, 1, 28, 28), np.float32),)
    report = edgesmith.convert(mnistnet, recipe=recipe, out=tmp_path / "out", example_inputs=example)
    (row,) = report["artifacts"]
    assert (row["format"], row["engine"]) == ("openvino", "nncf")
    verify = row["verify"]
    assert verify["original"] > 98.5 and verify["drop"] <= 0.2 and verify["agreement"] >= 99.5, verify
