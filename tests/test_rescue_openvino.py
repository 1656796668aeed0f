"""OpenVINO INT8 that misses the verification gate: NNCF's accuracy control keeps the most sensitive
operations float until it passes (steps/nncf_accuracy.py); an artifact that passes is left alone."""

import sys
from pathlib import Path

import numpy as np
import pytest
from test_conformance_fixes import cosine, package_file

from edgesmith.runtime import load

ROOT = Path(__file__).resolve().parents[1]
RECIPE = '[profile]\nenabled = false\n[[exports]]\nformat = "openvino"\n'


def convert(model, tmp: Path, calibration: Path, out: str = "out") -> dict:
    import edgesmith

    (tmp / "r.toml").write_text(RECIPE)
    return edgesmith.convert(
        model, recipe=tmp / "r.toml", preset="int8", calibration=calibration, out=tmp / out
    )


def ppocr_cls(tmp: Path):
    """PP-OCR's text direction classifier with benchmarks/conformance.py's real inputs (text-line
    strips cut from skimage's scans, 16 to calibrate on, 8 more to compare), on which its INT8 IR
    missed the gate (0.978 on the held-out strips, docs/conformance.md)."""
    package_file("rapidocr_onnxruntime", "models")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from conformance_models import ppocr

    prepared = ppocr("cls", 16, 8, tmp)
    np.save(tmp / "strips.npy", np.concatenate([f["x"] for f in prepared.calibration]))
    return prepared


@pytest.mark.slow
def test_ppocr_cls_int8_openvino_keeps_layers_float_until_it_passes(tmp_path):
    """After the rescue the run converts, says what stayed float and why, and its IR, reloaded,
    meets the bar on the strips no step saw."""
    prepared = ppocr_cls(tmp_path)
    report = convert(prepared.model, tmp_path, tmp_path / "strips.npy")
    artifact = report["artifacts"][0]
    kept = artifact["quantization"]["kept_float"]
    assert "has cosine" in kept["because"] and kept["layers"] and kept["count"] == len(kept["layers"])
    first = kept["tried"][0]
    assert first["float_layers"] == 0 and not first["passes"] and first["cosine_min"] < 0.98
    assert any(t["passes"] and t["float_layers"] == kept["count"] for t in kept["tried"][1:])  # the chosen
    assert kept["seconds"] > 0
    assert artifact["verify"]["cosine_min"] >= 0.98
    ours = load(artifact["path"], exact=True)
    got = [ours.run(feed)["save_infer_model/scale_0.tmp_1"] for feed in prepared.evaluation]
    want = [prepared.reference(feed)[0] for feed in prepared.evaluation]
    assert cosine(np.concatenate(got), np.concatenate(want)) >= 0.98
    xml = Path(artifact["path"]).read_text()
    assert all(f'name="{name}"' in xml for name in kept["layers"])  # named as the IR names them


@pytest.mark.slow
def test_an_int8_ir_that_passes_is_left_as_it_was(tmp_path, monkeypatch):
    """The shipped MNIST CNN's INT8 IR passes the gate at once: no rescue, and the same bytes as a
    run without it."""
    from edgesmith.converter.steps import nncf_accuracy

    model, data = ROOT / "models/mnist_cnn.onnx", ROOT / "calibration_data/mnist"
    report = convert(model, tmp_path, data)
    assert "kept_float" not in report["artifacts"][0]["quantization"]
    monkeypatch.setattr(nncf_accuracy, "keep_float_until_passing", lambda first, fp32, ctx: (first, None))
    again = convert(model, tmp_path, data, out="again")
    for entry, other in zip(report["artifacts"], again["artifacts"], strict=True):
        assert entry["sha256"] == other["sha256"]
        assert (
            Path(entry["path"]).with_suffix(".bin").read_bytes()
            == Path(other["path"]).with_suffix(".bin").read_bytes()
        )
    assert report["artifacts"][0]["quantization"] == again["artifacts"][0]["quantization"]
