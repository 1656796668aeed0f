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

from ..._quiet import tensorflow as quiet
from ...errors import require
from ..handle import TFLiteHandle
from ..precision import of_mode
from .base import ExportContext, Quantizer, StepResult


def _recipe(mode: str):
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    manager = recipe_manager.RecipeManager()
    if mode == "static":  # int8 activations (asymmetric, per tensor), int8 weights per channel
        manager.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
        for boundary in (ops.INPUT, ops.OUTPUT):  # float I/O; set_io_type makes it integer on request
            manager.add_quantization_config(".*", boundary, algorithm_key=AlgorithmName.NO_QUANTIZE)
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


def quantize(fp32: bytes, mode: str, calibration, names: list[str]) -> tuple[bytes, dict]:
    """Apply `mode` (static | dynamic | fp16) to fp32 `.tflite` bytes whose signature inputs are
    `names` (the source's). Static INT8 calibrates on `calibration` (an ArraySource), one sample at a
    time since the model's batch is 1 (or the source's fixed batch)."""
    aeq = require("ai_edge_quantizer.quantizer", "convert-tflite", "TFLite quantization (ai-edge-quantizer)")
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=fp32)
    (signature,) = interpreter.get_signature_list()
    quantizer = aeq.Quantizer(fp32, _recipe(mode))
    report: dict = {"mode": mode, "engine": "ai-edge-quantizer"}
    with quiet():
        result = None
        if mode == "static":
            types = _input_types(interpreter, signature)
            samples = [{n: _cast(feed[n], types.get(n)) for n in names} for feed in calibration.samples()]
            result = quantizer.calibrate({signature: samples}, num_threads=1)
            report["calibration"] = {
                "samples": len(samples),
                "path": str(calibration.path),
                "method": "minmax",
            }
        quantized = quantizer.quantize(result, enable_progress_bar=False, enable_progress_report=False)
    report.update(
        {
            "static": {
                "weights": "int8 per channel (symmetric)",
                "activations": "int8 per tensor (asymmetric)",
            },
            "dynamic": {"weights": "int8 per channel", "activations": "float (quantized at run time)"},
            "fp16": {"weights": "float16", "activations": "float32"},
        }[mode]
    )
    return bytes(quantized.quantized_model), report


def quantize_tflite(config, model: TFLiteHandle, ctx: ExportContext) -> StepResult:
    """The recipe's mode on the float TFLite model, calibrated on the recipe's data for static INT8."""
    source = ctx.source
    if source.kind == "tflite":  # a .tflite source: what the quantizer cannot read in it is refused
        source.native.check_tflite(config.mode)
    calibration = ctx.step.calibration() if config.mode == "static" else None
    data, report = quantize(model.data, config.mode, calibration, [s.name for s in source.inputs])
    return StepResult(TFLiteHandle(data, of_mode(config.mode), model.io), report)


AEQ = Quantizer(
    "ai-edge-quantizer", "tflite", "tflite", ("static", "dynamic", "fp16"), ("auto",), quantize_tflite
)
