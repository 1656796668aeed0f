"""`[profile] targets` in a recipe and `edgesmith report`: per-target estimates in report.json and a
self-contained HTML report, rendered in headless Chromium (apt-get install chromium) to check the
plots are really drawn."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import test_targets_ssh as ssh_tests

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
sshd = ssh_tests.sshd  # the real OpenSSH server on 127.0.0.1 that test_targets_ssh.py starts


def _chromium(html, tmp_path, *flags) -> str:
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    return subprocess.run(common + [*flags, html.as_uri()], capture_output=True, text=True, timeout=90).stdout


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The shipped CNN converted to INT8 with two targets in the recipe."""
    from edgesmith.cli import main

    d = tmp_path_factory.mktemp("report")
    recipe = d / "r.toml"
    recipe.write_text('[profile]\nruns = 20\nwarmup = 2\ntargets = ["rpi4", "stm32f746"]\n')
    out = d / "out"
    code = main(["convert", str(SHIPPED_MODEL), "--recipe", str(recipe), "--preset", "int8",
                 "--calibration", str(SHIPPED_CALIBRATION), "--eval", str(SHIPPED_CALIBRATION / "holdout.npz"),
                 "--out", str(out), "-q"])  # fmt: skip
    assert code == 0
    return out


def test_report_json_has_each_target(converted):
    report = json.loads((converted / "report.json").read_text())
    entry = report["artifacts"][0]
    assert set(entry["targets"]) == {"rpi4", "stm32f746"}
    rpi4 = entry["targets"]["rpi4"]
    assert (
        rpi4["source"] == "estimated" and rpi4["p50_ms"] > 0 and rpi4["energy_source"].startswith("estimated")
    )
    fit = entry["targets"]["stm32f746"]["mcu_fit"]
    assert fit["fits"] and fit["ram_needed_bytes"] < 320 * 1024
    assert (converted / "report.html").is_file(), "convert writes the HTML report when targets are given"


def test_html_is_self_contained(converted):
    html = (converted / "report.html").read_text()
    assert "<script" not in html and not re.search(r'(src|href)="https?://', html)
    assert html.count('class="point"') >= 3  # host measured + two targets
    assert 'class="bar"' in html


def test_report_cli(converted, cli, tmp_path):
    out = tmp_path / "r.html"
    code, stdout, err = cli("report", converted, "--target", "pixel2", "--target", "host", "--out", out)
    assert code == 0, err
    assert "1 artifact(s) x 2 target(s)" in stdout
    data = json.loads((converted / "targets.json").read_text())
    assert set(data["artifacts"][0]["targets"]) == {"pixel2", "host"}
    assert "pixel2 (estimated)" in out.read_text()


def test_report_bad_input(cli, tmp_path):
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "report.json: no such file" in err
    (tmp_path / "report.json").write_text('{"artifacts": []}')
    code, _, err = cli("report", tmp_path, "--target", "rpi44")
    assert code == 2 and "did you mean" in err


