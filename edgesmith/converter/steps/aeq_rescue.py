"""Mixed-precision rescue for the AI Edge Quantizer's full-integer INT8: when the first artifact misses
the verification gate, the ops that add the most error go back to float, fewest first, until one passes.

Ranking: the float and the INT8 model run on the calibration samples under LiteRT with every
intermediate tensor kept (`experimental_preserve_all_tensors`, the AI Edge Quantizer's own interpreter
helpers, which also dequantize an INT8 tensor with its scale and zero point); tensors are matched by
name (the quantizer keeps the float model's names). An op's *added* error is its output's relative
noise power (|q - f|^2 / |f|^2 over the samples) minus the worst of its activation inputs': what it
adds, not what it inherits. Only ops the quantizer made integer are ranked (their output is INT8/16).

Search: the rescue recalibrates on the true min/max ranges (aeq_quantize._true_ranges: the quantizer's
own moving average collapses some ranges), then the top 0, 1, 2, 4, 8 ... ops stay float (the AI Edge Quantizer's per-op rule: a regex on the op's
output tensor names with `NO_QUANTIZE`) until a candidate passes the gate with a margin, then bisection
between the last failing and the first passing count, so the fewest ops stay float. Calibration runs
once; each candidate only re-quantizes and is measured by the gate (ExportContext.gate).

Before the search, three kinds of ops stay float in every candidate: the heads of the outputs that
failed (`head_ops`), the front ends that compute a LOG of a tensor that rounds to 0 (`log_fronts`) and
the ops on tensors holding +-inf (`unbounded_ops`: an attention mask).
When no candidate passes, the search runs again with 16-bit activations (aeq_quantize._widened): the
answer for a model whose error is spread over all its per-tensor INT8 ranges.

The first attempt is what the recipe asks for: it is kept, byte for byte, when it passes the gate with
the margin and, on few samples, every held-out sample at the bar (aeq_quantize._judge). The margin (MARGIN) exists
because the gate sees few samples (a quarter of the calibration set held out; 4 with 16 samples): a
model at 0.985 there, one sample at 0.976, was 0.95 on unseen images.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import tflite_fb

MARGIN = 0.005  # cosine above the gate's bar a kept candidate (and a first attempt left as is) must reach
FEW_SAMPLES = 16  # up to this many verification samples, each one's own cosine must meet the bar too
MAX_CANDIDATES = 12  # bounds the search: doubling then bisection over a few hundred ops takes ~2 log2(n)
MAX_FLOAT_SHARE = 0.5  # past half the ranked ops float the model is no INT8 model: the rescue gives up
RANK_SAMPLES = 8  # calibration samples the ranking runs on (the INT8 model's errors settle on a few)


@dataclass(frozen=True)
class Op:
    """One op of the float model, as the AI Edge Quantizer's per-op rules address it."""

    kind: str  # builtin op name, e.g. CONV_2D
    outputs: tuple[str, ...]  # its scope: the rule's regex matches these names
    operands: tuple[str, ...]  # its inputs in order, "" for a constant (or an absent optional one)
    added: float = 0.0  # relative noise power it adds (output minus worst input)

    @property
    def name(self) -> str:
        return self.outputs[0]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Its activation inputs."""
        return tuple(name for name in self.operands if name)

    @property
    def divisor(self) -> str:
        """A DIV's divisor, when it is an activation ("" otherwise)."""
        return self.operands[1] if self.kind == "DIV" and len(self.operands) > 1 else ""


def float_rule(ops) -> str:
    """The AI Edge Quantizer regex that matches exactly these ops: it searches the op's scope, its output
    tensor names each followed by ';' (names may hold ';' themselves: "MatMul_1;Relu"), so the
    whole scope is matched, anchored."""
    scopes = sorted({re.escape("".join(f"{name};" for name in op.outputs)) for op in ops})
    return f"^(?:{'|'.join(scopes)})$"


