"""Measure an artifact on an Android device over adb: push it, run LiteRT's `benchmark_model`
(for .tflite, when it is in /data/local/tmp) or the Python runner (where the device has Python,
e.g. Termux), and parse what they print.

`benchmark_model` prints, among other lines (times in microseconds, sometimes in %g notation):
  count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
  Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
and, in newer builds, `p5=... median=... p95=...` on the count line.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import power

REMOTE = "/data/local/tmp/edgesmith"
BENCHMARK = "/data/local/tmp/benchmark_model"
BATTERY = "/sys/class/power_supply/battery"
RUNNER = Path(__file__).with_name("runner.py")
_NUM = r"([-\d.eE+]+)"


def devices() -> dict[str, str]:
    """{serial: state} from `adb devices` ('device', 'unauthorized', 'offline' ...)."""
    done = _adb(["devices"], timeout=30)
    out = {}
    for line in done.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def _adb(args: list[str], timeout: float, serial: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("adb") is None:
        raise InputError("`adb` is not installed; install Android platform-tools (apt-get install adb)")
    command = ["adb", *(["-s", serial] if serial else []), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InputError(f"`adb {' '.join(args[:2])}` did not finish within {timeout:.0f} s; "
                         "raise --timeout or lower --runs") from None  # fmt: skip


def shell(*words: str) -> list[str]:
    """`adb shell` arguments running one program on the device. adb joins its arguments with spaces
    and the device's shell parses the result, so every word is quoted (an artifact named
    `a;reboot.tflite` stays a file name)."""
    return ["shell", shlex.join(words)]


def check(serial: str) -> None:
    """Raise a clear error unless `serial` is connected and authorized."""
    if serial.startswith("-"):
        raise InputError(
            f"--adb '{serial}' is not a device serial (it starts with '-'); `adb devices` lists them"
        )
    found = devices()
    if serial not in found:
        listed = ", ".join(f"{s} ({st})" for s, st in found.items()) or "none"
        raise InputError(
            f"no Android device '{serial}' over adb (adb devices shows: {listed}); plug it in with USB "
            "debugging on, or `adb connect HOST:PORT` for Wi-Fi debugging"
        )
    if found[serial] != "device":
        raise InputError(f"adb device '{serial}' is {found[serial]}; accept the debugging prompt on the "
                         "device (or replug it) and retry")  # fmt: skip


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """The timed-run statistics of `benchmark_model` output, in milliseconds.

    The last `count=` line is the timed run (the first is the warm-up). p50 is the median when the
    tool prints one, else its average (`p50_is` says which)."""
    lines = [m for m in re.finditer(rf"count={_NUM}(.*)", text)]
    if not lines:
        raise InputError("benchmark_model printed no timings; run it by hand with --graph to see why")
    count, rest = lines[-1].group(1), lines[-1].group(2)
    fields = dict(re.findall(rf"(\w+)={_NUM}", rest))
    us = {k: float(v) for k, v in fields.items()}
    out = {
        "runs": int(float(count)),
        "mean_ms": us["avg"] / 1e3,
        "min_ms": us["min"] / 1e3,
        "max_ms": us["max"] / 1e3,
        "stdev_ms": us.get("std", 0.0) / 1e3,
        "p50_ms": us.get("median", us["avg"]) / 1e3,
        "p50_is": "median" if "median" in us else "mean (benchmark_model prints no median)",
        "source": "measured",
        "backend": "litert benchmark_model",
    }
    if "p95" in us:
        out["p95_ms"] = us["p95"] / 1e3
    summary = re.search(rf"Init: {_NUM}, First inference: {_NUM}", text)
    if summary:
        out["init_ms"], out["first_ms"] = float(summary.group(1)) / 1e3, float(summary.group(2)) / 1e3
    memory = re.search(rf"(?:footprint|memory footprint).*?overall={_NUM}", text)
    if memory:
        out["peak_rss_mb"] = float(memory.group(1))
    return out


class AdbBattery:
    """The phone's battery over `adb shell`: `cat current_now voltage_now` (µA, µV) from the host, at
    <= 10 Hz on power.Sampler's thread while the benchmark runs. `command` is the shell prefix."""

    name = "android-battery"

    def __init__(self, serial: str, command: list[str] | None = None):
        self.serial = serial
        self.command = command or ["adb", "-s", serial, "shell"]

    def _shell(self, *words: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.command, shlex.join(words)], capture_output=True, text=True, timeout=15
            )
        except subprocess.TimeoutExpired:
            raise InputError(
                f"reading the battery of {self.serial} over adb hung; replug it and retry"
            ) from None

    def available(self) -> bool:
        return self._shell("ls", f"{BATTERY}/current_now", f"{BATTERY}/voltage_now").returncode == 0

    def status(self) -> str:
        return self._shell("cat", f"{BATTERY}/status").stdout.strip()

    def power_w(self) -> float:
        from .power import parse_android_battery

        return parse_android_battery(
            self._shell("cat", f"{BATTERY}/current_now", f"{BATTERY}/voltage_now").stdout
        )


