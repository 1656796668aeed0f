"""Static INT8 (ONNX Runtime, QDQ) of ONNX graphs with `If` nodes, one branch at a time.

ONNX Runtime's QDQ quantizer leaves an `If` and its branches as they are, and its calibrators only
see main-graph tensors. A model whose layers sit inside a branch gets no INT8 at all: silero-vad's
whole network is in the two branches of an `If` on its sample-rate input `sr` (16 kHz and 8 kHz
weights), and the 16 kHz op15 export keeps its LSTM inside `If`s on tensor shapes.

So, with ONNX Runtime's own calibration and quantizer throughout:

1. `flatten`: the calibration data decides the `If`s. Each `If` whose condition has one value over all
   calibration samples is replaced by the branch it takes, recursively (a nested `If` is decided once
   the branch around it is inlined). On those samples the flat graph computes what the model does.
2. The flat graph is calibrated like any other model (the caller's `calibrate`): ranges for the
   main graph's tensors and those of every taken branch.
3. `_quantize_graph`: the main graph, then each taken branch as a model of its own (the outer-scope
   tensors it reads become its inputs, with the outer initializers it reads), go through
   `quantize_static` (the caller's `quantize`), given those ranges as ONNX Runtime's calibration cache;
   each quantized branch goes back into its `If`.

The artifact keeps the model's inputs and its `If`s: a branch the calibration data never takes (the
8 kHz path when calibrating on 16 kHz audio) stays float and still runs, and an `If` the calibration
data takes both ways stays float whole. `branch_report` lists both.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError, require
from . import onnx_graphs as graphs

Scope = tuple[str, ...]  # the branches from the main graph down to a graph: ("If_0:then_branch", ...)
BRANCHES = ("then_branch", "else_branch")
OTHER_CONTROL_FLOW = ("Loop", "Scan")


def control_flow(model) -> list[str]:
    """The op types of the control-flow nodes anywhere in `model` (an onnx.ModelProto), sorted."""
    return sorted({n.op_type for n in graphs.nodes(model.graph) if n.op_type in ("If", *OTHER_CONTROL_FLOW)})


def refuse_loops(model, name: str) -> None:
    """A `Loop` or `Scan` runs its body once per iteration; calibrating it as one flat graph is not
    possible, so static INT8 refuses it (dynamic INT8 and fp16 keep such graphs working)."""
    node = next((n for n in graphs.nodes(model.graph) if n.op_type in OTHER_CONTROL_FLOW), None)
    if node is not None:
        raise InputError(
            f"{name}: static INT8 (ONNX Runtime) cannot calibrate a '{node.op_type}' (node '{node.name}'): "
            "use --preset int8-dynamic or fp16, which keep it"
        )


@dataclass
class Plan:
    """What the calibration data decided: the branch each `If` takes, the `If`s it takes both ways, and
    the tensors renamed while inlining (a branch may reuse a name a sibling scope defines)."""

    taken: dict[tuple[Scope, str], str] = field(default_factory=dict)  # (scope, If) -> branch name
    both_ways: list[tuple[Scope, str]] = field(default_factory=list)
    renamed: dict[tuple[Scope, str], str] = field(default_factory=dict)  # (scope, name) -> flat name
    samples: int = 0

    def flat_name(self, scope: Scope, name: str) -> str:
        """`name` as read in `scope`, in the flat graph: defined there or in a scope around it."""
        for depth in range(len(scope), -1, -1):
            if (scope[:depth], name) in self.renamed:
                return self.renamed[scope[:depth], name]
        return name


def quantize_static(
    source: Path,
    out: Path,
    feeds: Callable[[], Iterable[dict]],
    calibrate: Callable[[Path], Path],
    quantize: Callable[[Path, Path, Path], None],
    workdir: Path,
) -> dict:
    """Quantize `source` (an ONNX file with `If`s) into `out`, branch by branch (see the module docstring).

    `feeds()` yields the calibration feeds; `calibrate(model_path)` calibrates a model without control
    flow and returns ONNX Runtime's calibration cache (a JSON file); `quantize(model, out, cache)` is
    `quantize_static` with the recipe's settings and that cache. Returns the report's `branches`."""
    onnx = require("onnx", "convert")
    model = onnx.load(str(source))
    refuse_loops(model, source.name)
    flat, plan = flatten(model, feeds)
    flat_path = workdir / f"{source.stem}.flat.onnx"
    onnx.save(flat, str(flat_path))
    ranges = _load_ranges(calibrate(flat_path))
    types = _types(flat)
    folder = workdir / f"{source.stem}.branches"
    folder.mkdir(exist_ok=True)
    context = _Context(plan, ranges, types, model, quantize, folder)
    model.graph.CopyFrom(_quantize_graph(context, model.graph, (), outer={}))
    _merge_opsets(model, context.opsets)
    from onnxruntime.quantization.onnx_model import ONNXModel

    ONNXModel(model).clean_initializers()  # the float weights the quantized branches replaced
    graphs.share_weights(model)
    onnx.save(model, str(out))
    return branch_report(plan)


# ---------------------------------------------------------------------------------------------------
# 1. The flat graph the calibration data runs through
# ---------------------------------------------------------------------------------------------------


def flatten(model, feeds: Callable[[], Iterable[dict]]):
    """(the flat model, the Plan): every `If` the calibration feeds take one way only, replaced by that
    branch, until no `If` left in the main graph is decided (see the module docstring)."""
    flat = copy.deepcopy(model)
    plan = Plan()
    where: dict[str, tuple[Scope, str]] = {}  # an If's first output in the flat graph -> (scope, its key)
    decided: set[str] = set()
    while True:
        pending = [n for n in flat.graph.node if n.op_type == "If" and n.output[0] not in decided]
        if not pending:
            return flat, plan
        seen, plan.samples = _conditions(flat, [n.input[0] for n in pending], feeds)
        for node in pending:
            decided.add(node.output[0])
            scope, key = where.get(node.output[0], ((), graphs.key(node)))
            values = seen[node.input[0]]
            if len(values) != 1:
                plan.both_ways.append((scope, key))
                continue
            branch = BRANCHES[0] if next(iter(values)) else BRANCHES[1]
            plan.taken[scope, key] = branch
            inner = (*scope, f"{key}:{branch}")
            for nested in _inline(flat.graph, node, branch, inner, plan):
                where[nested.output[0]] = (inner, graphs.key(nested))


def _conditions(model, names: list[str], feeds) -> tuple[dict[str, set[bool]], int]:
    """The values each condition tensor `names` takes over the calibration feeds, and how many feeds."""
    onnx = require("onnx", "convert")
    ort = require("onnxruntime", "convert")
    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(names):
        if name not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    seen: dict[str, set[bool]] = {name: set() for name in names}
    count = 0
    for feed in feeds():
        values = session.run(list(seen), feed)
        for name, value in zip(seen, values, strict=True):
            seen[name].add(bool(value))
        count += 1
    if not count:
        raise InputError("static INT8 of a model with 'If' needs calibration samples to decide its branches")
    return seen, count


def _inline(graph, node, branch_name: str, scope: Scope, plan: Plan) -> list:
    """Replace the `If` `node` of `graph` by its branch `branch_name` (which becomes `scope`), renaming
    the names it defines that `graph` already has; returns the branch's own `If` nodes."""
    onnx = require("onnx", "convert")
    branch = copy.deepcopy(next(a.g for a in node.attribute if a.name == branch_name))
    index = list(graph.node).index(node)
    rest = [*graph.node[:index], *graph.node[index + 1 :]]
    defined = {i.name for i in [*graph.initializer, *graph.input]}
    for other in rest:  # and the names in the branches of other Ifs, which a name here would shadow
        defined |= {o for o in other.output if o}.union(
            *(graphs.defined(sub) for sub in graphs.subgraphs(other))
        )
    clashes = {name: graphs.fresh(name, defined) for name in sorted(graphs.defined(branch) & defined)}
    if clashes:
        graphs.rename(branch, clashes)
        plan.renamed.update({(scope, old): new for old, new in clashes.items()})
    outputs = [
        onnx.helper.make_node(
            "Identity", [b.name], [o], name=f"{node.name or node.output[0]}/{branch_name}/out{i}"
        )
        for i, (b, o) in enumerate(zip(branch.output, node.output, strict=True))
    ]
    del graph.node[:]
    graph.node.extend([*rest[:index], *branch.node, *outputs, *rest[index:]])
    graph.initializer.extend(branch.initializer)
    return [n for n in branch.node if n.op_type == "If"]


