"""adb: the real `adb` binary for the no-device path (on a private adb server port), and recorded
real `benchmark_model` outputs for parsing (tests/data/targets/README.md says where each is from)."""

from __future__ import annotations

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
