"""Float `.tflite` files (MediaPipe's, TF Hub's, TensorFlow converter output): LiteRT runs the file as
given as the reference, and a working copy is prepared once for the converters that start from it:

- its I/O tensors are named after the signature keys (a signature is added, keyed by tensor names,
  when the model has none, as MediaPipe's have none), so LiteRT, tf2onnx and OpenVINO all give the
  inputs and outputs the names the reference uses and the eval data carries;
- operator codes written before schema 3a (only `deprecated_builtin_code` set, `builtin_code` 0 =
  ADD, as in MediaPipe's files) get `builtin_code` filled in, as TensorFlow's own readers do: the AI
  Edge Quantizer reads `builtin_code` alone, takes every conv for an ADD and quantizes its filter as
  an activation (a zero point LiteRT then refuses);
- sparse weights (SparsityParameters, expanded at run time by DENSIFY ops, as in MediaPipe's
  `*_sparse` models) are stored dense (tflite_sparse.py, exact): tf2onnx cannot read sparse tensors
  and the AI Edge Quantizer takes a DENSIFY output for an activation;
- float16 weights stored behind DEQUANTIZE ops (TFLite's "fp16" models, MediaPipe's among them) are
  expanded to float32 constants (exact): the AI Edge Quantizer treats a DEQUANTIZE output as an
  activation, so it leaves such models unchanged in fp16/dynamic mode and gives their conv filters an
  activation's zero point in int8 mode, which LiteRT then refuses to run.

Formats: TFLite by the AI Edge Quantizer on the working copy (tflite_export.py), OpenVINO by its
TFLite frontend on the working copy (openvino_export.py), ONNX by tf2onnx, whose fp32 ONNX is the
`Source.onnx` the ONNX Runtime quantizer starts from. When tf2onnx cannot read a model, the reason is
kept and only the onnx format is refused, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import _quiet
from ...errors import InputError, require
from ...runtime import load as load_session
from .. import tflite_fb
from ..handle import ModelHandle
from .keras_frontend import stable_tf2onnx_names
from .tflite_sparse import densify

WHY = "TFLite models"
KEY = "serving_default"  # the signature key TensorFlow's converter writes


@dataclass(frozen=True)
class TFLiteModel:
    """The working copy the converters start from, and why there is no ONNX (None: there is)."""

    path: Path
    data: bytes
    onnx_error: str | None = None
    changes: tuple[str, ...] = ()  # what the working copy changed, for the report

    def check_onnx(self) -> None:
        if self.onnx_error is not None:
            raise InputError(
                f"no ONNX for this model: {self.onnx_error}; export it as --format tflite or openvino"
            )

    def check_tflite(self, mode: str | None) -> None:
        """Weights computed at run time (sparse ones, expanded by DENSIFY) look like activations to the
        AI Edge Quantizer, which then gives conv filters a zero point LiteRT refuses to run. The
        frontend stores them dense (tflite_sparse.py); this guards a DENSIFY it would leave."""
        if mode == "static" and "DENSIFY" in tflite_fb.op_names(self.data):
            raise InputError(
                "no full-integer TFLite for this model: the AI Edge Quantizer cannot quantize sparse "
                "weights (op DENSIFY); use --preset int8-dynamic or fp16 for tflite, or int8 for openvino"
            )


def _check_float(model, path: Path) -> None:
    """Quantized models (int8 weights or activations) are refused: the quantizers start from float."""
    s = tflite_fb.schema()
    names = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    for tensor in model.subgraphs[0].tensors:
        scale = tensor.quantization.scale if tensor.quantization is not None else None
        if names.get(tensor.type, "").startswith(("INT", "UINT")) and scale is not None and len(scale):
            raise InputError(
                f"{path} is already quantized (tensor '{tensor.name.decode()}' is {names[tensor.type]}); "
                "give edgesmith the float model it was made from"
            )


def _upgrade_op_codes(model) -> bool:
    """Fill `builtin_code` from `deprecated_builtin_code` (old files); returns whether any changed."""
    changed = False
    for code in model.operatorCodes:
        if code.builtinCode < code.deprecatedBuiltinCode:
            code.builtinCode, changed = code.deprecatedBuiltinCode, True
    return changed


def _expand_fp16_weights(model) -> int:
    """DEQUANTIZE ops on constant float16 tensors become float32 constants (fp16 -> fp32 is exact);
    returns how many. The float16 tensors are dropped, so the copy carries each weight once."""
    s = tflite_fb.schema()
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    expanded = 0
    for index, graph in enumerate(model.subgraphs):
        kept = []
        for op in graph.operators:
            source = graph.tensors[op.inputs[0]] if op.inputs is not None and len(op.inputs) else None
            data = model.buffers[source.buffer].data if source is not None else None
            fp16 = source is not None and source.type == s.TensorType.FLOAT16
            if (
                codes[op.opcodeIndex] != s.BuiltinOperator.DEQUANTIZE
                or not fp16
                or data is None
                or not len(data)
            ):
                kept.append(op)  # anything else, or a float16 activation rather than a weight
                continue
            weights = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float16).astype("<f4")
            buffer = s.BufferT()
            buffer.data = np.frombuffer(weights.tobytes(), np.uint8)
            model.buffers.append(buffer)
            graph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
            expanded += 1
        graph.operators = kept
        _drop_unused_tensors(model, index)
    referenced = {t.buffer for g in model.subgraphs for t in g.tensors} | {
        m.buffer for m in model.metadata or []
    }
    for number, buffer in enumerate(model.buffers):
        if number not in referenced:
            buffer.data = None
    return expanded


def _drop_unused_tensors(model, index: int) -> None:
    """Remove the tensors no operator, graph input/output or signature refers to, renumbering the rest."""
    graph = model.subgraphs[index]
    lists = [graph.inputs, graph.outputs]
    for op in graph.operators:
        lists += [x for x in (op.inputs, op.outputs, op.intermediates) if x is not None]
    signatures = [s for s in model.signatureDefs or [] if s.subgraphIndex == index]
    entries = [e for s in signatures for e in [*(s.inputs or []), *(s.outputs or [])]]
    used = sorted({int(i) for lst in lists for i in lst if i >= 0} | {e.tensorIndex for e in entries})
    if len(used) == len(graph.tensors):
        return
    new = {old: position for position, old in enumerate(used)}
    graph.tensors = [graph.tensors[i] for i in used]
    for lst in lists:
        lst[:] = [new[int(i)] if i >= 0 else i for i in lst]
    for entry in entries:
        entry.tensorIndex = new[entry.tensorIndex]


def _tensor_map(name: bytes, index: int):
    entry = tflite_fb.schema().TensorMapT()
    entry.name, entry.tensorIndex = name, index
    return entry


def _name_io_after_signature(model) -> bool:
    """Give the model one signature (keyed by tensor names when it had none) and name its I/O tensors
    after the keys; returns whether a signature was added."""
    added = not model.signatureDefs
    if added:
        graph = model.subgraphs[0]
        signature = tflite_fb.schema().SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = KEY.encode(), 0
        signature.inputs = [_tensor_map(graph.tensors[i].name, int(i)) for i in graph.inputs]
        signature.outputs = [_tensor_map(graph.tensors[i].name, int(i)) for i in graph.outputs]
        model.signatureDefs = [signature]
    (signature,) = model.signatureDefs
    graph = model.subgraphs[signature.subgraphIndex]
    for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
        graph.tensors[entry.tensorIndex].name = entry.name
    return added


def _onnx_blocker(model) -> str | None:
    """What keeps tf2onnx from reading the model, known before trying (it fails with a bare
    reshape error on sparse weights, which the frontend stores dense first)."""
    for tensor in model.subgraphs[0].tensors:
        if tensor.sparsity is not None:
            return f"tf2onnx cannot read sparse weights (tensor '{tensor.name.decode()}', op DENSIFY)"
    return None


def _to_onnx(copy: Path, blocker: str | None) -> tuple[Path | None, str | None]:
    """tf2onnx's fp32 ONNX of the working copy, or why there is none."""
    if blocker is not None:
        return None, blocker
    out = copy.with_suffix(".onnx")
    try:
        with _quiet.tensorflow():
            tf2onnx = require("tf2onnx", "convert-tflite", "TFLite models reach ONNX with tf2onnx")
            proto, _ = tf2onnx.convert.from_tflite(str(copy))
        stable_tf2onnx_names(proto)
        require("onnx", "convert").save(proto, str(out))
    except InputError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return None, f"tf2onnx cannot convert it ({first})"
    return out, None


