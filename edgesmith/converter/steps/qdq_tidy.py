"""Small clean-ups of a QDQ model after ONNX Runtime's quantizer, each measured to help.

- Graph outputs leave in float: a QuantizeLinear -> DequantizeLinear pair right before a graph
  output only adds rounding error to the logits (the producer still runs in INT8 and emits float).
- Inferred `value_info` is dropped: runtimes infer shapes again on load; it only costs bytes.
- Internal tensor names become short ids (`t0`, `t1` ...); node names, inputs and outputs keep their
  names, so profiles and error messages still point at the right layer. On a small CNN the
  quantizer's long names ('0.0.weight_DequantizeLinear_Output') are ~8% of the INT8 file.
"""

from __future__ import annotations


def float_outputs(model) -> list[str]:
    """Remove Q -> DQ pairs that feed graph outputs; returns the outputs changed."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    changed = []
    for output in graph.output:
        dq = producer.get(output.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or consumers.get(q.output[0]) != 1:
            continue
        source = producer.get(q.input[0])
        if source is None or consumers.get(q.input[0]) != 1:
            continue  # the float value also feeds other nodes: keep the pair
        source.output[list(source.output).index(q.input[0])] = output.name
        graph.node.remove(q)
        graph.node.remove(dq)
        changed.append(output.name)
    _drop_unused_initializers(graph)
    return changed


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input}
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


def tidy(model) -> dict:
    outputs = float_outputs(model)
    del model.graph.value_info[:]
    if not any(n.op_type in ("If", "Loop", "Scan") for n in model.graph.node):  # subgraphs see outer names
        short_names(model.graph)
    return {"float_outputs": outputs}
