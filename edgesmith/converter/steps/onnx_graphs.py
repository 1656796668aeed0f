"""Walking and editing ONNX graphs with subgraphs (`If` branches, `Loop` bodies): every node at any
depth, the names a graph defines and reads, renaming, and keeping identical large initializers once.
Used by the static INT8 of models with control flow (onnx_branches.py) and the exporters that fold
`If`s (exporters/tflite_onnx.py)."""

from __future__ import annotations

from ...errors import require


def share_weights(model, smallest: int = 1024) -> int:
    """Keep once, in the main graph, the initializers of `smallest` bytes or more that several graphs
    hold identically (ONNX Runtime's preprocessing copies silero-vad's LSTM weights into both branches of
    the `If` around it: 1.21 of the original's size in INT8 without this, 0.75 with it); returns how many
    copies were dropped."""
    import hashlib

    from onnx import numpy_helper

    graphs = [model.graph] + [sub for node in nodes(model.graph) for sub in subgraphs(node)]
    copies: dict[tuple, list] = {}  # content -> [(graph, initializer)], in graph order
    for graph in graphs:
        for init in graph.initializer:
            array = numpy_helper.to_array(init)
            if array.nbytes >= smallest:
                key = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest())
                copies.setdefault(key, []).append((graph, init))
    dropped = 0
    for found in copies.values():
        if len(found) < 2:
            continue
        (first_graph, first), *others = found
        if first_graph is not model.graph:  # moved out, where every branch sees it
            first_graph.initializer.remove(first)
            model.graph.initializer.append(first)
        for graph, init in others:
            name = init.name
            graph.initializer.remove(init)
            rename_reads(graph, {name: first.name})
            dropped += 1
    return dropped


def rename_reads(graph, names: dict[str, str]) -> None:
    """Rename what `graph` and its subgraphs read (not what they define)."""
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        for sub in subgraphs(node):
            rename_reads(sub, names)
    for value in graph.output:
        value.name = names.get(value.name, value.name)


def key(node) -> str:
    return node.name or node.output[0]


def subgraphs(node) -> list:
    onnx = require("onnx", "convert")
    graphs = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return graphs + [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]


def nodes(graph):
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from nodes(sub)


def defined(graph, nested: bool = True) -> set[str]:
    """The names `graph` defines (initializers, node outputs; with `nested`, its subgraphs' too)."""
    names = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    for node in nodes(graph) if nested else graph.node:
        names.update(o for o in node.output if o)
    if nested:
        for node in nodes(graph):
            for sub in subgraphs(node):
                names.update(i.name for i in [*sub.initializer, *sub.input])
    return names


def reads(graph, nested: bool = True) -> set[str]:
    """The names `graph`'s nodes read (with `nested`, its subgraphs' nodes and outputs too)."""
    names = {o.name for o in graph.output}
    for node in nodes(graph) if nested else graph.node:
        names.update(i for i in node.input if i)
    if nested:
        for node in nodes(graph):
            for sub in subgraphs(node):
                names.update(o.name for o in sub.output)
    return names


def fresh(name: str, taken: set[str]) -> str:
    index = 1
    while f"{name}__{index}" in taken:
        index += 1
    taken.add(f"{name}__{index}")
    return f"{name}__{index}"


def rename(graph, names: dict[str, str]) -> None:
    """Rename `names` wherever `graph` and its subgraphs define or read them."""
    for init in graph.initializer:
        init.name = names.get(init.name, init.name)
    for value in [*graph.output, *graph.value_info]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for sub in subgraphs(node):
            rename(sub, names)