def graph_ops(data: bytes) -> list[Op]:
    """The main subgraph's ops with their output names and activation (non-constant) input names."""
    model = tflite_fb.read(data)
    graph = model.subgraphs[0]
    kinds = tflite_fb.op_names(data)

    def constant(index: int) -> bool:
        buffer = model.buffers[graph.tensors[index].buffer]
        return buffer is not None and buffer.data is not None and len(buffer.data) > 0

    def name(index: int) -> str:
        return graph.tensors[index].name.decode()

    return [
        Op(
            kind,
            tuple(name(i) for i in op.outputs if i >= 0),
            tuple("" if i < 0 or constant(i) else name(i) for i in op.inputs),
        )  # fmt: skip
        for kind, op in zip(kinds, graph.operators, strict=True)
        if len(op.outputs)
    ]


def refusal(data: bytes) -> str | None:
    """LiteRT's reason for refusing a quantized model (its first line), or None when it loads. The AI
    Edge Quantizer can write parameters LiteRT rejects: PP-OCRv4's TRANSPOSE_CONV got a [1, 1, 1, 24]
    bias quantized per axis on dimension 0 (24 scales for a dimension of 1)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=data).allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def ops_using(data: bytes, why: str, ops: list[Op]) -> list[Op]:
    """The ops of `ops` (the float model's) that read or write the tensor LiteRT names in `why`
    ("Tensor 1 has invalid quantization parameters"): matched by output name in the quantized model
    `data`, whose tensor indices the message counts. Empty when no tensor is named or none matches."""
    found = re.search(r"Tensor (\d+) has invalid", why)
    if found is None:
        return []
    index = int(found.group(1))
    graph = tflite_fb.read(data).subgraphs[0]
    names = {graph.tensors[i].name.decode() for op in graph.operators
             if index in (*op.inputs, *op.outputs) for i in op.outputs if i >= 0}  # fmt: skip
    return [op for op in ops if op.name in names]


MOVES = ("RESHAPE", "CONCATENATION", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PACK", "GATHER", "STRIDED_SLICE")


def head_ops(data: bytes, outputs: set[str] | None = None) -> list[Op]:
    """The ops that compute the graph's outputs (those of `outputs`, signature names, when given):
    each output's producer, and up through ops that only move data (a detector's Concat of Reshapes)
    to the convs behind them. The rescue keeps the heads of the outputs that failed float, as the ONNX
    path leaves its heads in float (steps/qdq_tidy.py, float_outputs): a head quantized per tensor
    rounds a score or a flag with one range for all of it."""
    model = tflite_fb.read(data)
    graph = model.subgraphs[0]
    ops = graph_ops(data)
    indices = list(graph.outputs)
    if outputs is not None and model.signatureDefs:
        keyed = {entry.name.decode(): entry.tensorIndex for entry in model.signatureDefs[0].outputs or []}
        indices = [keyed[name] for name in sorted(outputs) if name in keyed]
    return sorted(producers(ops, *(graph.tensors[i].name.decode() for i in indices)), key=lambda op: op.name)


def producers(ops: list[Op], *tensors: str) -> list[Op]:
    """The ops computing `tensors`: each one's producer, and up through ops that only move data to the
    compute ops behind them (included)."""
    made_by = {name: op for op in ops for name in op.outputs}
    todo, found = list(tensors), {}
    while todo:
        op = made_by.get(todo.pop())
        if op is None or op.name in found:
            continue
        found[op.name] = op
        if op.kind in MOVES:
            todo += list(op.inputs)
    return list(found.values())


WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")


def log_fronts(ops: list[Op], near_zero: Callable[[str], bool]) -> list[Op]:
    """The front ends that compute the argument of a LOG whose calibrated range comes within one
    INT8 step of 0 (`near_zero(tensor)`), when that LOG feeds a network (an op with weights after it):
    every op from the graph's inputs up to the LOG, which stay float together.

    A log-spectrogram is such a front end. basic-pitch takes log(|CQT|^2 + 1e-10): the power spans
    [1e-10, 4] on speech, and one INT8 (or INT16) scale for the whole tensor rounds every quiet bin to
    0, which the LOG turns into -23 (or -inf): cosine 0.87 at the outputs, 0.91 with 16-bit activations
    everywhere; with the CQT float and the network after it INT8, 0.9996. The quantization error of a
    LOG's argument is relative, so the whole chain that computes it (the filters, their squares and
    sums) must keep the dynamic range, not only the op before the LOG."""
    consumers: dict[str, list[Op]] = {}
    for op in ops:
        for name in op.inputs:
            consumers.setdefault(name, []).append(op)
    fronts: dict[str, Op] = {}
    for op in ops:
        if op.kind == "LOG" and op.inputs and near_zero(op.inputs[0]) and _feeds_weights(op, consumers):
            fronts.update((found.name, found) for found in upstream(ops, op.inputs[0]))
            fronts[op.name] = op
    return list(fronts.values())


def _feeds_weights(op: Op, consumers: dict[str, list[Op]]) -> bool:
    """Whether an op with weights (a conv, a matmul) runs on what `op` computes."""
    todo, seen = list(op.outputs), set()
    while todo:
        name = todo.pop()
        for after in consumers.get(name, []):
            if after.kind in WEIGHTED and "" in after.operands:
                return True
            if after.name not in seen:
                seen.add(after.name)
                todo += list(after.outputs)
    return False


def upstream(ops: list[Op], *tensors: str) -> list[Op]:
    """Every op `tensors` depend on, back to the graph's inputs (in graph order)."""
    made_by = {name: op for op in ops for name in op.outputs}
    todo, found = list(tensors), set()
    while todo:
        op = made_by.get(todo.pop())
        if op is not None and op.name not in found:
            found.add(op.name)
            todo += list(op.inputs)
    return [op for op in ops if op.name in found]


