"""The step contracts.

A recipe step is a config dataclass and a handler registered for it: `(config, model, context) ->
StepResult(model, report)`, on a model of the kind it `consumes` ("torch" or "onnx"), returning one of
the kind it `produces` (the same kind). It must write a new file in `context.workdir` and leave its
input untouched; the pipeline checks all three (`returned`).

A quantizer is the recipe's `[quantize]` applied to one format: a `Quantizer` declaration (the handle
kind it consumes and produces, the modes and recipe `engine` names it answers to) whose `run` takes
`(QuantizeConfig, model, ExportContext) -> StepResult`. `QUANTIZERS` is their registry (the shipped
ones are listed in steps/__init__.py); `converter/plan.py` picks one per export, and the recipe's
`quantize.engine` may name any engine a registered quantizer answers to (`engine_names`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..precision import BINARY
from ..validate import Checked

if TYPE_CHECKING:
    from ..data.arrays import ArraySource
    from ..data.config import CalibrationConfig
    from ..handle import ModelHandle


@dataclass(frozen=True)
class StepConfig(Checked):
    """A step's settings, frozen and checked when created (see validate.py for the rules)."""

    kind: ClassVar[str]
    # the handle kind (handle.py) it runs on: "onnx", or "torch" for the PyTorch module, before the
    # ONNX export
    consumes: ClassVar[str] = "onnx"
    # the kind it returns; unless a step declares it, the kind it consumes (the pipeline chains steps of
    # one kind and exports the PyTorch module to ONNX once, in between)
    produces: ClassVar[str] = "onnx"
    # whether converter/step_cache.py may keep its result (a module's tensors and plain attributes)
    cacheable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "produces" not in vars(cls):
            cls.produces = cls.consumes


@dataclass(frozen=True)
class StepResult:
    """What a step or a quantizer gives: the new model's handle, and what it did for the report."""

    model: Any  # a handle (handle.py): ModelHandle, TorchHandle, TFLiteHandle or OpenVINOHandle
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    workdir: Path
    calibration: Callable[[], ArraySource]  # opened on demand: not every step needs data
    calibration_config: CalibrationConfig
    quiet: bool = False
    original: Any = None  # the unchanged torch module, for steps that distill from it
    devices: tuple[str, ...] = ()  # the recipe's device targets ([profile] targets): they pick INT8 types


@dataclass(frozen=True)
class Gate:
    """The verification gate (checks.check_gate) as a quantizer can apply it to its own candidates
    before one is written, e.g. to keep sensitive layers in float until a candidate passes.

    `measure(path)` runs a model file (.onnx, .xml or .tflite) on the run's verification samples and
    compares it with the original: a targets.records.Verification (per-output cosine, metric, drop).
    Without an eval set those are the calibration samples held out from calibration and calibrated-on
    ones, each output's cosine the worst of the two parts' (pipeline._verification_data, verify.Joined):
    a candidate a quantizer chooses holds on both.
    `min_cosine(precision)` is the bar an artifact of that precision is held to (None: no cosine bar).
    """

    measure: Callable[[Path], Any]  # -> targets.records.Verification
    min_cosine: Callable[[str], float | None]
    max_drop: float | None = None  # metric points, with labelled eval data
    data: Any = None  # the verification samples (`.batches()`), e.g. to rank layers without calibration data

    def failure(self, path: Path, precision: str, margin: float = 0.0) -> str | None:
        """Why the candidate at `path` would fail the gate (one line), or None when it passes.
        `margin`: a stricter cosine bar (bar + margin, at most 1) for a quantizer choosing among
        candidates, so that the one it keeps also holds on samples the gate did not see."""
        return self.judge(self.measure(path), precision, margin)

    def judge(self, result: Any, precision: str, margin: float = 0.0) -> str | None:
        """`failure` of a candidate already measured (`result`: what `measure` returned)."""
        if self.max_drop is not None and result.drop is not None and result.drop > self.max_drop:
            return f"{result.metric} dropped {result.drop:.2f} points"
        bar = self.min_cosine(precision)
        if bar is not None:
            bar = min(1.0, bar + margin)
        worst = result.below(bar) if bar is not None else None
        if worst is None:
            return None
        return (
            f"output '{worst.name}': {worst.error}"
            if worst.error
            else (f"output '{worst.name}' has cosine {worst.cosine:.4f} < {bar}")
        )


