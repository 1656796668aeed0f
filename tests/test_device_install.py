"""`pip install edgesmith[ort]` gives numpy + onnxruntime only, and that is enough to run an artifact."""

import json
import subprocess
import venv

import numpy as np
import pytest

from conftest import ROOT, SHIPPED_MODEL

pytestmark = pytest.mark.slow
HEAVY = {"torch", "onnx", "onnxscript", "tensorflow", "tensorflow-cpu", "openvino", "ai-edge-litert", "tqdm"}


def test_ort_extra_installs_light_and_runs(tmp_path):
    env_dir = tmp_path / "device"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[ort]"],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"edgesmith", "numpy", "onnxruntime"} <= installed
    assert not installed & HEAVY, installed & HEAVY

    np.savez(tmp_path / "x.npz", input=np.zeros((2, 1, 28, 28), np.float32))
    run = subprocess.run(
        [env_dir / "bin" / "edgesmith", "run", SHIPPED_MODEL, "--input", tmp_path / "x.npz", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["logits"]["shape"] == [2, 10]
    doctor = subprocess.run([env_dir / "bin" / "edgesmith", "doctor"], capture_output=True, text=True)
    assert "pip install 'edgesmith[convert]'" in doctor.stdout and doctor.returncode == 0
