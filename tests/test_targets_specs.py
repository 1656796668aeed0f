"""Target specs as data, `edgesmith targets`, and the `profile --target` contract (estimate paths)."""

from __future__ import annotations

import json

import pytest

from edgesmith.errors import InputError
from edgesmith.targets import spec

from conftest import SHIPPED_MODEL

REQUIRED = {"rpi4", "rpi5", "pixel2", "pixel3a", "stm32f746", "nrf52840", "esp32-s3", "host"}
# current devices (2023-2024 silicon), each with a cited spec
CURRENT = {"pixel8", "galaxy-s23", "jetson-orin-nano", "stm32h7a3"}


def test_every_required_target_is_shipped_and_cites_sources():
    targets = spec.registry()
    assert set(targets) >= REQUIRED | CURRENT
    for t in targets.values():
        text = t.path.read_text()
        assert "Source" in text or "source" in text, f"{t.path.name} must cite its figures"
        assert t.cores >= 1 and t.clock_ghz > 0 and t.macs_per_cycle["fp32"] > 0 and t.ram_bytes > 0
        assert set(t.efficiency) >= {"fp32"} and t.fitted
    assert targets["stm32f746"].ram_bytes == 320 * 1024 and targets["stm32f746"].flash_bytes == 1024 * 1024
    assert targets["nrf52840"].ram_bytes == 256 * 1024 and targets["nrf52840"].is_mcu
    for name in CURRENT:  # an unverified or estimated figure says so in its file
        text = targets[name].path.read_text()
        assert "ESTIMATED" in text or "not verified" in text, f"{name}.toml must mark its estimates"
    assert targets["stm32h7a3"].ram_bytes == 1400 * 1024 and targets["jetson-orin-nano"].cores == 6


def test_unknown_target_suggests_the_closest():
    with pytest.raises(InputError, match=r"unknown target 'stm32f7' \(did you mean 'stm32f746'\?\)"):
        spec.get("stm32f7")


def test_targets_cli(cli):
    code, out, _ = cli("targets")
    assert code == 0 and all(name in out for name in REQUIRED)
    code, out, _ = cli("targets", "show", "rpi4")
    assert code == 0 and "Cortex-A72" in out and "GMAC/s" in out and "rpi4.toml" in out
    code, out, _ = cli("targets", "show", "esp32-s3", "--json")
    assert code == 0 and json.loads(out)["kind"] == "mcu"
    code, _, err = cli("targets", "show", "pixel")
    assert code == 2 and err.count("\n") == 1 and "did you mean" in err


def test_profile_estimates_a_named_target(cli):
    code, out, err = cli("profile", SHIPPED_MODEL, "--target", "rpi4", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == "estimated" and data["target"] == "rpi4" and data["p50_ms"] > 0
    assert "p90_ms" not in data, "p90/p99 only when measured"
    assert data["energy_mj"] > 0 and data["energy_source"] == "estimated from rpi4 power figures"


def test_profile_estimate_flag_on_host_and_measurement_side_by_side(cli):
    code, out, _ = cli("profile", SHIPPED_MODEL, "--target", "host", "--estimate", "--threads", "1", "--json")
    estimated = json.loads(out)
    code2, out2, _ = cli("profile", SHIPPED_MODEL, "--threads", "1", "--runs", "50", "--json")
    measured = json.loads(out2)
    assert code == code2 == 0
    assert estimated["source"] == "estimated" and measured["source"] == "measured"
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "runs", "threads", "backend"):
        assert key in measured, "the existing keys stay"
    assert 0.2 < estimated["p50_ms"] / measured["p50_ms"] < 5


def test_profile_refuses_a_format_the_target_cannot_run(cli):
    code, _, err = cli("profile", SHIPPED_MODEL, "--target", "stm32f746")
    assert code == 2 and "stm32f746 runs .tflite/.cc files" in err and "--format tflite" in err


def test_profile_refuses_a_probe_that_is_not_there(cli, tmp_path, monkeypatch):
    code, _, err = cli("profile", SHIPPED_MODEL, "--probe", "pi5-pmic", "--runs", "5")
    assert code == 2 and "pi5-pmic power probe is not present" in err
    code, _, err = cli("profile", SHIPPED_MODEL, "--probe", "rapll", "--runs", "5")
    assert code == 2 and "did you mean 'rapl'" in err


def test_profile_lists_the_slowest_layers(cli):
    code, out, _ = cli("profile", SHIPPED_MODEL, "--layers", "2", "--threads", "1", "--runs", "10", "--json")
    measured = json.loads(out)["layers"]
    assert code == 0 and len(measured) == 2 and measured[0]["source"] == "measured"
    assert measured[0]["ms"] >= measured[1]["ms"] and measured[0]["name"].startswith("node_conv2d")
    code, out, _ = cli("profile", SHIPPED_MODEL, "--target", "rpi5", "--layers", "3", "--json")
    assert code == 0 and [r["source"] for r in json.loads(out)["layers"]] == ["estimated"] * 3
