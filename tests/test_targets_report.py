"""`[profile] targets` in a recipe and `edgesmith report`: per-target estimates in report.json and a
self-contained HTML report, rendered in headless Chromium (apt-get install chromium) to check the
plots are really drawn."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


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
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    url = (converted / "report.html").as_uri()
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
    assert dom.count("<circle") >= 3 and 'class="plot pareto"' in dom and 'class="plot bars"' in dom
    subprocess.run(common + [f"--screenshot={shot}", "--window-size=1200,1600", url], capture_output=True,
                   timeout=90)  # fmt: skip
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, "the page rendered to a real image"


def test_formats_the_cost_model_cannot_read_are_marked_not_estimated(tmp_path):
    from edgesmith.targets.report import target_results

    ir = tmp_path / "model.xml"
    ir.write_text("<net/>")
    result = target_results(ir, ["rpi4"])
    assert result["rpi4"]["p50_ms"] is None and result["rpi4"]["source"] == "not estimated"
    assert ".onnx and .tflite" in result["rpi4"]["note"]
