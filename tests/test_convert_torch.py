"""PyTorch sources: a torch.export `.pt2` through the CLI, and ccexam's trained MNISTNet through the API."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

pytestmark = pytest.mark.torch


def test_pt2_through_the_cli_matches_torch(cli, tmp_path, mnist_test):
    images, labels = mnist_test
    np.savez(tmp_path / "eval.npz", input=images[:2000], labels=labels[:2000])
    pt2 = SHIPPED_MODEL.with_suffix(".pt2")
    code, _, err = cli(
        "convert",
        pt2,
        "--calibration",
        SHIPPED_CALIBRATION,
        "--eval",
        tmp_path / "eval.npz",
        "--out",
        tmp_path / "out",
        "-q",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"]["kind"] == "pt2"
    assert report["verify"]["original"] > 98.0  # scored by torch itself, the reference
    assert report["verify"]["drop"] <= 0.3


def test_ccexam_mnistnet_int8_drop_at_most_0_1_point(mnistnet, mnist_eval_npz, tmp_path):
    """A real third-party trained model (99.05% on the MNIST test set), given as an nn.Module."""
    import edgesmith

    example = np.zeros((2, 1, 28, 28), np.float32)
    report = edgesmith.convert(
        mnistnet,
        preset="int8",
        calibration=SHIPPED_CALIBRATION,
        evaluation=mnist_eval_npz,
        out=tmp_path / "out",
        example_inputs=(example,),
    )
    verify = report["verify"]
    assert verify["samples"] == 10_000
    assert abs(verify["original"] - 99.05) < 0.01  # torch's own score on the real test set
    assert verify["original"] - verify["artifact"] <= 0.1, verify
    artifact = Path(report["artifacts"][0]["path"])
    assert artifact.stat().st_size <= 0.30 * report["original"]["size_bytes"]
