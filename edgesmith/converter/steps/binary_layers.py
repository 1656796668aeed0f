"""Binary Conv2d/Linear layers for training (latent weights + straight-through estimator) and `freeze`.

Why it is built this way:

- **Weights** are `sign(W) * alpha_c` with `alpha_c = mean |W_c|` per output channel (XNOR-Net): the
  scale keeps each channel's magnitude, so the float model is a good starting point. The float
  ("latent") weights are what the optimizer updates; `sign` has a zero gradient almost everywhere, so
  its backward is the clipped identity (straight-through estimator: pass the gradient where
  |W| <= 1, block it outside, which stops latent weights drifting off for ever).
- **Activations** (optional) are `sign(x)` on the layer's input, inside the layer. Whatever feeds the
  layer (a residual shortcut, a pooling) keeps its real values: on an architecture with shortcuts this
  is the Bi-Real arrangement (real-valued shortcut around each binary conv) with nothing to rewrite.
  `approx_sign` uses Bi-Real's ApproxSign backward (2 - 2|x| on |x| <= 1) instead of the clipped
  identity: a piecewise-linear fit of sign's derivative, closer to it than the box.
- **sign(0) = +1** everywhere (training, freeze, exports, XNOR kernel): a bit 1 is +1, a bit 0 is -1.
- **Padding** of a binary-activation conv is +1, not 0: a zero is not a binary value, and OpenVINO's
  BinaryConvolution fills its pad area with a +-1 value (`pad_value`). Training with the same padding
  makes every export exact.
- **alpha is rounded to 11 significant bits** (fp16's mantissa, fp32's range). Then any sum of up to
  2^13 terms +-alpha is exact in float32 whatever the summation order, so a binary-activation layer
  gives identical outputs in PyTorch, ONNX Runtime, OpenVINO and the numpy XNOR kernel.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

PAD_VALUE = 1.0  # what binary-activation convs pad with (a bit 1)
ALPHA_BITS = 11  # significant bits kept in alpha


def _torch():
    import torch

    return torch


def _sign_ste_class(approx: bool):
    torch = _torch()
    function: Any = torch.autograd.Function  # torch is not followed by mypy: its classes are Any

    class SignSTE(function):
        """sign (0 -> +1) forward; clipped identity (or ApproxSign) backward."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            inside = (x.abs() <= 1).to(grad.dtype)
            if approx:
                return grad * inside * (2 - 2 * x.abs())
            return grad * inside

    return SignSTE


def sign_ste(x, approx: bool = False):
    """sign(x) in {-1, +1} with a straight-through gradient (see the module docstring)."""
    return _sign_ste_class(approx).apply(x)


def round_alpha(alpha):
    """alpha rounded to ALPHA_BITS significant bits; the gradient passes straight through."""
    torch = _torch()
    mantissa, exponent = torch.frexp(alpha.detach())
    rounded = torch.ldexp(torch.round(mantissa * 2**ALPHA_BITS) / 2**ALPHA_BITS, exponent)
    return alpha + (rounded - alpha).detach()


def binary_weight(weight):
    """(sign(W) * alpha_c, alpha_c): per-output-channel XNOR-Net scale, STE through the sign."""
    dims = tuple(range(1, weight.dim()))
    alpha = round_alpha(weight.abs().mean(dim=dims, keepdim=True))
    return sign_ste(weight) * alpha, alpha