def unbounded_ops(fp32: bytes, samples: list[dict], signature: str) -> list[Op]:
    """The ops that compute or read a tensor holding -inf/inf, NaN or float32's extremes (|x| >= 3e38,
    as masks are written) on the calibration samples (the first RANK_SAMPLES): the AI Edge Quantizer's
    calibration skips those values (its `valid_range`), so the tensor's INT8 range misses them.
    all-MiniLM-L6-v2's attention mask is 0 or -inf (torch's SDPA form): calibrated to [0, 0], it
    quantizes to 0 everywhere, every head attends to the padding, and the embedding's cosine is 0.5.
    With the mask and the Adds that apply it float, the softmax's INT8 input clamps -inf to its low end."""
    ops = graph_ops(fp32)
    names = {name for op in ops for name in (*op.outputs, *op.inputs)}
    reference = _interpreter(fp32)
    bad: set[str] = set()
    for sample in samples[:RANK_SAMPLES]:
        found = _tensors(reference, signature, sample, names)
        bad |= {name for name, value in found.items() if not (np.abs(value) < UNBOUNDED).all()}
    return [op for op in ops if bad.intersection((*op.outputs, *op.inputs))]


UNBOUNDED = 3e38  # the AI Edge Quantizer's calibration ignores values past this (min_max_calibrate)


def _interpreter(data: bytes):
    from ai_edge_quantizer.utils import tfl_interpreter_utils as tfl

    # without XNNPACK: its fused kernels would not keep the intermediate tensors
    return tfl.create_tfl_interpreter(data, use_xnnpack=False, num_threads=1, preserve_all_tensors=True)


def _tensors(interpreter, signature: str, sample: dict, names: set[str]) -> dict[str, np.ndarray]:
    """The named tensors after one run, dequantized to float."""
    from ai_edge_quantizer.utils import tfl_interpreter_utils as tfl

    tfl.invoke_interpreter_signature(interpreter, sample, signature)
    index = tfl.get_signature_main_subgraph_index(interpreter, signature)
    details = tfl.get_tensor_name_to_details_map(interpreter, index)
    return {n: np.asarray(tfl.get_tensor_data(interpreter, details[n], index), np.float64)
            for n in names if n in details}  # fmt: skip


