"""Give a `torch.export` program its layers back, so PyTorch steps can prune, distill or binarize a `.pt2`.

`ExportedProgram.module()` is a flat fx graph of aten calls on parameters (`aten.conv2d(x, w, b)`):
torch-pruning's dependency graph and the binarizer look for `nn.Conv2d`/`nn.Linear` layers and find
none. `lift` rebuilds real layers from those calls, under the names the weights had in the original
module (`features.0`), so `ignore = ['features\\.0']` and `hidden_layers` in a recipe mean what they
mean for the module itself, and rewrites the graph to call them.

Lifted: conv1d/conv2d, conv_transpose1d/2d, linear, batch_norm, layer_norm. A `view`/`reshape` that flattens everything but
the batch into a size baked in at export time becomes `flatten(x, 1)`, so a pruned width flows through
to the next layer. Everything else stays as the exporter wrote it: an op the steps must change but that
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
    module = copy.deepcopy(program.module())
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
    return module


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
