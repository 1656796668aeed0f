"""Give a `torch.export` program its layers back, so PyTorch steps can prune, distill or binarize a `.pt2`.

`ExportedProgram.module()` is a flat fx graph of aten calls on parameters (`aten.conv2d(x, w, b)`):
torch-pruning's dependency graph and the binarizer look for `nn.Conv2d`/`nn.Linear` layers and find
none. `lift` rebuilds real layers from those calls, under the names the weights had in the original
module (`features.0`), so `ignore = ['features\\.0']` and `hidden_layers` in a recipe mean what they
mean for the module itself, and rewrites the graph to call them.

Lifted: conv1d/conv2d, conv_transpose1d/2d, linear, batch_norm, layer_norm. A `view`/`reshape` that flattens everything but
the batch into a size baked in at export time becomes `flatten(x, 1)`, so a pruned width flows through
to the next layer.

A program exported the way most people do, `torch.export.export(model, (x,))`, has its batch fixed at
x's (usually 1): the guards refuse any other, and `view`/`reshape`/`expand` carry the batch as a
number. Steps train on batches, so `lift` makes the graph batch-free (`_free_batch`): it follows which
tensors have the batch as their first dimension and rewrites those size arguments to -1 (or to the
input's batch), then checks the result on a batch of several samples against the program run on each
sample. The step results are exported back at the program's own batch (`static_batch`), so the
artifacts keep the source's input signature. Everything else stays as the exporter wrote it: an op the steps must change but that
is not lifted (say a grouped transposed conv's cousin, or a parameter used by a bare `mul`) is listed
in `module.meta['edgesmith_unlifted']`, and a step that fails names it.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np

from ...errors import InputError, require

# torch 2.13 warns about its own pytree internals whenever a graph module is copied (steps copy it)
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)


def lift(program):
    """A `torch.fx.GraphModule` computing what `program` computes, with real layers. The program is
    not modified; the new module's parameters are copies."""
    torch = require("torch", "convert", "PyTorch models")
    module = copy.deepcopy(program.module(check_guards=False))
    module.validate_inputs = False  # its input checks hold the export-time shapes; _free_batch frees them
    graph = module.graph
    lifted = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _flatten_like(torch) and _flattens_from_dim1(node):
            with graph.inserting_before(node):
                flat = graph.call_function(torch.ops.aten.flatten.using_ints, (node.args[0], 1))
            flat.meta = dict(node.meta)
            node.replace_all_uses_with(flat)
            graph.erase_node(node)
            continue
        build = _BUILDERS.get(str(node.target))
        if build is None:
            continue
        layer, inputs = build(torch, node, module)
        if layer is None:
            continue
        name = _place(module, node, layer)
        with graph.inserting_before(node):
            call = graph.call_module(name, tuple(inputs))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        lifted += 1
    for node in list(graph.nodes):  # the parameters now live in the layers
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    # what is left is used by ops that are not layers now; steps name these when they cannot cope
    module.meta["edgesmith_unlifted"] = sorted(
        f"{node.target} (in {user.target})"
        for node in graph.nodes
        if node.op == "get_attr"
        for user in node.users
    )
    graph.lint()
    module.recompile()
    if not lifted:
        raise InputError(
            "the .pt2 has no conv/linear/batch-norm layers that PyTorch steps could change; "
            "pass the nn.Module to edgesmith.convert() in Python"
        )
    batch = static_batch(program)
    if batch is not None:
        _free_batch(torch, module, batch)
        _check_any_batch(torch, module, program, batch)
    return module


def static_batch(program) -> int | None:
    """The batch the program was exported at when it is fixed (every user input's first dimension the
    same number), or None when the batch is dynamic (or the inputs have no common first dimension)."""
    firsts = [
        node.meta["val"].shape[0] if node.meta["val"].dim() else None
        for node in _user_inputs(program.graph, program)
    ]
    if not firsts or not all(isinstance(f, int) for f in firsts) or len(set(firsts)) != 1:
        return None  # a SymInt (dynamic), a scalar input, or inputs whose first dimensions differ
    return firsts[0]


def _user_inputs(graph, program=None) -> list:
    names = program.graph_signature.user_inputs if program is not None else None
    return [n for n in graph.nodes if n.op == "placeholder" and (names is None or n.name in names)]


