"""The tensor arena TensorFlow Lite Micro needs, planned the way TFLM plans it. One planner, used by
the MCU fit (`mcu.fit`) and by the firmware exporter (`converter/exporters/c_array.py`).

TFLM (`micro_allocation_info.cc` + `greedy_memory_planner.cc`) gives every non-constant tensor of
the main subgraph a lifetime in operator steps: graph inputs are created at step 0, a tensor is
created by the first op that writes it and lives until the last op that reads it, graph outputs live
to the end. Sizes are rounded up to 16 bytes. The greedy planner places buffers largest first, each at
the lowest offset where it overlaps (in memory) no already-placed buffer whose lifetime overlaps its
own. The arena's planned (non-persistent) part is the highest end offset.

Lifetimes come from a `.tflite` flatbuffer (`tflite_lifetimes`, TFLM's own rules) or from cost-model
layers (`layer_lifetimes`, for ONNX: one buffer per kernel output, shape-only ops aliased). The
persistent part (tensor and node structs, kernels' per-channel quantization data) is estimated from
counts with 32-bit MCU struct sizes; kernel scratch buffers (e.g. CMSIS-NN's im2col) depend on the
kernel library and are not included.

numpy only at import; the TFLite schema (LiteRT's wheel, or TensorFlow's copy) is imported when a
flatbuffer is read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .layer import Layer

ALIGN = 16  # TFLM's kBufferAlignment
# The persistent part (the arena's tail), per pointer width: 4 on a 32-bit MCU, 8 where the
# tflite-micro wheel runs (the host), which is where `tflm.py` measures it. Struct sizes follow
# TFLM's TF_LITE_STATIC_MEMORY layouts; the 8-byte ones are what its RecordingMicroAllocator reports.
EVAL_TENSOR_BYTES = {4: 12, 8: 24}  # TfLiteEvalTensor: data and dims pointers, type; one per tensor
NODE_BYTES = {4: 32, 8: 64}  # NodeAndRegistration: TfLiteNode (6 pointers + int) + registration pointer
IO_TENSOR_BYTES = {4: 40, 8: 64}  # a full TfLiteTensor for each graph input and output
IO_QUANT_BYTES = {4: 20, 8: 32}  # its affine quantization (struct + arrays) when the I/O is integer
PER_CHANNEL_BYTES = 8  # int32 output multiplier + int32 shift per output channel (conv, FC OpData)
PER_CHANNEL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
# What the struct counts above do not cover, fitted on TFLM's wheel (64-bit) over four models
# (MNIST CNN, a depthwise CNN, a small CNN with int8 I/O, TFLM's sine model; residuals within 60 B):
# per operator, the kernel's OpData and the parsed builtin options; fixed, the allocator's and the
# memory planner's own objects, placed in the arena by MicroAllocator::Create. The 32-bit values are
# scaled from those (OpData is mostly int32 fields, the fixed objects mostly pointers): an estimate,
# not measured on an MCU.
PER_OP_BYTES = {4: 42, 8: 56}
FIXED_BYTES = {4: 330, 8: 652}
EXCLUDES = "kernel scratch buffers (e.g. CMSIS-NN im2col); add them for your kernel library"


@dataclass(frozen=True)
class Buffer:
    tensor: int | str
    size: int
    first: int
    last: int

    def alive_with(self, other: Buffer) -> bool:
        return not (self.last < other.first or other.last < self.first)


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def greedy_plan(buffers: list[Buffer]) -> dict[int | str, int]:
    """tensor -> offset, by TFLM's greedy-by-size first fit (`greedy_memory_planner.cc`).

    `buffers` come in the order TFLM adds them (tensor index order). TFLM fills its sort array from
    the tail and bubble-sorts it stably by size, so among equal sizes the buffer added *last* is
    placed first; a placed buffer goes after any already placed at the same offset. Both matter:
    with two 8 KB activations the other order can leave a 3 KB gap unused (measured on TFLM)."""
    order = sorted(enumerate(buffers), key=lambda ib: (-ib[1].size, -ib[0]))
    placed: list[tuple[int, Buffer]] = []  # (offset, buffer), in offset order, ties by placement
    offsets: dict[int | str, int] = {}
    for _, buffer in order:
        offset = 0
        for start, other in placed:
            if not buffer.alive_with(other):
                continue
            if offset + buffer.size <= start:
                break
            offset = max(offset, start + other.size)
        at = next((i for i, (start, _) in enumerate(placed) if start > offset), len(placed))
        placed.insert(at, (offset, buffer))
        offsets[buffer.tensor] = offset
    return offsets


def planned_bytes(buffers: list[Buffer]) -> int:
    offsets = greedy_plan(buffers)
    return max((offsets[b.tensor] + b.size for b in buffers), default=0)


# -- lifetimes from cost-model layers (ONNX, or any graph.layers list) --------------------------------
def layer_lifetimes(graph: list[Layer]) -> list[Buffer]:
    """One Buffer per kernel output (graph.Layer: `outputs`, `out_bytes`, `inputs`, `in_sizes`), and one
    per graph input (read but never written: alive from step 0). Unread outputs live to the end."""
    steps = len(graph)
    owner: dict[str, str] = {}  # tensor name -> the buffer holding it (a kernel's fused outputs share one)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for step, layer in enumerate(graph):
        for name, size in zip(layer.inputs, layer.in_sizes, strict=False):
            key = owner.setdefault(name, name)
            if key not in first:  # a graph input
                first[key], sizes[key] = 0, size
            last[key] = step
        key = layer.outputs[-1]
        for name in layer.outputs:
            owner[name] = key
        first[key], sizes[key] = step, layer.out_bytes
    read = {owner.get(n, n) for layer in graph for n in layer.inputs}
    for key in first:
        if key not in read:
            last[key] = max(steps - 1, first[key])
    return [Buffer(key, align(sizes[key]), first[key], last.get(key, first[key])) for key in first]


def from_layers(graph: list[Layer]) -> dict[str, Any]:
    buffers = layer_lifetimes(graph)
    return {
        "planned_bytes": planned_bytes(buffers),
        "naive_bytes": sum(b.size for b in buffers),
        "tensors_planned": len(buffers),
        "method": "TFLM greedy planner over the cost model's kernels (persistent part not estimated)",
    }


# -- lifetimes from a .tflite flatbuffer (TFLM's own rules) -----------------------------------------
def schema() -> ModuleType:
    """The TFLite flatbuffer schema (generated Python), from the LiteRT wheel or TensorFlow's copy."""
    try:
        module: ModuleType = importlib.import_module("ai_edge_litert.schema_py_generated")
    except ImportError:
        from ..errors import require

        module = require("tensorflow.lite.python.schema_py_generated", "litert", "reading .tflite files")
    return module


