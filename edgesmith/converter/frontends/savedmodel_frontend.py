"""TensorFlow SavedModel folders (`saved_model.pb` + `variables/`), as `tf.saved_model.save` and Keras'
`model.export()` write them and TF Hub publishes them.

TensorFlow itself runs the folder's serving signature as the reference (`tf.saved_model.load`; a
Keras SavedModel's optimizer slots, which TF 2.x warns it cannot restore, are not needed to run it).
The formats start from what each converter reads in a SavedModel, as a user would call them:

- ONNX (`Source.onnx`, which the steps, the ONNX Runtime quantizer and the OpenVINO exporter start
  from): tf2onnx's SavedModel loader (what `python -m tf2onnx.convert --saved-model` runs), with the
  signature's input and output keys as the ONNX names;
- TFLite: TensorFlow's converter (`TFLiteConverter.from_saved_model`), a float `.tflite` whose
  signature keeps the same keys, then the AI Edge Quantizer as for a `.tflite` source. It is made
  when a TFLite export asks for it (it takes seconds), not at load.

One signature is converted: `serving_default`, or the folder's only one.

A SavedModel is a program: its graph may read or write files when run. A signature that runs such an
op is refused before TensorFlow loads the folder (`UNSAFE_OPS`, found by walking what the signature
calls in saved_model.pb), as Lambda layers are for Keras files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import _quiet
from ...errors import InputError, require
from ...runtime import load as load_session
from ..handle import ModelHandle
from .keras_frontend import stable_tf2onnx_names

WHY = "TensorFlow SavedModel folders"
KEY = "serving_default"
MARKERS = ("saved_model.pb", "saved_model.pbtxt")
# Ops that reach outside the graph when run (files, Python, the process); a model needs none of them.
UNSAFE_OPS = frozenset(
    {"ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "PyFunc", "PyFuncStateless", "EagerPyFunc",
     "Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints", "ImmutableConst", "LoadAndRemapMatrix"}
)  # fmt: skip


def is_savedmodel(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in MARKERS)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _not_loadable(path: Path, exc: BaseException) -> InputError:
    return InputError(
        f"{path} is not a loadable TensorFlow SavedModel ({_first_line(exc)}); save it again with "
        "tf.saved_model.save(model, folder) or Keras' model.export(folder)"
    )


def _meta_graph(path: Path):
    """The MetaGraphDef tagged 'serve' (else the first), read from saved_model.pb: a protobuf, so
    nothing runs."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    pb = path / "saved_model.pb"
    try:
        if pb.is_file():
            saved.ParseFromString(pb.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse((path / "saved_model.pbtxt").read_text(), saved)
    except Exception as exc:  # DecodeError, ParseError, UnicodeDecodeError
        raise _not_loadable(path, exc) from exc
    if not saved.meta_graphs:
        raise _not_loadable(path, ValueError("saved_model.pb holds no graph"))
    tagged = [m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags]
    return (tagged or list(saved.meta_graphs))[0]


def _signature_key(meta, path: Path) -> str:
    keys = sorted(k for k in meta.signature_def if not k.startswith("_"))
    if not keys:
        raise InputError(
            f"{path}: the SavedModel has no serving signature; save it with "
            "tf.saved_model.save(model, folder, signatures=...) or Keras' model.export(folder)"
        )
    if KEY in keys:
        return KEY
    if len(keys) > 1:
        raise InputError(
            f"{path} has {len(keys)} signatures ({', '.join(keys)}) and none is '{KEY}'; "
            f"edgesmith converts one: save the one to convert as '{KEY}'"
        )
    return keys[0]


def _signature_ops(meta, key: str) -> set[str]:
    """Op types the signature runs: the graph nodes its outputs depend on and, through every
    function-valued attribute (calls, While/If bodies), the functions they call. The checkpoint
    save/restore functions every SavedModel carries are not reached from a signature."""
    graph = meta.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    nodes = {n.name: n for n in graph.node}
    ops: set[str] = set()
    seen: set[str] = set()

    def called(node) -> list[str]:
        names = [a.func.name for a in node.attr.values() if a.HasField("func")]
        names += [f.name for a in node.attr.values() if a.HasField("list") for f in a.list.func]
        return names + ([node.op] if node.op in functions else [])

    todo = [t.name.split(":")[0] for t in meta.signature_def[key].outputs.values()]
    calls: list[str] = []
    while todo:
        name = todo.pop().lstrip("^").split(":")[0]
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        ops.add(nodes[name].op)
        calls += called(nodes[name])
        todo += list(nodes[name].input)
    done: set[str] = set()
    while calls:
        name = calls.pop()
        if name in done or name not in functions:
            continue
        done.add(name)
        for node in functions[name].node_def:
            ops.add(node.op)
            calls += called(node)
    return ops


def _refuse_unsafe(meta, key: str, path: Path) -> None:
    unsafe = sorted(_signature_ops(meta, key) & UNSAFE_OPS)
    if unsafe:
        raise InputError(
            f"{path}: signature '{key}' runs op {unsafe[0]}, which reads/writes files or runs Python "
            "(unsafe); export the model without it"
        )


def _load(path: Path):
    """The loaded SavedModel and its signature's key, after checking what the signature runs."""
    with _quiet.tensorflow():
        tf = require("tensorflow", "convert-tflite", WHY)
        meta = _meta_graph(path)
        key = _signature_key(meta, path)
        _refuse_unsafe(meta, key, path)
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise _not_loadable(path, exc) from exc
    return loaded, key


def _name_dynamic_axes(proto) -> None:
    """tf2onnx names dynamic axes after a process-wide counter (`unk__749`): 'batch' for the first,
    NAME_dI for the others, so the same folder gives the same bytes."""
    for value in [*proto.graph.input, *proto.graph.output]:
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param:
                dim.dim_param = "batch" if i == 0 else f"{value.name}_d{i}"


def _to_onnx(path: Path, key: str, out: Path) -> None:
    """tf2onnx's SavedModel loader and converter, the `--saved-model` CLI's route."""
    tf2onnx = require("tf2onnx", "convert-tflite", "SavedModels reach ONNX with tf2onnx")
    from tf2onnx import tf_loader

    try:
        with _quiet.tensorflow():
            graph, inputs, outputs, renames = tf_loader.from_saved_model(
                str(path), None, None, tag=["serve"], signatures=[key], return_tensors_to_rename=True
            )
            proto, _ = tf2onnx.convert.from_graph_def(
                graph, input_names=inputs, output_names=outputs, tensors_to_rename=renames
            )
    except Exception as exc:
        raise InputError(
            f"{path}: tf2onnx cannot convert the SavedModel to ONNX ({_first_line(exc)})"
        ) from exc
    stable_tf2onnx_names(proto)
    _name_dynamic_axes(proto)
    proto.doc_string = ""
    require("onnx", "convert").save(proto, str(out))


@dataclass(frozen=True)
class SavedModel:
    """The user's folder and the signature converted (the TFLite exporter reads it)."""

    path: Path
    key: str

    def float_tflite(self) -> bytes:
        """TensorFlow's converter on the signature: a float `.tflite` keyed like the SavedModel."""
        with _quiet.tensorflow():
            tf = require("tensorflow", "convert-tflite", WHY)
            try:
                converter = tf.lite.TFLiteConverter.from_saved_model(
                    str(self.path), signature_keys=[self.key]
                )
                return bytes(converter.convert())
            except Exception as exc:
                raise InputError(
                    f"TensorFlow's TFLite converter cannot convert the SavedModel ({_first_line(exc)}); "
                    "an op may have no TFLite kernel: export it as --format onnx or openvino"
                ) from exc


def load(path: Path, workdir: Path):
    from .source import Source

    loaded, key = _load(path)
    out = workdir / f"{path.name or 'saved_model'}.onnx"
    _to_onnx(path, key, out)
    session = load_session(out, backend="ort")
    names = [s.name for s in session.outputs]
    signature = loaded.signatures[key]

    def reference(feeds):
        with _quiet.tensorflow():
            outputs = signature(**{name: np.asarray(value) for name, value in feeds.items()})
        return [np.asarray(outputs[name]) for name in names]  # in the ONNX's order, as verify expects

    return Source("savedmodel", path, ModelHandle(out), session.inputs, reference, SavedModel(path, key))