# ---------------------------------------------------------------------------------------------------
# 3. Each graph quantized on its own, and put back
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Context:
    plan: Plan
    ranges: Any  # onnxruntime.quantization.calibrate.TensorsData of the flat graph
    types: dict  # flat tensor name -> onnx.TypeProto
    model: Any  # the source onnx.ModelProto (opsets, IR version)
    quantize: Callable[[Path, Path, Path], None]
    folder: Path
    opsets: dict[str, int] = field(default_factory=dict)  # domains the quantizer added (com.microsoft ...)
    names: set[str] = field(default_factory=set)  # the names the graphs quantized so far define
    made: int = 0


def _quantize_graph(context: _Context, graph, scope: Scope, outer: dict):
    """`graph` (the main graph, or the branch that is `scope`) quantized by ONNX Runtime with the flat
    graph's ranges, and the branches it holds that the calibration data takes, quantized the same way.
    `outer`: the initializers of the scopes around it, by name (their other names: `_Context.names`)."""
    onnx = require("onnx", "convert")
    alone, added = _standalone(context, graph, scope, outer)
    paths = [context.folder / f"{context.made}{suffix}" for suffix in (".onnx", ".int8.onnx", ".json")]
    context.made += 1
    onnx.save(alone, str(paths[0]))
    _save_ranges(context, alone.graph, scope, paths[2])
    context.quantize(*paths)
    quantized = onnx.load(str(paths[1]))
    for opset in quantized.opset_import:
        context.opsets.setdefault(opset.domain, opset.version)
    result = quantized.graph
    del result.value_info[:]
    outputs = [o for o in result.output if o.name not in added]
    del result.output[:]
    result.output.extend(outputs)
    if scope:  # a branch: no inputs; the outer initializers it was given are read from outside again
        del result.input[:]
        kept = [i for i in result.initializer if i.name not in added]
        del result.initializer[:]
        result.initializer.extend(kept)
        shadowing = graphs.defined(result, nested=False) & context.names
        if shadowing:  # e.g. the scale of an outer tensor that the outer graph quantized too
            graphs.rename(result, {name: graphs.fresh(name, context.names) for name in sorted(shadowing)})
        _float_outputs(result)
    context.names |= graphs.defined(result, nested=False)
    visible = {**outer, **{i.name: i for i in result.initializer}}
    for node in result.node:
        branch = context.plan.taken.get((scope, graphs.key(node))) if node.op_type == "If" else None
        for attr in node.attribute:
            if attr.name == branch:
                attr.g.CopyFrom(
                    _quantize_graph(context, attr.g, (*scope, f"{graphs.key(node)}:{branch}"), visible)
                )
    _sort(result)
    return result


