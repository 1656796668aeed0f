"""LiteRT (TensorFlow Lite) backend (`pip install edgesmith[litert]`).

Uses `ai_edge_litert.interpreter.Interpreter`, or `tflite_runtime.interpreter` on devices that only
have that wheel. Tensors are named after the model's signature keys when it has exactly one
signature (what converters write: `input`, `logits`), else after the tensor names.

Full-integer models take int8/uint8 inputs and give int8/uint8 outputs. By default the session hides
that: it takes and returns float32 and converts with each tensor's scale and zero-point (round, clip on
the way in), so the same feeds work for every artifact. `raw_io=True` exposes the integers instead.

Batch size: a model with a dynamic batch (`shape_signature` -1) is resized when the fed batch
changes. Many converters (litert-torch among them) write a fixed batch, often 1, with the batch
baked into reshapes, where resizing fails or would compute nonsense: those run the feed in chunks
of their batch and concatenate, so every session takes any batch (its spec says None for axis 0).

`run` is built once per session for the model at hand, so a float model pays for nothing but the
three interpreter calls and a shape check (`benchmarks/litert_overhead.py`: < 1 microsecond).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import InvalidModel, MissingExtra
from ..session import Run, TensorSpec

Detail = dict[str, Any]  # a tensor's entry in the interpreter's get_input_details()/get_output_details()
Convert = Callable[[np.ndarray], np.ndarray]  # (de)quantizing or casting one input or output

NAME = "litert"
EXTRA = "litert"
SUFFIXES = (".tflite",)
_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def available() -> bool:
    # Top-level names only: find_spec("a.b") would import package `a`.
    return any(importlib.util.find_spec(m.split(".")[0]) is not None for m in _MODULES)


def _interpreter_module() -> ModuleType:
    for name in _MODULES:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            return importlib.import_module(name)
    raise MissingExtra(EXTRA, "ai_edge_litert", "the LiteRT backend runs .tflite files with it")


def version() -> str:
    module = _interpreter_module()
    top = importlib.import_module(module.__name__.split(".")[0])
    return f"{top.__name__} {getattr(top, '__version__', '?')}"


def _signature_names(interpreter: Any) -> dict[int, str]:
    """Tensor index -> signature key, when the model has one signature (else {})."""
    signatures = (
        interpreter._get_full_signature_list() if hasattr(interpreter, "_get_full_signature_list") else {}
    )
    if len(signatures) != 1:
        return {}
    (signature,) = signatures.values()
    return {index: key for part in ("inputs", "outputs") for key, index in signature.get(part, {}).items()}


def _quant(detail: Detail) -> tuple[float, int] | None:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return float(scale), int(zero_point)
    return None


def _spec(detail: Detail, names: dict[int, str], raw_io: bool) -> TensorSpec:
    signature = detail["shape_signature"] if "shape_signature" in detail else detail["shape"]
    shape = tuple(int(d) if d >= 0 and (i or len(signature) < 2) else None for i, d in enumerate(signature))
    quant = _quant(detail)
    dtype = np.dtype(detail["dtype"]).name if quant is None or raw_io else "float32"
    scale, zero_point = quant if quant else (None, None)
    index = detail["index"]
    return TensorSpec(names[index] if index in names else detail["name"], shape, dtype, scale, zero_point)


def _quantizer(detail: Detail, quant: tuple[float, int]) -> Convert:
    """float array -> the tensor's integer type: round(x / scale) + zero_point, clipped."""
    scale, zero_point = quant
    dtype: np.dtype[Any] = np.dtype(detail["dtype"])
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    return lambda x: np.clip(np.rint(np.asarray(x, np.float32) / scale) + zero_point, low, high).astype(dtype)


