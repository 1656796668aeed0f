"""Per-layer sensitivity of a static INT8 (QDQ) ONNX model: which quantized tensor costs the accuracy.

For every tensor the INT8 model quantizes (each input of a DequantizeLinear: an activation after its
QuantizeLinear, or an INT8 weight), two errors, as SQNR in dB (10 log10 of signal over noise power;
higher is better, ~6 dB per bit):

- `sqnr_db`, the error this quantizer alone adds: the float model's tensor, quantized and dequantized
  with the INT8 model's scale and zero point, against itself (weights: the INT8 weight, dequantized,
  against the float one); `channel_sqnr_db` the same per channel, averaged, which ranks the layers:
  an outlier channel that sets the scale (a transformer's residual stream) dominates the plain
  SQNR's signal while the other channels round to zero.
- `sqnr_cumulative_db` (activations): the INT8 model's dequantized tensor against the float model's,
  i.e. the error of everything up to here.

Tensors are matched through node names, which the quantizer and qdq_tidy.py keep (tidy shortens the
internal tensor names): an activation is the output of the same-named node in the float model (or a
graph input), a weight the same input slot of the same-named consumer.

A *layer* is a compute node that consumes a quantized tensor; excluding it from quantization
(quantize.exclude / ONNX Runtime's nodes_to_exclude) is how it is returned to float. Layers are ranked
by the worst channel-averaged SQNR of their quantized inputs; `metric_changes` then re-quantizes with each of the top
layers alone kept float and measures what that buys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class QuantizedTensor:
    """One tensor the INT8 model quantizes, matched to the float model's tensor it stands for."""

    float_name: str  # the tensor in the float model
    kind: str  # "activation" | "weight"
    consumers: list[str]  # names of the compute nodes that read its dequantized value
    producer: str | None = None  # activations: the node whose output is quantized (None: a graph input)
    dequantized: list[str] = field(default_factory=list)  # DequantizeLinear outputs in the INT8 model
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int = 1
    quantized_weight: np.ndarray | None = None  # weights: the INT8 values
    sqnr_db: float | None = None
    channel_sqnr_db: float | None = None  # mean over channels: an outlier channel cannot hide the rest
    worst_channel_sqnr_db: float | None = None  # reported: the channel that fares worst
    sqnr_cumulative_db: float | None = None


@dataclass
class Layer:
    """A quantized tensor and the nodes that quantize it: ONNX Runtime puts a QuantizeLinear on a tensor
    for its producer (outputs) and for each reader (inputs), so it stays float only when all of them
    are excluded. Ranked by the tensor's error; `metric_change` is what keeping them float buys."""

    tensor: str
    kind: str  # "activation" | "weight"
    what: str  # the tensor for a reader: "<node> output", "<node> weight", "input <name>"
    nodes: list[str]
    op_types: list[str]
    sqnr_db: float | None
    channel_sqnr_db: float | None
    worst_channel_sqnr_db: float | None
    sqnr_cumulative_db: float | None = None
    metric_change: float | None = None  # metric with these nodes float minus metric of "all INT8"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "sqnr_db"}


def quantized_tensors(qmodel, fmodel) -> list[QuantizedTensor]:
    """The tensors `qmodel` (INT8, QDQ) quantizes, matched to `fmodel`'s (float) tensor names; those that
    cannot be matched (a node the float model does not have) are left out."""
    from onnx import numpy_helper

    graph = qmodel.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    fnodes = {n.name: n for n in fmodel.graph.node if n.name}
    finputs = {v.name for v in fmodel.graph.input}
    fnames = (
        finputs
        | {t.name for t in fmodel.graph.initializer}
        | {o for n in fmodel.graph.node for o in n.output}
    )
    found: dict[str, QuantizedTensor] = {}
    for dq in (n for n in graph.node if n.op_type == "DequantizeLinear"):
        readers = [(n, i) for n, i in consumers.get(dq.output[0], []) if n.op_type not in QDQ_OPS]
        kind = "weight" if dq.input[0] in inits else "activation"
        name = _named_after(dq, fnames) or _named_after(producer.get(dq.input[0]), fnames)
        if name is None and kind == "weight":
            name = _weight_name(readers, fnodes)
        elif name is None:
            name = _activation_name(producer.get(dq.input[0]), producer, finputs, fnodes)
        if name is None:
            continue
        entry = found.setdefault(name, QuantizedTensor(name, kind, []))
        entry.consumers += [n.name for n, _ in readers if n.name not in entry.consumers]
        if kind == "activation":
            entry.producer = _producer(producer.get(dq.input[0]), producer)
        entry.dequantized.append(dq.output[0])
        entry.scale = numpy_helper.to_array(inits[dq.input[1]]) if dq.input[1] in inits else None
        if len(dq.input) > 2 and dq.input[2] in inits:
            entry.zero_point = numpy_helper.to_array(inits[dq.input[2]])
        entry.axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if kind == "weight":
            entry.quantized_weight = numpy_helper.to_array(inits[dq.input[0]])
    return [t for t in found.values() if t.scale is not None and _is_8_or_16_bit(t)]


