"""ONNX files: checked, made self-contained and current, and run by ONNX Runtime as the reference.

ONNX files as users bring them are often written by older exporters. Before any step sees the model,
two things are put right, and `Source.notes` (report.json's `source.fixes`) says which:
- initializers also listed as graph inputs (IR < 4 style, `keep_initializers_as_inputs=True`) leave
  the inputs: otherwise ONNX Runtime warns once per weight, the fp16 converter keeps those weights in
  fp32 (they look like model inputs), and the quantizers treat them as activations;
- an opset below `MIN_OPSET` is upgraded with onnx's version converter: per-channel
  `DequantizeLinear(axis=...)`, which every INT8 engine writes, exists from opset 13 on only.
The reference runs the repaired copy, which computes what the user's file computes.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import InputError, require
from ...runtime import load as load_session
from ..handle import ModelHandle

# The lowest opset with per-channel DequantizeLinear(axis). Not higher: each version step is one more
# adapter that may fail, and 13 is what ONNX Runtime's and NNCF's quantizers, OpenVINO and onnx2torch
# (the TFLite path) all read.
MIN_OPSET = 13


def load(path: Path, workdir: Path):
    from .source import Source

    onnx = require("onnx", "convert", "reading ONNX models")
    model = _read(onnx, path)
    notes = [note for note in (_move_initializers(model), _upgrade_opset(onnx, model, path)) if note]
    copy = workdir / f"{path.stem}.onnx"
    onnx.save(model, str(copy))  # external data, if any, is folded in: one file from here on
    try:
        session = load_session(copy, backend="ort")
    except InputError as exc:  # the message would name the work copy: name the user's file instead
        raise InputError(
            f"{path}: ONNX Runtime cannot load the model ({_cause(exc.__cause__ or exc, workdir)})"
        ) from exc

    def reference(feeds):
        return list(session.run(feeds).values())

    return Source("onnx", path, ModelHandle(copy), session.inputs, reference, notes=tuple(notes))


def _read(onnx, path: Path):
    """The model, checked by onnx's checker; an InputError with the checker's whole reason if not."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, missing external data ...
        raise InputError(
            f"{path} is not a valid ONNX model ({_cause(exc)}); check that the file is a complete .onnx export"
        ) from exc
    if not model.graph.node:
        raise InputError(f"{path} is not a valid ONNX model (its graph has no nodes)")
    return model


def _move_initializers(model) -> str | None:
    """Drop graph inputs that are initializers (constants, not inputs); a note saying how many."""
    weights = {t.name for t in model.graph.initializer}
    inputs = list(model.graph.input)
    kept = [value for value in inputs if value.name not in weights]
    if len(kept) == len(inputs):
        return None
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)  # IR < 4 requires initializers to be inputs
    return f"{len(inputs) - len(kept)} initializers listed as graph inputs made constants"


def _upgrade_opset(onnx, model, path: Path) -> str | None:
    """Upgrade the default-domain opset below MIN_OPSET in place; a note, or an InputError naming the
    op the version converter could not adapt."""
    from onnx import helper, version_converter

    default = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if default is None or default.version >= MIN_OPSET:
        return None
    old = default.version
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # the converter raises RuntimeError with a C++ assertion text
        cause = _cause(exc)
        op = next((n.op_type for n in model.graph.node if n.op_type in cause), None)
        what = f"op {op}" if op else "an op"
        raise InputError(
            f"{path.name}: opset {old} is too old for INT8 (per-channel quantization needs opset "
            f"{MIN_OPSET}) and onnx's version converter cannot upgrade {what} ({cause}); re-export the "
            f"model with opset >= {MIN_OPSET}"
        ) from exc
    upgraded.ir_version = max(
        upgraded.ir_version, helper.find_min_ir_version_for(list(upgraded.opset_import))
    )
    model.CopyFrom(upgraded)
    return f"opset {old} upgraded to {MIN_OPSET} (onnx.version_converter)"


def _cause(exc: BaseException, workdir: Path | None = None) -> str:
    """An exception's text on one line, whole: C++ source locations dropped, the work folder not named."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    text = re.sub(r"\S*/onnx/\S+:\d+: \w+: Assertion `[^`]*` failed: ", "", text)
    if workdir is not None:
        text = text.replace(f"{workdir}/", "")
    return text
