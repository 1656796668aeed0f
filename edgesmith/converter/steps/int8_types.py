"""Choose INT8 activation and weight types for the CPU that will run the model.

- x86 with VNNI: uint8 activations x int8 weights. VPDPBUSD multiplies u8 by s8 and accumulates in
  int32 without saturating, and ONNX Runtime's fastest x86 kernels are U8S8.
- x86 without VNNI: uint8 x int8 with `reduce_range` (7-bit weights). The U8S8 path there goes
  through VPMADDUBSW, whose int16 sums of pairs can saturate; ONNX Runtime's docs advise
  reduce_range (or U8U8) for it. S8S8 is no way out on x86: ONNX Runtime never fuses int8
  activations into integer kernels there (QDQIsInt8Allowed is false), so S8S8 runs at 0.65-0.77
  of fp32 latency against 0.29-0.44 for U8S8 (docs/decisions/int8-ort-settings.md).
- ARM: int8 x int8 with symmetric activations, which the SDOT/SMMLA kernels (and XNNPACK, LiteRT)
  are built for. MCUs of other ISAs (the ESP32-S3's Xtensa) run TFLite Micro's int8 x int8 kernels:
  the same types.

Who decides: `quantize.target` when a recipe sets it to anything but `host`; else the recipe's device
targets (`[profile] targets = ["rpi4"]`: their spec files say the ISA), else this machine. When the
targets mix ISAs, the first device that is not the host decides (artifacts are built for devices;
the host is listed to compare with), and the reason names the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ...targets.cpu import has_vnni, isa

TARGETS = ("host", "x86-vnni", "x86", "arm")


@dataclass(frozen=True)
class Int8Types:
    activations: str  # "uint8" | "int8"
    weights: str
    target: str  # the resolved target, never "host"
    reason: str
    reduce_range: bool = False  # 7-bit weights: avoids int16 saturation on x86 without VNNI
    symmetric_activations: bool = False  # zero point 0, as ARM's int8 kernels and XNNPACK want

    def to_json(self) -> dict:
        return dict(self.__dict__)


def resolve_target(target: str) -> str:
    """'host' -> what this machine is ('x86-vnni', 'x86' or 'arm'); other names pass through."""
    if target != "host":
        return target
    kind = isa()
    if kind == "x86":
        return "x86-vnni" if has_vnni() else "x86"
    return "arm" if kind == "arm" else "x86"


def for_device(name: str) -> str:
    """The types target (one of TARGETS but 'host') for a device spec, from the ISA its file gives."""
    from ...targets import spec

    target = spec.get(name)
    if target.kind == "host":
        return resolve_target("host")
    if target.isa_family == "x86":
        return "x86-vnni" if has_vnni(frozenset(target.features)) else "x86"
    return "arm"  # ARM cores, and MCUs whose TFLite Micro kernels are int8 x int8 (Xtensa ESP-NN)


def from_devices(devices: Sequence[str]) -> tuple[str, str, str]:
    """(types target, the device that decided, a note when the targets disagree) for the recipe's
    device targets."""
    from ...targets import spec

    picks = {name: for_device(name) for name in devices}
    hosts = {name for name in devices if spec.get(name).kind == "host"}
    chosen = next((n for n in devices if n not in hosts), devices[0])
    target = spec.get(chosen)
    where = f"the recipe's target {chosen} ({' '.join(dict.fromkeys((target.core, target.isa)))})"
    if len(set(picks.values())) == 1:
        return picks[chosen], where, ""
    others = ", ".join(f"{n} would take {t} types" for n, t in picks.items() if picks[n] != picks[chosen])
    why = "the host is listed to compare with" if chosen not in hosts and hosts else "the first listed"
    note = (
        f". The targets mix ISAs: {chosen} decides ({why}); {others}. Set quantize.target to choose, "
        "or convert once per target"
    )
    return picks[chosen], where, note


def choose(
    target: str = "host", activations: str = "auto", weights: str = "int8", devices: Sequence[str] = ()
) -> Int8Types:
    """The types for `target` (`quantize.target`); when it is 'host' and the recipe names device
    targets (`[profile] targets`), for those devices instead."""
    where, note = None, ""
    if target == "host" and devices:
        target, where, note = from_devices(devices)
    resolved = resolve_target(target)
    if where is None:
        where = f"the target '{target}'" if target != "host" else f"this host ({resolved})"
        if devices:
            note = f" (quantize.target overrides the recipe's targets: {', '.join(devices)})"
    types = _types(resolved, where, activations, weights)
    return replace(types, reason=types.reason + note)


def _types(resolved: str, where: str, activations: str, weights: str) -> Int8Types:
    if activations != "auto":
        return Int8Types(activations, weights, resolved, "set explicitly in the recipe")
    if resolved == "x86-vnni":
        why = (
            f"{where} has VNNI: u8 activations x s8 weights accumulate in int32 without "
            "saturation and run ONNX Runtime's fastest x86 kernels"
        )
        return Int8Types("uint8", weights, resolved, why)
    if resolved == "x86":
        why = (
            f"{where} has no VNNI: u8 x s8 with 7-bit weights (reduce_range), so VPMADDUBSW's int16 "
            "sums cannot saturate; s8 activations would not reach ONNX Runtime's integer kernels on x86"
        )
        return Int8Types("uint8", weights, resolved, why, reduce_range=True)
    why = (
        f"{where} runs ARM (or TFLite Micro) int8 kernels: s8 x s8 with symmetric activations, as "
        "SDOT/SMMLA (or SMLAL), XNNPACK and CMSIS-NN take them"
    )
    return Int8Types("int8", weights, resolved, why, symmetric_activations=True)
