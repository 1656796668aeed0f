"""INT8 ONNX with the ranges a `qat` step learned (`engine = "auto"` or `"qat"` after a qat step).

The `qat` step (steps/qat.py) trains a PT2E graph with fake quantizers: int8 per-channel weights and
activation ranges (scales, zero points) that training adapted to. Recalibrating those ranges, as the
per-format quantizers do, throws that part away. Here PT2E's own `convert_pt2e` turns the trained
graph into quantize/dequantize pairs with exactly those ranges, and torch's ONNX exporter writes them
as QuantizeLinear/DequantizeLinear (`inc_quantize.export_qdq`, the path Neural Compressor's INT8
takes too): the artifact computes what the fake-quantized model computed in training.

ONNX only: OpenVINO and TFLite exports of the same run are quantized by their own engines (NNCF,
the AI Edge Quantizer), which calibrate again. `engine = "onnxruntime"` recalibrates the ONNX
export too, for comparison.
"""

from __future__ import annotations

import copy

from ...errors import InputError, require
from ..handle import ModelHandle
from ..precision import INT8
from .base import ExportContext, Facts, Quantizer, StepResult
from .inc_quantize import export_args, export_qdq

SOURCES = ("pt2", "torch")


def quantize_onnx(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    """The trained graph of the run's qat step (`ctx.source.qat`), converted and exported to QDQ ONNX;
    `model` is the fp32 ONNX export, whose file name the result takes."""
    source, step = ctx.source, ctx.step
    if source.qat is None:
        raise RuntimeError("internal error: the qat quantizer was planned for a run without a qat step")
    require("torchao", "convert", "the qat step's INT8 export uses torchao's PT2E convert")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    cal = step.calibration()  # only for the inputs the graph is captured with: no calibration here
    names = [s.name for s in source.inputs]
    args, dynamic = export_args(cal, names)
    converted = convert_pt2e(copy.deepcopy(source.qat))
    out = step.workdir / f"{model.path.stem}.qat-int8.onnx"
    folded = export_qdq(converted, args, dynamic, names, out)
    report = {
        "engine": "qat",
        "mode": "static",
        "format": "qdq",
        "path": "pt2e convert_pt2e of the qat step's trained graph (X86InductorQuantizer)",
        "activations": "uint8 asymmetric per-tensor, ranges learned in training",
        "weights": "int8 symmetric per-channel",
        "per_channel": True,
        "calibration": "none: the ranges come from the qat step",
        "folded_weights": folded,
    }
    return StepResult(ModelHandle(out, INT8), report)


def check(config, facts: Facts) -> None:
    """What this export cannot do, refused before any model is loaded."""
    if not facts.qat:
        raise InputError(
            "engine 'qat' exports the ranges a qat step learned: add a qat step as the last PyTorch step"
        )
    if config.exclude or config.op_types:
        raise InputError(
            "engine 'qat' exports every layer the qat step quantized; exclude and op_types apply to "
            "engine = 'onnxruntime' (which calibrates the QAT-trained weights again)"
        )


QAT_ONNX = Quantizer("qat", "source", "onnx", ("static",), ("auto", "qat"), quantize_onnx, SOURCES, check,
                     after_qat=True)  # fmt: skip