def _is_8_or_16_bit(tensor: QuantizedTensor) -> bool:
    """int32 biases (scale = input scale x weight scale) add no error worth ranking."""
    known = tensor.zero_point if tensor.zero_point is not None else tensor.quantized_weight
    return known is not None and np.dtype(known.dtype).itemsize <= 2


def _named_after(node, fnames: set[str]) -> str | None:
    """ONNX Runtime names each QuantizeLinear/DequantizeLinear after the tensor it quantizes
    (`<tensor>_QuantizeLinear`), and tidying keeps node names: the surest match. (Matching through the
    producer is not enough: the quantizer folds a Relu into the Conv before it, whose output then
    carries the Relu's output name.)"""
    if node is None or node.op_type not in QDQ_OPS:
        return None
    match = re.fullmatch(r"(.+)_(?:Quantize|Dequantize)Linear(?:_\d+)?", node.name)
    return match.group(1) if match and match.group(1) in fnames else None


def _producer(quantize, producer) -> str | None:
    node = (
        producer.get(quantize.input[0])
        if quantize is not None and quantize.op_type == "QuantizeLinear"
        else None
    )
    return node.name if node is not None and node.op_type not in QDQ_OPS else None


def _weight_name(readers, fnodes) -> str | None:
    for node, index in readers:
        twin = fnodes.get(node.name)
        if twin is not None and index < len(twin.input):
            return twin.input[index]
    return None


def _activation_name(quantize, producer, finputs, fnodes) -> str | None:
    """The float name of what a QuantizeLinear quantizes: the same output of the same-named node."""
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return None
    source = quantize.input[0]
    if source in finputs:
        return source
    node = producer.get(source)
    twin = fnodes.get(node.name) if node is not None else None
    if twin is None or len(twin.output) != len(node.output):
        return None
    return twin.output[list(node.output).index(source)]


def _fake_quantize(x: np.ndarray, t: QuantizedTensor) -> np.ndarray:
    info = np.iinfo(t.zero_point.dtype if t.zero_point is not None else np.int8)
    scale, zero = _broadcast(t.scale, x, t.axis), _broadcast(t.zero_point, x, t.axis)
    q = np.clip(np.round(x / scale) + zero, info.min, info.max)
    return ((q - zero) * scale).astype(np.float32)


def _broadcast(values, x: np.ndarray, axis: int):
    if values is None:
        return 0
    values = np.asarray(values, np.float64)
    if values.ndim == 0 or x.ndim == 0:
        return values
    shape = [1] * x.ndim
    shape[axis % x.ndim] = values.size
    return values.reshape(shape)


def _db(signal: float, noise: float) -> float:
    if noise <= 0:
        return math.inf
    return round(10 * math.log10(max(signal, 1e-30) / noise), 2)


