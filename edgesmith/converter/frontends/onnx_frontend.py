"""ONNX files: checked, made self-contained, and run by ONNX Runtime as the reference."""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError, require
from ...runtime import load as load_session
from ..handle import ModelHandle


def load(path: Path, workdir: Path):
    from . import Source

    onnx = require("onnx", "convert", "reading ONNX models")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, missing external data ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"{path} is not a valid ONNX model ({first}); check that the file is a complete .onnx export"
        ) from exc
    if not model.graph.node:
        raise InputError(f"{path} is not a valid ONNX model (its graph has no nodes)")
    copy = workdir / f"{path.stem}.onnx"
    onnx.save(model, str(copy))  # external data, if any, is folded in: one file from here on
    session = load_session(copy, backend="ort")

    def reference(feeds):
        return list(session.run(feeds).values())

    return Source("onnx", path, ModelHandle(copy, "fp32"), session.inputs, reference)