def test_unknown_target_in_recipe_fails_fast(cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[profile]\ntargets = ["stm32f74"]\n')
    code, _, err = cli("convert", SHIPPED_MODEL, "--recipe", recipe, "--out", tmp_path / "o")
    assert code == 2 and "unknown target 'stm32f74'" in err and "stm32f746" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium")
def test_renders_in_headless_chromium(converted, tmp_path):
    """Chromium lays the page out: the SVG circles and bars are in the rendered DOM with real sizes,
    and a screenshot is produced."""
    shot = tmp_path / "shot.png"
    dom = _chromium(converted / "report.html", tmp_path, "--dump-dom")
    assert dom.count("<circle") >= 3 and 'class="plot pareto"' in dom and 'class="plot bars"' in dom
    _chromium(converted / "report.html", tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, "the page rendered to a real image"


def test_formats_the_cost_model_cannot_read_are_marked_not_estimated(tmp_path):
    from edgesmith.targets.report import target_results

    ir = tmp_path / "model.xml"
    ir.write_text("<net/>")
    result = target_results(ir, ["rpi4"])
    assert result["rpi4"]["p50_ms"] is None and result["rpi4"]["source"] == "not estimated"
    assert ".onnx and .tflite" in result["rpi4"]["note"]


@pytest.mark.skipif(
    ssh_tests.SSHD is None or shutil.which("ssh") is None, reason="needs OpenSSH (see test_targets_ssh)"
)
def test_a_device_measurement_lands_in_the_report(converted, sshd, cli, tmp_path):
    """profile over SSH an artifact of a convert folder: the measurement is kept in the folder, and
    `edgesmith report` shows it as measured on that device beside the estimate, with the error."""
    folder = tmp_path / "out"
    shutil.copytree(converted, folder)
    artifact = (
        folder / json.loads((folder / "report.json").read_text())["artifacts"][0]["path"].split("/")[-1]
    )
    config, port, _, user = sshd
    code, out, err = cli("profile", artifact, "--target", "rpi4", "--ssh", f"{user}@127.0.0.1:{port}", "--ssh-config",
                         config, "--remote-python", sys.executable, "--runs", "10", "--json")  # fmt: skip
    assert code == 0, err
    saved = folder / "measurements" / f"{artifact.name}.rpi4.json"
    assert saved.is_file() and f"measurement saved to {saved}" in err
    code, stdout, err = cli("report", folder)
    assert code == 0 and "1 measured" in stdout, err
    data = json.loads((folder / "targets.json").read_text())
    assert data["targets"] == ["rpi4", "stm32f746"] and data["timings_s"]["report"] > 0
    rpi4 = data["artifacts"][0]["targets"]["rpi4"]
    assert rpi4["source"] == "measured" and rpi4["device"] == f"{user}@127.0.0.1:{port}"
    assert rpi4["p50_ms"] == json.loads(out)["p50_ms"] and rpi4["estimate"]["source"] == "estimated"
    est = rpi4["estimate"]["p50_ms"]
    assert rpi4["estimate"]["error_pct"] == pytest.approx(
        (est - rpi4["p50_ms"]) / rpi4["p50_ms"] * 100, abs=0.1
    )
    assert data["artifacts"][0]["targets"]["stm32f746"]["source"] == "estimated"
    if CHROMIUM:
        dom = _chromium(folder / "report.html", tmp_path, "--dump-dom")
        assert re.search(
            rf'data-series="rpi4 \(measured on {user}@127.0.0.1:{port}\)"><circle class="point"', dom
        )
        assert "estimated " in dom
    record = json.loads(saved.read_text())  # the artifact was rebuilt since: the measurement is stale
    saved.write_text(json.dumps(record | {"artifact_sha256": "0" * 64}))
    assert cli("report", folder)[0] == 0
    rpi4 = json.loads((folder / "targets.json").read_text())["artifacts"][0]["targets"]["rpi4"]
    assert rpi4["source"] == "estimated" and "measured another build" in rpi4["stale_measurement"]


def test_save_bad_input_writes_nothing(converted, cli, tmp_path):
    artifact = next(converted.glob("*.onnx"))
    code, _, err = cli("profile", artifact, "--save", tmp_path, "--runs", "2")
    assert code == 2 and "has no report.json" in err
    code, _, err = cli("profile", artifact, "--target", "rpi4", "--save", converted)
    assert code == 2 and "this run is an estimate" in err
    code, _, err = cli("profile", SHIPPED_MODEL, "--save", converted, "--runs", "2")
    assert code == 2 and "mnist_cnn.onnx is not an artifact of" in err
    assert not (converted / "measurements").exists() and list(tmp_path.iterdir()) == []


def test_report_json_reads_back_as_the_records_it_was_written_from(converted, tmp_path):
    """targets/records.py: report.json read as typed records and written again is the same bytes, and
    the records are the run's (stages, per-target estimates, verification), frozen."""
    import dataclasses

    from edgesmith.cli.summary import rows, stage_rows
    from edgesmith.targets.records import Latency, Verification, read_report, write_report

    report = read_report(converted / "report.json")
    assert write_report(report, tmp_path).read_bytes() == (converted / "report.json").read_bytes()
    first = report.artifacts[0]
    assert isinstance(first.verify, Verification) and isinstance(first.latency, Latency)
    assert first.verify.metric == "top1" and first.verify.artifact > 95 and first.verify.cosine_min > 0.98
    assert first.verify.outputs[0].name == "logits" and report.verify == first.verify
    assert [s.after for s in report.stages] == ["original", "quantize"]
    assert report.stages[1].size_bytes == first.size_bytes < report.stages[0].size_bytes
    assert report.steps[-1].kind == "quantize" and report.steps[-1].details["engines"] == {
        "onnx": "onnxruntime"
    }
    assert set(report.original_targets) == {"rpi4", "stm32f746"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.path = "elsewhere.onnx"  # type: ignore[misc]
    table = rows(report)  # the summary convert prints, from the records read back
    assert table[2][:2] == [first.name, "int8"] and table[2][3] == f"{first.verify.artifact:.2f}"
    assert [row[0] for row in stage_rows(report)] == ["after step", "original", "quantize"]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda r: r["artifacts"][0]["verify"].update(samples="all"), "report.artifacts[0].verify.samples should be an integer"),
        (lambda r: r["artifacts"][0].pop("sha256"), "report.artifacts[0] has no 'sha256'"),
        (lambda r: r["stages"][1].update(size_bytes=None), "report.stages[1].size_bytes should be an integer, not null"),
        (lambda r: r["artifacts"][0]["latency"].update(p50_ms="fast"), "report.artifacts[0].latency.p50_ms should be a number"),
        (lambda r: r["original_targets"]["rpi4"].update(p50_ms=True), "report.original_targets.rpi4.p50_ms should be a number, not true/false"),
        (lambda r: r.update(steps=[{"mode": "static"}]), "report.steps[0].kind should be text"),
    ],
)  # fmt: skip
def test_a_damaged_report_json_is_one_line_naming_the_field(converted, cli, tmp_path, damage, named):
    folder = tmp_path / "out"
    shutil.copytree(converted, folder)
    report = json.loads((folder / "report.json").read_text())
    damage(report)
    (folder / "report.json").write_text(json.dumps(report))
    html = (folder / "report.html").read_bytes()
    code, _, err = cli("report", folder, "--target", "rpi4")
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, err
    assert "run `edgesmith convert` again" in err and (folder / "report.html").read_bytes() == html
