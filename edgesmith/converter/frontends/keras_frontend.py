"""Keras models (`.keras`, legacy `.h5`): run by Keras itself as the reference, exported to ONNX for
the steps and the ONNX/OpenVINO exporters, and kept as a Keras model for the TFLite exporter, which
converts it directly with TensorFlow's converter.

The ONNX comes from Keras 3's own `model.export(format="onnx")`, which drives tf2onnx (installed with
`--no-deps`: its wheel's dependency list is loose and it needs nothing beyond TensorFlow and onnx).
Its input layout is the Keras model's (NHWC for images), so the same eval arrays feed every artifact.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ...errors import InputError, require
from ...runtime import load as load_session
from ..handle import ModelHandle

WHY = "Keras models"


def _load_keras(path: Path):
    keras = require("keras", "convert-tflite", WHY)
    try:
        # safe_mode (the default) refuses `.keras` files that would run arbitrary code (Lambda layers).
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"{path} is not a loadable Keras model ({first}); save it with model.save('model.keras')"
        ) from exc


def _tidy(proto, output_names: list[str]) -> None:
    """tf2onnx names outputs `Identity:0` and the batch axis `unk__N`: use the Keras names and
    'batch' instead, so the manifest and the eval data speak the model's language."""
    graph = proto.graph
    renames = {o.name: n for o, n in zip(graph.output, output_names, strict=True) if o.name != n}
    for node in graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    for output in graph.output:
        output.name = renames.get(output.name, output.name)
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = "batch"
    proto.doc_string = ""


def load(path: Path, workdir: Path):
    from ..exporters.tflite_torch import quiet
    from . import Source

    model = _load_keras(path)
    if importlib.util.find_spec("tf2onnx") is None:
        raise InputError("Keras models reach ONNX with tf2onnx: run `pip install --no-deps tf2onnx==1.17.0`")
    onnx = require("onnx", "convert")
    shapes = [tuple(d or 1 for d in t.shape) for t in model.inputs]
    out = workdir / f"{path.stem}.onnx"
    try:
        with quiet():
            model(
                [np.zeros(s, np.float32) for s in shapes]
                if len(shapes) > 1
                else np.zeros(shapes[0], np.float32)
            )
            model.export(str(out), format="onnx", verbose=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: Keras could not export the model to ONNX ({first})") from exc
    proto = onnx.load(str(out))
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    _tidy(proto, names)
    onnx.save(proto, str(out))
    session = load_session(out, backend="ort")
    names = [s.name for s in session.inputs]

    def reference(feeds):
        args = [np.asarray(feeds[n]) for n in names]
        outputs = model(args if len(args) > 1 else args[0], training=False)
        flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [np.asarray(o) for o in flat]

    return Source("keras", path, ModelHandle(out, "fp32"), session.inputs, reference, model)
