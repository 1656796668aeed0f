"""The export plan: for each `[[exports]]` entry, the exporter that converts the float model and the
quantizer (steps/, `QUANTIZERS`) that applies the recipe's `[quantize]` to that format.

A quantizer declares the handle kind it consumes and produces, its modes and the `engine` names that
pick it; an exporter declares the kind it converts to (`KIND`). For an export of kind K the plan is
  convert (exporter: fp32 ONNX -> K)  ->  quantize (a quantizer K -> K)  ->  write (exporter)
or, for a quantizer that consumes the source model itself (Neural Compressor, TensorFlow's Keras
converter), quantize (source -> K) -> write. The first quantizer in `QUANTIZERS` that produces K,
answers to the recipe's engine and fits the mode and source wins.

`exports` refuses, in one line, a combination no quantizer can do (a mode a format has no kernels for,
an engine that does not write the format, integer I/O without full-integer INT8 ...). pipeline.run
calls it before any model is loaded, with facts from the recipe, and again on the final exports
(`format = "auto"` resolved, the accuracy search's `exclude`s added), with facts from the loaded
model: the choice depends only on the recipe and those facts, so both agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import exporters
from .handle import ModelHandle
from .precision import BINARY, of_mode
from .steps import QUANTIZERS, equalize
from .steps.base import ExportContext, Facts, Quantizer, returned, run_facts
from .steps.quantize import QuantizeConfig
from .steps.weight_only import TFLITE_FIX

AUTO = "auto"  # `format = "auto"`: resolved by converter/fastest.py before it is planned


@dataclass(frozen=True)
class ExportPlan:
    export: Any  # recipe.ExportConfig
    quantizer: Quantizer | None  # None: the float model (or a binarized one) is written as converted
    quantize: QuantizeConfig | None  # what the quantizer applies
    precision: str  # what the artifact is named after (binary for a binarized model)


def recipe_facts(recipe, model: Any, kind: str, onnx_steps: bool) -> Facts:
    """Facts before loading: the model's kind (frontends.kind_of) and path, and the recipe's steps."""
    path = Path(model) if isinstance(model, (str, Path)) else None
    return Facts(
        "torch" if kind == "hf" else kind,  # a Hugging Face folder loads as a torch module
        path,
        onnx_steps=onnx_steps,
        binary=any(step.kind == "binarize" for step in recipe.steps),
        calibration=bool(recipe.calibration.path),
        calibration_method=recipe.calibration.method,
        qat=_last_torch_step(recipe) == "qat",
    )


def _last_torch_step(recipe) -> str | None:
    """The kind of the recipe's last PyTorch-level step: its result is what the exports start from."""
    kinds = [step.kind for step in recipe.steps if step.consumes == "torch"]
    return kinds[-1] if kinds else None


def exports(configs, quantize: QuantizeConfig | None, facts: Facts) -> list[ExportPlan]:
    """The plan of every export but `auto` ones (planned once resolved), in order; InputError for the
    first that cannot be made."""
    if quantize is not None and quantize.mode == "static" and not facts.calibration:
        raise InputError("static INT8 needs calibration data: pass --calibration PATH (an .npz, .npy or image "
                         "folder) or use --preset int8-dynamic")  # fmt: skip
    return [one(config, quantize, facts) for config in configs if config.format != AUTO]


def one(config, quantize: QuantizeConfig | None, facts: Facts) -> ExportPlan:
    kind = exporters.module(config.format).KIND
    _format_limits(config, kind, quantize)
    if facts.binary:
        if quantize is not None:
            raise InputError(
                "a binarized model is exported with 1-bit weights; drop the quantize step after binarize "
                "(its first and last layers stay float by design)"
            )
        if kind != "tflite":  # the exporter stores the weights as bits
            return ExportPlan(config, None, None, BINARY)
        # TFLite has no 1-bit weights: int8, full-integer with calibration data (TFLite Micro runs only
        # that), else dynamic range (exporters/binary_tflite.py)
        quantize = QuantizeConfig(mode="static" if facts.calibration else "dynamic")
    if quantize is not None and quantize.equalize:
        equalize.check(config.format, facts.source_kind)
        # the equalized ONNX is a changed model: engines that quantize the source itself do not apply
        facts = dataclasses.replace(facts, onnx_steps=True)
    mode = quantize.mode if quantize is not None else None
    quantizer = _quantizer(config.format, kind, quantize, facts) if quantize is not None else None
    if kind == "tflite" and config.io != "float" and mode != "static":
        raise InputError(
            f"io = '{config.io}' needs full-integer INT8 (preset int8); {of_mode(mode)} models take float"
        )
    bits = quantize.bits if quantize is not None else 8
    return ExportPlan(config, quantizer, quantize, BINARY if facts.binary else of_mode(mode, bits))


