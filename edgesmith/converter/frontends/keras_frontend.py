"""Keras models (`.keras`, legacy `.h5`/`.hdf5`): run by Keras itself as the reference, exported to
ONNX for the steps and the ONNX/OpenVINO exporters, and kept as a Keras model for the TFLite exporter,
which converts it directly with TensorFlow's converter.

Most published `.h5` files were written by Keras 2, and Keras 3 cannot read many of them (a
DepthwiseConv2D saved with `groups`, renamed arguments ...). Those load through `tf_keras`, Keras 2
itself, when Keras 3 refuses. Keras 3 refuses Lambda layers in safe mode; tf_keras's `.h5` reader
has no safe mode and unmarshals and runs a Lambda's bytecode while building the model, so a legacy
file's config is read first (plain JSON) and any Lambda layer is refused before a loader sees it.

The ONNX comes from tf2onnx (installed with `--no-deps`: its wheel's dependency list is loose and it
needs nothing beyond TensorFlow and onnx): through Keras 3's `model.export(format="onnx")`, or
`tf2onnx.convert.from_keras` for a tf_keras model. Its input layout is the Keras model's (NHWC for
images), so the same eval arrays feed every artifact.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ... import _quiet
from ...errors import InputError, require
from ...runtime import load as load_session
from ..handle import ModelHandle

WHY = "Keras models"
LEGACY = (".h5", ".hdf5")  # HDF5 files: Keras 2's format, also written by Keras 3's legacy saver


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _not_loadable(path: Path, exc: Exception) -> InputError:
    return InputError(
        f"{path} is not a loadable Keras model ({_first_line(exc)}); save it with model.save('model.keras')"
    )


def _lambda_layers(config) -> list[str]:
    """Names of the Lambda layers anywhere in a Keras model config (nested models included)."""
    if isinstance(config, list):
        return [name for item in config for name in _lambda_layers(item)]
    if not isinstance(config, dict):
        return []
    found = [config.get("config", {}).get("name", "?")] if config.get("class_name") == "Lambda" else []
    return found + [name for value in config.values() for name in _lambda_layers(value)]


def _refuse_code(path: Path) -> None:
    """A legacy file whose model holds a Lambda layer is refused: its Python code would run on load."""
    h5py = require("h5py", "convert-tflite", WHY)
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise _not_loadable(path, exc) from exc
    if raw is None:
        raise InputError(
            f"{path} holds weights only (no model config); save the whole model with model.save('model.keras')"
        )
    lambdas = _lambda_layers(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
    if lambdas:
        raise InputError(
            f"{path}: layer '{lambdas[0]}' is a Lambda layer, whose Python code is not run (unsafe to load); "
            "replace it with a built-in or registered layer and save the model again"
        )


def _load_keras(path: Path):
    """Keras 3 first (safe mode, the default); a legacy file it cannot read goes to tf_keras."""
    legacy = path.suffix.lower() in LEGACY
    if legacy:
        _refuse_code(path)
    with _quiet.tensorflow():
        keras = require("keras", "convert-tflite", WHY)
        try:
            return keras.models.load_model(str(path), compile=False)
        except Exception as exc:
            if not legacy:
                raise _not_loadable(path, exc) from exc
            keras3_error = exc
        if importlib.util.find_spec("tf_keras") is None:
            raise InputError(
                f"{path}: Keras 3 cannot load this Keras 2 file ({_first_line(keras3_error)}); "
                "run `pip install --no-deps tf_keras` (the version matching tensorflow) to load it with Keras 2"
            ) from keras3_error
        import tf_keras

        try:
            return tf_keras.models.load_model(str(path), compile=False, safe_mode=True)
        except Exception as exc:
            raise _not_loadable(path, exc) from exc


def _is_tf_keras(model) -> bool:
    return type(model).__module__.split(".")[0] == "tf_keras"


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


def stable_tf2onnx_names(proto) -> None:
    """tf2onnx's names vary from run to run: what it inserts is numbered after a process-wide counter
    in an order that depends on string hashing (`const_fold_opt__462`), and of identical constants it
    merges it keeps whichever name a set yields first. Renumber the former and rename shared
    constants in graph order, then sort the initializers, so the same model gives the same bytes."""
    import collections
    import re

    graph = proto.graph
    names = [n for node in graph.node for n in (node.name, *node.input, *node.output)]
    uses = collections.Counter(n for node in graph.node for n in node.input)
    shared = {t.name for t in graph.initializer if uses[t.name] > 1}
    taken = set(names) | {t.name for t in graph.initializer}
    renames: dict[str, str] = {}
    for name in names:
        match = re.fullmatch(r"(.*?)__\d+(.*)", name)
        if name in renames or not (match or name in shared):
            continue
        base, suffix = (match[1], match[2]) if match else ("shared_const", "")
        new = f"{base}__{len(renames) + 1}{suffix}"
        while new in taken and new != name:
            new += "_"
        renames[name] = new
    for node in graph.node:
        node.name = renames.get(node.name, node.name)
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for tensor in [*graph.initializer, *graph.value_info, *graph.input, *graph.output]:
        tensor.name = renames.get(tensor.name, tensor.name)
    initializers = sorted(graph.initializer, key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _export_onnx(model, out: Path) -> None:
    """tf2onnx, through Keras 3's exporter or directly for a tf_keras model."""
    if _is_tf_keras(model):
        import tensorflow as tf
        import tf2onnx

        names = list(model.input_names)
        spec = [tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(model.inputs, names, strict=True)]
        tf2onnx.convert.from_keras(model, input_signature=spec, output_path=str(out))
        return
    shapes = [tuple(d or 1 for d in t.shape) for t in model.inputs]
    model([np.zeros(s, np.float32) for s in shapes] if len(shapes) > 1 else np.zeros(shapes[0], np.float32))
    model.export(str(out), format="onnx", verbose=False)


def load(path: Path, workdir: Path):
    from .source import Source

    model = _load_keras(path)
    if importlib.util.find_spec("tf2onnx") is None:
        raise InputError("Keras models reach ONNX with tf2onnx: run `pip install --no-deps tf2onnx==1.17.0`")
    onnx = require("onnx", "convert")
    out = workdir / f"{path.stem}.onnx"
    try:
        with _quiet.tensorflow():
            _export_onnx(model, out)
    except Exception as exc:
        raise InputError(
            f"{path}: tf2onnx could not export the Keras model to ONNX ({_first_line(exc)})"
        ) from exc
    proto = onnx.load(str(out))
    stable_tf2onnx_names(proto)
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    _tidy(proto, names)
    onnx.save(proto, str(out))
    session = load_session(out, backend="ort")
    names = [s.name for s in session.inputs]

    def reference(feeds):
        args = [np.asarray(feeds[n]) for n in names]
        with _quiet.tensorflow():
            outputs = model(args if len(args) > 1 else args[0], training=False)
        flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [np.asarray(o) for o in flat]

    return Source("keras", path, ModelHandle(out), session.inputs, reference, model)
