"""Choose INT8 activation and weight types for the CPU that will run the model.

- x86 with VNNI: uint8 activations x int8 weights. VPDPBUSD multiplies u8 by s8 and accumulates in
  int32 without saturating, and ONNX Runtime's fastest x86 kernels are U8S8.
- x86 without VNNI: uint8 x int8 with `reduce_range` (7-bit weights). The U8S8 path there goes
  through VPMADDUBSW, whose int16 sums of pairs can saturate; ONNX Runtime's docs advise
  reduce_range (or U8U8) for it. S8S8 is no way out on x86: ONNX Runtime never fuses int8
  activations into integer kernels there (QDQIsInt8Allowed is false), so S8S8 runs at 0.65-0.77
  of fp32 latency against 0.29-0.44 for U8S8 (docs/decisions/int8-ort-settings.md).
- ARM: int8 x int8 with symmetric activations, which the SDOT/SMMLA kernels (and XNNPACK, LiteRT)
  are built for.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def choose(target: str = "host", activations: str = "auto", weights: str = "int8") -> Int8Types:
    resolved = resolve_target(target)
    where = f"the target '{target}'" if target != "host" else f"this host ({resolved})"
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
    why = f"{where} is ARM: s8 x s8 with symmetric activations matches its SDOT/SMMLA kernels"
    return Int8Types("int8", weights, resolved, why, symmetric_activations=True)
