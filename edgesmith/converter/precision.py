"""Precision names: what an artifact holds, as report.json, manifests, file names and verify speak them.

One place for them, and for the mapping from a recipe's `quantize.mode` to the precision it gives.
"""

from __future__ import annotations

FP32 = "fp32"
FP16 = "fp16"
INT8 = "int8"  # static: calibrated activations and weights
INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized at run time
INT8_WEIGHT_ONLY = "int8-weight-only"  # int8 weights in blocks, float activations (MatMul-heavy models)
INT4_WEIGHT_ONLY = "int4-weight-only"
BINARY = "binary"  # 1-bit weights (the binarize step), stored as bits where the format can

# quantize.mode -> precision (None: no quantize step)
OF_MODE: dict[str | None, str] = {None: FP32, "static": INT8, "dynamic": INT8_DYNAMIC, "fp16": FP16}


def of_mode(mode: str | None, bits: int = 8) -> str:
    """The precision a quantize step of `mode` gives (fp32 without one); weight-only also by its `bits`."""
    if mode == "weight-only":
        return INT4_WEIGHT_ONLY if bits == 4 else INT8_WEIGHT_ONLY
    return OF_MODE[mode]
