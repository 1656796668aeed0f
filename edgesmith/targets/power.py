"""Energy per inference: power probes, and an estimate from the target's figures when none exists.

Energy per inference = (energy during the timed runs - idle power x their duration) / runs.
Counter probes (RAPL) give energy directly; the others give power samples, read by a thread at
<= 10 Hz so the timing loop is not disturbed, and integrated with the trapezoid rule. Every result
says where it came from: `measured:<probe>` or `estimated from <target> power figures`.
"""

from __future__ import annotations

import csv
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import InputError

if TYPE_CHECKING:
    from .spec import Target

T = TypeVar("T")

MAX_HZ = 10.0


@dataclass(frozen=True)
class Energy:
    energy_mj: float  # per inference
    source: str
    idle_w: float | None = None
    active_w: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"energy_mj": round(self.energy_mj, 4), "energy_source": self.source}


def estimate(target: Target, latency_ms: float, threads: int | None = None) -> Energy:
    """(active - idle) power of the cores in use x latency: mJ = W x ms."""
    used = min(threads or target.cores, target.cores) / target.cores
    dynamic = (target.active_w - target.idle_w) * used
    return Energy(dynamic * latency_ms, f"estimated from {target.name} power figures", target.idle_w,
                  target.idle_w + dynamic)  # fmt: skip