def _free_batch(torch, module, batch: int) -> None:
    """Rewrite the size arguments that hold the export batch so the graph runs at any batch.

    A node "carries" the batch when its first dimension is the batch: the inputs, and what an op makes
    of a carrying tensor without touching dimension 0 (`_keeps_dim0`). A view/reshape of a carrying
    tensor to (batch, ...) keeping the per-sample size gets -1 there; an expand of a carrying tensor
    keeps its batch (-1); an expand of a batch-less tensor (a class token) that is concatenated with
    carrying ones gets the input's batch (`sym_size`)."""
    aten = torch.ops.aten
    graph = module.graph
    first_input = _user_inputs(graph)[0]
    carries = set(_user_inputs(graph))
    for node in list(graph.nodes):
        if node.op not in ("call_function", "call_module"):
            continue
        value = node.meta.get("val")
        fed = any(a in carries for a in node.all_input_nodes)
        if node.target in _flatten_like(torch):
            if _rewrite_reshape(node, carries, batch):
                carries.add(node)
            continue
        if node.target is aten.expand.default:
            if node.args[0] in carries and _dim0(node.args[0]) == batch and node.args[1][0] in (batch, -1):
                node.args = (node.args[0], [-1, *node.args[1][1:]])
                carries.add(node)
            continue
        if (
            node.target is aten.cat.default
            and _normalized(node.args[1] if len(node.args) > 1 else 0, value) != 0
        ):
            _batch_expands(torch, graph, node, carries, batch, first_input)
        if fed and _dim0(node) == batch and (node.op == "call_module" or _keeps_dim0(torch, node)):
            carries.add(node)
    graph.lint()
    module.recompile()


def _dim0(node):
    """The first dimension of a node's value; for several values (split, max_pool2d_with_indices), the
    one they share."""
    value = node.meta.get("val") if hasattr(node, "meta") else None
    values = value if isinstance(value, (list, tuple)) else [value]
    firsts = {v.shape[0] if hasattr(v, "shape") and v.dim() else None for v in values}
    return firsts.pop() if len(firsts) == 1 else None


def _normalized(dim, value) -> int | None:
    rank = value.dim() if hasattr(value, "dim") else None
    if not isinstance(dim, int) or rank is None:
        return None
    return dim % rank if rank else dim


def _rewrite_reshape(node, carries: set, batch: int) -> bool:
    """(batch, a, b, ...) from a carrying (batch, ...) with the same per-sample size -> (-1, a, b, ...)."""
    source, value = node.args[0], node.meta.get("val")
    if source not in carries or value is None or _dim0(source) != batch or not value.dim():
        return False
    if value.shape[0] != batch or not all(isinstance(d, int) for d in value.shape):
        return False
    if math.prod(value.shape[1:]) != math.prod(source.meta["val"].shape[1:]):
        return False
    node.args = (source, [-1, *value.shape[1:]])  # the concrete sizes replace any -1 among the rest
    return True


def _batch_expands(torch, graph, cat, carries: set, batch: int, first_input) -> None:
    """Inputs of a concatenation along a non-batch dimension all need the batch: an expand of a
    batch-less tensor to the export batch is given the input's batch instead."""
    tensors = cat.args[0]
    if not any(t in carries for t in tensors):
        return
    for t in tensors:
        if t in carries or t.target is not torch.ops.aten.expand.default or t.args[1][0] != batch:
            continue
        with graph.inserting_before(t):
            size = graph.call_function(torch.ops.aten.sym_size.int, (first_input, 0))
        t.args = (t.args[0], [size, *t.args[1][1:]])
        carries.add(t)


def _keeps_dim0(torch, node) -> bool:
    """Whether an op maps dimension 0 to dimension 0: no `dim`-like argument names 0 (a reduction over
    everything, a concatenation or an index along the batch, a permute moving it all do)."""
    aten = torch.ops.aten
    if node.target is aten.permute.default:
        return _normalized(node.args[1][0], node.args[0].meta.get("val")) == 0
    if node.target in (aten.squeeze.default, aten.index.Tensor, aten.index_put.default):
        return node.target is aten.index.Tensor and node.args[1][0] is None
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return True  # operator.getitem on a carrying op's outputs and the like
    source = next((a.meta.get("val") for a in node.all_input_nodes if hasattr(a, "meta")), None)
    for i, arg in enumerate(schema.arguments):
        if arg.name not in ("dim", "dims", "dim0", "dim1", "start_dim"):
            continue
        given = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name, arg.default_value)
        dims = given if isinstance(given, (list, tuple)) else [given]
        if given is None or not dims or any(_normalized(d, source) in (0, None) for d in dims):
            return False
    return True


