"""Reference backend: ONNX's own numpy evaluator (`onnx.reference.ReferenceEvaluator`), with an
XNOR-popcount Conv for binary layers.

Slow and exact; it is the yardstick the other backends are tested against. It needs the `onnx`
package, so it is meant for hosts and tests, not for devices.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InvalidModel, require
from ..session import TensorSpec

NAME = "numpy"
EXTRA = "convert"
SUFFIXES = (".onnx",)


def available() -> bool:
    return importlib.util.find_spec("onnx") is not None


def version() -> str:
    return "onnx " + str(require("onnx", EXTRA).__version__)


def _spec(value_info: Any) -> TensorSpec:  # an onnx ValueInfoProto
    from onnx import helper

    tensor = value_info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(
        value_info.name, shape, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    )


_COUNTS = {"xnor": 0}  # binary layers computed with the XNOR kernel in this process (tests read it)


def _xnor_calls() -> int:
    return _COUNTS["xnor"]


def _xnor_conv_class() -> type:
    """ONNX's reference Conv, except that a binary layer (inputs all +-1, weights +-alpha_c per output
    channel, no groups or dilation) is computed with the XNOR-popcount kernel on packed words: the
    independent yardstick the bit-packed ONNX and OpenVINO BinaryConvolution exports are tested
    against."""
    from onnx.reference.ops.op_conv import Conv as ReferenceConv

    from .xnor import binary_conv2d

    # onnx is not followed by mypy: its classes are Any, and this one must be subclassed
    class Conv(ReferenceConv):  # type: ignore[misc]  # the evaluator matches new ops by class name
        op_domain = ""

        def _run(self, X: np.ndarray, W: np.ndarray, B: np.ndarray | None = None, auto_pad: str | None = None,
                 dilations: list[int] | None = None, group: int | None = None,
                 kernel_shape: list[int] | None = None, pads: list[int] | None = None,
                 strides: list[int] | None = None) -> tuple[np.ndarray]:  # fmt: skip
            alpha = np.abs(W.reshape(len(W), -1)[:, 0]) if W.ndim == 4 else None
            binary = (
                alpha is not None and (group or 1) == 1 and all(d == 1 for d in dilations or [1])
                and auto_pad in (None, "NOTSET") and not any(pads or [0])
                and np.all(np.abs(X) == 1) and np.all(np.abs(W) == alpha[:, None, None, None])
            )  # fmt: skip
            if not binary:
                result: tuple[np.ndarray] = super()._run(X, W, B, auto_pad=auto_pad, dilations=dilations, group=group,
                                                         kernel_shape=kernel_shape, pads=pads, strides=strides)  # fmt: skip
                return result
            _COUNTS["xnor"] += 1
            sh, sw = strides or (1, 1)
            return (binary_conv2d(X, W, alpha, B, stride=(sh, sw)),)

    return Conv


class ReferenceSession:
    backend = NAME

    def __init__(self, path: Path, threads: int | None = None):
        onnx = require("onnx", EXTRA, "the numpy reference backend reads ONNX graphs with it")
        from onnx.reference import ReferenceEvaluator

        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise InvalidModel(
                f"{path} is not a valid ONNX model ({exc}); check the file is complete"
            ) from exc
        self._evaluator = ReferenceEvaluator(model, new_ops=[_xnor_conv_class()])
        initializers = {init.name for init in model.graph.initializer}
        self.path = Path(path)
        self.threads = threads
        self.inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
        self.outputs = tuple(_spec(v) for v in model.graph.output)
        self._names = [spec.name for spec in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._evaluator.run(self._names, feeds), strict=True))


def open(path: Path, threads: int | None = None, exact: bool = False, **options: Any) -> ReferenceSession:  # noqa: A001
    return ReferenceSession(path, threads, **options)
