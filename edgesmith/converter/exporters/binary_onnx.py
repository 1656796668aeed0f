"""Store the binary-valued weights of an ONNX model as bits, with a small graph that unpacks them.

ONNX has no 1-bit tensor type, so a weight whose values are exactly +-alpha_c per output channel
(what `binary_layers.freeze` and a standard export give, also after the exporter folds a BatchNorm
into the conv: that only changes alpha_c) is replaced by

    bits (uint8, 8 weights a byte, MSB first) -> BitShift RIGHT by [7..0] -> BitwiseAnd 1
    -> Reshape (-> Slice) -> Cast float -> *2 -1 -> Reshape to the weight's shape -> Mul alpha

whose output keeps the weight's name, so the consumers (Conv, Gemm, MatMul) are untouched. The
rebuilt weights are bit-identical to the originals (alpha * +-1 is exact), so the packed model gives
exactly the outputs of the unpacked one; ONNX Runtime folds the subgraph once at session start. The
file shrinks to ~1/32 of the float weights for the binary layers. Needs opset >= 18 (BitwiseAnd).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import InputError, require
from ..steps.binary_layers import binary_values

IR_VERSION = 10  # onnx 1.23 writes 14 by default; onnxruntime 1.31 reads up to 13
MIN_OPSET = 18  # BitwiseAnd
MIN_WEIGHTS = 64  # smaller tensors are not worth a subgraph


def _weight_axis(node, initializers: dict) -> tuple[str, int] | None:
    """(initializer name, output-channel axis) of a Conv/Gemm/MatMul's constant weight, or None."""
    if node.op_type == "Conv" and len(node.input) > 1:
        return (node.input[1], 0) if node.input[1] in initializers else None
    if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in initializers:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        rank = len(initializers[node.input[1]].dims)
        if rank != 2:
            return None
        return node.input[1], 0 if (node.op_type == "Gemm" and trans_b) else 1
    return None


def _unpack_nodes(name: str, weight: np.ndarray, axis: int, alpha: np.ndarray):
    """(nodes, initializers) computing `weight` (named `name`) from its packed bits."""
    from onnx import helper, numpy_helper

    stem = re.sub(r"[^0-9A-Za-z_]", "_", name) + "_bin"
    flat = (weight > 0).reshape(-1)
    packed = np.packbits(flat).reshape(-1, 1)  # MSB first, zero-padded to whole bytes
    alpha_shape = [1] * weight.ndim
    alpha_shape[axis] = weight.shape[axis]
    dtype = helper.np_dtype_to_tensor_dtype(weight.dtype)
    consts = {
        f"{stem}_bits": packed,
        f"{stem}_shifts": np.arange(7, -1, -1, dtype=np.uint8),
        f"{stem}_one": np.array(1, np.uint8),
        f"{stem}_flat": np.array([packed.size * 8], np.int64),
        f"{stem}_shape": np.array(weight.shape, np.int64),
        f"{stem}_alpha": alpha.astype(weight.dtype).reshape(alpha_shape),
        f"{stem}_two": np.array(2, weight.dtype),
        f"{stem}_minus1": np.array(-1, weight.dtype),
    }
    n = f"{stem}_"
    nodes = [
        helper.make_node(
            "BitShift", [n + "bits", n + "shifts"], [n + "shifted"], n + "shift", direction="RIGHT"
        ),
        helper.make_node("BitwiseAnd", [n + "shifted", n + "one"], [n + "bit"], n + "and"),
        helper.make_node("Reshape", [n + "bit", n + "flat"], [n + "all"], n + "flatten"),
    ]
    last = n + "all"
    if packed.size * 8 != flat.size:  # drop the padding bits of the last byte
        consts[n + "start"], consts[n + "end"] = np.array([0], np.int64), np.array([flat.size], np.int64)
        nodes.append(helper.make_node("Slice", [last, n + "start", n + "end"], [n + "used"], n + "slice"))
        last = n + "used"
    nodes += [
        helper.make_node("Cast", [last], [n + "float"], n + "cast", to=dtype),
        helper.make_node("Mul", [n + "float", n + "two"], [n + "double"], n + "double"),
        helper.make_node("Add", [n + "double", n + "minus1"], [n + "pm1"], n + "pm1"),
        helper.make_node("Reshape", [n + "pm1", n + "shape"], [n + "signs"], n + "reshape"),
        helper.make_node("Mul", [n + "signs", n + "alpha"], [name], n + "scale"),
    ]
    return nodes, [numpy_helper.from_array(v, k) for k, v in consts.items()]


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def pack(src: str | Path, dest: str | Path, min_weights: int = MIN_WEIGHTS) -> dict:
    """Write `src` to `dest` with its binary-valued weights bit-packed; returns the per-layer report."""
    onnx = require("onnx", "convert", "the binary ONNX export edits ONNX graphs")
    from onnx import numpy_helper

    model = onnx.load(str(src))
    if _opset(model) < MIN_OPSET:
        raise InputError(
            f"{src}: bit-packed weights need ONNX opset >= {MIN_OPSET} (BitwiseAnd), the model has "
            f"{_opset(model)}; export it with opset_version={MIN_OPSET} or later"
        )
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    new_nodes, new_inits, layers, packed_names = [], [], [], set()
    for node in graph.node:
        found = _weight_axis(node, initializers)
        if found is None or found[0] in packed_names:
            continue
        name, axis = found
        weight = numpy_helper.to_array(initializers[name])
        alpha = binary_values(weight, axis) if weight.size >= min_weights else None
        if alpha is None or weight.dtype not in (np.float32, np.float16):
            continue
        nodes, inits = _unpack_nodes(name, weight, axis, alpha)
        new_nodes += nodes
        new_inits += inits
        packed_names.add(name)
        packed_bytes = sum(numpy_helper.to_array(i).nbytes for i in inits)
        layers.append({
            "node": node.name, "op": node.op_type, "weight": name, "shape": list(weight.shape),
            "fp32_bytes": weight.size * 4, "packed_bytes": packed_bytes,
        })  # fmt: skip
    kept = [i for i in graph.initializer if i.name not in packed_names]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + old_nodes)  # unpacking first: the graph stays topologically sorted
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    fp32 = sum(row["fp32_bytes"] for row in layers)
    packed = sum(row["packed_bytes"] for row in layers)
    return {
        "format": "onnx",
        "layers": layers,
        "binary_fp32_bytes": fp32,
        "binary_packed_bytes": packed,
        "binary_ratio": round(packed / fp32, 4) if fp32 else None,
        "file_bytes": Path(dest).stat().st_size,
    }