def _format_limits(config, kind: str, quantize: QuantizeConfig | None) -> None:
    """What a format cannot hold whatever the engine: the runtimes have no kernels for it."""
    mode = quantize.mode if quantize is not None else None
    if kind == "openvino" and config.io != "float":
        raise InputError(
            f"exports.io = {config.io!r} is for full-integer TFLite; an OpenVINO IR takes and gives float: "
            "remove `io` from the openvino export"
        )
    if kind == "openvino" and mode == "dynamic":
        raise InputError(
            "OpenVINO has no dynamic INT8: use --preset int8 (static INT8, calibrated with --calibration) "
            "for the openvino format, or export dynamic INT8 as --format onnx"
        )
    if kind == "tflite" and mode == "weight-only":
        raise InputError(TFLITE_FIX)
    if config.format == "c-array" and mode in ("dynamic", "fp16"):
        raise InputError(
            f"TensorFlow Lite Micro has no {'hybrid INT8' if mode == 'dynamic' else 'float16'} kernels; "
            "use --preset int8 (full-integer) or no quantization for the c-array format"
        )


# what each kind is quantized by, when the recipe names an engine that does not write it
ENGINES_OF = {
    "openvino": "OpenVINO IR is quantized by NNCF, not engine = {engine!r}; set engine = 'nncf' or 'auto' "
    "(or export that engine's result as --format onnx)",
    "tflite": "TFLite is quantized by its own converter and the AI Edge Quantizer, not engine = {engine!r}; "
    "set engine = 'auto', or export that engine's result as --format onnx",
}


def _quantizer(fmt: str, kind: str, quantize: QuantizeConfig, facts: Facts) -> Quantizer:
    """The first quantizer that writes `kind`, answers to the recipe's engine and fits; else the first
    named one refuses with its own reason (`check`), or this function with the generic one."""
    named = [q for q in QUANTIZERS if q.produces == kind and quantize.engine in q.engines]
    if not named:
        message = ENGINES_OF.get(
            kind, "no quantizer writes {fmt} for engine = {engine!r}; set engine = 'auto'"
        )
        raise InputError(message.format(engine=quantize.engine, fmt=fmt))
    chosen = next((q for q in named if q.fits(quantize.mode, facts)), named[0])
    if chosen.check is not None:
        chosen.check(quantize, facts)
    if not chosen.fits(quantize.mode, facts):
        raise InputError(
            f"{chosen.name} cannot make a {of_mode(quantize.mode, quantize.bits)} {fmt} of this {facts.source_kind} model; "
            "set quantize.engine = 'auto' or choose another --format"
        )
    return chosen


def run(plan: ExportPlan, model: ModelHandle, dest: Path, ctx: ExportContext) -> exporters.Exported:
    """Convert, quantize, write: the artifact `dest` + the format's suffix, from the fp32 ONNX `model`."""
    exporter = exporters.module(plan.export.format)
    ctx = dataclasses.replace(ctx, io=plan.export.io, format=plan.export.format)
    quantizer, converted, quantized = plan.quantizer, None, None
    handle: Any = model
    equalized = None
    if quantizer is not None and plan.quantize is not None and plan.quantize.equalize:
        data = ctx.step.calibration() or (ctx.gate.data if ctx.gate is not None else None)
        model, equalized = equalize.equalized(model, ctx.step.workdir, data)
        handle = model
    if quantizer is None or quantizer.consumes != "source":
        result = exporter.convert(plan.export, model, ctx)
        handle, converted = result.model, result.report
    if quantizer is not None:
        key = _made_from(quantizer, plan.quantize, handle, ctx)
        result = ctx.quantized.get(key) if key is not None else None
        if result is None:
            result = returned(
                f"quantizer '{quantizer.name}'", quantizer.produces, quantizer.run(plan.quantize, handle, ctx)
            )
            if key is not None:
                ctx.quantized[key] = result
        if isinstance(result.model, ModelHandle) and result.model.path == model.path:
            raise RuntimeError(f"quantizer '{quantizer.name}' broke its contract: it must write a new file")
        handle, quantized = result.model, result.report
    equalization = {"equalize": equalized} if equalized else {}
    quantization = {**(quantized or {}), **(converted or {}), **equalization}
    return exporter.write(plan.export, handle, dest, ctx, quantization or None)


def _made_from(quantizer: Quantizer, quantize, handle, ctx: ExportContext) -> tuple | None:
    """What a quantization depends on in a run: the quantizer, its config, the file it reads and the
    export's io and format (the work folder, data and gate are the run's). With targets, the
    fastest-format comparison (converter/fastest.py) quantizes the ONNX model first; the ONNX export
    then takes that result instead of quantizing (and rescuing: 20+ minutes for a transformer) again.
    None where the input is not a file (nothing to name it by)."""
    path = getattr(handle, "path", None)
    if path is None:
        return None
    return (quantizer.name, repr(quantize), str(path), ctx.io, ctx.format)


def export(config, model: ModelHandle, quantize: QuantizeConfig | None, dest: Path, ctx: ExportContext):
    """One export of a loaded run, planned and made (what `exporters.export` was)."""
    return run(one(config, quantize, run_facts(model, ctx)), model, dest, ctx)