def battery_probe(serial: str, probe: str | None, command: list[str] | None = None) -> AdbBattery | None:
    """The battery probe for `--probe android-battery` (an error when absent or charging) or `auto`
    (None then: the energy is estimated). Charging over USB adds the charger's current to the
    battery's, so a charging phone gives no usable figure."""
    if probe in (None, "none"):
        return None
    if probe not in ("auto", "android-battery"):
        raise InputError(f"over adb, --probe can be android-battery (or auto, none), not '{probe}'; "
                         "other probes run on a Linux board with --ssh")  # fmt: skip
    battery = AdbBattery(serial, command)
    if not battery.available():
        if probe == "auto":
            return None
        raise InputError(f"the android-battery power probe is not present on {serial} (no {BATTERY}/current_now "
                         "and voltage_now); drop --probe for an estimate")  # fmt: skip
    status = battery.status()
    if status in ("Charging", "Full"):
        if probe == "auto":
            return None
        raise InputError(f"{serial} is charging (battery status: {status}), so the battery current includes the "
                         "charger's; use Wi-Fi debugging (adb tcpip 5555, adb connect IP) and unplug USB, or "
                         "drop --probe for an estimate")  # fmt: skip
    return battery


def profile(serial: str, artifact: str | Path, runs: int = 50, warmup: int = 5,
            threads: int | None = None, timeout: float = 300.0, probe: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Measure on the phone; with a battery probe, energy per inference = (mean power while the
    benchmark runs - idle power just before) x mean latency, labelled measured:android-battery."""
    artifact = Path(artifact)
    started = time.perf_counter()
    check(serial)
    battery = battery_probe(serial, probe)
    _adb(shell("mkdir", "-p", REMOTE), 30, serial)
    pushed = _adb(["push", str(artifact), f"{REMOTE}/{artifact.name}"], timeout, serial)
    if pushed.returncode != 0:
        raise InputError(f"adb push to {serial} failed ({pushed.stderr.strip()[:200]}); check free space")
    model = f"{REMOTE}/{artifact.name}"
    has_tool = _adb(shell("ls", BENCHMARK), 30, serial).returncode == 0
    if artifact.suffix.lower() == ".tflite" and has_tool:
        words = [BENCHMARK, f"--graph={model}", f"--num_runs={runs}", f"--warmup_runs={warmup}"]
        words += [f"--num_threads={threads}"] if threads else []
        done, idle_w, busy_w = _run(shell(*words), timeout, serial, battery)
        result = parse_benchmark_model(done.stdout + done.stderr)
    else:
        python = _adb(["shell", "command -v python3 || command -v python"], 30, serial).stdout.strip()
        if not python:
            raise InputError(
                f"{serial} has no {BENCHMARK} and no Python: push LiteRT's benchmark_model there "
                "(.tflite) or install Python (e.g. Termux) for the edgesmith runner"
            )
        _adb(["push", str(RUNNER), f"{REMOTE}/runner.py"], 60, serial)
        words = [python, f"{REMOTE}/runner.py", model, "--runs", str(runs), "--warmup", str(warmup)]
        words += ["--threads", str(threads)] if threads else []
        done, idle_w, busy_w = _run(shell(*words), timeout, serial, battery)
        result = _runner_json(done, serial, artifact)
    _adb(shell("rm", "-rf", REMOTE), 30, serial)
    if battery is not None and idle_w is not None and busy_w is not None:  # measured with the battery
        energy = power.Energy(
            max(busy_w - idle_w, 0.0) * result["mean_ms"], f"measured:{battery.name}", idle_w, busy_w
        )
        result |= energy.to_json() | {"idle_w": round(idle_w, 6), "busy_w": round(busy_w, 6)}
    return result | {
        "device": f"adb:{serial}",
        "transport": "adb",
        "wall_s": round(time.perf_counter() - started, 2),
    }


def _run(
    args: list[str], timeout: float, serial: str, battery: AdbBattery | None
) -> tuple[subprocess.CompletedProcess[str], float | None, float | None]:
    """(completed adb call, idle W, busy W); the powers are None without a battery probe."""
    if battery is None:
        return _adb(args, timeout, serial), None, None
    return power.during(battery, lambda: _adb(args, timeout, serial))


def _runner_json(done: subprocess.CompletedProcess[str], serial: str, artifact: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise InputError(f"the runner on {serial} failed: {done.stderr.strip()[:200]}") from None
    if data.get("error") == "missing_backend":
        raise InputError(
            f"{serial} cannot run {artifact.name}: install {' or '.join(data['wanted'])} for its Python"
        )
    if data.get("error"):
        raise InputError(f"{serial} could not load {artifact.name} ({data.get('detail', '')})")
    return data