def load(path: Path, workdir: Path):
    from .source import Source

    with _quiet.tensorflow():  # LiteRT announces its XNNPACK delegate once per process
        require("ai_edge_litert", "litert", WHY)
        session = load_session(path, backend="litert")  # a broken file fails here, in one line
    model = tflite_fb.read(path.read_bytes())
    if len(model.signatureDefs or []) > 1:
        keys = [s.signatureKey.decode() for s in model.signatureDefs]
        raise InputError(f"{path} has {len(keys)} signatures ({', '.join(keys)}); edgesmith converts one")
    _check_float(model, path)
    changes = ["operator codes upgraded to schema 3a"] if _upgrade_op_codes(model) else []
    if densified := densify(model):  # before the fp16 expansion, which then finds constants
        changes.append(f"{densified} sparse weights (DENSIFY) stored dense")
    if expanded := _expand_fp16_weights(model):  # also drops the tensors and buffers left unused
        changes.append(f"{expanded} float16 weights (DEQUANTIZE) expanded to float32")
    if _name_io_after_signature(model):
        changes.append(f"signature '{KEY}' added, keyed by tensor names")
    data = tflite_fb.write(model)
    copy = workdir / f"{path.stem}.tflite"
    copy.write_bytes(data)
    onnx, error = _to_onnx(copy, _onnx_blocker(model))
    native = TFLiteModel(copy, data, error, tuple(changes))

    def reference(feeds):
        return list(session.run(feeds).values())

    # Without an ONNX the handle holds the working copy: the exporters read `native` for a tflite
    # source, and the onnx exporter refuses with `onnx_error` (check_onnx) before touching the handle.
    handle, inputs = ModelHandle(onnx or copy), _inputs(session, onnx)
    return Source("tflite", path, handle, inputs, reference, native, notes=tuple(changes))


def _inputs(session, onnx: Path | None):
    """The inputs as the steps see them. LiteRT reports a fixed batch as free (it runs any batch in
    chunks of the file's), but the ONNX tf2onnx writes keeps the file's batch (often 1, baked into its
    reshapes): with an ONNX, its specs, so that data is fed at that batch everywhere."""
    if onnx is None:
        return session.inputs
    specs = load_session(onnx, backend="ort").inputs
    return specs if [s.name for s in specs] == [s.name for s in session.inputs] else session.inputs