@dataclass(frozen=True)
class ExportContext:
    """What a format's converter and quantizer see besides the model: the source (after the PyTorch
    steps: its module, native model, inputs, reference), the step context (work folder, data) and the
    verification gate the artifact will be held to."""

    source: Any  # frontends.Source
    step: StepContext
    io: str = "float"  # the export's input/output type ([[exports]] io), for converters that set it
    format: str = ""  # the export's format ([[exports]] format: "tflite", "c-array" ...), set by plan.run
    gate: Gate | None = None  # None outside a pipeline run (e.g. tests calling a quantizer directly)
    # quantizations made in this run, by what they depend on (plan.run): the fastest-format comparison
    # quantizes the ONNX model the ONNX export then writes; shared by the copies `replace` makes
    quantized: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Facts:
    """What the planner knows about a run before (or without) loading the model."""

    source_kind: str  # "onnx" | "pt2" | "torch" | "keras" | "tflite" | "savedmodel" (Source.kind)
    source_path: Any = None  # the user's file, None for an in-memory module
    onnx_steps: bool = False  # ONNX-level steps ran: quantizers of the source model no longer apply
    binary: bool = False  # binarized: stored with 1-bit weights, never quantized after
    calibration: bool = False  # the recipe has calibration data
    calibration_method: str = "minmax"
    qat: bool = False  # a `qat` step trained the model last among the PyTorch steps


QuantizeRun = Callable[[Any, Any, ExportContext], StepResult]  # (QuantizeConfig, handle, context)


@dataclass(frozen=True)
class Quantizer:
    """A quantization engine as a step for one format (see docs/adding_a_step.md).

    `consumes` is the handle kind it reads: the format's float model as its exporter converted it
    ("onnx", "openvino", "tflite"), or "source" for an engine that converts and quantizes the
    source model itself in one pass (Neural Compressor on the PyTorch program, TensorFlow's converter
    on Keras); those apply only while no ONNX-level step changed the model.
    """

    name: str  # as reports and messages name it
    consumes: str  # "onnx" | "openvino" | "tflite" | "source"
    produces: str  # "onnx" | "openvino" | "tflite": the exports of that kind can use it
    modes: tuple[str, ...]  # quantize.mode values it applies
    engines: tuple[str, ...]  # quantize.engine values that pick it ("auto": picked when it fits)
    run: QuantizeRun
    sources: tuple[str, ...] = ()  # the source kinds it takes (empty: any)
    # refuses settings it cannot apply, in one line, before any model is loaded: (config, facts)
    check: Callable[[Any, Facts], None] | None = None
    after_qat: bool = False  # applies only to a model a `qat` step trained (steps/qat_export.py)

    def fits(self, mode: str, facts: Facts) -> bool:
        """Whether it applies `mode` to this run's model (used to choose among the named engines)."""
        source_ok = not self.sources or facts.source_kind in self.sources
        qat_ok = facts.qat or not self.after_qat
        return (
            mode in self.modes
            and source_ok
            and qat_ok
            and not (self.consumes == "source" and facts.onnx_steps)
        )


# The quantizers, in order of preference (engine = "auto" takes the first that fits): filled by
# steps/__init__.py, one line per quantizer. A list, so that a quantizer defined elsewhere (a test) can
# be appended, and the planner and the recipe's validation see it.
QUANTIZERS: list[Quantizer] = []


def engine_names() -> tuple[str, ...]:
    """The values `quantize.engine` may take: "auto" and every engine a registered quantizer answers
    to, in registry order (the validator's choices for QuantizeConfig.engine)."""
    return tuple(dict.fromkeys(("auto", *(engine for q in QUANTIZERS for engine in q.engines))))


def returned(what: str, produces: str, result: StepResult) -> StepResult:
    """`result`, once its model is of the kind `what` (a step or a quantizer) declares it produces.
    Another kind is an internal error, caught here rather than in the next step or exporter."""
    kind = getattr(result.model, "kind", None)
    if kind != produces:
        got = kind or type(result.model).__name__
        raise RuntimeError(f"internal error: {what} declares it produces {produces} but returned {got}")
    return result


def run_facts(model: ModelHandle, ctx: ExportContext) -> Facts:
    """The planner's facts from a loaded run: the source, and the fp32 ONNX handle the exports start from."""
    source = ctx.source
    return Facts(
        source.kind,
        source.path,
        onnx_steps=model.path != source.onnx.path,
        binary=model.precision == BINARY,
        calibration=ctx.step.calibration() is not None,
        calibration_method=ctx.step.calibration_config.method,
        qat=getattr(source, "qat", None) is not None,
    )


# (config, handle, context): the handle is of the kind the config `consumes` (a ModelHandle or a
# TorchHandle), checked at run time, so its static type is Any
Handler = Callable[[Any, Any, StepContext], StepResult]
HANDLERS: dict[type, Handler] = {}


def register(config_cls: type) -> Callable[[Handler], Handler]:
    """Register the function that applies `config_cls` (one handler per config type)."""

    def decorate(fn: Handler) -> Handler:
        HANDLERS[config_cls] = fn
        return fn

    return decorate