def read(data: bytes) -> Any:  # the schema's ModelT
    """The model as the schema's `ModelT`."""
    return schema().ModelT.InitFromPackedBuf(bytearray(data), 0)


def _type_sizes() -> dict[int, int]:
    t = schema().TensorType
    names = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
             "INT8": 1, "FLOAT64": 8, "UINT32": 4, "UINT16": 2, "INT4": 1}  # fmt: skip
    return {getattr(t, n): size for n, size in names.items() if hasattr(t, n)}


def lifetimes(model: Any) -> list[Buffer]:
    """One Buffer per non-constant, non-variable tensor of the main subgraph of a `ModelT`."""
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
        buffers.append(Buffer(index, align(size), start, last[index]))
    return buffers


def op_names(model: Any) -> list[str]:
    """The builtin op names of the main subgraph of a `ModelT`, in execution order."""
    s = schema()
    codes = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    kinds = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [codes.get(kinds[op.opcodeIndex], "CUSTOM") for op in model.subgraphs[0].operators]


def persistent_bytes(model: Any, ops: list[str], pointer_bytes: int = 4) -> int:
    """The arena's persistent part (tail) for a `ModelT`: TFLM's structs by count, per-channel
    requantization data, and the fitted per-operator and fixed parts (see the constants)."""
    graph, p = model.subgraphs[0], pointer_bytes
    float32 = schema().TensorType.FLOAT32
    channels = sum(
        int(graph.tensors[op.outputs[0]].shape[-1])
        for op, name in zip(graph.operators, ops, strict=True)
        if name in PER_CHANNEL_OPS and graph.tensors[op.outputs[0]].type != float32
    )
    io = [int(i) for i in [*graph.inputs, *graph.outputs]]
    quantized_io = sum(1 for i in io if graph.tensors[i].type != float32)
    return (
        EVAL_TENSOR_BYTES[p] * len(graph.tensors)
        + NODE_BYTES[p] * len(ops)
        + IO_TENSOR_BYTES[p] * len(io)
        + IO_QUANT_BYTES[p] * quantized_io
        + PER_CHANNEL_BYTES * channels
        + PER_OP_BYTES[p] * len(ops)
        + FIXED_BYTES[p]
    )


def estimate(data: bytes, pointer_bytes: int = 4) -> dict[str, Any]:
    """The planned arena of a `.tflite`, a persistent-part estimate and their sum, in bytes.

    `pointer_bytes`: 4 for a 32-bit MCU (the default), 8 to compare with TFLM run on a 64-bit host."""
    model = read(data)
    buffers = lifetimes(model)
    planned = planned_bytes(buffers)
    persistent = persistent_bytes(model, op_names(model), pointer_bytes)
    return {
        "planned_bytes": planned,
        "persistent_bytes_estimate": persistent,
        "total_bytes_estimate": align(planned + persistent),
        "naive_bytes": sum(b.size for b in buffers),  # every tensor in its own buffer: what planning saves
        "tensors_planned": len(buffers),
        "pointer_bytes": pointer_bytes,
        "excludes": EXCLUDES,
    }
