"""XNOR-popcount kernels for binary layers, numpy only: the yardstick the binary exports are tested
against bit for bit.

With inputs and weights in {-1, +1} stored as bits (1 = +1, 0 = -1; sign(0) = +1), the dot product
of two length-K vectors is K - 2 * popcount(a XOR w): each differing bit is a -1 product, each equal
bit a +1. Bits are packed into 64-bit words; the padding bits at the end are 0 in both operands, so
they never differ and need no correction. The result is an exact integer; the layer's output is that
integer times alpha_c (plus bias), as in the exported graphs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

PAD_VALUE = 1.0  # binary convs pad with +1 (see converter/steps/binary_layers.py)
Pair = tuple[int, int]  # (height, width) of a stride or a padding


def pack_signs(values: np.ndarray) -> np.ndarray:
    """(..., K) real values -> (..., ceil(K/64)) uint64 words of their signs (x >= 0 -> bit 1)."""
    bits = np.asarray(values) >= 0
    k = bits.shape[-1]
    padded = np.zeros((*bits.shape[:-1], -(-k // 64) * 64), bool)
    padded[..., :k] = bits
    return np.packbits(padded, axis=-1).view(np.uint64)


def xnor_dot(x_words: np.ndarray, w_words: np.ndarray, k: int) -> np.ndarray:
    """(N, words) x (O, words) packed signs -> (N, O) int32 dot products of the +-1 vectors."""
    mismatches = np.zeros((x_words.shape[0], w_words.shape[0]), np.int32)
    for word in range(x_words.shape[1]):  # one word at a time keeps the (N, O) temporaries small
        diff = np.bitwise_xor(x_words[:, word, None], w_words[None, :, word])
        mismatches += np.bitwise_count(diff).astype(np.int32)
    return k - 2 * mismatches


def binary_dense(
    x: np.ndarray, weight: np.ndarray, alpha: ArrayLike | None = None, bias: ArrayLike | None = None
) -> np.ndarray:
    """Linear layer on sign(x) with sign(weight) (O, K), scaled by alpha (O,), plus bias (O,)."""
    out = xnor_dot(pack_signs(x), pack_signs(weight), x.shape[-1]).astype(np.float32)
    return _affine(out, alpha, bias, axis=1)


def _patches(x: np.ndarray, kh: int, kw: int, stride: Pair, padding: Pair, pad_value: float) -> np.ndarray:
    """(N, C, H, W) -> (N, OH, OW, C*kh*kw) sliding windows, padded with `pad_value`."""
    (sh, sw), (ph, pw) = stride, padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    n, c, oh, ow = windows.shape[:4]
    patches: np.ndarray = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, c * kh * kw)
    return patches


def binary_conv2d(
    x: np.ndarray, weight: np.ndarray, alpha: ArrayLike | None = None, bias: ArrayLike | None = None,
    stride: Pair = (1, 1), padding: Pair = (0, 0),
    pad_value: float = PAD_VALUE,
) -> np.ndarray:  # fmt: skip
    """Conv2d (groups 1, dilation 1) of sign(x) (N, C, H, W) with sign(weight) (O, C, kh, kw), the
    padding filled with `pad_value` (+1: a bit 1), via XNOR-popcount; scaled by alpha, plus bias."""
    o, c, kh, kw = weight.shape
    signs = np.where(np.asarray(x) >= 0, 1.0, -1.0).astype(np.float32)
    patches = _patches(signs, kh, kw, stride, padding, pad_value)
    n, oh, ow, k = patches.shape
    out = xnor_dot(pack_signs(patches.reshape(-1, k)), pack_signs(weight.reshape(o, k)), k)
    out = out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2).astype(np.float32)
    return _affine(out, alpha, bias, axis=1)


def _affine(out: np.ndarray, alpha: ArrayLike | None, bias: ArrayLike | None, axis: int) -> np.ndarray:
    shape = [1] * out.ndim
    shape[axis] = out.shape[axis]
    if alpha is not None:
        out = out * np.asarray(alpha, np.float32).reshape(shape)
    if bias is not None:
        out = out + np.asarray(bias, np.float32).reshape(shape)
    return out
