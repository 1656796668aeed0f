"""Bake constant shape arguments into onnx2torch's shape-taking modules, so torch.export can trace them.

onnx2torch passes an ONNX op's shape-like inputs (Reshape's shape, Pad's pads, Slice's starts/ends,
Resize's scales and sizes, Squeeze/Unsqueeze's axes from opset 13) as tensors and reads their values
in `forward`. Under torch.export those tensors are fake, and
reading one is a data-dependent guard that fails the export. Once the model is static and its
constants folded (tflite_onnx.py), these arguments are initializers: this pass hands them to the
module as plain values instead, which the modules read the same way.
"""

from __future__ import annotations

import functools

import numpy as np

from ...errors import require

_DYNAMIC = object()


class _Const(np.ndarray):
    """A numpy array that answers the tensor calls onnx2torch makes on shape inputs."""

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return np.asarray(self)

    def nelement(self):
        return self.size


def _value(tensor):
    array = tensor.detach().cpu().numpy()
    if array.ndim == 0:
        return array.item()
    return array.view(_Const)


def _modules():
    torch = require("torch", "convert")

    class Reshape(torch.nn.Module):
        """ONNX Reshape with a constant shape: 0 copies the input's size on that axis."""

        def __init__(self, shape):
            super().__init__()
            self.shape = tuple(int(v) for v in shape)

        def forward(self, x):
            return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])

    class Pad(torch.nn.Module):
        """ONNX Pad with constant pads, any axis: torch's reflect/replicate pad only takes the last
        axes (onnx2torch refuses the rest), so those modes are built from slices and concatenation."""

        def __init__(self, mode: str, pads, value):
            super().__init__()
            half = len(pads) // 2
            self.mode, self.value = mode, float(value or 0.0)
            self.pairs = [(int(b), int(e)) for b, e in zip(pads[:half], pads[half:], strict=True)]

        def forward(self, x):
            if self.mode == "constant":
                flat = [v for b, e in reversed(self.pairs) for v in (b, e)]
                return torch.nn.functional.pad(x, flat, value=self.value)
            for axis, (begin, end) in enumerate(self.pairs):
                if not (begin or end):
                    continue
                size = x.shape[axis]
                if self.mode == "reflect":  # ONNX reflect excludes the edge sample, as numpy's
                    left, right = x.narrow(axis, 1, begin), x.narrow(axis, size - 1 - end, end)
                else:  # replicate (ONNX "edge")
                    left = x.narrow(axis, 0, 1).repeat_interleave(begin, axis)
                    right = x.narrow(axis, size - 1, 1).repeat_interleave(end, axis)
                x = torch.cat([left.flip(axis) if self.mode == "reflect" else left, x,
                               right.flip(axis) if self.mode == "reflect" else right], axis)  # fmt: skip
            return x

    class Squeeze(torch.nn.Module):
        """ONNX Squeeze/Unsqueeze (opset >= 13) with constant axes (onnx2torch sorts the axes tensor)."""

        def __init__(self, axes, unsqueeze: bool):
            super().__init__()
            self.axes, self.unsqueeze = [int(a) for a in np.ravel(axes)], unsqueeze

        def forward(self, x):
            if not self.axes:
                return torch.squeeze(x)
            if self.unsqueeze:
                rank = x.dim() + len(self.axes)
                for axis in sorted(a % rank for a in self.axes):
                    x = torch.unsqueeze(x, axis)
                return x
            for axis in sorted((a % x.dim() for a in self.axes), reverse=True):
                x = torch.squeeze(x, axis)
            return x

    class Gather(torch.nn.Module):
        """ONNX Gather with constant indices (onnx2torch reads a scalar index with `.item()`, which
        litert-torch cannot lower: silero-vad's state[0] and state[1])."""

        def __init__(self, indices, axis: int):
            super().__init__()
            self.indices, self.axis = np.asarray(indices).astype(np.int64), axis

        def forward(self, x):
            if self.indices.ndim == 0:
                return torch.select(x, self.axis, int(self.indices))
            flat = torch.index_select(x, self.axis, torch.tensor(self.indices.reshape(-1).tolist()))
            axis = self.axis % x.dim()
            return flat.reshape(*x.shape[:axis], *self.indices.shape, *x.shape[axis + 1 :])

    class Baked(torch.nn.Module):
        """Calls `inner` with the constant arguments filled in and the graph's tensors in between
        (onnx2torch passes some by keyword: Resize's `sizes` when `scales` is empty)."""

        def __init__(self, inner, template, keywords):
            super().__init__()
            self.inner, self.template, self.keywords = inner, template, keywords

        def forward(self, *dynamic, **named):
            values = iter(dynamic)
            args = [next(values) if v is _DYNAMIC else v for v in self.template]
            return self.inner(*args, **self.keywords, **named)

    return Reshape, Pad, Squeeze, Gather, Baked


def _is_attr(arg) -> bool:
    return getattr(arg, "op", None) == "get_attr"


def _attr(module, arg):
    return functools.reduce(getattr, arg.target.split("."), module)


SQUEEZES = ("OnnxSqueezeDynamicAxes", "OnnxUnsqueezeDynamicAxes")  # axes as an input from opset 13
BAKED = ("OnnxSlice", "OnnxResize")  # Resize reads its roi, scales and sizes with .tolist()


def bake_constants(module):
    """Rewrite `module` (an onnx2torch fx GraphModule) in place and return it."""
    Reshape, Pad, Squeeze, Gather, Baked = _modules()
    graph = module.graph
    for index, node in enumerate(list(graph.nodes)):
        if node.op != "call_module":
            continue
        kind = type(module.get_submodule(node.target)).__name__
        if kind not in (*BAKED, *SQUEEZES, "OnnxReshape", "OnnxPadDynamic", "OnnxGather"):
            continue
        constant = [i > 0 and _is_attr(a) for i, a in enumerate(node.args)]
        keywords = {k: _value(_attr(module, a)) for k, a in node.kwargs.items() if _is_attr(a)}
        if not any(constant) and not (keywords and kind in BAKED):
            continue
        values = [
            _value(_attr(module, a)) if c else _DYNAMIC for a, c in zip(node.args, constant, strict=True)
        ]
        if kind == "OnnxReshape":
            if not constant[1]:
                continue
            replacement = Reshape(values[1])
        elif kind == "OnnxPadDynamic":
            if not constant[1] or (len(values) > 2 and not constant[2]):
                continue
            mode = module.get_submodule(node.target).mode
            if mode not in ("constant", "reflect", "replicate"):
                continue
            replacement = Pad(mode, list(values[1]), values[2] if len(values) > 2 else 0.0)
        elif kind == "OnnxGather":
            if not constant[1]:
                continue
            replacement = Gather(values[1], module.get_submodule(node.target)._axis)
        elif kind in SQUEEZES:
            if len(values) < 2 or not constant[1]:
                continue
            replacement = Squeeze(values[1], kind == "OnnxUnsqueezeDynamicAxes")
        else:
            replacement = Baked(module.get_submodule(node.target), values, keywords)
            node.kwargs = {k: a for k, a in node.kwargs.items() if k not in keywords}
        name = f"baked_{index}"
        module.add_submodule(name, replacement)
        node.target = name
        node.args = tuple(a for a, c in zip(node.args, constant, strict=True) if not c)
    graph.eliminate_dead_code()
    module.recompile()
    return module
