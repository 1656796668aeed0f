"""ONNX Runtime backend (`pip install edgesmith[ort]`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InvalidModel, require
from ..session import TensorSpec

NAME = "ort"
EXTRA = "ort"
SUFFIXES = (".onnx",)

# ONNX Runtime's type strings -> numpy dtype names.
DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


def available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def version() -> str:
    return str(require("onnxruntime", EXTRA).__version__)


def _spec(arg: Any) -> TensorSpec:  # an onnxruntime.NodeArg
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, DTYPES.get(arg.type, arg.type))


class OrtSession:
    """An `onnxruntime.InferenceSession` behind the edgesmith Session API."""

    backend = NAME

    def __init__(self, path: Path, threads: int | None = None, optimization: str = "all"):
        ort = require("onnxruntime", EXTRA)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0 = ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimization]
        from ..._quiet import onnxruntime_log_level

        options.log_severity_level = onnxruntime_log_level()
        ort.set_default_logger_severity(onnxruntime_log_level())  # also the sessions other tools open
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidModel(
                f"{path} is not a valid ONNX model ({first}); check the file is complete"
            ) from exc
        self.path = Path(path)
        self.threads = threads
        self.inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self._session.get_outputs())
        self._names = [spec.name for spec in self.outputs]
        self._run = self._session.run

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._run(self._names, feeds), strict=False))


def open(path: Path, threads: int | None = None, exact: bool = False, **options: Any) -> OrtSession:  # noqa: A001
    # `exact` needs nothing here: ONNX Runtime's CPU provider runs float32 layers in float32.
    return OrtSession(path, threads, **options)
