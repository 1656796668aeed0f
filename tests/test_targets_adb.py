"""adb: the real `adb` binary for the no-device path (on a private adb server port), recorded real
`benchmark_model` outputs for parsing (tests/data/targets/README.md says where each is from), and
battery energy over `adb shell` with a stand-in `adb` executable that answers with recorded readings."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from edgesmith.errors import InputError
from edgesmith.targets import adb

from conftest import SHIPPED_MODEL

DATA = Path(__file__).parent / "data" / "targets"


def test_parse_android_output():
    r = adb.parse_benchmark_model((DATA / "benchmark_model_android_yolov5s.txt").read_text())
    assert (
        r["runs"] == 50 and r["mean_ms"] == pytest.approx(249.684) and r["min_ms"] == pytest.approx(247.067)
    )
    assert r["p50_ms"] == pytest.approx(249.684) and r["p50_is"].startswith("mean")
    assert r["init_ms"] == pytest.approx(16.242) and r["peak_rss_mb"] == pytest.approx(138.809)


def test_parse_takes_the_timed_run_not_the_warmup_and_reads_g_notation():
    r = adb.parse_benchmark_model((DATA / "benchmark_model_mobilenet_v1_qemu.txt").read_text())
    assert (
        r["runs"] == 50 and r["mean_ms"] == pytest.approx(2950.34) and r["stdev_ms"] == pytest.approx(109.798)
    )
    assert r["first_ms"] == pytest.approx(3512.391) and r["peak_rss_mb"] == pytest.approx(46.0859)


def test_parse_prefers_the_median_when_printed():
    r = adb.parse_benchmark_model((DATA / "benchmark_model_logcat_median.txt").read_text())
    assert (
        r["p50_ms"] == pytest.approx(141.253)
        and r["p50_is"] == "median"
        and r["p95_ms"] == pytest.approx(187.533)
    )


def test_parse_without_timings_is_a_clear_error():
    with pytest.raises(InputError, match="printed no timings"):
        adb.parse_benchmark_model("ERROR: Could not open '/data/local/tmp/m.tflite'.\n")


@pytest.fixture
def private_adb_server(monkeypatch):
    """Point adb at a server on a free port so other adb users on the machine are untouched."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    yield
    subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30, env=os.environ.copy())


@pytest.mark.skipif(shutil.which("adb") is None, reason="adb not installed: apt-get install adb")
def test_no_device_is_a_clear_error(private_adb_server, cli):
    assert adb.devices() == {}
    code, _, err = cli("profile", SHIPPED_MODEL, "--target", "pixel2", "--adb", "emulator-5554")
    assert code == 2
    assert (
        "no Android device 'emulator-5554' over adb (adb devices shows: none)" in err and err.count("\n") == 1
    )
    code, _, err = cli("profile", SHIPPED_MODEL, "--adb", "emulator-5554", "--probe", "android")
    assert code == 2 and "no Android device 'emulator-5554'" in err


# Two real readings of one Qualcomm phone's battery (logcat BatteryService uevents, stored-index file
# id 8996724694): current_now in uA (negative: discharging), voltage_now in uV; its status was Full.
IDLE, BUSY = "-3705 4311744", "-10316 4311298"


def _fake_adb(tmp_path, monkeypatch, status: str = "Discharging") -> None:
    """An `adb` executable on PATH that answers like a phone with benchmark_model: the recorded busy
    battery reading while the benchmark runs (it prints the recorded yolov5s output after 2 s), the
    idle one otherwise. Only edgesmith's own code runs in between."""
    flag, bench = tmp_path / "busy", DATA / "benchmark_model_android_yolov5s.txt"
    script = tmp_path / "bin" / "adb"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
[ "$1" = -s ] && shift 2
case "$*" in
  devices) printf 'List of devices attached\\nPHONE1\\tdevice\\n' ;;
  *status*) echo {status} ;;
  *"cat /sys/class/power_supply/battery/current_now"*)
    if [ -e {flag} ]; then printf '%s\\n' {BUSY}; else printf '%s\\n' {IDLE}; fi ;;
  "shell /data/local/tmp/benchmark_model"*) touch {flag}; sleep 2; cat {bench}; rm {flag} ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")


def test_battery_power_is_read_over_adb_during_the_benchmark(tmp_path, monkeypatch, cli):
    _fake_adb(tmp_path, monkeypatch)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    code, out, err = cli(
        "profile", model, "--target", "pixel2", "--adb", "PHONE1", "--probe", "android", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    idle_w, busy_w = 3705e-6 * 4.311744, 10316e-6 * 4.311298
    assert data["energy_source"] == "measured:android-battery" and data["device"] == "adb:PHONE1"
    assert data["idle_w"] == pytest.approx(idle_w, rel=1e-3)
    # (busy - idle) W x the mean latency; the 10 Hz sampling blurs the edges of the 2 s run a little
    assert data["energy_mj"] == pytest.approx((busy_w - idle_w) * 249.684, rel=0.2)


def test_a_charging_phone_gives_no_battery_energy(tmp_path, monkeypatch, cli):
    _fake_adb(tmp_path, monkeypatch, status="Full")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    code, _, err = cli("profile", model, "--target", "pixel2", "--adb", "PHONE1", "--probe", "android")
    assert code == 2 and "PHONE1 is charging (battery status: Full)" in err and err.count("\n") == 1
    code, out, err = cli(
        "profile", model, "--target", "pixel2", "--adb", "PHONE1", "--json"
    )  # auto: estimate
    assert code == 0 and json.loads(out)["energy_source"] == "estimated from pixel2 power figures"


def test_probe_errors_before_any_device_work(cli):
    code, _, err = cli("profile", SHIPPED_MODEL, "--adb", "X", "--probe", "rapl")
    assert code == 2 and "over adb, --probe can be android-battery" in err
    code, _, err = cli("profile", SHIPPED_MODEL, "--probe", "androd")
    assert code == 2 and "did you mean 'android-battery'" in err
