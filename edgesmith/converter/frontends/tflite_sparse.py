"""Sparse weights in a `.tflite` (MediaPipe's `*_sparse` models, TensorFlow's sparsity-aware
converter) stored dense, so every converter can read them.

Such a model stores a weight with TFLite's `SparsityParameters` (only its non-zero values, with
CSR-style segments and indices per sparse dimension, optionally in blocks) and expands it at run time
with a DENSIFY op. tf2onnx cannot read those tensors and the AI Edge Quantizer takes the DENSIFY output
for an activation. The expansion is done here instead, once, the way LiteRT's own
`FormatConverter::SparseToDense` (tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc)
does it: each DENSIFY's output becomes a constant holding the dense weight, and the op goes. The
values are copied, not recomputed, so the model computes exactly what the sparse one does.
"""

from __future__ import annotations

import numpy as np

from .. import tflite_fb

DENSE = 0  # DimensionType.DENSE; SPARSE_CSR is 1

# TensorType -> numpy dtype of the values a sparse tensor stores
DTYPES = {0: "<f4", 1: "<f2", 2: "<i4", 3: "u1", 4: "<i8", 7: "<i2", 9: "i1", 10: "<f8"}


def _vector(metadata, which: str) -> np.ndarray:
    """A dimension's array_segments or array_indices (Int32/Uint16/Uint8 vector) as int64."""
    vector = getattr(metadata, which)
    return np.asarray(vector.values if vector is not None else [], np.int64)


def _coordinates(sparsity, rank: int) -> np.ndarray:
    """The dense coordinates (one row per stored value, in storage order) of a sparse tensor of `rank`.

    Storage order is a depth-first walk of the dimensions in `traversal_order`: a dense level visits
    all its positions, a CSR level the indices its segment lists for the position reached so far. The
    walk is done one level at a time over all paths at once (each path expanded in place keeps the
    depth-first order). Block dimensions (after the first `rank` levels) refine the coordinate of the
    dimension `block_map` names: coordinate * block size + position in the block."""
    order = [int(d) for d in sparsity.traversalOrder]
    levels = sparsity.dimMetadata
    positions = np.zeros(1, np.int64)  # each path's index into the next level
    index = np.zeros((1, len(order)), np.int64)  # each path's position along every (block) dimension
    for level, metadata in enumerate(levels):
        if metadata.format == DENSE:
            size = int(metadata.denseSize)
            index = np.repeat(index, size, axis=0)
            steps = np.tile(np.arange(size), len(positions))
            positions = np.repeat(positions, size) * size + steps
        else:
            segments, indices = _vector(metadata, "arraySegments"), _vector(metadata, "arrayIndices")
            starts, ends = segments[positions], segments[positions + 1]
            counts = ends - starts
            index = np.repeat(index, counts, axis=0)
            positions = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            steps = indices[positions]
        index[:, order[level]] = steps
    coordinates = index[:, :rank].copy()
    block_map = [int(d) for d in sparsity.blockMap] if sparsity.blockMap is not None else []
    for block, dim in enumerate(block_map):
        size = int(levels[rank + block].denseSize)
        coordinates[:, dim] = coordinates[:, dim] * size + index[:, rank + block]
    return coordinates


def dense_values(tensor, data: bytes) -> np.ndarray:
    """The dense array a sparse constant `tensor` (its buffer's bytes `data`) stands for."""
    dtype = np.dtype(DTYPES[tensor.type])
    values = np.frombuffer(data, dtype)
    shape = tuple(int(d) for d in tensor.shape)
    coordinates = _coordinates(tensor.sparsity, len(shape))
    if len(coordinates) != len(values):
        raise ValueError(
            f"sparse tensor '{tensor.name.decode()}' stores {len(values)} values for {len(coordinates)} positions"
        )
    dense = np.zeros(shape, dtype)
    dense[tuple(coordinates.T)] = values
    return dense


def densify(model) -> int:
    """Replace every DENSIFY op of `model` (the schema's object API, edited in place) by its output as a
    constant; returns how many. The sparse inputs are left unreferenced (the caller drops them)."""
    s = tflite_fb.schema()
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    done = 0
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            if codes[op.opcodeIndex] != s.BuiltinOperator.DENSIFY:
                kept.append(op)
                continue
            source, target = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
            raw = np.asarray(model.buffers[source.buffer].data, np.uint8).tobytes()
            dense = dense_values(source, raw).astype(np.dtype(DTYPES[target.type]).newbyteorder("<"))
            buffer = s.BufferT()
            buffer.data = np.frombuffer(dense.tobytes(), np.uint8)
            model.buffers.append(buffer)
            target.buffer = len(model.buffers) - 1
            done += 1
        graph.operators = kept
    return done