# -- probes -------------------------------------------------------------------------------------
class Rapl:
    """Linux RAPL package counters: /sys/class/powercap/intel-rapl:N/energy_uj (microjoules, wraps
    at max_energy_range_uj). AMD Zen exposes the same interface."""

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap"):
        self.zones = sorted(Path(root).glob("intel-rapl:[0-9]")) if Path(root).is_dir() else []

    def available(self) -> bool:
        return any((z / "energy_uj").is_file() for z in self.zones)

    def counter_uj(self) -> list[tuple[int, int]]:
        return [(int((z / "energy_uj").read_text()), int((z / "max_energy_range_uj").read_text()))
                for z in self.zones]  # fmt: skip

    @staticmethod
    def delta_j(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> float:
        total = 0
        for (b, wrap), (a, _) in zip(before, after, strict=True):
            total += a - b if a >= b else a + wrap - b
        return total / 1e6


def parse_pmic(text: str) -> float:
    """Watts from `vcgencmd pmic_read_adc` (Pi 5): sum of V x A over rails that report both.

    Lines look like `  VDD_CORE_A current(7)=10.87674000A` and `  VDD_CORE_V volt(15)=0.89745940V`;
    EXT5V_V and BATT_V have no current and are left out (the rails miss the 5 V USB/fan load)."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for rail, kind, value in re.findall(r"(\w+)_([AV]) \w+\(\d+\)=([-\d.]+)[AV]", text):
        (amps if kind == "A" else volts)[rail] = float(value)
    if not amps:
        raise InputError("no rail currents in the `vcgencmd pmic_read_adc` output; is this a Raspberry Pi 5?")
    return sum(a * volts[r] for r, a in amps.items() if r in volts)


class PiPmic:
    name = "pi5-pmic"

    def __init__(self, command: tuple[str, ...] = ("vcgencmd", "pmic_read_adc")):
        self.command = list(command)

    def available(self) -> bool:
        try:
            return subprocess.run(self.command, capture_output=True, timeout=5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def power_w(self) -> float:
        return parse_pmic(subprocess.run(self.command, capture_output=True, text=True, timeout=5).stdout)


class AndroidBattery:
    """/sys/class/power_supply/battery: current_now in microamps (sign differs by vendor; negative
    while discharging on Qualcomm), voltage_now in microvolts. Power = |I| x V."""

    name = "android-battery"

    def __init__(self, root: str | Path = "/sys/class/power_supply/battery"):
        self.root = Path(root)

    def available(self) -> bool:
        return (self.root / "current_now").is_file() and (self.root / "voltage_now").is_file()

    def power_w(self) -> float:
        return parse_android_battery(
            (self.root / "current_now").read_text() + (self.root / "voltage_now").read_text()
        )


def parse_android_battery(text: str) -> float:
    """Watts from `current_now` then `voltage_now` as printed by `cat` (µA and µV: the kernel's
    power_supply ABI, and Android's BatteryManager BATTERY_PROPERTY_CURRENT_NOW in microamperes).
    The current's sign differs by vendor (negative while discharging on Qualcomm), so |I| x V."""
    try:
        micro_amps, micro_volts = (int(v) for v in text.split()[:2])
    except ValueError:
        raise InputError(f"the battery's current_now/voltage_now read as {text.strip()[:80]!r}, not two "
                         "integers; this device does not expose battery power") from None  # fmt: skip
    return abs(micro_amps) * 1e-6 * micro_volts * 1e-6


def ina219_power(shunt_reg: int, bus_reg: int, shunt_ohms: float) -> float:
    """INA219 (TI SBOS448): shunt voltage register 0x01 is signed, LSB 10 uV; bus voltage register
    0x02 holds the voltage in bits 15..3 with LSB 4 mV (bit 1 CNVR, bit 0 OVF)."""
    shunt_v = _signed16(shunt_reg) * 10e-6
    bus_v = (bus_reg >> 3) * 4e-3
    return bus_v * shunt_v / shunt_ohms


def ina226_power(shunt_reg: int, bus_reg: int, shunt_ohms: float) -> float:
    """INA226 (TI SBOS547): shunt register 0x01 signed, LSB 2.5 uV; bus register 0x02 LSB 1.25 mV."""
    return bus_reg * 1.25e-3 * _signed16(shunt_reg) * 2.5e-6 / shunt_ohms


def _signed16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


class Ina2xx:
    """An INA219/INA226 on Linux I2C (/dev/i2c-N): registers are big-endian 16-bit words."""

    I2C_SLAVE = 0x0703

    def __init__(self, bus: int = 1, address: int = 0x40, shunt_ohms: float = 0.1, chip: str = "ina219"):
        self.device, self.address, self.shunt_ohms = f"/dev/i2c-{bus}", address, shunt_ohms
        self.decode = {"ina219": ina219_power, "ina226": ina226_power}[chip]
        self.name = chip

    def available(self) -> bool:
        return Path(self.device).exists()

    def _word(self, fd: int, register: int) -> int:
        import os

        os.write(fd, bytes([register]))
        high, low = os.read(fd, 2)
        return high << 8 | low

    def power_w(self) -> float:
        import fcntl
        import os

        fd = os.open(self.device, os.O_RDWR)
        try:
            fcntl.ioctl(fd, self.I2C_SLAVE, self.address)
            return self.decode(self._word(fd, 0x01), self._word(fd, 0x02), self.shunt_ohms)
        finally:
            os.close(fd)


def csv_energy_j(path: str | Path, start: float, end: float) -> tuple[float, float]:
    """(joules, seconds) between `start` and `end` (seconds, the meter's clock) from an external
    meter's CSV with a `time_s` column and either `power_w` or `voltage_v` + `current_a`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"power CSV {path}: no such file; check the path")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "time_s" not in rows[0]:
        raise InputError(f"power CSV {path} needs a time_s column and power_w (or voltage_v and current_a)")
    samples = []
    for row in rows:
        t = float(row["time_s"])
        watts = (
            float(row["power_w"]) if row.get("power_w") else float(row["voltage_v"]) * float(row["current_a"])
        )
        if start <= t <= end:
            samples.append((t, watts))
    return integrate(samples), (samples[-1][0] - samples[0][0]) if len(samples) > 1 else 0.0


class Reading(Protocol):
    """A probe that reads instantaneous power (all but RAPL, which counts energy): what Sampler polls."""

    def power_w(self) -> float: ...


Probe = Rapl | PiPmic | AndroidBattery | Ina2xx


def integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoid rule over (seconds, watts): joules."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False))


class Sampler:
    """Reads `probe.power_w()` on a background thread at <= 10 Hz until stopped."""

    def __init__(self, probe: Reading, hz: float = MAX_HZ):
        self.probe, self.period = probe, 1.0 / min(hz, MAX_HZ)
        self.samples: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append((time.perf_counter(), self.probe.power_w()))
                self._stop.wait(self.period)
        except Exception as exc:  # re-raised on the caller's thread by __exit__
            self.error = exc

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error
        self.samples.append((time.perf_counter(), self.probe.power_w()))

    def mean_w(self) -> float:
        seconds = self.samples[-1][0] - self.samples[0][0]
        return integrate(self.samples) / seconds if seconds > 0 else self.samples[-1][1]


def during(probe: Reading, work: Callable[[], T], idle_s: float = 1.0) -> tuple[T, float, float]:
    """(work(), idle W, mean W while `work` ran), for a run that cannot be split into calls (a
    benchmark tool on a phone). Energy per inference is then (busy - idle W) x the mean latency."""
    with Sampler(probe) as idle:
        time.sleep(idle_s)
    with Sampler(probe) as busy:
        value = work()
    return value, idle.mean_w(), busy.mean_w()


def measure(probe: Probe, run: Callable[[], object], runs: int, idle_s: float = 1.0) -> Energy:
    """Energy per call of `run()` over `runs` calls, minus the idle power measured just before."""
    if isinstance(probe, Rapl):
        before = probe.counter_uj()
        time.sleep(idle_s)
        idle_w = Rapl.delta_j(before, probe.counter_uj()) / idle_s
        before, t0 = probe.counter_uj(), time.perf_counter()
        for _ in range(runs):
            run()
        seconds, joules = time.perf_counter() - t0, Rapl.delta_j(before, probe.counter_uj())
    else:
        with Sampler(probe) as idle:
            time.sleep(idle_s)
        idle_w = integrate(idle.samples) / max(idle.samples[-1][0] - idle.samples[0][0], 1e-9)
        with Sampler(probe) as busy:
            for _ in range(runs):
                run()
        seconds = busy.samples[-1][0] - busy.samples[0][0]
        joules = integrate(busy.samples)
    dynamic = max(joules - idle_w * seconds, 0.0)
    return Energy(dynamic / runs * 1e3, f"measured:{probe.name}", idle_w, joules / max(seconds, 1e-9))


NAMES = ("auto", "none", "rapl", "pi5-pmic", "android-battery", "ina219", "ina226")
ALIASES = {"android": "android-battery", "pmic": "pi5-pmic"}


def probe_name(name: str) -> str:
    """The canonical probe name; an InputError with the closest one for an unknown name."""
    name = ALIASES.get(name, name)
    if name not in NAMES:
        from ..errors import closest

        raise InputError(
            f"unknown power probe '{name}'{closest(name, NAMES)}; choose from {', '.join(NAMES)}"
        )
    return name


def find_probe(name: str = "auto") -> Probe | None:
    """The named probe, or the first present one for 'auto' (None when nothing is there)."""
    name = ALIASES.get(name, name)
    probes: dict[str, Callable[[], Probe]] = {"rapl": Rapl, "pi5-pmic": PiPmic, "android-battery": AndroidBattery, "ina219": Ina2xx,
              "ina226": lambda: Ina2xx(chip="ina226")}  # fmt: skip
    if name == "auto":
        return next((p for p in (Rapl(), AndroidBattery(), PiPmic()) if p.available()), None)
    if name not in probes:
        from ..errors import closest

        raise InputError(f"unknown power probe '{name}'{closest(name, probes)}; choose from {sorted(probes)}")
    probe = probes[name]()
    if not probe.available():
        raise InputError(f"the {name} power probe is not present on this machine; drop --probe to get an "
                         "estimate from the target's power figures")  # fmt: skip
    return probe
