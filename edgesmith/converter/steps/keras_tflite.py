"""Keras to TFLite with TensorFlow's own converter: the path Keras models are meant to take, and the
only one that keeps their dynamic batch axis and NHWC layout exactly as trained.

It converts and quantizes in one pass, so it is a quantizer that consumes the source (`KERAS` below:
the TFLite exports of a Keras model no ONNX-level step changed); the TFLite exporter calls
`convert_source` with no mode for the fp32 model.

Precision maps onto the converter's options: fp16 = float16 weights (`supported_types`), dynamic =
`Optimize.DEFAULT` alone, static = `Optimize.DEFAULT` + a representative dataset (the recipe's
calibration data, one sample per step) + `TFLITE_BUILTINS_INT8` only, so an op without an int8
kernel fails conversion instead of silently staying float.
"""

from __future__ import annotations

from ..._quiet import tensorflow as quiet
from ...errors import InputError, require
from .. import tflite_fb
from ..handle import ModelHandle, TFLiteHandle
from ..precision import of_mode
from .base import ExportContext, Quantizer, StepResult


def convert(model, mode: str | None, calibration, inputs, io: str) -> tuple[bytes, dict | None]:
    with quiet():  # TensorFlow's C++ logging level is read at import
        tf = require("tensorflow", "convert-tflite", "TFLite export from Keras")
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    report: dict = {}  # stays empty at fp32
    if mode is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        report.update(mode=mode, engine="tensorflow.lite")
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        report.update(weights="float16", activations="float32")
    elif mode == "dynamic":
        report.update(weights="int8 per channel", activations="float (quantized at run time)")
    elif mode == "static":
        names = [s.name for s in inputs]

        def representative():
            for batch in calibration.batches():
                for i in range(len(batch[names[0]])):
                    yield [batch[n][i : i + 1] for n in names]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]
        converter.inference_input_type = converter.inference_output_type = dtype
        report.update(
            weights="int8 per channel (symmetric)",
            activations="int8 per tensor (asymmetric)",
            calibration={"samples": len(calibration), "path": str(calibration.path), "method": "minmax"},
        )
    try:
        with quiet():
            data = converter.convert()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"TensorFlow's TFLite converter failed on the Keras model ({first}); an op may have no "
            "TFLite (or int8) kernel"
        ) from exc
    with quiet():  # the bytes open in LiteRT (which announces its XNNPACK delegate once per process)
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_content=bytes(data)).allocate_tensors()
    return bytes(data), report or None


def convert_source(source, model: ModelHandle, mode: str | None, calibration, io: str) -> tuple[bytes, dict]:
    """The Keras source as `.tflite` bytes at `mode` (None: fp32), its signature named after the source's
    inputs and the fp32 ONNX `model`'s outputs, and the report."""
    data, report = convert(source.native, mode, calibration, source.inputs, io)
    data = tflite_fb.rename_signature(data, [s.name for s in source.inputs], model.output_names())
    return data, dict(report or {}, converter="tensorflow.lite")


def quantize_keras(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    calibration = ctx.step.calibration() if config.mode == "static" else None
    data, report = convert_source(ctx.source, model, config.mode, calibration, ctx.io)
    io = ctx.io if config.mode == "static" else "float"  # the converter sets integer I/O itself
    return StepResult(TFLiteHandle(data, of_mode(config.mode), io), report)


KERAS = Quantizer(
    "tensorflow.lite",
    "source",
    "tflite",
    ("static", "dynamic", "fp16"),
    ("auto",),
    quantize_keras,
    ("keras",),
)
