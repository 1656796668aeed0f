"""Static INT8 with NNCF's post-training `quantize`: the quantizer of OpenVINO IR (its native engine)
and, with `engine = "nncf"`, of ONNX (`OPENVINO` and `ONNX` below, listed in steps/__init__.py).

The calibration data is the recipe's, the same batches ONNX Runtime's quantizer sees, fed to NNCF one
sample at a time: NNCF averages per-item activation ranges (`MEAN_MINMAX` by default) and warns that
statistics over batches of several samples are not what it was tuned for.

Settings (chosen with `benchmarks/openvino_int8.py`; see docs/decisions/openvino.md):
- `preset=PERFORMANCE` (symmetric activations and weights): the fastest CPU kernels; the asymmetric
  `MIXED` preset bought no accuracy on CNNs here.
- `fast_bias_correction=True` (NNCF's default): the full `BiasCorrection` costs minutes on ResNet-50
  and gave no measurable accuracy on our eval sets.
- `subset_size` = every calibration sample (NNCF's default stops at 300: the recipe's
  `calibration.max_samples` is the knob instead).
- `calibration.method`: minmax -> NNCF's default estimators; percentile -> `MEAN_QUANTILE`;
  entropy -> `HISTOGRAM`.
"""

from __future__ import annotations

import io
import logging
from contextlib import redirect_stdout
from typing import Any

from ...errors import InputError, require
from ..handle import ModelHandle, OpenVINOHandle
from ..precision import INT8
from .base import ExportContext, Facts, Quantizer, StepContext, StepResult
from .quantize import is_transformer

PRESET = "performance"


class Samples:
    """The calibration source as single-sample feeds (or feeds of the model's fixed batch); iterable
    again for each NNCF pass."""

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return self._source.num_samples()

    def __iter__(self):
        return self._source.samples()


def check(config, facts: Facts | None = None) -> None:
    """NNCF's post-training quantization is static INT8: refuse the other modes before any work."""
    if config.mode != "static":
        raise InputError(
            f"NNCF quantizes static INT8 only, not mode = {config.mode!r}; use --preset int8 (static, "
            "calibrated) or engine = 'onnxruntime' for ONNX"
        )


def _estimators(nncf, method: str):
    """The AdvancedQuantizationParameters for the recipe's calibration method."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    chosen = {"percentile": "MEAN_QUANTILE", "entropy": "HISTOGRAM"}.get(method)
    if chosen is None:
        return AdvancedQuantizationParameters(), "nncf default (per-sample min/max, averaged)"
    params = getattr(RangeEstimatorParametersSet, chosen)
    return AdvancedQuantizationParameters(activations_range_estimator_params=params), chosen.lower()


def arguments(model: Any, config, ctx: StepContext) -> tuple[dict, dict]:
    """(nncf.quantize's keyword arguments, the report's entries) for the recipe's `[quantize]`:
    the same settings for the first attempt and for accuracy control (steps/nncf_accuracy.py)."""
    check(config)
    nncf = require("nncf", "convert-openvino", "NNCF quantizes OpenVINO and ONNX models")
    nncf.set_log_level(logging.ERROR)
    cal = ctx.calibration()
    if cal is None:
        raise InputError("static INT8 needs calibration data: pass --calibration PATH")
    advanced, method = _estimators(nncf, ctx.calibration_config.method)
    transformer = is_transformer(model)
    from .recovery import nncf_arguments

    fast_bias_correction, advanced, recovery = nncf_arguments(config, advanced, transformer)
    ignored = nncf.IgnoredScope(patterns=list(config.exclude), validate=False) if config.exclude else None
    kwargs = {
        "preset": getattr(nncf.QuantizationPreset, PRESET.upper()),
        "target_device": nncf.TargetDevice.CPU,
        "subset_size": cal.num_samples(),
        "fast_bias_correction": fast_bias_correction,
        "ignored_scope": ignored,
        "advanced_parameters": advanced,
        # transformers: NNCF keeps Softmax, LayerNorm (MVN), GELU and the residual adds float
        "model_type": nncf.ModelType.TRANSFORMER if transformer else None,
    }
    report = {
        "mode": "static",
        "engine": "nncf",
        "nncf_version": nncf.__version__,
        "preset": PRESET,
        "target_device": "CPU",
        **recovery,
        "per_channel": True,  # NNCF quantizes weights per output channel on CPU
        "calibration": {"method": method, "samples": len(cal), "path": str(cal.path)},
        "excluded": list(config.exclude),
        "model_type": "transformer" if transformer else "default",
    }
    return kwargs, report


def quantize_model(model: Any, config, ctx: StepContext) -> tuple[Any, dict]:
    """NNCF static INT8 of an in-memory model (`openvino.Model` or `onnx.ModelProto`)."""
    import nncf

    kwargs, report = arguments(model, config, ctx)
    cal = ctx.calibration()
    from ..progress import bar

    # NNCF draws its own progress bars on stdout, which belongs to `--json` output: keep them out.
    with bar(len(cal), "calibrating (nncf)", "sample", ctx.quiet) as progress, redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(model, nncf.Dataset(Samples(cal)), **kwargs)
        progress.update(len(cal))
    return quantized, report


def quantize_onnx(config, model: ModelHandle, ctx: StepContext) -> StepResult:
    """`engine = "nncf"` for an ONNX export: NNCF's QDQ model instead of ONNX Runtime's."""
    onnx = require("onnx", "convert")
    proto = onnx.load(str(model.path))
    quantized, report = quantize_model(proto, config, ctx)
    quantized.ir_version = min(quantized.ir_version, proto.ir_version)
    out = ctx.workdir / f"{model.path.stem}.nncf-int8.onnx"
    onnx.save(quantized, str(out))
    return StepResult(ModelHandle(out, INT8), report | {"format": "qdq"})


def quantize_openvino(config, model: OpenVINOHandle, ctx: ExportContext) -> StepResult:
    """The OpenVINO export's INT8: NNCF on the converted `openvino.Model` (FakeQuantize ops, which
    OpenVINO's CPU plugin runs with INT8 kernels). When that misses the verification gate,
    the most sensitive quantizers are removed until it passes (nncf_accuracy.py)."""
    from .nncf_accuracy import keep_float_until_passing

    quantized, report = quantize_model(model.model, config, ctx.step)
    kept = None
    if config.search == "rescue":  # "off": quantize as configured; the gate only checks
        quantized, kept = keep_float_until_passing(quantized, model.model, ctx)
    if kept is not None:
        report["kept_float"] = kept
    return StepResult(OpenVINOHandle(quantized, model.origin, INT8), report)


def _quantize_onnx_export(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    return quantize_onnx(config, model, ctx.step)


OPENVINO = Quantizer(
    "nncf", "openvino", "openvino", ("static",), ("auto", "nncf"), quantize_openvino, check=check
)
ONNX = Quantizer("nncf", "onnx", "onnx", ("static",), ("nncf",), _quantize_onnx_export, check=check)