def _caster(detail: Detail) -> Convert | None:
    """Integer inputs (token ids) given as int64 to a model that takes int32, as TFLite exporters
    make them: cast. Anything else passes through as it is."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    return lambda x: x if x.dtype == dtype else np.asarray(x).astype(dtype)


def _dequantizer(quant: tuple[float, int]) -> Convert:
    scale, zero_point = quant
    return lambda q: (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class LiteRTSession:
    """A LiteRT interpreter behind the edgesmith Session API."""

    backend = NAME

    def __init__(self, path: Path, threads: int | None = None, raw_io: bool = False):
        module = _interpreter_module()
        try:
            interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError with C++ text
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InvalidModel(
                f"{path} is not a valid TFLite model ({first}); check the file is complete or re-export it"
            ) from exc
        self.path = Path(path)
        self.threads = threads
        self.raw_io = raw_io
        self._interpreter = interpreter
        names = _signature_names(interpreter)
        in_details, out_details = interpreter.get_input_details(), interpreter.get_output_details()
        self.inputs = tuple(_spec(d, names, raw_io) for d in in_details)
        self.outputs = tuple(_spec(d, names, raw_io) for d in out_details)
        self._shapes = {d["index"]: tuple(d["shape"]) for d in in_details}
        self._allocated = dict(self._shapes)  # as loaded: the fixed batch, for chunking
        self._resizable = all(
            -1 in d.get("shape_signature", d["shape"])[:1] for d in in_details if len(d["shape"]) >= 2
        )
        quant_in = [_quant(d) for d in in_details]
        convert_in = [
            _caster(d) if q is None else None if raw_io else _quantizer(d, q)
            for d, q in zip(in_details, quant_in, strict=True)
        ]
        convert_out = [None if raw_io or q is None else _dequantizer(q) for q in map(_quant, out_details)]
        self._in = [
            (s.name, d["index"], c) for s, d, c in zip(self.inputs, in_details, convert_in, strict=True)
        ]
        self._out = [
            (s.name, d["index"], c) for s, d, c in zip(self.outputs, out_details, convert_out, strict=True)
        ]
        self._plain = not any(convert_in + convert_out) and len(self._in) == len(self._out) == 1
        self.run = self._plain_run() if self._plain else self._run_general

    def _plain_run(self) -> Run:
        """`run` for one float input and one float output: a closure over bound methods, so a call
        costs the three interpreter calls, a dict lookup and a shape comparison."""
        ((name, index, _),), ((out_name, out_index, _),) = self._in, self._out
        interpreter = self._interpreter
        set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor
        shape, other_batch = self._shapes[index], self._other_batch

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            x = feeds[name]
            if x.shape != shape:
                return other_batch(feeds)
            set_tensor(index, x)
            invoke()
            return {out_name: get_tensor(out_index)}

        return run

    def _run_general(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes = self._shapes
        if any(feeds[name].shape != shapes[index] for name, index, _ in self._in):
            return self._other_batch(feeds)
        return self._call(feeds)

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One invoke on feeds of the allocated shapes, converting quantized I/O."""
        interpreter = self._interpreter
        for name, index, convert in self._in:
            x = feeds[name]
            interpreter.set_tensor(index, x if convert is None else convert(x))
        interpreter.invoke()
        outputs = {}
        for name, index, convert in self._out:
            y = interpreter.get_tensor(index)
            outputs[name] = y if convert is None else convert(y)
        return outputs

    def _allocate(self, shapes: dict[int, tuple[int, ...]]) -> None:
        for index, shape in shapes.items():
            self._interpreter.resize_tensor_input(index, list(shape), strict=False)
        self._interpreter.allocate_tensors()
        self._shapes = {d["index"]: tuple(d["shape"]) for d in self._interpreter.get_input_details()}
        if self._plain:
            self.run = self._plain_run()  # its closure holds the shape

    def _other_batch(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds whose shapes differ from the allocated ones: resize a dynamic-batch model, else (or
        when resizing fails) run chunks of the model's fixed batch."""
        if self._resizable:
            try:
                self._allocate({index: feeds[name].shape for name, index, _ in self._in})
                return self._call(feeds)
            except (RuntimeError, ValueError):  # a delegate or kernel that cannot take the shape
                self._resizable = False
        if self._shapes != self._allocated:
            self._allocate(self._allocated)
        return self._chunked(feeds)

    def _chunked(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = next(iter(self._allocated.values()))[0]
        total = len(next(iter(feeds.values())))
        parts = []
        for start in range(0, total, size):
            chunk = {name: feeds[name][start : start + size] for name, _, _ in self._in}
            short = size - len(next(iter(chunk.values())))
            if short:  # the last chunk of a fixed batch > 1: pad with zeros, drop those rows after
                chunk = {
                    k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()
                }
            if any(chunk[name].shape != self._shapes[index] for name, index, _ in self._in):
                want = {name: list(self._shapes[index]) for name, index, _ in self._in}
                raise ValueError(f"{self.path.name} takes inputs of shapes {want}; got other sizes")
            parts.append(self._call(chunk))
        return {name: np.concatenate([p[name] for p in parts])[:total] for name, _, _ in self._out}


def open(path: Path, threads: int | None = None, exact: bool = False, **options: Any) -> LiteRTSession:  # noqa: A001
    # `exact` needs nothing here: LiteRT's CPU kernels run float32 layers in float32 (XNNPACK
    # only uses fp16 when the model asks for it).
    return LiteRTSession(path, threads, **options)
