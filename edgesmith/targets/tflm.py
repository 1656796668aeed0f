"""Run a model on TensorFlow Lite Micro's own kernels and read the arena TFLM really allocated.

Uses the `tflite-micro` wheel (`pip install --pre tflite-micro`, the `tflm` extra):
`tflite_micro.python.tflite_micro.runtime.Interpreter` runs TFLM's reference kernels on the host
with a `RecordingMicroAllocator`, whose `print_allocations()` reports the arena: the head (the
planned, non-persistent tensors: what `arena.planned_bytes` estimates) and the tail (persistent
structs, kernels' op data), each category with its bytes and count.

The wheel is built for this host, so its persistent structs have 64-bit pointers: the tail it reports
is a 64-bit tail; `arena.estimate(data, pointer_bytes=8)` is the estimate to compare it with, and a
32-bit MCU's tail is what the same count model gives with 4-byte pointers (`mcu.plan` does that).

Accepts a `.tflite` or a c-array artifact (its `.cc` is parsed back into the flatbuffer bytes, so the
bytes checked are the ones that would be flashed).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, require

EXTRA = "tflm"
_ALLOCATION = re.compile(r"\[RecordingMicroAllocator\] (.+?) (\d+) bytes")
_CATEGORY = re.compile(
    r"\[RecordingMicroAllocator\] '(.+?)' used (\d+) bytes with alignment overhead "
    r"\(requested (\d+) bytes for (\d+) "
)


def available() -> bool:
    return importlib.util.find_spec("tflite_micro") is not None


@dataclass(frozen=True)
class Arena:
    """What TFLM's RecordingMicroAllocator reported, in bytes."""

    total: int
    head: int  # planned, non-persistent tensors (+ kernel scratch buffers)
    tail: int  # persistent: tensor/node structs, kernels' op data, the allocator's own objects
    categories: dict[str, dict[str, int]]  # name -> used, requested, count

    def to_json(self) -> dict[str, Any]:
        return {"total_bytes": self.total, "head_bytes": self.head, "tail_bytes": self.tail,
                "categories": self.categories, "pointer_bytes": 8 if sys.maxsize > 2**32 else 4}  # fmt: skip


def model_bytes(path: str | Path) -> bytes:
    """The flatbuffer of a `.tflite`, or of a c-array artifact's `.cc` / `.c` (the hex bytes of its array)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    if path.suffix.lower() == ".tflite":
        return path.read_bytes()
    if path.suffix.lower() in (".cc", ".c", ".cpp"):
        text = path.read_text(errors="replace")
        body = text[text.find("{") + 1 : text.find("}")] if "{" in text else ""
        data = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{2})", body))
        if data[4:8] == b"TFL3":
            return data
        raise InputError(f"{path} holds no TFLite flatbuffer array; pass the .tflite or the exporter's .cc")
    raise InputError(
        f"{path}: TFLite Micro runs .tflite files and c-array sources (.cc), not '{path.suffix}'"
    )


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C++ code writes to file descriptor 2 (print_allocations writes there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        text: list[str] = []
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode(errors="replace"))


def parse_allocations(text: str) -> Arena:
    totals = {name: int(n) for name, n in _ALLOCATION.findall(text)}
    categories = {
        name: {"used": int(used), "requested": int(req), "count": int(count)}
        for name, used, req, count in _CATEGORY.findall(text)
    }
    try:
        total, head, tail = (totals[f"Arena allocation {k}"] for k in ("total", "head", "tail"))
    except KeyError as exc:
        raise RuntimeError(f"TFLM's print_allocations() gave no {exc} line: {text.strip()[:200]!r}") from exc
    return Arena(total, head, tail, categories)


class TflmSession:
    """A model on TFLM's interpreter: float feeds in (quantized at the edges when the model's I/O is
    integer), float outputs back, one sample at a time (TFLM runs the batch its flatbuffer fixes)."""

    def __init__(self, data: bytes, arena_size: int | None = None):
        runtime = require("tflite_micro.python.tflite_micro.runtime", EXTRA, "running TensorFlow Lite Micro")
        try:
            with _captured_stderr() as log:
                self._interpreter = runtime.Interpreter.from_bytes(
                    data, arena_size=arena_size or _arena_size(data)
                )
        except (RuntimeError, ValueError) as exc:  # TFLM logs the cause (an unsupported op...) first
            lines = [line for line in log[0].splitlines() if line.strip()] or [str(exc) or type(exc).__name__]
            raise InputError(
                f"TensorFlow Lite Micro cannot run this model: {'; '.join(lines[:2])[:300]}"
            ) from exc
        inputs, outputs = _model_io(data)
        self.inputs = self._details(self._interpreter.get_input_details, len(inputs))
        self.outputs = self._details(self._interpreter.get_output_details, len(outputs))
        self.arena: Arena | None = None

    @staticmethod
    def _details(get: Callable[[int], dict[str, Any]], count: int) -> list[dict[str, Any]]:
        details = []
        for i in range(count):
            d = get(i)
            q = d["quantization_parameters"]
            quant = (float(q["scales"][0]), int(q["zero_points"][0])) if len(q["scales"]) else None
            details.append(
                {"shape": tuple(int(s) for s in d["shape"]), "dtype": np.dtype(d["dtype"]), "quant": quant}
            )
        return details

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for feeds given in the model's input order; any batch, run sample by sample in
        chunks of the model's own batch."""
        batch = self.inputs[0]["shape"][0] if self.inputs[0]["shape"] else 1
        total = len(feeds[0])
        parts: list[list[np.ndarray]] = []
        for start in range(0, total, batch):
            for i, (x, d) in enumerate(zip(feeds, self.inputs, strict=True)):
                self._interpreter.set_input(_to_input(x[start : start + batch], d), i)
            self._invoke()
            parts.append(
                [_from_output(self._interpreter.get_output(i), d) for i, d in enumerate(self.outputs)]
            )
        return [np.concatenate([p[i] for p in parts])[:total] for i in range(len(self.outputs))]

    def _invoke(self) -> None:
        """One invoke; a kernel TFLM lacks (an int8 SQRT...) fails here, with TFLM's own reason."""
        try:
            with _captured_stderr() as log:
                self._interpreter.invoke()
        except RuntimeError as exc:
            lines = [line for line in log[0].splitlines() if line.strip()] or [str(exc)]
            raise InputError(
                f"TensorFlow Lite Micro cannot run this model: {'; '.join(lines[:2])[:300]}"
            ) from exc
        if self.arena is None:  # read after the first invoke: kernels may allocate in their first Eval
            with _captured_stderr() as text:
                self._interpreter.print_allocations()
            self.arena = parse_allocations(text[0])