def rank(fp32: bytes, quantized: bytes, samples: list[dict], signature: str) -> list[Op]:
    """The ops the INT8 model quantizes, most added error first (ties by name: deterministic)."""
    ops = graph_ops(fp32)
    integer = _integer_tensors(quantized)
    ops = [op for op in ops if any(name in integer for name in op.outputs)]
    names = {n for op in ops for n in (*op.outputs, *op.inputs)}
    signal: dict[str, float] = dict.fromkeys(names, 0.0)
    noise: dict[str, float] = dict.fromkeys(names, 0.0)
    reference, candidate = _interpreter(fp32), _interpreter(quantized)
    for sample in samples[:RANK_SAMPLES]:
        want = _tensors(reference, signature, sample, names)
        try:
            got = _tensors(candidate, signature, sample, names)
        except (RuntimeError, ValueError):  # a kernel refused this sample (e.g. an INT8 divide by zero)
            continue
        for name, f in want.items():
            q = got.get(name)
            if q is not None and q.shape == f.shape:
                signal[name] += float((f**2).sum())
                noise[name] += float(((q - f) ** 2).sum())

    def relative(name: str) -> float:
        return noise.get(name, 0.0) / max(signal.get(name, 0.0), 1e-30)

    scored = [
        Op(
            op.kind,
            op.outputs,
            op.operands,
            max(relative(n) for n in op.outputs) - max((relative(n) for n in op.inputs), default=0.0),
        )  # fmt: skip
        for op in ops
    ]
    return sorted(scored, key=lambda op: (-op.added, op.name))


def _integer_tensors(data: bytes) -> set[str]:
    """Names of the tensors the quantized model holds as INT8/INT16 activations or outputs."""
    s = tflite_fb.schema()
    model = tflite_fb.read(data)
    kinds = (s.TensorType.INT8, s.TensorType.INT16, s.TensorType.UINT8)
    return {t.name.decode() for t in model.subgraphs[0].tensors if t.type in kinds}


@dataclass(frozen=True)
class Search:
    """What the rescue needs from the quantizer and the pipeline."""

    quantize: Callable[[list[Op]], bytes]  # the INT8 model with these ops kept float
    judge: Callable[[Path], tuple[float | None, str | None]]  # (min cosine, failure at MARGIN or None)
    workdir: Path
    label: str = "rescue"  # names the candidates' files (the judge caches its measures by path)


def search(ranked: list[Op], plan: Search) -> tuple[bytes | None, list[Op], list[dict]]:
    """The fewest top-ranked ops to keep float for a candidate that passes with MARGIN: (its bytes, or
    None when none passes within MAX_CANDIDATES and MAX_FLOAT_SHARE of the ops; the ops; every
    candidate tried, in order)."""
    tried: list[dict] = []
    made: dict[int, tuple[bytes, bool]] = {}
    ranked = ranked[: int(len(ranked) * MAX_FLOAT_SHARE)]  # MediaPipe's face detectors needed 85-100%

    def passes(count: int) -> bool:
        if count not in made:
            data = plan.quantize(ranked[:count])
            path = plan.workdir / f"{plan.label}-{count}.tflite"
            path.write_bytes(data)
            cosine, failure = plan.judge(path)
            made[count] = (data, failure is None)
            tried.append({"float_layers": count, "cosine_min": cosine, "passes": failure is None})
        return made[count][1]

    low, high, count = -1, None, 0
    while high is None and len(made) < MAX_CANDIDATES and count < len(ranked):
        if passes(count):
            high = count
        else:
            low, count = count, max(1, count * 2)
    if high is None and ranked and len(made) < MAX_CANDIDATES and passes(len(ranked)):
        high = len(ranked)
    if high is None:
        return None, [], tried
    while high - low > 1 and len(made) < MAX_CANDIDATES:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return made[high][0], ranked[:high], tried
