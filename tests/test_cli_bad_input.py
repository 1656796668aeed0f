"""Bad input: one line naming the problem and the fix, exit code 2, nothing written or overwritten."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL
from models import small_cnn, two_input_add


def assert_refused(result, *phrases, out: Path | None = None):
    code, stdout, stderr = result
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgesmith: error: "), stderr
    for phrase in phrases:
        assert phrase in lines[0]
    if out is not None:
        assert not out.exists(), "a refused conversion must not create its output folder"
        assert not list(out.parent.glob(f".{out.name}.*")), "no partial folder may be left behind"


def test_missing_model_file(cli, tmp_path):
    out = tmp_path / "out"
    assert_refused(cli("convert", tmp_path / "nope.onnx", "--out", out), "no such file", out=out)


def test_file_that_is_not_a_model(cli, tmp_path, cal):
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("these are my notes, not a model\n")
    out = tmp_path / "out"
    assert_refused(
        cli("convert", bogus, "--calibration", cal, "--out", out), "not a valid ONNX model", out=out
    )
    text = tmp_path / "model.txt"
    text.write_text("hello")
    assert_refused(cli("convert", text, "--out", out), "unknown model format", out=out)


def test_truncated_onnx(cli, tmp_path, cnn, cal):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(cnn.read_bytes()[: cnn.stat().st_size // 2])
    out = tmp_path / "out"
    assert_refused(
        cli("convert", truncated, "--calibration", cal, "--out", out), "not a valid ONNX model", out=out
    )


def test_a_torch_save_checkpoint_named_pt2_is_refused_without_unpickling(cli, tmp_path, monkeypatch):
    import pickle as pickle_module

    import torch

    checkpoint = tmp_path / "model.pt2"
    torch.save(torch.nn.Linear(2, 2), checkpoint)  # what people save by mistake: a pickled module

    def refuse(*args, **kwargs):
        raise AssertionError("edgesmith unpickled a user's file")

    monkeypatch.setattr(pickle_module, "load", refuse)
    monkeypatch.setattr(pickle_module, "loads", refuse)
    monkeypatch.setattr(pickle_module, "Unpickler", refuse)
    assert_refused(cli("convert", checkpoint, "--out", tmp_path / "out"), "torch.save checkpoint",
                   "does not unpickle", "torch.export.save", out=tmp_path / "out")  # fmt: skip


def test_pickled_torch_file_is_refused_unread(cli, tmp_path):
    pickle = tmp_path / "weights.pth"
    pickle.write_bytes(b"\x80\x04not really")
    assert_refused(cli("convert", pickle), "pickled PyTorch files are not loaded", "torch.export.save")


def test_torchscript_archive_is_refused_unread(cli, tmp_path):
    archive = tmp_path / "silero_vad.jit"  # silero-vad's wheel ships one beside its ONNX files
    archive.write_bytes(b"PK\x03\x04not really")
    assert_refused(cli("convert", archive), "TorchScript archives are not loaded", "torch.onnx.export")


def test_empty_calibration_folder(cli, tmp_path, cnn):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert_refused(
        cli("convert", cnn, "--calibration", tmp_path / "empty", "--out", out), "holds no images", out=out
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_calibration(cli, tmp_path, cnn, bad):
    data = np.zeros((20, 1, 28, 28), np.float32)
    data[17, 0, 5, 5] = bad
    np.save(tmp_path / "bad.npy", data)
    out = tmp_path / "out"
    assert_refused(
        cli("convert", cnn, "--calibration", tmp_path / "bad.npy", "--out", out),
        "NaN or Inf at sample 17",
        out=out,
    )


def test_calibration_shape_mismatch(cli, tmp_path, cnn):
    np.save(tmp_path / "c.npy", np.zeros((4, 3, 32, 32), np.float32))
    out = tmp_path / "out"
    assert_refused(
        cli("convert", cnn, "--calibration", tmp_path / "c.npy", "--out", out),
        "shape [4, 3, 32, 32]",
        "expects",
        out=out,
    )


def test_calibration_name_mismatch(cli, tmp_path):
    model = two_input_add(tmp_path / "add.onnx")
    np.savez(tmp_path / "c.npz", a=np.zeros((4, 4), np.float32), c=np.zeros((4, 4), np.float32))
    out = tmp_path / "out"
    assert_refused(
        cli("convert", model, "--calibration", tmp_path / "c.npz", "--out", out),
        "name the arrays after the model inputs",
        out=out,
    )


def test_unknown_preset_and_recipe_key(cli, tmp_path, cnn):
    assert_refused(cli("convert", cnn, "--preset", "int7"), "unknown preset 'int7'", "did you mean")
    recipe = tmp_path / "r.toml"
    recipe.write_text("[verify]\nmax_dorp = 0.5\n")
    assert_refused(cli("convert", cnn, "--recipe", recipe), "unknown key 'max_dorp'", "'max_drop'")


def test_static_int8_without_calibration(cli, tmp_path, cnn):
    out = tmp_path / "out"
    assert_refused(cli("convert", cnn, "--preset", "int8", "--out", out), "needs calibration data", out=out)


def test_output_folder_with_files_is_refused_unless_force(cli, tmp_path, cnn, cal):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_refused(cli("convert", cnn, "--calibration", cal, "--out", out, "-q"), "--force")
    assert (out / "keep.txt").read_text() == "mine"
    code, _, _ = cli("convert", cnn, "--calibration", cal, "--out", out, "--force", "-q")
    assert code == 0
    assert not (out / "keep.txt").exists() and (out / "cnn.int8.onnx").is_file()


def test_force_never_deletes_the_input(cli, tmp_path, cal):
    out = tmp_path / "out"
    out.mkdir()
    model = small_cnn(out / "cnn.onnx")
    assert_refused(
        cli("convert", model, "--calibration", cal, "--out", out, "--force"), "would delete the input"
    )
    assert model.is_file()


def test_run_with_wrong_input(cli, tmp_path, cnn):
    np.savez(tmp_path / "x.npz", input=np.zeros((2, 1, 27, 28), np.float32))
    assert_refused(cli("run", cnn, "--input", tmp_path / "x.npz"), "input 'input' has shape [2, 1, 27, 28]")
    assert_refused(cli("profile", cnn, "--runs", "0"), "--runs")


def _blocked_env(tmp_path, module):
    """PYTHONPATH with a stand-in package that fails to import, as if the extra were missing."""
    block = tmp_path / "blocked"
    (block / module).mkdir(parents=True)
    (block / module / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    return {**os.environ, "PYTHONPATH": str(block)}


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("onnxruntime", ["run", str(SHIPPED_MODEL), "--input", "x.npz"], "ort"),
        (
            "torch",
            ["convert", str(SHIPPED_MODEL.with_suffix(".pt2")), "--calibration", str(SHIPPED_CALIBRATION)],
            "convert",
        ),
    ],
)
def test_missing_extra_names_the_pip_install(tmp_path, module, args, extra):
    np.savez(tmp_path / "x.npz", input=np.zeros((1, 1, 28, 28), np.float32))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgesmith",
            *args,
            "--out" if args[0] == "convert" else "--threads",
            str(tmp_path / "out") if args[0] == "convert" else "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_blocked_env(tmp_path, module),
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]
        and f"pip install 'edgesmith[{extra}]'" in result.stderr
    )
    assert not (tmp_path / "out").exists()