def _check_any_batch(torch, module, program, batch: int) -> None:
    """Run the rewritten graph on a few samples at once and the program on each alone: the same
    numbers, or the batch is held somewhere `_free_batch` does not follow (a one-line error)."""
    count = 3 * batch if batch == 1 else 2 * batch
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for node in _user_inputs(program.graph, program):
        value = node.meta["val"]
        shape = (count, *value.shape[1:])
        inputs.append(torch.randn(shape, generator=generator).to(value.dtype) if value.dtype.is_floating_point
                      else torch.zeros(shape, dtype=value.dtype))  # fmt: skip
    reference = program.module()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            whole = torch.utils._pytree.tree_leaves(module(*inputs))
            parts = [
                torch.utils._pytree.tree_leaves(reference(*(x[i : i + batch] for x in inputs)))
                for i in range(0, count, batch)
            ]
        problem = _mismatch(torch, whole, parts, count)
    except Exception as exc:
        problem = (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
        )
    finally:
        module.train(was_training)
    if problem:
        raise InputError(
            f"the .pt2 was exported at a fixed batch of {batch} and PyTorch steps train on batches, but its "
            f"graph does not run at another batch ({problem}); export it with "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}} or pass the nn.Module in Python"
        )


def _mismatch(torch, whole: list, parts: list[list], count: int) -> str:
    for i, out in enumerate(whole):
        if out.dim() == 0 or out.shape[0] != count:
            return f"output {i} has shape {tuple(out.shape)}, not a batch of {count}"
        expected = torch.cat([p[i] for p in parts])
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if out.shape != expected.shape or not torch.allclose(
            out, expected, rtol=1e-3, atol=1e-4 * max(1.0, scale)
        ):
            return f"output {i} differs from the samples run one batch at a time"
    return ""


def example_inputs(program) -> tuple[np.ndarray, ...]:
    """Zero inputs with the program's shapes and dtypes; a dynamic dimension gets 2 (if allowed)."""
    torch = require("torch", "convert", "PyTorch models")
    arrays = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in program.graph_signature.user_inputs:
            continue
        value = node.meta["val"]
        shape = [_concrete(program, d) for d in value.shape]
        arrays.append(torch.zeros(shape, dtype=value.dtype).numpy())
    return tuple(arrays)


def _concrete(program, dim) -> int:
    if isinstance(dim, int):
        return dim
    for symbol, bounds in program.range_constraints.items():
        if str(symbol) == str(dim):
            low = int(bounds.lower)
            return 2 if low <= 2 and bool(bounds.upper >= 2) else low
    return 2


def _flatten_like(torch) -> tuple:
    aten = torch.ops.aten
    return (aten.view.default, aten.reshape.default, aten._unsafe_view.default)


def _flattens_from_dim1(node) -> bool:
    source = node.args[0].meta.get("val") if hasattr(node.args[0], "meta") else None
    result = node.meta.get("val")
    if source is None or result is None or source.dim() < 3 or result.dim() != 2:
        return False
    if str(source.shape[0]) != str(result.shape[0]):
        return False
    rest = source.shape[1:]
    if not all(isinstance(d, int) for d in rest) or not isinstance(result.shape[1], int):
        return False
    return math.prod(rest) == result.shape[1]


def _tensor(module, node):
    """The parameter or buffer a get_attr node reads, or None for a missing optional argument."""
    if node is None:
        return None
    if getattr(node, "op", None) != "get_attr":
        raise _NotLiftable
    obj = module
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj.detach().clone()


class _NotLiftable(Exception):
    pass


def _arg(node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _conv(torch, node, module):
    x, weight = node.args[0], node.args[1]
    bias = _arg(node, 2, "bias", None)
    try:
        w, b = _tensor(module, weight), _tensor(module, bias)
    except _NotLiftable:
        return None, []
    dims = w.dim() - 2
    stride, padding = _arg(node, 3, "stride", [1] * dims), _arg(node, 4, "padding", [0] * dims)
    dilation, groups = _arg(node, 5, "dilation", [1] * dims), _arg(node, 6, "groups", 1)
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d}.get(dims)
    if cls is None or isinstance(padding, str):
        return None, []
    layer = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), tuple(stride), tuple(padding),
                tuple(dilation), groups, bias=b is not None)  # fmt: skip
    _copy(torch, layer, weight=w, bias=b)
    return layer, [x]


