"""Energy probes on real recorded outputs and fake sysfs trees on disk (no mocked code):
RAPL counters with wrap-around, Pi 5 PMIC via a `vcgencmd` executable that prints a recorded reading,
Android battery units, INA219/INA226 register math, an external meter's CSV, and the estimate."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edgesmith.errors import InputError
from edgesmith.targets import power, spec

DATA = Path(__file__).parent / "data" / "targets"


def _rapl_tree(root: Path, energy_uj: int, wrap: int = 262143328850) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
    return root


def test_rapl_counter_delta_and_wraparound(tmp_path):
    root = _rapl_tree(tmp_path, 1_000_000)
    rapl = power.Rapl(root)
    assert rapl.available()
    before = rapl.counter_uj()
    _rapl_tree(tmp_path, 3_500_000)
    assert power.Rapl.delta_j(before, rapl.counter_uj()) == pytest.approx(2.5)
    _rapl_tree(tmp_path, 262143328850 - 500_000)
    near_wrap = rapl.counter_uj()
    _rapl_tree(tmp_path, 1_500_000)  # the counter wrapped
    assert power.Rapl.delta_j(near_wrap, rapl.counter_uj()) == pytest.approx(2.0)
    assert not power.Rapl(tmp_path / "absent").available()


def test_pmic_parse_on_recorded_outputs():
    busy = (DATA / "pi5_pmic_read_adc.txt").read_text()
    rails = {"3V7_WL_SW": (0.0, 3.799996), "3V3_SYS": (0.06245952, 3.306322), "1V8_SYS": (0.1610285, 1.798289),
             "DDR_VDD2": (0.00780744, 1.102929), "DDR_VDDQ": (0.0, 0.6047613), "1V1_SYS": (0.1756674, 1.104394),
             "0V8_SW": (0.3279125, 0.8025633), "VDD_CORE": (10.87674, 0.8974594), "3V3_DAC": (0.0003663, 3.304942),
             "3V3_ADC": (0.00042735, 3.302194), "0V8_AON": (0.00579975, 0.7973619), "HDMI": (0.0136752, 5.07056)}  # fmt: skip
    assert power.parse_pmic(busy) == pytest.approx(sum(a * v for a, v in rails.values()))
    idle = (DATA / "pi5_pmic_read_adc_idle.txt").read_text()
    expected = 0.00390372 * 3.714624 + 0.0526968 * 3.312079 + 0.181528 * 1.801098 + 1.2 * 0.84
    assert power.parse_pmic(idle) == pytest.approx(expected)  # EXT5V has no current: left out
    with pytest.raises(InputError, match="Raspberry Pi 5"):
        power.parse_pmic('error=1 error_msg="Command not registered"')


def test_pmic_probe_measures_energy_per_inference(tmp_path):
    """A real executable stands in for vcgencmd: it prints the recorded idle reading, or the busy one
    while the benchmark loop holds a flag file. Energy = (busy - idle power) x time per run."""
    flag = tmp_path / "busy"
    script = tmp_path / "vcgencmd"
    script.write_text(f"#!/bin/sh\nif [ -e {flag} ]; then cat {DATA / 'pi5_pmic_read_adc.txt'}; "
                      f"else cat {DATA / 'pi5_pmic_read_adc_idle.txt'}; fi\n")  # fmt: skip
    script.chmod(0o755)
    probe = power.PiPmic([str(script), "pmic_read_adc"])
    assert probe.available()

    def run():
        flag.touch()
        time.sleep(0.02)

    energy = power.measure(probe, run, runs=40, idle_s=0.5)
    flag.unlink()
    busy_w = power.parse_pmic((DATA / "pi5_pmic_read_adc.txt").read_text())
    idle_w = power.parse_pmic((DATA / "pi5_pmic_read_adc_idle.txt").read_text())
    assert energy.source == "measured:pi5-pmic" and energy.idle_w == pytest.approx(idle_w)
    # ~20 ms per run at (busy - idle) W; sampling at <= 10 Hz blurs the edges a little
    assert energy.energy_mj == pytest.approx((busy_w - idle_w) * 20.5, rel=0.25)


def test_android_battery_units(tmp_path):
    battery = tmp_path / "battery"
    battery.mkdir()
    (battery / "current_now").write_text("-8613\n")  # microamps, negative while discharging
    (battery / "voltage_now").write_text("4311755\n")  # microvolts
    probe = power.AndroidBattery(battery)
    assert probe.available()
    assert probe.power_w() == pytest.approx(8613e-6 * 4.311755)
    assert not power.AndroidBattery(tmp_path / "none").available()


def test_ina219_and_ina226_register_math():
    # INA219 full scale at PGA /8: shunt 0x7D00 = 320.00 mV; negative full scale 0x8300 = -320 mV.
    # Bus 12.000 V = 3000 x 4 mV, shifted left by 3 (CNVR set: bit 1).
    bus = (3000 << 3) | 0b10
    assert power.ina219_power(0x7D00, bus, 0.1) == pytest.approx(12.0 * 3.2)
    assert power.ina219_power(0x8300, bus, 0.1) == pytest.approx(-12.0 * 3.2)
    # INA226: shunt LSB 2.5 uV (0x0FA0 = 4000 -> 10 mV), bus LSB 1.25 mV (0x2580 = 9600 -> 12 V).
    assert power.ina226_power(0x0FA0, 0x2580, 0.01) == pytest.approx(12.0 * 1.0)


def test_external_meter_csv(tmp_path):
    csv = tmp_path / "meter.csv"
    rows = ["time_s,voltage_v,current_a"] + [
        f"{t / 10:.1f},5.0,{0.4 if 10 <= t <= 30 else 0.2}" for t in range(51)
    ]
    csv.write_text("\n".join(rows) + "\n")
    joules, seconds = power.csv_energy_j(csv, 1.0, 3.0)
    assert seconds == pytest.approx(2.0) and joules == pytest.approx(2.0 * 5.0 * 0.4)
    with pytest.raises(InputError, match="no such file"):
        power.csv_energy_j(tmp_path / "absent.csv", 0, 1)


def test_estimate_from_target_figures_says_so():
    rpi4 = spec.get("rpi4")
    energy = power.estimate(rpi4, latency_ms=100.0, threads=4)
    assert energy.energy_mj == pytest.approx((6.4 - 2.7) * 100.0)
    assert energy.source == "estimated from rpi4 power figures"
    assert power.estimate(rpi4, 100.0, threads=1).energy_mj == pytest.approx((6.4 - 2.7) / 4 * 100.0)


def test_missing_probe_is_a_clear_error():
    if not os.path.isdir("/sys/class/powercap"):
        with pytest.raises(InputError, match="rapl power probe is not present"):
            power.find_probe("rapl")
    with pytest.raises(InputError, match="unknown power probe"):
        power.find_probe("ina2199")


def test_probe_names_and_a_failing_probe_surface_on_the_callers_thread():
    assert power.probe_name("android") == "android-battery"
    assert power.parse_android_battery("-8613\n4311755\n") == pytest.approx(8613e-6 * 4.311755)

    class Unplugged:
        name, calls = "android-battery", 0

        def power_w(self):
            self.calls += 1
            if self.calls > 2:
                return power.parse_android_battery("")  # the device went away
            return 1.0

    with pytest.raises(InputError, match="not two integers"):
        power.during(Unplugged(), lambda: time.sleep(0.5), idle_s=0.1)
