"""TFLite quantization with Google's AI Edge Quantizer: fp16, dynamic-range INT8 and full-integer
INT8 of a float `.tflite` (the engine litert-torch itself hands its quantization recipes to). The
quantizer `converter/plan.py` picks for TFLite exports of PyTorch, ONNX and TFLite sources.

Why not litert-torch's PT2E int8 path: it is as accurate on the shipped CNN (98.87% vs 98.85%
top-1, fp32 98.87%), but it re-traces and re-lowers the model (29 s against under 1 s for the AI Edge
Quantizer on the converted graph), has no fp16, and would need a second code path for every
precision. The AI Edge Quantizer calibrates on the graph LiteRT will actually run, covers fp16,
dynamic-range and full-integer INT8 with one recipe format, and writes float I/O (QUANTIZE first,
DEQUANTIZE last) that TensorFlow's I/O tool turns into int8/uint8 I/O when the export is written.
"""

from __future__ import annotations

import dataclasses
import time

from ..._quiet import tensorflow as quiet
from ...errors import InputError, require
from ..handle import TFLiteHandle
from ..precision import of_mode
from . import aeq_rescue
from .base import ExportContext, Quantizer, StepResult


def _recipe(mode: str, float_ops=(), wide: bool = False):
    """The recipe for `mode`; static INT8 keeps `float_ops` (aeq_rescue.Op) float, by the quantizer's
    per-op rule (a regex on the op's output names, NO_QUANTIZE; a later rule wins). `wide`: 16-bit
    activations (symmetric, LiteRT's int16x8 kernels) instead of 8, weights still int8 per channel."""
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    manager = recipe_manager.RecipeManager()
    if mode == "static":  # int8 activations (asymmetric, per tensor), int8 weights per channel
        bits = 16 if wide else 8
        manager.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=bits, weight_num_bits=8)
        for boundary in (ops.INPUT, ops.OUTPUT):  # float I/O; set_io_type makes it integer on request
            manager.add_quantization_config(".*", boundary, algorithm_key=AlgorithmName.NO_QUANTIZE)
        if float_ops:
            rule = aeq_rescue.float_rule(float_ops)
            manager.add_quantization_config(rule, ops.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE)
        return manager.get_quantization_recipe()
    if mode == "dynamic":
        return recipe.dynamic_wi8_afp32()
    manager.add_weight_only_config(".*", ops.ALL_SUPPORTED, 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


def _input_types(interpreter, signature: str) -> dict:
    """The signature's input dtypes: litert-torch writes int32 where the source took int64 token ids."""
    details = interpreter.get_signature_runner(signature).get_input_details()
    return {name: detail["dtype"] for name, detail in details.items()}


def _cast(array, dtype):
    """A calibration sample in the dtype the TFLite model takes (int64 ids -> int32); floats stay."""
    import numpy as np

    array = np.asarray(array)
    if dtype is None or array.dtype == dtype or array.dtype.kind not in "iub":
        return array
    return array.astype(dtype)


SETTINGS = {
    "static": {"weights": "int8 per channel (symmetric)", "activations": "int8 per tensor (asymmetric)"},
    "dynamic": {"weights": "int8 per channel", "activations": "float (quantized at run time)"},
    "fp16": {"weights": "float16", "activations": "float32"},
}


@dataclasses.dataclass
class Calibrated:
    """A float model calibrated once, re-quantized with any set of ops kept float (the rescue's
    candidates share the first attempt's calibration)."""

    fp32: bytes
    signature: str
    samples: list[dict]
    ranges: dict  # the AI Edge Quantizer's calibration result: tensor name -> {"min", "max"}
    # ops whose INT8 parameters LiteRT refused (`quantize`): float in every attempt, shared by copies
    refused: list = dataclasses.field(default_factory=list)
    because: str = ""  # LiteRT's first refusal

    def quantize(self, float_ops=(), wide: bool = False) -> bytes:
        """The INT8 model (16-bit activations if `wide`) with `float_ops` kept float, and the ops
        LiteRT refuses quantized too: the AI
        Edge Quantizer can write parameters LiteRT rejects (PP-OCRv4's TRANSPOSE_CONV bias, shaped
        [1, 1, 1, 24], got 24 per-axis scales on its dimension of 1). Each refusal names a tensor; the
        ops using it stay float and the model is re-quantized, up to MAX_REFUSALS times."""
        ops = aeq_rescue.graph_ops(self.fp32)
        for _ in range(MAX_REFUSALS + 1):
            data = self._quantized([*float_ops, *(op for op in self.refused if op not in float_ops)], wide)
            why = aeq_rescue.refusal(data)
            if why is None:
                return data
            self.because = self.because or why
            blamed = [op for op in aeq_rescue.ops_using(data, why, ops) if op not in self.refused]
            if not blamed or len(self.refused) >= MAX_REFUSALS:
                raise EngineFailure(_engine_message(why, self.refused))
            self.refused.extend(blamed)
        raise EngineFailure(_engine_message(why or "", self.refused))  # unreachable: the loop raises first

    def _quantized(self, float_ops, wide: bool = False) -> bytes:
        aeq = require(
            "ai_edge_quantizer.quantizer", "convert-tflite", "TFLite quantization (ai-edge-quantizer)"
        )
        quantizer = aeq.Quantizer(self.fp32, _recipe("static", float_ops, wide))
        with quiet():
            result = quantizer.quantize(self.ranges, enable_progress_bar=False, enable_progress_report=False)
        return bytes(result.quantized_model)


MAX_REFUSALS = 8  # ops kept float because LiteRT refused their INT8 parameters, before giving up


class EngineFailure(RuntimeError):
    """The quantizer could not write a model LiteRT loads: an internal failure, not bad input."""


def _engine_message(why: str, refused: list) -> str:
    tried = f" (with {', '.join(f'{op.kind} {op.name!r}' for op in refused)} kept float)" if refused else ""
    return (
        f"the AI Edge Quantizer wrote an INT8 model LiteRT refuses{tried}: {why} - a limitation of the "
        "quantizer, not of the input model; preset fp16 or dynamic, or format onnx, avoid it"
    )


def calibrate(fp32: bytes, calibration, names: list[str]) -> Calibrated:
    """Static INT8's calibration on `calibration` (an ArraySource), one sample at a time since the
    model's batch is 1 (or the source's fixed batch).

    The AI Edge Quantizer's calibration keeps a moving average (0.95) of each sample's min and max: the
    first samples weigh most, and a tensor of one value per sample (MediaPipe's face-landmark "face
    present" logit) gets min = max, a range that rounds every other value away (cosine 0.16). The
    rescue recalibrates with the true min and max over all samples (`_true_ranges`, as ONNX Runtime's
    MinMax calibrates); the first attempt stays as the quantizer makes it."""
    quantizer = require(
        "ai_edge_quantizer.quantizer", "convert-tflite", "TFLite quantization (ai-edge-quantizer)"
    )
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=fp32)
    (signature,) = interpreter.get_signature_list()
    types = _input_types(interpreter, signature)
    samples = [{n: _cast(feed[n], types.get(n)) for n in names} for feed in calibration.samples()]
    with quiet():
        ranges = quantizer.Quantizer(fp32, _recipe("static")).calibrate({signature: samples}, num_threads=1)
    return Calibrated(fp32, signature, samples, ranges)