def _conv_transpose(torch, node, module):
    x, weight = node.args[0], node.args[1]
    try:
        w, b = _tensor(module, weight), _tensor(module, _arg(node, 2, "bias", None))
    except _NotLiftable:
        return None, []
    dims = w.dim() - 2
    stride, padding = _arg(node, 3, "stride", [1] * dims), _arg(node, 4, "padding", [0] * dims)
    output_padding, groups = _arg(node, 5, "output_padding", [0] * dims), _arg(node, 6, "groups", 1)
    dilation = _arg(node, 7, "dilation", [1] * dims)
    cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d}.get(dims)
    if cls is None:
        return None, []
    layer = cls(w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]), tuple(stride), tuple(padding),
                tuple(output_padding), groups, bias=b is not None, dilation=tuple(dilation))  # fmt: skip
    _copy(torch, layer, weight=w, bias=b)
    return layer, [x]


def _linear(torch, node, module):
    x, weight = node.args[0], node.args[1]
    try:
        w, b = _tensor(module, weight), _tensor(module, _arg(node, 2, "bias", None))
    except _NotLiftable:
        return None, []
    layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    _copy(torch, layer, weight=w, bias=b)
    return layer, [x]


def _batch_norm(torch, node, module):
    x = node.args[0]
    try:
        w, b, mean, var = (_tensor(module, node.args[i]) for i in range(1, 5))
    except _NotLiftable:
        return None, []
    momentum, eps = _arg(node, 6, "momentum", 0.1), _arg(node, 7, "eps", 1e-5)
    rank = x.meta["val"].dim() if "val" in x.meta else 4
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}.get(rank)
    if cls is None or mean is None:
        return None, []
    layer = cls(mean.shape[0], eps=eps, momentum=momentum, affine=w is not None)
    _copy(torch, layer, weight=w, bias=b, running_mean=mean, running_var=var)
    return layer, [x]


def _layer_norm(torch, node, module):
    x, shape = node.args[0], node.args[1]
    try:
        w, b = _tensor(module, _arg(node, 2, "weight", None)), _tensor(module, _arg(node, 3, "bias", None))
    except _NotLiftable:
        return None, []
    layer = torch.nn.LayerNorm(tuple(shape), eps=_arg(node, 4, "eps", 1e-5), elementwise_affine=w is not None,
                               bias=b is not None)  # fmt: skip
    _copy(torch, layer, weight=w, bias=b)
    return layer, [x]


_BUILDERS = {
    "aten.conv2d.default": _conv,
    "aten.conv1d.default": _conv,
    "aten.conv_transpose1d.default": _conv_transpose,
    "aten.conv_transpose2d.input": _conv_transpose,
    "aten.linear.default": _linear,
    "aten.batch_norm.default": _batch_norm,
    "aten.layer_norm.default": _layer_norm,
}


def _copy(torch, layer, **tensors) -> None:
    with torch.no_grad():
        for name, value in tensors.items():
            if value is not None:
                getattr(layer, name).copy_(value)


def _place(module, node, layer) -> str:
    """Where the layer goes: in place of the holder of its weight (`features.0` for
    `features.0.weight`), whose other contents it replaces, or under a fresh name."""
    weight = node.args[1]
    if weight.op == "get_attr" and "." in weight.target:
        path, _ = weight.target.rsplit(".", 1)
        parent_path, _, leaf = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        holder = getattr(parent, leaf, None)
        owned = {n for n, _ in layer.named_parameters()} | {n for n, _ in layer.named_buffers()}
        if (
            holder is not None
            and hasattr(holder, "named_parameters")
            and not list(holder.children())
            and {n for n, _ in holder.named_parameters()} | {n for n, _ in holder.named_buffers()} <= owned
            and not isinstance(holder, type(layer))
        ):
            setattr(parent, leaf, layer)
            return path
    name, index = f"lifted_{node.name}", 0
    while hasattr(module, name):
        index += 1
        name = f"lifted_{node.name}_{index}"
    module.add_module(name, layer)
    return name
