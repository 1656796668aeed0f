"""OpenVINO IR with 1-bit weights: `BinaryConvolution` (u1 weights) where activations are binary too,
u1 weights unpacked by the graph where they are not.

Starts from the frozen model's ONNX file (see `binary_layers.freeze`), converted by OpenVINO, then
rewrites, per layer whose weights are exactly +-alpha_c per output channel:

- **binary activations** (a Convolution fed by `Pad(+1)(Select(x >= 0, 1, -1))`, the frozen `Sign`):
  `Multiply(alpha_c)(BinaryConvolution(FakeQuantize_2levels(x) -> 0/1, u1 bits, "xnor-popcount",
  pad_value=1))`. The input is given as explicit 0/1 (what the spec defines: 0 means -1) rather than
  as raw floats, which the CPU plugin binarizes with x > 0 (sign(0) is +1 here). The conv's bias
  stays the Add that follows it. BinaryConvolution computes the +-1 dot product as an integer, so
  with alpha rounded as `binary_layers` does, the layer is exact.
- **binary Linear** (a MatMul of the frozen Sign of an (N, K) input): a 1x1 BinaryConvolution on
  (N, K, 1, 1), reshaped back, times alpha.
- **weight-only** (any other Convolution and MatMul): the weight constant becomes
  `Multiply(alpha)(Convert(u1 bits) * 2 - 1)`; OpenVINO folds it once when compiling, the file keeps
  1 bit a weight.

The 2-level FakeQuantize (threshold just below 0) is what the CPU plugin fuses into the producer,
which then writes bits; a Convert to 0/1 floats costs a slow f32 -> u1 reorder per layer instead
(4.3x instead of 5.9x on the ResNet-18-like benchmark). The CPU plugin runs BinaryConvolution only
with static shapes (the IR gets a fixed batch), input channels a multiple of 8 (other layers take the
weight-only path). Run the IR in f32 (`edgesmith.runtime.load(..., exact=True)` or
`precision="f32"`): under the CPU's default bf16 the float layers round activations to 8 mantissa
bits before the sign, which flips bits (93.75 % top-1 agreement in a smoke test on random inputs). Bit order: the
CPU plugin's BinaryConvolution reads u1 weights least-significant bit first, while `Convert` of a u1
constant reads them most-significant bit first (both pinned by the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ...errors import InputError, require
from ..steps.binary_layers import PAD_VALUE, binary_values
from .openvino_names import stable_names

WHY = "the binary OpenVINO export builds OpenVINO graphs"


def _u1(ov, bits: np.ndarray, bitorder: Literal["big", "little"]):
    tensor = ov.Tensor(ov.Type.u1, ov.Shape(list(bits.shape)))
    tensor.data[:] = np.packbits(bits.reshape(-1), bitorder=bitorder)
    return ov.op.Constant(tensor)


def _const(node) -> np.ndarray | None:
    return node.get_data().copy() if node.get_type_name() == "Constant" else None


def _scalar(node, value: float) -> bool:
    data = _const(node)
    return data is not None and data.size == 1 and float(data.reshape(-1)[0]) == value


def _sign_input(data):
    """(x, spatial pads begin, end) if `data` is the frozen Sign of x (padded with +1), else None."""
    node = data.get_node()
    begin = end = [0, 0]
    if node.get_type_name() == "Pad":
        pads_begin, pads_end = _const(node.input_value(1).get_node()), _const(node.input_value(2).get_node())
        value = node.input_value(3).get_node() if node.get_input_size() > 3 else None
        if pads_begin is None or pads_end is None or value is None or not _scalar(value, PAD_VALUE):
            return None
        if any(pads_begin[:2]) or any(pads_end[:2]) or node.get_attributes().get("pad_mode") != "constant":
            return None
        begin, end = [int(v) for v in pads_begin[2:]], [int(v) for v in pads_end[2:]]
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Select":
        return None
    cond = node.input_value(0).get_node()
    if not (_scalar(node.input_value(1).get_node(), 1.0) and _scalar(node.input_value(2).get_node(), -1.0)):
        return None
    if cond.get_type_name() != "GreaterEqual" or not _scalar(cond.input_value(1).get_node(), 0.0):
        return None
    return cond.input_value(0), begin, end


def _unpacked_weight(ov, ops, weight: np.ndarray, alpha: np.ndarray, axis: int):
    shape = [1] * weight.ndim
    shape[axis] = weight.shape[axis]
    bits = ops.convert(_u1(ov, weight > 0, "big"), "f32")
    return ops.multiply(ops.add(ops.multiply(bits, np.float32(2)), np.float32(-1)), alpha.reshape(shape))


def _binarize(ops, x):
    """x >= 0 -> 1, else 0, as a 2-level FakeQuantize: the CPU plugin fuses it into the op before and
    writes bits directly (a Convert to 0/1 floats costs a slow f32 -> u1 reorder per layer, more than
    the binary convolution itself). The threshold sits just below 0 so that sign(0) = +1."""
    threshold = np.float32(-np.finfo(np.float32).tiny)
    return ops.fake_quantize(x, threshold, threshold, np.float32(0), np.float32(1), 2)


def _binary_conv(ov, ops, conv, weight: np.ndarray, alpha: np.ndarray, sign):
    x, begin, end = sign
    attrs = conv.get_attributes()
    pads_begin = [a + b for a, b in zip(attrs["pads_begin"], begin, strict=True)]
    pads_end = [a + b for a, b in zip(attrs["pads_end"], end, strict=True)]
    binary = ops.binary_convolution(
        _binarize(ops, x), _u1(ov, weight > 0, "little"), attrs["strides"], pads_begin,
        pads_end, attrs["dilations"], "xnor-popcount", PAD_VALUE,
    )  # fmt: skip
    return ops.multiply(binary, alpha.reshape(1, -1, 1, 1))


def _binary_dense(ov, ops, op, weight: np.ndarray, alpha: np.ndarray, axis: int, x):
    """A MatMul of sign(x) (N, K) as a 1x1 BinaryConvolution on (N, K, 1, 1), times alpha."""
    w = weight if axis == 0 else weight.T  # (O, K)
    o, k = w.shape
    batch = op.get_output_partial_shape(0)[0].get_length()
    x4 = ops.reshape(x, np.array([batch, k, 1, 1], np.int64), False)  # before the FakeQuantize: fusable
    kernel = _u1(ov, (w > 0).reshape(o, k, 1, 1), "little")
    binary = ops.binary_convolution(
        _binarize(ops, x4), kernel, [1, 1], [0, 0], [0, 0], [1, 1], "xnor-popcount", PAD_VALUE
    )
    out = ops.reshape(binary, np.array([batch, o], np.int64), False)
    return ops.multiply(out, alpha.reshape(1, -1))


def _static(parameter, batch: int) -> list[int]:
    shape = parameter.get_partial_shape()
    if not shape[1:].is_static:
        raise InputError(
            f"OpenVINO BinaryConvolution needs static shapes, but input '{parameter.get_friendly_name()}' "
            f"is {shape} beyond the batch axis; export the model with fixed input sizes"
        )
    return [batch] + [d.get_length() for d in shape[1:]]


def convert(src: str | Path, dest: str | Path, batch: int = 1, min_weights: int = 64) -> dict:
    """ONNX file `src` (frozen binarized model) -> OpenVINO IR `dest` (.xml + .bin); per-layer report.

    The IR has a fixed batch size `batch`: the CPU plugin's BinaryConvolution refuses dynamic shapes.
    """
    ov = require("openvino", "convert-openvino", WHY)
    from openvino import opset1 as ops

    model = ov.convert_model(str(src))
    model.reshape({p.output(0): _static(p, batch) for p in model.get_parameters()})
    layers = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "MatMul") or op.get_input_size() < 2:
            continue
        weight = _const(op.input_value(1).get_node())
        if weight is None or weight.size < min_weights or weight.dtype != np.float32:
            continue
        axis = 0 if kind == "Convolution" or op.get_attributes().get("transpose_b") else weight.ndim - 1
        # alpha per output channel: None unless every weight is +-alpha (then the layer stays float)
        alpha = binary_values(weight, axis) if weight.ndim == (4 if kind == "Convolution" else 2) else None
        if alpha is None:
            continue
        sign = _sign_input(op.input_value(0))
        k = weight.shape[1] if axis == 0 else weight.shape[0]
        if sign is not None and (k % 8 or op.get_output_partial_shape(0).rank.get_length() != weight.ndim):
            sign = None  # the CPU kernel packs input channels by 8; dense: (N, K) inputs only
        if sign is not None:
            if kind == "Convolution":
                new = _binary_conv(ov, ops, op, weight, alpha, sign)
            else:
                new = _binary_dense(ov, ops, op, weight, alpha, axis, sign[0])
            new.set_friendly_name(op.get_friendly_name())
            op.output(0).replace(new.output(0))
        else:
            op.input(1).replace_source_output(_unpacked_weight(ov, ops, weight, alpha, axis).output(0))
        layers.append({
            "node": op.get_friendly_name(),
            "op": ("BinaryConvolution" + ("" if kind == "Convolution" else " 1x1")) if sign else f"{kind} (u1 weights)",
            "shape": list(weight.shape), "fp32_bytes": weight.size * 4,
            "packed_bytes": -(-weight.size // 8) + weight.shape[axis] * 4,
        })  # fmt: skip
    model.validate_nodes_and_infer_types()
    stable_names(model, Path(src))  # OpenVINO's counter-based names would differ between runs
    dest = Path(dest)
    ov.save_model(model, str(dest), compress_to_fp16=False)
    fp32 = sum(row["fp32_bytes"] for row in layers)
    packed = sum(row["packed_bytes"] for row in layers)
    return {
        "format": "openvino",
        "layers": layers,
        "binary_fp32_bytes": fp32,
        "binary_packed_bytes": packed,
        "binary_ratio": round(packed / fp32, 4) if fp32 else None,
        "file_bytes": dest.with_suffix(".bin").stat().st_size + dest.stat().st_size,
        "bin_bytes": dest.with_suffix(".bin").stat().st_size,
        "batch": batch,
    }