def _arena_size(data: bytes) -> int:
    """An arena certainly large enough (the wheel's default, 10x the model size, is not for models
    with large activations): every tensor apart, the persistent part twice over, plus 64 KB."""
    from . import arena

    plan = arena.estimate(data, pointer_bytes=8)
    naive: int = plan["naive_bytes"]
    persistent: int = plan["persistent_bytes_estimate"]
    return 10 * len(data) + naive + 2 * persistent + 65536


def _model_io(data: bytes) -> tuple[list[int], list[int]]:
    from . import arena

    graph = arena.read(data).subgraphs[0]
    return list(graph.inputs), list(graph.outputs)


def _to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype, shape = detail["dtype"], detail["shape"]
    if len(x) != shape[0]:  # the last chunk of a fixed batch > 1: pad with zeros
        x = np.concatenate([x, np.zeros((shape[0] - len(x), *x.shape[1:]), x.dtype)])
    if detail["quant"] and dtype.kind in "iu":
        scale, zero_point = detail["quant"]
        info = np.iinfo(dtype)
        x = np.clip(np.rint(np.asarray(x, np.float32) / scale) + zero_point, info.min, info.max)
    fed: np.ndarray = np.ascontiguousarray(x, dtype=dtype).reshape(shape)
    return fed


def _from_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["quant"] and detail["dtype"].kind in "iu":
        scale, zero_point = detail["quant"]
        real: np.ndarray = (y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
        return real
    return np.array(y, copy=True)


def run(
    model: str | Path, feeds: list[np.ndarray], arena_size: int | None = None
) -> tuple[list[np.ndarray], Arena]:
    """Run `model` (a .tflite or a c-array .cc) on TFLM: (outputs, the arena TFLM allocated)."""
    session = TflmSession(model_bytes(model), arena_size)
    outputs = session.run(feeds)
    return outputs, _allocated(session)


def measured_arena(model: str | Path) -> Arena:
    """TFLM's arena for `model`, from one invoke on zeros (the arena does not depend on the values)."""
    session = TflmSession(model_bytes(model))
    feeds = [np.zeros(d["shape"], np.float32 if d["quant"] else d["dtype"]) for d in session.inputs]
    session.run(feeds)
    return _allocated(session)


def _allocated(session: TflmSession) -> Arena:
    """The arena TFLM reported in its first invoke."""
    if session.arena is None:
        raise RuntimeError("internal error: TFLM ran without reporting its allocations")
    return session.arena


def compare_with_litert(model: str | Path, feeds: dict[str, np.ndarray], precision: str) -> dict[str, Any]:
    """Run `model` on TFLM and on LiteRT (edgesmith.runtime) with the same feeds; compare the outputs
    (`emulate.compare`) and TFLM's arena with the planner's estimate for a 64-bit build."""
    from ..runtime import load
    from . import arena
    from .emulate import compare

    data = model_bytes(model)
    with tempfile.TemporaryDirectory(prefix="edgesmith-tflm-") as tmp:
        copy = Path(tmp) / "model.tflite"  # a c-array's bytes, as LiteRT reads files
        copy.write_bytes(data)
        session = load(copy, backend="litert", exact=True)
        names = [s.name for s in session.inputs]
        reference = session.run(feeds)
    outputs, measured = run(model, [feeds[n] for n in names])
    result = compare(reference, dict(zip(reference, outputs, strict=True)), precision)
    estimate = arena.estimate(data, pointer_bytes=8)
    error = (estimate["total_bytes_estimate"] - measured.total) / measured.total
    return result | {
        "arena": {
            "tflm": measured.to_json(),
            "estimate": estimate,
            "error_pct": round(100 * error, 2),
            "planned_error_bytes": estimate["planned_bytes"] - measured.head,
        }
    }
