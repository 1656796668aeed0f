"""Every run verifies every artifact against the original, labels or not; internal errors exit 3."""

import json

import numpy as np

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_verified_on_held_out_calibration_data_without_eval(cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = cli("convert", SHIPPED_MODEL, "--preset", "int8", "--calibration",
                               SHIPPED_CALIBRATION, "--out", out, "--quiet")  # fmt: skip
    assert code == 0, stderr
    report = _report(out)
    result = report["artifacts"][0]["verify"]
    # the last quarter of the calibration samples (at most 64) verify and are not calibrated on
    calibrated = report["artifacts"][0]["quantization"]["calibration"]["samples"]
    total = calibrated + result["samples"]
    assert result["data"] == "held-out calibration" and result["samples"] == min(64, total // 4) > 0
    [logits] = result["outputs"]
    assert logits["name"] == "logits"
    # real digits through a real INT8 model: close, but not identical
    assert 0.99 < logits["cosine"] < 1.0 and 0 < logits["max_abs_error"] < 1.0
    assert logits["cosine_worst_sample"] <= logits["cosine_mean_sample"] <= 1.0
    assert result["agreement"] >= 95


def test_bare_convert_exports_fp32_and_verifies_on_random_inputs(cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = cli("convert", SHIPPED_MODEL, "--out", out)
    assert code == 0, stderr
    report = _report(out)
    [artifact] = report["artifacts"]
    assert artifact["precision"] == "fp32" and artifact["verify"]["data"] == "random inputs"
    assert artifact["verify"]["cosine_min"] > 0.9999
    assert "--preset int8 --calibration" in stderr  # says how to get static INT8
    assert "min cos" in stdout


def test_min_cosine_fails_the_run_naming_the_output(cli, tmp_path):
    recipe = tmp_path / "r.toml"
    # search = "off": quantized as configured (the default would keep layers float until it passes)
    recipe.write_text(
        '[[steps]]\nkind = "quantize"\nmode = "static"\nsearch = "off"\n[verify]\nmin_cosine = 0.9999999\n'
    )
    out = tmp_path / "out"
    code, _, stderr = cli("convert", SHIPPED_MODEL, "--recipe", recipe, "--calibration",
                          SHIPPED_CALIBRATION, "--out", out, "--quiet")  # fmt: skip
    assert code == 1, stderr
    line = stderr.strip().splitlines()[-1]
    assert "output 'logits'" in line and "min_cosine = 9.999999e-07" not in line
    assert "min_cosine = 0.9999999" in line


def test_internal_error_exits_3_with_a_log(cli, tmp_path, monkeypatch):
    from edgesmith.converter import pipeline

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(pipeline, "_verify", broken)
    monkeypatch.setenv("EDGESMITH_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "out"
    code, _, stderr = cli("convert", SHIPPED_MODEL, "--out", out, "--quiet")
    assert code == 3
    [line] = stderr.strip().splitlines()
    assert "internal error (ZeroDivisionError: a bug deep inside)" in line and "Traceback" not in line
    [log] = (tmp_path / "logs").iterdir()
    assert str(log) in line
    text = log.read_text()
    assert "Traceback" in text and "a bug deep inside" in text and "convert" in text.splitlines()[0]
    assert not out.exists()


def test_every_output_is_compared(tmp_path):
    """A two-output model: each output gets its own cosine and error."""
    from edgesmith.converter import verify

    got = {"a": np.ones((4, 3)), "b": np.array([[1.0, 0.0]] * 4)}
    names, want = ["a", "b"], [np.ones((4, 3)), np.array([[0.0, 1.0]] * 4)]
    stats = [verify._OutputStats(n) for n in names]
    for stat, g, w in zip(stats, verify._aligned(got, names, want), want, strict=True):
        stat.add(g, w, 4)
    a, b = (s.to_json() for s in stats)
    assert a["cosine"] == 1.0 and a["max_abs_error"] == 0.0
    assert b["cosine"] == 0.0 and b["cosine_worst_sample"] == 0.0 and b["max_abs_error"] == 1.0
    # renamed outputs (TFLite) in another order are matched by their unique shapes
    renamed = {"x": np.zeros((4, 2)), "y": np.zeros((4, 3))}
    assert [v.shape for v in verify._aligned(renamed, names, want)] == [(4, 3), (4, 2)]
