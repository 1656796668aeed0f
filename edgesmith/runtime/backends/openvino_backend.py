"""OpenVINO backend, CPU plugin (`pip install edgesmith[openvino]`).

Reads an IR (`model.xml` plus `model.bin` beside it), compiles it for the CPU and keeps one infer
request. OpenVINO's CPU plugin runs float32 layers in bf16 on CPUs that have it (this host's AVX-512
BF16), which is faster but not float32: `exact=True` (the verifier's setting) pins
`INFERENCE_PRECISION_HINT` to f32, and `precision="f32" | "bf16" | "f16"` chooses explicitly.
INT8 layers of a quantized IR run in INT8 whatever the hint.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, InvalidModel, require
from ..session import Run, TensorSpec, run_in_chunks

NAME = "openvino"
EXTRA = "openvino"
SUFFIXES = (".xml",)
PRECISIONS = ("f32", "bf16", "f16")


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def version() -> str:
    return str(require("openvino", EXTRA).__version__)


def _spec(port: Any, declared: Any) -> TensorSpec:  # openvino Outputs: compiled, and as the IR names it
    """The compiled port's shape and type under the IR's name: the CPU plugin may fuse the node that
    wrote an output into the one before (silero-vad: ReduceMean + Unsqueeze), giving the compiled
    tensor two names, of which `get_any_name` can return the wrong one."""
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(declared.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)


def error_line(exc: Exception) -> str:
    """The useful line of OpenVINO's message (the last one; the others name C++ source files)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1][:160]


def _read(core: Any, xml: Path) -> Any:  # openvino.Core -> openvino.Model
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise InputError(
            f"{weights} is missing: an OpenVINO model is {xml.name} plus {weights.name} beside it; "
            "copy the .bin next to the .xml"
        )
    try:
        return core.read_model(str(xml), str(weights))
    except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line C++ message
        raise InvalidModel(
            f"{xml} (with {weights.name}) is not a valid OpenVINO model ({error_line(exc)}); "
            "check both files are complete and from the same export"
        ) from exc


class OpenVINOSession:
    """A compiled OpenVINO model and one infer request behind the edgesmith Session API."""

    backend = NAME

    def __init__(self, path: Path, threads: int | None = None, precision: str | None = None):
        ov = require("openvino", EXTRA)
        if precision is not None and precision not in PRECISIONS:
            raise InputError(
                f"precision {precision!r} is not valid for OpenVINO; choose from {list(PRECISIONS)}"
            )
        core = ov.Core()
        model = _read(core, Path(path))
        # One stream and the latency hint: a single request at a time, as on a device.
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        if precision is None and any(op.get_type_name() == "BinaryConvolution" for op in model.get_ops()):
            precision = "f32"  # under bf16 the inputs' sign bits can flip: 1-bit layers need f32
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        try:
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise InputError(
                f"{path}: OpenVINO cannot compile this model for the CPU ({error_line(exc)})"
            ) from exc
        self.path = Path(path)
        self.threads = threads
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.inputs = tuple(_spec(p, d) for p, d in zip(compiled.inputs, model.inputs, strict=True))
        self.outputs = tuple(_spec(p, d) for p, d in zip(compiled.outputs, model.outputs, strict=True))
        self._compiled = compiled
        self.run = _runner(ov.Tensor, compiled.create_infer_request(), self.inputs, self.outputs)
        batches = {spec.shape[0] if spec.shape else None for spec in self.inputs}
        if len(batches) == 1 and isinstance(fixed := batches.pop(), int):  # e.g. BinaryConvolution IRs
            self.run = run_in_chunks(self.run, fixed)
            self.inputs = tuple(dataclasses.replace(s, shape=(None, *s.shape[1:])) for s in self.inputs)
            self.outputs = tuple(dataclasses.replace(s, shape=(None, *s.shape[1:])) for s in self.outputs)


def _shareable(array: np.ndarray) -> np.ndarray:
    """An array OpenVINO can wrap without a copy: C-contiguous and writeable (a read-only memory-mapped
    .npy slice is copied: `Tensor(shared_memory=True)` refuses it). Not `np.ascontiguousarray`, which
    makes a 0-d array (a scalar input: silero-vad's sample rate) 1-d."""
    contiguous = np.asarray(array, order="C")
    return contiguous if contiguous.flags.writeable else contiguous.copy()


def _runner(
    tensor: Any, request: Any, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> Run:  # openvino.Tensor, an InferRequest
    """`run` as a closure over the request's methods. Inputs are wrapped without a copy
    (`shared_memory=True`; any batch size, the request reads them during the call); outputs are
    copied out of the request's buffers so they stay valid after the next call. This is about
    30 microseconds per call cheaper than `request.infer(dict)`, which builds an OVDict."""
    set_input, infer, get_output = request.set_input_tensor, request.infer, request.get_output_tensor
    in_names = [(i, s.name) for i, s in enumerate(inputs)]
    out_names = [(i, s.name) for i, s in enumerate(outputs)]
    if len(in_names) == len(out_names) == 1:
        ((_, name),), ((_, out_name),) = in_names, out_names

        def run_one(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            array = _shareable(feeds[name])  # held until infer() returns: the tensor only borrows it
            set_input(tensor(array, shared_memory=True))
            infer()
            return {out_name: get_output().data.copy()}

        return run_one

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [_shareable(feeds[name]) for _, name in in_names]  # held until infer() returns
        for (index, _), array in zip(in_names, arrays, strict=True):
            set_input(index, tensor(array, shared_memory=True))
        infer()
        return {name: get_output(index).data.copy() for index, name in out_names}

    return run


def open(path: Path, threads: int | None = None, exact: bool = False, **options: Any) -> OpenVINOSession:  # noqa: A001
    precision = options.pop("precision", None)
    if exact:
        if precision not in (None, "f32"):
            raise InputError(f"exact=True runs in f32; it cannot be combined with precision={precision!r}")
        precision = "f32"
    return OpenVINOSession(path, threads, precision, **options)