def _with_outputs(model, names: list[str]):
    """A copy of `model` that also returns `names` (float tensors)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    copy.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in have
    )
    return copy


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def tensor_errors(qmodel, fmodel, batches: Iterable[dict[str, np.ndarray]]) -> list[QuantizedTensor]:
    """Every quantized tensor of `qmodel` with its SQNR (local and cumulative) on `batches`."""
    from onnx import numpy_helper

    tensors = quantized_tensors(qmodel, fmodel)
    finits = {t.name: t for t in fmodel.graph.initializer}
    for t in tensors:
        weight = numpy_helper.to_array(finits[t.float_name]) if t.float_name in finits else None
        stored = t.quantized_weight
        if t.kind == "weight" and weight is not None and stored is not None and weight.shape == stored.shape:
            weight = weight.astype(np.float64)
            zero, scale = _broadcast(t.zero_point, weight, t.axis), _broadcast(t.scale, weight, t.axis)
            dequantized = (stored.astype(np.float64) - zero) * scale
            total = _Sums()
            total.add(
                weight,
                dequantized,
                weight,
                axis=t.axis if t.scale is not None and np.size(t.scale) > 1 else -1,
            )
            t.sqnr_db, t.channel_sqnr_db, t.worst_channel_sqnr_db, _ = total.result()
    activations = [t for t in tensors if t.kind == "activation"]
    fnames = [t.float_name for t in activations]
    qnames = [t.dequantized[0] for t in activations]
    fsession = _session(_with_outputs(fmodel, fnames))
    qsession = _session(_with_outputs(qmodel, qnames))
    sums = [_Sums() for _ in activations]
    for batch in batches:
        fvalues = dict(zip([o.name for o in fsession.get_outputs()], fsession.run(None, batch), strict=True))
        qvalues = dict(zip([o.name for o in qsession.get_outputs()], qsession.run(None, batch), strict=True))
        for t, total in zip(activations, sums, strict=True):
            x = np.asarray(fvalues[t.float_name], np.float64)
            total.add(x, _fake_quantize(x, t), np.asarray(qvalues[t.dequantized[0]], np.float64))
    for t, total in zip(activations, sums, strict=True):
        t.sqnr_db, t.channel_sqnr_db, t.worst_channel_sqnr_db, t.sqnr_cumulative_db = total.result()
    return tensors


def _channels(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """`x` as (values, channels): channels on `axis`, by default axis 1 of 4-D (NCHW) tensors, else
    the last axis (a transformer's hidden size)."""
    if x.ndim == 0:
        return x.reshape(1, 1)
    if axis is None:
        axis = 1 if x.ndim == 4 else -1
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


class _Sums:
    """Signal and noise power of one tensor over the batches, in total and per channel."""

    def __init__(self):
        self.signal = self.local = self.cumulative = 0.0
        self.cumulative_ok = True

    def add(self, x: np.ndarray, fake: np.ndarray, got: np.ndarray, axis: int | None = None) -> None:
        xc, noise = _channels(x, axis), _channels(x - fake, axis)
        self.signal = self.signal + (xc**2).sum(0)
        self.local = self.local + (noise**2).sum(0)
        if got.shape == x.shape:
            self.cumulative += float(((x - got) ** 2).sum())
        else:
            self.cumulative_ok = False

    def result(self) -> tuple[float, float, float, float | None]:
        """(SQNR, its mean and its worst over the channels that carry signal, cumulative SQNR), in dB."""
        signal, local = float(np.sum(self.signal)), float(np.sum(self.local))
        live = self.signal > 1e-12 * max(float(np.max(self.signal)), 1e-30)
        per_channel = np.clip(
            [_db(s, n) for s, n in zip(self.signal[live], self.local[live], strict=True)], -20, 100
        )
        mean = round(float(np.mean(per_channel)), 2) if per_channel.size else math.inf
        worst = round(float(np.min(per_channel)), 2) if per_channel.size else math.inf
        cumulative = _db(signal, self.cumulative) if self.cumulative_ok else None
        return _db(signal, local), mean, worst, cumulative


def layers(tensors: list[QuantizedTensor], qmodel, fmodel=None) -> list[Layer]:
    """The quantized tensors with the nodes that keep each float, worst (channel-averaged) SQNR first."""
    op_types = {n.name: n.op_type for n in qmodel.graph.node}
    made_by = {o: n.name for n in (fmodel or qmodel).graph.node for o in n.output}
    ranked = []
    for t in tensors:
        nodes = [n for n in [t.producer, *t.consumers] if n is not None and n in op_types]
        if t.kind == "weight":
            what = f"{t.consumers[0] if t.consumers else '?'} weight"
        else:
            what = f"{made_by[t.float_name]} output" if t.float_name in made_by else f"input {t.float_name}"
        if nodes:
            ranked.append(Layer(t.float_name, t.kind, what, nodes, [op_types[n] for n in nodes], t.sqnr_db,
                                t.channel_sqnr_db, t.worst_channel_sqnr_db, t.sqnr_cumulative_db))  # fmt: skip
    return sorted(ranked, key=lambda layer: (_rank_key(layer), layer.tensor))


def _rank_key(layer: Layer) -> float:
    """The mean over channels of the per-channel SQNR. (The worst channel alone was tried on
    all-MiniLM-L6-v2 and ties at 0 dB for most tensors, every bias with a channel that rounds to 0:
    docs/accuracy.md.)"""
    value = layer.channel_sqnr_db if layer.channel_sqnr_db is not None else layer.sqnr_db
    return math.inf if value is None else value


def metric_changes(ranked: list[Layer], top: int, quantize: Callable[[list[str]], Path],
                   score: Callable[[Path], float], baseline: float) -> list[Layer]:  # fmt: skip
    """For each of the `top` layers: re-quantize with its nodes alone kept float and record how much
    the metric moves from `baseline` (the all-INT8 score; positive: keeping it float helps)."""
    for layer in ranked[:top]:
        layer.metric_change = round(score(quantize(layer.nodes)) - baseline, 4)
    return ranked


def analyse(qpath: Path, fpath: Path, batches: Iterable[dict[str, np.ndarray]]) -> list[Layer]:
    """Ranked layers of the INT8 model at `qpath` against its float model at `fpath`."""
    import onnx

    qmodel, fmodel = onnx.load(str(qpath)), onnx.load(str(fpath))
    return layers(tensor_errors(qmodel, fmodel, batches), qmodel, fmodel)


def matches(qpath: Path, fpath: Path) -> int:
    """How many of the INT8 model's quantized tensors the float model's node names explain."""
    import onnx

    return len(quantized_tensors(onnx.load(str(qpath)), onnx.load(str(fpath))))


def to_json(ranked: list[Layer]) -> list[dict]:
    return [{"rank": i + 1, **layer.to_json()} for i, layer in enumerate(ranked)]


# -- models without Q/DQ pairs: int8-dynamic, fp16 ----------------------------------------------------


def error_growth(qpath: Path, fpath: Path, batches: Iterable[dict[str, np.ndarray]],
                 replaced_only: bool = True) -> list[Layer]:  # fmt: skip
    """The nodes of a converted model without Q/DQ pairs to measure (int8-dynamic's MatMulInteger /
    ConvInteger, fp16), ranked by the error each adds: the relative noise power of its output
    (|float - converted|^2 / |float|^2 on `batches`) minus that of its noisiest input. ONNX Runtime's
    converters keep the tensors' names, so the float model's tensors are found in the converted one.

    `replaced_only`: only the nodes the converter replaced (int8-dynamic: a quantized node's name is
    gone, its output is written by the new ops); else every node (fp16 converts them in place). Nodes
    whose error could not be measured (no float output matched) or that add none come last, by name,
    so that keeping every ranked node float is the float model."""
    import onnx

    qmodel, fmodel = onnx.load(str(qpath)), onnx.load(str(fpath))
    qtypes = _float_types(qmodel)
    ftypes = _float_types(fmodel)
    qnames = {n.name for n in qmodel.graph.node}
    nodes = [n for n in fmodel.graph.node if n.name and (n.name not in qnames or not replaced_only)]
    tensors = sorted({o for n in fmodel.graph.node for o in n.output if o in qtypes and o in ftypes})
    fsession = _session(_with_typed_outputs(fmodel, tensors, ftypes))
    qsession = _session(_with_typed_outputs(qmodel, tensors, qtypes))
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    for batch in batches:
        fvalues = dict(zip([o.name for o in fsession.get_outputs()], fsession.run(None, batch), strict=True))
        qvalues = dict(zip([o.name for o in qsession.get_outputs()], qsession.run(None, batch), strict=True))
        for name in tensors:
            x, y = np.asarray(fvalues[name], np.float64), np.asarray(qvalues[name], np.float64)
            if x.shape == y.shape:
                signal[name] += float((x**2).sum())
                error = np.nan_to_num(x - y, nan=1e30, posinf=1e30, neginf=1e30)  # fp16 overflow: inf
                noise[name] += float((error**2).sum())
    relative = {t: noise[t] / signal[t] for t in tensors if signal[t] > 0}
    exact = {v.name for v in [*fmodel.graph.input, *fmodel.graph.initializer]}
    ranked = []
    for node in nodes:
        outputs = [o for o in node.output if o in relative]
        out = max(outputs, key=lambda o: relative[o]) if outputs else node.output[0]
        before = max([relative.get(i, 0.0) for i in node.input if i in relative or i in exact], default=0.0)
        added = relative[out] - before if outputs else 0.0
        ranked.append(Layer(out, "activation", f"{node.name} output", [node.name], [node.op_type],
                            sqnr_db=_db(1.0, added) if added > 0 else None, channel_sqnr_db=None,
                            worst_channel_sqnr_db=None,
                            sqnr_cumulative_db=_db(1.0, relative[out]) if outputs else None))  # fmt: skip
    return sorted(ranked, key=lambda layer: (_rank_key(layer), layer.what))


def _float_types(model) -> dict[str, int]:
    """Tensor name -> element type, for the float32 / float16 tensors of `model` (shape inference)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model onnx cannot infer: only what it declares
        inferred = model
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    graph = inferred.graph
    values = [*graph.input, *graph.value_info, *graph.output]
    return {v.name: v.type.tensor_type.elem_type for v in values
            if v.type.tensor_type.elem_type in floats}  # fmt: skip


def _with_typed_outputs(model, names: list[str], types: dict[str, int]):
    """A copy of `model` that also returns `names`, each declared with its own element type."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    copy.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, types[n], None) for n in names if n not in have
    )
    return copy