def _sort(graph) -> None:
    """`graph`'s nodes in an order ONNX accepts: each after the producers of what it reads, an `If` after
    those of what its branches read; otherwise in their order. ONNX Runtime's quantizer appends the
    nodes it adds (ONNX Runtime sorts on load; onnx's checker and other runtimes do not)."""
    import heapq

    from .qdq_tidy import subgraph_reads

    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    users: list[list[int]] = [[] for _ in nodes]
    waiting = []
    for i, node in enumerate(nodes):
        needs = {producer[name] for name in [*node.input, *subgraph_reads(node)] if name in producer} - {i}
        for j in needs:
            users[j].append(i)
        waiting.append(len(needs))
    ready = [i for i, count in enumerate(waiting) if not count]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in users[i]:
            waiting[j] -= 1
            if not waiting[j]:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise RuntimeError("the quantized graph has a cycle")
    del graph.node[:]
    graph.node.extend(order)


def _float_outputs(graph) -> None:
    """A branch's outputs leave in float, as the main graph's do (qdq_tidy.float_outputs)."""
    from types import SimpleNamespace

    from .qdq_tidy import float_outputs

    float_outputs(SimpleNamespace(graph=graph))


def _standalone(context: _Context, graph, scope: Scope, outer: dict):
    """(`graph` as a model of its own, the names added to it): the outer-scope tensors it reads become
    inputs, except initializers, which are copied in (so ONNX Runtime quantizes weights as weights)."""
    onnx = require("onnx", "convert")
    from .qdq_tidy import subgraph_reads

    alone = copy.deepcopy(graph)
    del alone.value_info[:]
    added: set[str] = set()
    # What the branches read, as outputs for the quantizer: else it removes a Relu by renaming the Conv
    # before it (its QuantizeLinear clips at 0) and rewires only the nodes it sees, and a branch reading
    # the Relu's output gets the unclipped values (silero-vad's LSTM did). As an output, the name is kept
    # for the value after the QuantizeLinear/DequantizeLinear pair. (Node outputs only: an input made an
    # output would lose its name to the QuantizeLinear's.)
    computed = {o for n in graph.node for o in n.output if o}
    for name in sorted(set().union(*(subgraph_reads(n) for n in graph.node)) & computed):
        if name not in {o.name for o in alone.output}:
            added.add(name)
            alone.output.append(_value_info(context, scope, name))
    if scope:
        del alone.input[:]
        for name in sorted(graphs.reads(graph) - graphs.defined(graph)):
            added.add(name)
            if name in outer:
                alone.initializer.append(outer[name])
            else:
                alone.input.append(_value_info(context, scope, name))
    model = onnx.helper.make_model(
        alone, opset_imports=context.model.opset_import, ir_version=context.model.ir_version
    )
    model.metadata_props.extend(context.model.metadata_props)  # quant_pre_process's mark: ORT stays quiet
    return model, added


