"""Named recipes for the common cases. `--preset NAME` sets the recipe's steps."""

from __future__ import annotations

from collections.abc import Callable

from .steps import StepConfig
from .steps.binarize import BinarizeConfig
from .steps.distill import DistillConfig
from .steps.prune import PruneConfig
from .steps.qat import QATConfig
from .steps.quantize import QuantizeConfig

PRESETS: dict[str, tuple[str, Callable[[], list[StepConfig]]]] = {
    "int8": (
        "static INT8: QDQ, per-channel int8 weights, calibrated activations (types chosen for the target CPU)",
        lambda: [QuantizeConfig(mode="static")],
    ),
    "int8-dynamic": (
        "dynamic INT8: int8 weights, activations quantized at run time; no calibration data needed",
        lambda: [QuantizeConfig(mode="dynamic")],
    ),
    "fp16": ("FP16 weights and compute, float32 inputs and outputs", lambda: [QuantizeConfig(mode="fp16")]),
    "fp32": ("no compression: export, verify and profile the original", lambda: []),
    "pruned50-int8": (
        "PyTorch models (.pt2 or module): prune channels to 50% of the MACs, distill from the original on "
        "the calibration data (at least 300 batches; a recipe can give distill a bigger `data` set), then "
        "static INT8",
        lambda: [
            PruneConfig(target_macs=0.5),
            DistillConfig(epochs=10, min_steps=300, lr=2e-3),
            QuantizeConfig(mode="static"),
        ],
    ),
    "pruned30-qat-int8": (
        "PyTorch models (.pt2 or module): prune channels to 30% of the MACs, then quantization-aware "
        "training with distillation from the original on the calibration data (at least 300 batches; a "
        "recipe can give qat a bigger `data` set), then static INT8 calibrated by each format's quantizer",
        lambda: [
            PruneConfig(target_macs=0.3),
            QATConfig(epochs=5, min_steps=300, lr=1e-3),
            QuantizeConfig(mode="static"),
        ],
    ),
    "bnn": (
        "PyTorch modules: 1-bit weights and activations in the hidden layers (first and last stay float), "
        "trained with distillation from the original; ONNX/OpenVINO store 1 bit per weight",
        lambda: [BinarizeConfig(activations="binary")],
    ),
    "bnn-weights": (
        "PyTorch modules: 1-bit weights, float activations, trained with distillation",
        lambda: [BinarizeConfig(activations="float")],
    ),
}


def steps_for(name: str) -> list[StepConfig]:
    from ..errors import InputError, closest

    if name not in PRESETS:
        raise InputError(f"unknown preset '{name}'{closest(name, PRESETS)}; choose from {', '.join(PRESETS)}")
    return PRESETS[name][1]()
