"""Weight-only INT8/INT4 (`[quantize] mode = "weight-only"`, `bits`, `block_size`): the weights of the
MatMuls are stored in 8 or 4 bits, one scale per block of `block_size` input channels; activations stay
float. No calibration data. What it is for: MatMul-heavy models (transformers) whose size is their
weights and whose activations do not survive 8 bits (docs/accuracy.md, "Weight-only").

- ONNX: ONNX Runtime's `MatMulNBitsQuantizer` (RTN, symmetric): each MatMul with a constant weight
  becomes a `com.microsoft.MatMulNBits`, which ONNX Runtime's CPU kernels run on the packed weights
  (with int8 activation blocks: `INT8_COMPUTE`).
  With `bits = 4` the token embedding (`Gather` of a constant table, all-MiniLM-L6-v2: 47 of its 90
  MB) is stored as `GatherBlockQuantized` too; ONNX Runtime supports that only at 4 bits.
- OpenVINO: NNCF's data-free `compress_weights`, `INT8_ASYM` (per output channel) or `INT4_SYM` (groups of
  `block_size`; NNCF keeps the embedding and the last layer at INT8_ASYM, its default backup).

TFLite has no block-wise weight-only kernels: the exporters refuse it with `--preset int8-dynamic`
(INT8 weights, what TFLite calls dynamic range quantization) as the fix.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from contextlib import redirect_stdout
from typing import Any

from ..._quiet import quiet
from ...errors import InputError, require
from ..handle import ModelHandle, OpenVINOHandle
from ..precision import of_mode
from .base import ExportContext, Quantizer, StepContext, StepResult
from .quantize import check_loads, excluded_nodes

# MatMulNBits' accuracy_level 4: the kernel multiplies int8 blocks of the activations with the unpacked
# weights (VNNI/AMX on x86). On all-MiniLM-L6-v2 it scored as the float-compute default (STS-B, 200
# test pairs: 93.08 vs 93.06 at 4 bits) and ran 1.14x faster (docs/accuracy.md).
INT8_COMPUTE = 4
ORT_LOGGER = "onnxruntime.quantization.matmul_nbits_quantizer"
TFLITE_FIX = (
    "weight-only INT4/INT8 is for the onnx and openvino formats; for TFLite use --preset int8-dynamic "
    "(INT8 weights, float activations)"
)


def _op_types(bits: int) -> tuple[str, ...]:
    """MatMul always; the embedding table (Gather) too at 4 bits, the only width ONNX Runtime's
    GatherBlockQuantized takes."""
    return ("MatMul", "Gather") if bits == 4 else ("MatMul",)


def quantize_onnx(config, model: ModelHandle, ctx: StepContext, excluded: list[str]) -> StepResult:
    """ONNX Runtime's MatMulNBits quantizer on `model` (nodes named in `excluded` stay float)."""
    onnx = require("onnx", "convert")
    nbits = require("onnxruntime.quantization.matmul_nbits_quantizer", "convert")
    from onnxruntime.quantization import QuantFormat

    algo = nbits.DefaultWeightOnlyQuantConfig(
        block_size=config.block_size,
        is_symmetric=True,
        accuracy_level=INT8_COMPUTE,
        bits=config.bits,
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=_op_types(config.bits),
    )
    quantizer = nbits.MatMulNBitsQuantizer(
        onnx.load(str(model.path)), nodes_to_exclude=excluded, algo_config=algo
    )
    with quiet(ORT_LOGGER):  # an INFO line for every node it skips
        quantizer.process()
    proto = quantizer.model.model
    counts = _counts(proto, ("MatMulNBits", "GatherBlockQuantized", "MatMul", "Gather"))
    if not counts["MatMulNBits"]:
        raise InputError(
            f"weight-only quantization found no MatMul with a constant weight in {model.path.name}: it is for "
            "MatMul-heavy models (transformers); use mode = 'static' or 'dynamic' for this one"
        )
    out = ctx.workdir / f"{model.path.stem}.{of_mode(config.mode, config.bits)}.onnx"
    onnx.save(proto, str(out))
    check_loads(out)
    report = {
        "mode": "weight-only",
        "engine": "onnxruntime",
        "algorithm": "MatMulNBits (RTN, symmetric)",
        "bits": config.bits,
        "block_size": config.block_size,
        "quantized": {"MatMul": counts["MatMulNBits"], "Gather": counts["GatherBlockQuantized"]},
        "float": {"MatMul": counts["MatMul"], "Gather": counts["Gather"]},
        "excluded_nodes": excluded,
    }
    return StepResult(ModelHandle(out, of_mode(config.mode, config.bits)), report)


def _counts(proto, op_types: tuple[str, ...]) -> dict[str, int]:
    return {op: sum(n.op_type == op for n in proto.graph.node) for op in op_types}


def compress_openvino(ov_model: Any, config) -> tuple[Any, dict]:
    """NNCF's data-free weight compression of an `openvino.Model`: INT8_ASYM per channel, or INT4_SYM in
    groups of `block_size` (embedding and last layer INT8_ASYM, NNCF's backup mode)."""
    nncf = require("nncf", "convert-openvino", "NNCF compresses OpenVINO weights")
    nncf.set_log_level(logging.ERROR)
    mode = nncf.CompressWeightsMode.INT4_SYM if config.bits == 4 else nncf.CompressWeightsMode.INT8_ASYM
    group = config.block_size if config.bits == 4 else None
    ignored = nncf.IgnoredScope(patterns=list(config.exclude), validate=False) if config.exclude else None
    with redirect_stdout(io.StringIO()):  # NNCF prints a bit-width table and progress bars
        compressed = nncf.compress_weights(ov_model, mode=mode, group_size=group, ratio=1.0 if group else None,
                                           ignored_scope=ignored)  # fmt: skip
    report = {
        "mode": "weight-only",
        "engine": "nncf",
        "nncf_version": nncf.__version__,
        "algorithm": f"compress_weights {mode.name}",
        "bits": config.bits,
        "block_size": group,
        "excluded": list(config.exclude),
    }
    return compressed, report


def _compress_export(config, model: OpenVINOHandle, ctx: ExportContext) -> StepResult:
    compressed, report = compress_openvino(model.model, config)
    return StepResult(
        dataclasses.replace(model, model=compressed, precision=of_mode(config.mode, config.bits)), report
    )


def _quantize_onnx_export(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    return quantize_onnx(config, model, ctx.step, excluded_nodes(model.path, config.exclude))


ONNX = Quantizer(
    "onnxruntime", "onnx", "onnx", ("weight-only",), ("auto", "onnxruntime"), _quantize_onnx_export
)
OPENVINO = Quantizer("nncf", "openvino", "openvino", ("weight-only",), ("auto", "nncf"), _compress_export)
