"""A quantization engine defined outside edgesmith, as docs/adding_a_step.md says one is written: this
one file plus one line in the registry (`QUANTIZERS`). tests/test_plan.py appends it for one test and
removes it after.

The engine is ONNX Runtime's dynamic INT8 with one scale per weight tensor (`per_channel=False`), under
an engine name no shipped quantizer answers to: a recipe that writes `engine = "ort-per-tensor"` is
refused by the validator until the quantizer is registered.
"""

from edgesmith.converter.handle import ModelHandle
from edgesmith.converter.precision import INT8_DYNAMIC
from edgesmith.converter.steps.base import ExportContext, Quantizer, StepResult

ENGINE = "ort-per-tensor"


def quantize(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    """The float ONNX `model` -> a new ONNX file in the work folder, weights INT8 per tensor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = ctx.step.workdir / f"{model.path.stem}.{ENGINE}.onnx"
    quantize_dynamic(str(model.path), str(out), per_channel=False, weight_type=QuantType.QInt8)
    report = {"mode": config.mode, "engine": ENGINE, "weights": "int8, one scale per tensor"}
    return StepResult(ModelHandle(out, INT8_DYNAMIC), report)


PER_TENSOR = Quantizer(ENGINE, "onnx", "onnx", ("dynamic",), (ENGINE,), quantize)
