"""Named recipes for the common cases. `--preset NAME` sets the recipe's steps."""

from __future__ import annotations

from .steps import StepConfig
from .steps.quantize import QuantizeConfig

PRESETS: dict[str, tuple[str, callable]] = {
    "int8": (
        "static INT8: QDQ, per-channel int8 weights, calibrated activations (types chosen "
        "for the target CPU)",
        lambda: [QuantizeConfig(mode="static")],
    ),
    "int8-dynamic": (
        "dynamic INT8: int8 weights, activations quantized at run time; no calibration data needed",
        lambda: [QuantizeConfig(mode="dynamic")],
    ),
    "fp16": ("FP16 weights and compute, float32 inputs and outputs", lambda: [QuantizeConfig(mode="fp16")]),
    "fp32": ("no compression: export, verify and profile the original", lambda: []),
}


def steps_for(name: str) -> list[StepConfig]:
    from ..errors import InputError, closest

    if name not in PRESETS:
        raise InputError(f"unknown preset '{name}'{closest(name, PRESETS)}; choose from {', '.join(PRESETS)}")
    return PRESETS[name][1]()
