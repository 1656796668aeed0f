"""PTQ recovery keys of the quantize step, mapped onto the engine that has them.

- `bias_correction = "fast" | "full" | "off"` (unset: the engine's default, NNCF's fast one): after
  rounding the weights, shift each layer's bias so its mean output on the calibration data is the
  float layer's. NNCF (OpenVINO IR, or ONNX with engine = "nncf"): `fast_bias_correction` True/False,
  "off" = `AdvancedQuantizationParameters(disable_bias_correction=True)`.
- `smooth_quant = ALPHA` in [0, 1] (unset: the engine's default, 0.95 in NNCF for transformers; 0:
  off): SmoothQuant moves activation outliers into the weights of the MatMul that reads them
  (per-channel scale s = max|x|^alpha / max|w|^(1-alpha)), so both quantize with less error. NNCF runs it
  on transformers only (`model_type=TRANSFORMER`): set on another model, it is refused.

ONNX Runtime's static quantizer has no bias correction, and its `SmoothQuant` extra option runs
neural-compressor 2.x's ONNX adaptor, which neural-compressor 3 (the `inc` engine's) no longer has:
with engine = "auto" on ONNX both keys are refused, naming engine = "nncf" as the fix.
"""

from __future__ import annotations

from typing import Any

from ...errors import InputError

FAST_BIAS_CORRECTION = True  # NNCF's fast bias correction unless the recipe says otherwise


def check_onnxruntime(config) -> None:
    """ONNX Runtime's quantizer takes neither key: say so, with the engine that does."""
    for key in ("bias_correction", "smooth_quant"):
        if getattr(config, key) is not None:
            raise InputError(
                f"quantize.{key} is applied by NNCF; ONNX Runtime's quantizer has no {key.replace('_', ' ')} "
                "here: set quantize.engine = 'nncf' for ONNX (OpenVINO IR uses NNCF already), or remove the key"
            )


def nncf_arguments(config, advanced: Any, transformer: bool) -> tuple[bool, Any, dict]:
    """(fast_bias_correction, advanced parameters, report entries) for nncf.quantize."""
    import dataclasses

    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

    bias = config.bias_correction or ("fast" if FAST_BIAS_CORRECTION else "full")
    changes: dict[str, Any] = {"disable_bias_correction": bias == "off"}
    alpha = config.smooth_quant
    if alpha is not None:
        if not transformer:
            raise InputError(
                f"quantize.smooth_quant = {alpha} applies to transformers (attention + LayerNorm), which this "
                "model is not; remove the key (NNCF runs SmoothQuant on MatMuls of transformers only)"
            )
        changes["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=alpha if alpha > 0 else -1)
    shown = alpha if alpha is not None else (advanced.smooth_quant_alphas.matmul if transformer else None)
    report = {"bias_correction": bias, "smooth_quant": shown if shown is None or shown >= 0 else 0}
    return bias == "fast", dataclasses.replace(advanced, **changes), report