def _binary_layers():
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class BinaryConv2d(nn.Conv2d):
        """Conv2d with binary weights (and binary inputs when `binary_activations`)."""

        binary_activations: bool = False
        approx_sign: bool = False

        def forward(self, x):
            weight, _ = binary_weight(self.weight)
            if not self.binary_activations:
                return self._conv_forward(x, weight, self.bias)
            x = sign_ste(x, self.approx_sign)
            ph, pw = self.padding
            x = F.pad(x, (pw, pw, ph, ph), value=PAD_VALUE)
            return F.conv2d(x, weight, self.bias, self.stride, 0, self.dilation, self.groups)

    class BinaryLinear(nn.Linear):
        """Linear with binary weights (and binary inputs when `binary_activations`)."""

        binary_activations: bool = False
        approx_sign: bool = False

        def forward(self, x):
            weight, _ = binary_weight(self.weight)
            if self.binary_activations:
                x = sign_ste(x, self.approx_sign)
            return F.linear(x, weight, self.bias)

    class Sign(nn.Module):
        """The frozen binary activation: where(x >= 0, 1, -1), then the +1 padding of the conv."""

        def __init__(self, padding: tuple[int, int] = (0, 0)):
            super().__init__()
            self.padding = tuple(padding)

        def forward(self, x):
            x = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
            ph, pw = self.padding
            if ph or pw:
                x = F.pad(x, (pw, pw, ph, ph), value=PAD_VALUE)
            return x

    return BinaryConv2d, BinaryLinear, Sign


_CACHE: dict[str, type] = {}


def layer_classes():
    """(BinaryConv2d, BinaryLinear, Sign), built once per process (torch is imported lazily)."""
    if not _CACHE:
        _CACHE.update(zip(("conv", "linear", "sign"), _binary_layers(), strict=True))
    return _CACHE["conv"], _CACHE["linear"], _CACHE["sign"]


def to_binary(layer, binary_activations: bool, approx_sign: bool):
    """A binary copy of a Conv2d/Linear layer, sharing nothing with the original."""
    conv_cls, linear_cls, _ = layer_classes()
    new = copy.deepcopy(layer)
    new.__class__ = conv_cls if isinstance(layer, _torch().nn.Conv2d) else linear_cls
    new.binary_activations, new.approx_sign = binary_activations, approx_sign
    return new


def is_binary(layer) -> bool:
    conv_cls, linear_cls, _ = layer_classes()
    return isinstance(layer, (conv_cls, linear_cls))


def _frozen(layer):
    torch = _torch()
    nn = torch.nn
    conv_cls, _, sign_cls = layer_classes()
    with torch.no_grad():
        weight, _ = binary_weight(layer.weight)
    if isinstance(layer, conv_cls):
        padding = (0, 0) if layer.binary_activations else layer.padding
        plain = nn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, padding,
            layer.dilation, layer.groups, layer.bias is not None,
        )  # fmt: skip
    else:
        plain = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    plain.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if layer.bias is not None:
        plain.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    if not layer.binary_activations:
        return plain
    pad = layer.padding if isinstance(layer, conv_cls) else (0, 0)
    return nn.Sequential(sign_cls(pad), plain)


def freeze(module):
    """A copy of `module` in eval mode where every binary layer is a plain Conv2d/Linear with weights
    exactly +-alpha_c, preceded by an explicit `Sign` when its activations are binary. A standard ONNX
    export of the result has binary-valued weights, which the export passes then store as bits."""
    frozen = copy.deepcopy(module).eval()
    for name, child in list(frozen.named_modules()):
        if is_binary(child):
            parent_name, _, attr = name.rpartition(".")
            parent = frozen.get_submodule(parent_name) if parent_name else frozen
            setattr(parent, attr, _frozen(child))
    return frozen


def binary_values(weight: np.ndarray, axis: int = 0) -> np.ndarray | None:
    """alpha per output channel (along `axis`) if every weight is exactly +-alpha_c with alpha_c > 0,
    else None. Shared by the ONNX and OpenVINO export passes."""
    moved = np.moveaxis(np.asarray(weight), axis, 0).reshape(weight.shape[axis], -1)
    alpha = np.abs(moved[:, 0])
    if moved.shape[1] < 2 or not np.all(alpha > 0) or not np.all(np.abs(moved) == alpha[:, None]):
        return None
    return alpha.astype(np.float32)