def _value_info(context: _Context, scope: Scope, name: str):
    """`name`'s type (from the flat graph's shape inference) as a graph input or output."""
    onnx = require("onnx", "convert")
    flat = context.plan.flat_name(scope, name)
    if flat not in context.types:
        raise RuntimeError(f"no type inferred for '{name}' (in {' > '.join(scope) or 'the main graph'})")
    return onnx.helper.make_value_info(name, context.types[flat])


def _save_ranges(context: _Context, graph, scope: Scope, cache: Path) -> None:
    """ONNX Runtime's calibration cache for one graph: the flat graph's ranges under this graph's names."""
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    names = (
        {i.name for i in graph.input}
        | graphs.reads(graph, nested=False)
        | graphs.defined(graph, nested=False)
    )
    data = {}
    for name in sorted(names):
        flat = context.plan.flat_name(scope, name)
        if flat in context.ranges:
            data[name] = context.ranges[flat]
    save_tensors_data(TensorsData(context.ranges.calibration_method, data), cache)


def _load_ranges(cache: Path):
    from onnxruntime.quantization.calibrate import load_tensors_data

    return load_tensors_data(cache)


def _types(flat) -> dict:
    """Every tensor's type in the flat graph (onnx's shape inference): the inputs a branch gets."""
    onnx = require("onnx", "convert")
    inferred = onnx.shape_inference.infer_shapes(flat)
    graph = inferred.graph
    return {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}


def _merge_opsets(model, opsets: dict[str, int]) -> None:
    have = {o.domain for o in model.opset_import}
    for domain, version in sorted(opsets.items()):
        if domain not in have:
            model.opset_import.append(require("onnx", "convert").helper.make_opsetid(domain, version))


# ---------------------------------------------------------------------------------------------------
# What stayed float
# ---------------------------------------------------------------------------------------------------


def branch_report(plan: Plan) -> dict:
    """For the quantization report: which branch of each `If` was quantized, which stayed float and why."""
    quantized, kept = [], []
    for (scope, key), branch in sorted(plan.taken.items()):
        name = " > ".join([*scope, key])
        quantized.append(f"{name}:{branch}")
        other = BRANCHES[1 - BRANCHES.index(branch)]
        kept.append(
            {
                "branch": f"{name}:{other}",
                "why": f"no calibration sample takes it ({plan.samples} take {branch})",
            }
        )
    for scope, key in plan.both_ways:
        name = " > ".join([*scope, key])
        kept.append({"branch": name, "why": "the calibration samples take both of its branches"})
    return {"quantized": quantized, "kept_float": kept, "calibration_samples": plan.samples}


def inline_constant_ifs(model) -> list[str]:
    """Replace each `If` of the main graph whose condition is a constant (an initializer, e.g. after ONNX
    Runtime folded a condition on sizes made static) by the branch it takes; the `If`s inlined."""
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    inlined = []
    for node in [n for n in model.graph.node if n.op_type == "If" and n.input[0] in constants]:
        branch = BRANCHES[0] if bool(constants[node.input[0]].reshape(-1)[0]) else BRANCHES[1]
        _inline(model.graph, node, branch, (f"{graphs.key(node)}:{branch}",), Plan())
        inlined.append(f"{graphs.key(node)}:{branch}")
    return inlined


def deciding_inputs(graph, node) -> list[str]:
    """The graph inputs whose values (not just shapes) decide `node`'s condition: silero-vad's `sr`.
    Empty when it depends on shapes only (a ShapeOf cuts the dependence on values)."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    found, todo, seen = set(), [node.input[0]], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        elif name in producer and producer[name].op_type not in ("Shape", "Size"):
            todo.extend(i for i in producer[name].input if i)
    return sorted(found)
