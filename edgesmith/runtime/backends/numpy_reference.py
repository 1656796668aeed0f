"""Reference backend: ONNX's own numpy evaluator (`onnx.reference.ReferenceEvaluator`).

Slow and exact; it is the yardstick the other backends are tested against. It needs the `onnx`
package, so it is meant for hosts and tests, not for devices.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ...errors import InputError, require
from ..session import TensorSpec

NAME = "numpy"
EXTRA = "convert"
SUFFIXES = (".onnx",)


def available() -> bool:
    return importlib.util.find_spec("onnx") is not None


def version() -> str:
    return "onnx " + require("onnx", EXTRA).__version__


def _spec(value_info) -> TensorSpec:
    from onnx import helper

    tensor = value_info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(
        value_info.name, shape, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    )


class ReferenceSession:
    backend = NAME

    def __init__(self, path: Path, threads: int | None = None):
        onnx = require("onnx", EXTRA, "the numpy reference backend reads ONNX graphs with it")
        from onnx.reference import ReferenceEvaluator

        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise InputError(f"{path} is not a valid ONNX model ({exc}); check the file is complete") from exc
        self._evaluator = ReferenceEvaluator(model)
        initializers = {init.name for init in model.graph.initializer}
        self.path = Path(path)
        self.threads = threads
        self.inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
        self.outputs = tuple(_spec(v) for v in model.graph.output)
        self._names = [spec.name for spec in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._evaluator.run(self._names, feeds), strict=True))


def open(path: Path, threads: int | None = None, exact: bool = False, **options) -> ReferenceSession:  # noqa: A001
    return ReferenceSession(path, threads, **options)