def _widest(qsv: dict, new: dict) -> dict:
    """The calibrator's update: the running min and max (not a moving average)."""
    import numpy as np

    if not qsv:
        return new
    return {"min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def quantize(fp32: bytes, mode: str, calibration, names: list[str]) -> tuple[bytes, dict]:
    """Apply `mode` (static | dynamic | fp16) to fp32 `.tflite` bytes whose signature inputs are
    `names` (the source's); static INT8 calibrates on `calibration` (see `calibrate`)."""
    if mode == "static":
        calibrated = calibrate(fp32, calibration, names)
        return calibrated.quantize(), _report(mode, calibrated, calibration)
    aeq = require("ai_edge_quantizer.quantizer", "convert-tflite", "TFLite quantization (ai-edge-quantizer)")
    with quiet():
        quantized = aeq.Quantizer(fp32, _recipe(mode)).quantize(
            None, enable_progress_bar=False, enable_progress_report=False
        )
    return bytes(quantized.quantized_model), _report(mode)


def _report(mode: str, calibrated: Calibrated | None = None, calibration=None) -> dict:
    report: dict = {"mode": mode, "engine": "ai-edge-quantizer"}
    if calibrated is not None:
        report["calibration"] = {"samples": len(calibrated.samples), "path": str(calibration.path),
                                 "method": "minmax"}  # fmt: skip
    return {**report, **SETTINGS[mode]}


def quantize_tflite(config, model: TFLiteHandle, ctx: ExportContext) -> StepResult:
    """The recipe's mode on the float TFLite model, calibrated on the recipe's data for static INT8.
    Full-integer: a DIV whose divisor can round to 0 stays float (`_zero_divisors`), and a model that
    misses the gate gets its most sensitive ops back in float (`_rescued`, steps/aeq_rescue.py)."""
    source = ctx.source
    if source.kind == "tflite":  # a .tflite source: what the quantizer cannot read in it is refused
        source.native.check_tflite(config.mode)
    names = [s.name for s in source.inputs]
    if config.mode != "static":
        data, report = quantize(model.data, config.mode, None, names)
        return StepResult(TFLiteHandle(data, of_mode(config.mode), model.io), report)
    calibration = ctx.step.calibration()
    calibrated = calibrate(model.data, calibration, names)
    divisors = _zero_divisors(calibrated)
    why = "its divisor can round to the INT8 zero point, where an INT8 DIV fails"
    _refuse_float([op for op in divisors if op.kind == "DIV"], ctx, why)
    data, report = calibrated.quantize(divisors), _report("static", calibrated, calibration)
    if divisors:
        report["float_divisors"] = {"layers": [op.name for op in divisors], "because": ZERO_DIVISOR}
    if calibrated.refused:
        because = (
            f"LiteRT refuses the INT8 parameters the AI Edge Quantizer wrote for it ({calibrated.because})"
        )
        _refuse_float(calibrated.refused, ctx, because)
        report["float_refused"] = {"layers": [op.name for op in calibrated.refused], "because": because}
    if ctx.gate is not None and config.search == "rescue":  # "off": the gate only checks
        data, report = _rescued(calibrated, divisors, data, report, ctx)
    return StepResult(TFLiteHandle(data, of_mode("static"), model.io), report)


ZERO_DIVISOR = (
    "the divisor's calibrated range comes within one INT8 step of 0: an INT8 DIV fails at run time "
    "on a divisor that rounds to its zero point (the DIV and the op computing its divisor stay float)"
)


def _zero_divisors(calibrated: Calibrated) -> list:
    """DIV ops whose divisor is an activation whose calibrated range comes within one INT8 step of 0
    (the range INT8 covers always holds 0, at the zero point), and the ops computing those divisors.
    Quantized, such a DIV raises (`div.cc data[i] != zero_point`) on any sample whose divisor rounds to
    0: basic-pitch's CQT front end did on a real recording; x / (relu(h) + 1e-3) does with h <= 0."""
    ops = aeq_rescue.graph_ops(calibrated.fp32)
    # the ops computing the divisor too (up through data moves): an INT8 divisor dequantized for a
    # float DIV is 0 there as well (inf)
    found = [[*aeq_rescue.producers(ops, op.divisor), op] for op in ops
             if op.divisor and _near_zero(calibrated.ranges, op.divisor)]  # fmt: skip
    return list(dict.fromkeys(op for chain in found for op in chain))


def _near_zero(ranges: dict, name: str) -> bool:
    """Whether the calibrated range of tensor `name` comes within one INT8 step of 0, so that some of
    its values round to the zero point (the range INT8 covers always holds 0)."""
    import numpy as np

    qsv = ranges.get(name) or {}
    if "min" not in qsv:
        return False
    low, high = float(np.min(qsv["min"])), float(np.max(qsv["max"]))
    if high - low <= 1e-6 * max(abs(high), abs(low)):  # one value per sample, moving-averaged to a
        return True  # point (basic-pitch's spectrogram max, 78.4 on every sample): its spread is unknown
    step = (max(high, 0.0) - min(low, 0.0)) / 255
    nearest = 0.0 if low <= 0.0 <= high else min(abs(low), abs(high))
    return nearest < step


def _integer_only(ctx: ExportContext) -> bool:
    """TFLite Micro (c-array) and integer I/O need every op integer."""
    return ctx.io != "float" or ctx.format == "c-array"


def _refuse_float(ops, ctx: ExportContext, why: str) -> None:
    """An op left float makes the model mixed: TFLite Micro (c-array) and integer I/O need every op
    integer, so refuse in one line naming the op instead of writing a model they cannot run."""
    if not ops or not _integer_only(ctx):
        return
    needs = "TensorFlow Lite Micro (c-array) runs only integer ops" if ctx.format == "c-array" else \
        f"io = '{ctx.io}' needs every op integer"  # fmt: skip
    raise InputError(
        f"no full-integer INT8 of this model: op '{ops[0].name}' ({ops[0].kind}) must stay float ({why}), and "
        f"{needs}; export format = 'tflite' with io = 'float' (a mixed INT8/float model), or preset fp32"
    )


def _rescued(calibrated: Calibrated, always: list, first: bytes, report: dict, ctx: ExportContext):
    """The first attempt if it passes (`_judge`: the gate with aeq_rescue.MARGIN and every sample at
    the bar; the same bytes). Else, recalibrated on the true ranges, with the heads of the outputs that
    failed float (aeq_rescue.head_ops), the front ends computing a LOG of a near-zero argument
    (aeq_rescue.log_fronts) and the ops on tensors holding +-inf (aeq_rescue.unbounded_ops): the
    candidate with the fewest ranked ops kept float that passes; if none does, the same search with
    16-bit activations (`_widened`). `kept_float` in the report."""
    import tempfile
    from pathlib import Path

    started = time.monotonic()
    judge = _judge(ctx)
    workdir = Path(tempfile.mkdtemp(prefix="aeq-rescue-", dir=ctx.step.workdir))
    (workdir / "first.tflite").write_bytes(first)
    _, because, failing = judge(workdir / "first.tflite")
    if because is None:
        return first, report
    if _integer_only(ctx) and ctx.gate is not None:  # no float op possible: the gate's own verdict, as before
        because = ctx.gate.failure(workdir / "first.tflite", of_mode("static"))
        if because is None:
            return first, report
    true_ranges = dataclasses.replace(calibrated, ranges=_true_ranges(calibrated))
    heads = [op for op in aeq_rescue.head_ops(calibrated.fp32, failing) if op not in always]
    fronts = aeq_rescue.log_fronts(aeq_rescue.graph_ops(calibrated.fp32),
                                   lambda name: _near_zero(true_ranges.ranges, name))  # fmt: skip
    masks = aeq_rescue.unbounded_ops(calibrated.fp32, calibrated.samples, calibrated.signature)
    fronts = list(dict.fromkeys(op for op in [*fronts, *masks] if op not in always and op not in heads))
    pinned = [*heads, *fronts]  # float in every candidate
    float_ops = [*always, *pinned]
    ranked = aeq_rescue.rank(calibrated.fp32, true_ranges.quantize(float_ops), calibrated.samples,
                             calibrated.signature)  # fmt: skip
    _refuse_float((pinned + ranked)[:1], ctx, f"the full-integer model misses the gate: {because}")
    plan = aeq_rescue.Search(
        lambda ops: true_ranges.quantize([*float_ops, *ops]), lambda p: judge(p)[:2], workdir
    )
    data, kept, tried = aeq_rescue.search(ranked, plan)
    wide = data is None
    if wide:
        data, kept, tried = _widened(true_ranges, float_ops, ranked, plan, tried)
    for entry in tried:  # the heads and fronts stay float in every candidate
        entry["float_layers"] += len(pinned)
    if data is None:  # none passed: the first attempt goes on to the gate, nothing kept float
        pinned, data, wide = [], first, False
    kept_float = {"layers": [op.name for op in [*pinned, *kept]], "because": because, "tried": tried,
                  "heads": [op.name for op in heads], "calibration": "true min/max over the samples",
                  "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    if fronts and data is not first:
        kept_float["fronts"] = [op.name for op in fronts]
    if wide:
        kept_float["activations"] = "int16"
        report = {**report, "activations": WIDE}
    return data, {**report, "kept_float": kept_float}


WIDE = "int16 per tensor (symmetric): no INT8 candidate met the bar"


def _widened(true_ranges: Calibrated, float_ops: list, ranked: list, plan, tried: list):
    """The rescue's search again with 16-bit activations everywhere (weights stay int8 per channel):
    for a model whose error is spread over the per-tensor INT8 ranges of its whole backbone. MediaPipe's
    back-camera face detector: INT8 0.93, 72 of its 144 ops float 0.96, all 144 in 16 bits 0.996 (with
    its heads float). Mixing the two (the worst ops in 16 bits) did not help there: 96 of 144 in 16
    bits still gave 0.975, each INT8/INT16 boundary requantizes. LiteRT runs 16-bit activations on
    its reference kernels (no XNNPACK): slower than INT8, which is why it comes last."""
    wide = dataclasses.replace(plan, quantize=lambda ops: true_ranges.quantize([*float_ops, *ops], wide=True),
                               label="int16")  # fmt: skip
    data, kept, more = aeq_rescue.search(ranked, wide)
    return data, kept, [*tried, *({**entry, "activations": "int16"} for entry in more)]


def _true_ranges(calibrated: Calibrated) -> dict:
    """The same samples' true min/max ranges (see `calibrate`)."""
    from ai_edge_quantizer import calibrator, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(_recipe("static"))
    with quiet():
        run = calibrator.Calibrator(calibrated.fp32, num_threads=1, qsv_update_func=_widest)
        run.calibrate({calibrated.signature: calibrated.samples}, manager)
    return run.get_model_qsvs()


def _judge(ctx: ExportContext):
    """(min cosine, why it fails or None, the failing outputs) for a candidate file: the gate with
    aeq_rescue.MARGIN, and, on few samples (aeq_rescue.FEW_SAMPLES), every sample's own cosine at the
    bar (with 4 samples the mean hides one bad image: face-short passed at 0.985 overall with one
    sample at 0.976, and was 0.95 on 8 unseen crops; on 10,000 MNIST digits one sample's logits below
    the bar say nothing)."""
    from ...targets.records import NOISE_FLOOR

    gate = ctx.gate
    assert gate is not None
    precision, measured = of_mode("static"), {}

    def measure(path):  # each candidate runs on the verification samples once
        if path not in measured:
            measured[path] = gate.measure(path)
        return measured[path]

    strict = dataclasses.replace(gate, measure=measure)
    bar = gate.min_cosine(precision)

    def judge(path):
        """(min cosine, the first failure or None, the names of the outputs that fail)."""
        result = measure(path)
        failure = strict.failure(path, precision, aeq_rescue.MARGIN)
        few = result.samples <= aeq_rescue.FEW_SAMPLES
        low = [o for o in result.outputs if bar is not None and (o.error or o.cosine < bar + aeq_rescue.MARGIN
               or (few and o.cosine_worst_sample is not None and o.cosine_worst_sample < bar))
               and not (o.max_abs_error is not None and o.max_abs_error <= NOISE_FLOOR)]  # fmt: skip
        if failure is None and low:
            failure = (
                f"output '{low[0].name}' has cosine {low[0].cosine_worst_sample:.4f} < {bar} on one sample"
            )
        return result.cosine_min, failure, {o.name for o in low}

    return judge


AEQ = Quantizer(
    "ai-edge-quantizer", "tflite", "tflite", ("static", "dynamic", "fp16"), ("auto",), quantize_tflite
)
