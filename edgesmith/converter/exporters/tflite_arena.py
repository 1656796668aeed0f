"""Estimate the tensor arena TensorFlow Lite Micro needs for a `.tflite`, the way TFLM plans it.

TFLM (`micro_allocation_info.cc` + `greedy_memory_planner.cc`) gives every non-constant tensor of
the main subgraph a lifetime in operator steps: graph inputs are created at step 0, a tensor is
created by the first op that writes it and lives until the last op that reads it, graph outputs live
to the end. Sizes are rounded up to 16 bytes. The greedy planner places buffers largest first, each at
the lowest offset where it overlaps (in memory) no already-placed buffer whose lifetime overlaps its
own. The arena's planned (non-persistent) part is the highest end offset.

The persistent part (tensor and node structs, kernels' per-channel quantization data) is estimated
from counts with 32-bit MCU struct sizes; kernel scratch buffers (e.g. CMSIS-NN's im2col) depend on
the kernel library and are not included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import tflite_fb

ALIGN = 16  # TFLM's kBufferAlignment
EVAL_TENSOR_BYTES = 12  # TfLiteEvalTensor on a 32-bit MCU: data pointer, dims pointer, type
NODE_BYTES = 48  # TfLiteNode plus its registration pointer (NodeAndRegistration), 32-bit
PER_CHANNEL_BYTES = 8  # int32 output multiplier + int32 shift per output channel (conv, FC OpData)
PER_CHANNEL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


@dataclass(frozen=True)
class Buffer:
    tensor: int
    size: int
    first: int
    last: int

    def alive_with(self, other: Buffer) -> bool:
        return not (self.last < other.first or other.last < self.first)


def _type_sizes() -> dict[int, int]:
    t = tflite_fb.schema().TensorType
    names = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
             "INT8": 1, "FLOAT64": 8, "UINT32": 4, "UINT16": 2, "INT4": 1}  # fmt: skip
    return {getattr(t, n): size for n, size in names.items() if hasattr(t, n)}


def lifetimes(model) -> list[Buffer]:
    """One Buffer per non-constant, non-variable tensor of the main subgraph."""
    graph, sizes = model.subgraphs[0], _type_sizes()
    steps = len(graph.operators)

    def constant(index: int) -> bool:
        buffer = model.buffers[graph.tensors[index].buffer]
        return buffer.data is not None and len(buffer.data) > 0 or bool(getattr(buffer, "offset", 0))

    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index in graph.inputs:
        first[int(index)], last[int(index)] = 0, 0
    for step, op in enumerate(graph.operators):
        for index in [int(i) for i in op.inputs if i >= 0]:
            if not constant(index):
                first.setdefault(index, step)
                last[index] = step
        for index in [
            int(i) for i in [*op.outputs, *(op.intermediates if op.intermediates is not None else [])]
        ]:
            first.setdefault(index, step)
            last[index] = max(last.get(index, step), step)
    for index in graph.outputs:
        last[int(index)] = max(steps - 1, 0)
    buffers = []
    for index, start in first.items():
        tensor = graph.tensors[index]
        if tensor.isVariable:
            continue
        shape = [max(int(d), 1) for d in (tensor.shape if tensor.shape is not None else [])]
        size = int(np.prod(shape, dtype=np.int64)) * sizes.get(tensor.type, 4)
        buffers.append(Buffer(index, -(-size // ALIGN) * ALIGN, start, last[index]))
    return buffers


def greedy_plan(buffers: list[Buffer]) -> dict[int, int]:
    """tensor index -> offset, by TFLM's greedy-by-size first fit."""
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.tensor))
    placed: list[tuple[int, Buffer]] = []  # (offset, buffer), kept sorted by offset
    offsets: dict[int, int] = {}
    for buffer in order:
        offset = 0
        for start, other in placed:
            if not buffer.alive_with(other):
                continue
            if offset + buffer.size <= start:
                break
            offset = max(offset, start + other.size)
        placed.append((offset, buffer))
        placed.sort(key=lambda p: (p[0], p[1].tensor))
        offsets[buffer.tensor] = offset
    return offsets


def estimate(data: bytes) -> dict:
    """The planned arena, a persistent-part estimate and their sum, in bytes."""
    model = tflite_fb.read(data)
    buffers = lifetimes(model)
    offsets = greedy_plan(buffers)
    planned = max((offsets[b.tensor] + b.size for b in buffers), default=0)
    graph = model.subgraphs[0]
    ops = tflite_fb.op_names(data)
    channels = sum(
        int(graph.tensors[op.outputs[0]].shape[-1])
        for op, name in zip(graph.operators, ops, strict=True)
        if name in PER_CHANNEL_OPS
        and graph.tensors[op.outputs[0]].type != tflite_fb.schema().TensorType.FLOAT32
    )
    persistent = EVAL_TENSOR_BYTES * len(graph.tensors) + NODE_BYTES * len(ops) + PER_CHANNEL_BYTES * channels
    return {
        "planned_bytes": planned,
        "persistent_bytes_estimate": persistent,
        "total_bytes_estimate": -(-(planned + persistent) // ALIGN) * ALIGN,
        "naive_bytes": sum(b.size for b in buffers),  # every tensor in its own buffer: what planning saves
        "tensors_planned": len(buffers),
        "excludes": "kernel scratch buffers (e.g. CMSIS-NN im2col); add them for your kernel library",
    }
