"""FP16 OpenVINO IR: OpenVINO's own FP16 format, weights compressed to float16 when the IR is saved
(`save_model(compress_to_fp16=True)`); the CPU plugin decompresses them at load time and computes in
its inference precision. The model itself does not change, only the precision it is written at.
"""

from __future__ import annotations

import dataclasses

from ..handle import OpenVINOHandle
from ..precision import FP16
from .base import ExportContext, Quantizer, StepResult


def compress(config, model: OpenVINOHandle, ctx: ExportContext) -> StepResult:
    report = {
        "mode": "fp16",
        "engine": "openvino",
        "weights": "float16 (compressed IR)",
        "io_types": "float32 (kept)",
    }
    return StepResult(dataclasses.replace(model, precision=FP16), report)


# `engine = "nncf"` names OpenVINO's tool chain: its fp16 is this one too
OPENVINO_FP16 = Quantizer("openvino", "openvino", "openvino", ("fp16",), ("auto", "nncf"), compress)
