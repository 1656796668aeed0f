"""Small clean-ups of a QDQ model after ONNX Runtime's quantizer, each measured to help.

- Graph outputs leave in float: a QuantizeLinear -> DequantizeLinear pair right before a graph
  output only adds rounding error to the logits (the producer still runs in INT8 and emits float);
  so do the heads behind an output through data-moving ops (Concat, Reshape, Transpose ...).
- Inferred `value_info` is dropped: runtimes infer shapes again on load; it only costs bytes.
- x86 only, RGB stems only: the stem Conv's 3 input channels are zero-padded to 4 (`pad_stem_channels`), so ONNX
  Runtime's fastest INT8 kernel (MLAS ConvSym) takes it: MobileNetV2 0.442 -> 0.415 of fp32 latency,
  bit-identical logits (docs/decisions/int8-ort-settings.md).
- Internal tensor names become short ids (`t0`, `t1` ...); node names, inputs and outputs keep their
  names, so profiles and error messages still point at the right layer. On a small CNN the
  quantizer's long names ('0.0.weight_DequantizeLinear_Output') are ~8% of the INT8 file.
"""

from __future__ import annotations

# Ops that only move or regroup values: the heads behind a graph output through them (a detector's
# Conv -> Transpose -> Reshape -> Concat of box or score heads) leave in float too.
MOVES_DATA = {
    "Concat": None,
    "Reshape": 1,
    "Transpose": 1,
    "Flatten": 1,
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Identity": 1,
}  # fmt: skip  (op -> how many leading inputs carry data; None: all)


def float_outputs(model) -> list[str]:
    """Remove the Q -> DQ pairs that feed graph outputs, and those behind them through ops that only move
    data (MOVES_DATA), up to the computing nodes; returns the outputs changed. A detector's score and box
    heads concatenated into one output each get their own range otherwise, and the output's values
    pass through up to four roundings (MediaPipe's face detector: classificators cosine 0.954 -> 0.97)."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in [*node.input, *subgraph_reads(node)]:
            consumers[name] = consumers.get(name, 0) + 1
    changed, todo = set(), [(o.name, o.name) for o in graph.output]
    while todo:
        tensor, output = todo.pop()
        node = producer.get(tensor)
        if (
            node is not None
            and node.op_type == "DequantizeLinear"
            and _drop_pair(graph, node, producer, consumers)
        ):
            changed.add(output)
            node = producer.get(tensor)
        if node is not None and node.op_type in MOVES_DATA:
            data = node.input[: MOVES_DATA[node.op_type]]
            todo += [(name, output) for name in data if consumers.get(name) == 1]
    _drop_unused_initializers(graph)
    return [o.name for o in graph.output if o.name in changed]


def _drop_pair(graph, dq, producer: dict, consumers: dict) -> bool:
    """Remove `dq` and the QuantizeLinear before it when nothing else reads either; the node before them
    then writes `dq`'s output in float. False (nothing changed) otherwise."""
    q = producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear" or consumers.get(q.output[0]) != 1:
        return False
    source = producer.get(q.input[0])
    if source is None or consumers.get(q.input[0]) != 1:
        return False  # the float value also feeds other nodes: keep the pair
    source.output[list(source.output).index(q.input[0])] = dq.output[0]
    producer[dq.output[0]] = source
    graph.node.remove(q)
    graph.node.remove(dq)
    return True


def subgraph_reads(node) -> set[str]:
    """The names the subgraphs of `node` (an `If`'s branches, a `Loop`'s body) read, at any depth: values
    of the graph around them that no edge shows."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            names.update(o.name for o in sub.output)
            for inner in sub.node:
                names.update([*inner.input, *subgraph_reads(inner)])
    return names


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in [*node.input, *subgraph_reads(node)]}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def short_names(graph) -> None:
    keep = {v.name for v in list(graph.input) + list(graph.output)} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]


def pad_stem_channels(model, multiple: int = 4) -> bool:
    """Zero-pad the input channels of a QDQ model's stem Conv (3 -> 4) right after its QuantizeLinear.

    ONNX Runtime's fastest x86 INT8 convolution (MLAS "ConvSym", U8 activations x symmetric S8
    weights) needs a multiple of 4 input channels; an RGB stem has 3 and falls back to im2col + GEMM.
    The pass inserts `Pad` (with the input's zero point, i.e. real 0) on the quantized input and
    appends zero filter channels, so the result is unchanged. Returns False if nothing matched.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {init.name: init for init in graph.initializer}
    inputs = {v.name for v in graph.input}
    for conv in graph.node:
        if conv.op_type != "Conv":
            continue
        dq_x, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
        if not (dq_x and dq_w) or dq_x.op_type != "DequantizeLinear" or dq_w.input[0] not in inits:
            continue
        q = producer.get(dq_x.input[0])
        if not q or q.op_type != "QuantizeLinear" or q.input[0] not in inputs or len(q.input) < 3:
            continue
        if any(a.name == "axis" and a.i != 0 for a in dq_w.attribute):
            return False  # weight scales along the input-channel axis: padding would misalign them
        weight = numpy_helper.to_array(inits[dq_w.input[0]])
        extra = -weight.shape[1] % multiple
        if weight.ndim != 4 or weight.shape[1] != 3:
            # measured to pay only for RGB stems (3 -> 4); a 1-channel stem padded to 4 runs slower
            # (the shipped MNIST CNN: 0.035 vs 0.028 ms fp32) and counts 4x its MACs
            return False
        zeros = np.zeros((weight.shape[0], extra, *weight.shape[2:]), weight.dtype)
        inits[dq_w.input[0]].CopyFrom(
            numpy_helper.from_array(np.concatenate([weight, zeros], 1), dq_w.input[0])
        )
        pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64), "stem_channel_pads")
        graph.initializer.append(pads)
        padded = q.output[0] + "_channel_padded"
        pad = helper.make_node("Pad", [q.output[0], pads.name, q.input[2]], [padded], name="stem_channel_pad")
        dq_x.input[0] = padded
        graph.node.insert(list(graph.node).index(dq_x), pad)
        return True
    return False


def tidy(model, isa: str = "x86") -> dict:
    outputs = float_outputs(model)
    padded = isa == "x86" and pad_stem_channels(model)
    del model.graph.value_info[:]
    if not any(n.op_type in ("If", "Loop", "Scan") for n in model.graph.node):  # subgraphs see outer names
        short_names(model.graph)
    return {"float_outputs": outputs, "stem_channels_padded": padded}
