"""Small edits on `.tflite` flatbuffers: signature names, integer I/O, and reading the model back.

Converters name a model's signature tensors after their own conventions (`args_0`/`output_0` for
litert-torch, `input_1`/`output_0` for TensorFlow). The runtime names tensors after the signature
keys, and verification feeds arrays named after the source model's inputs, so every `.tflite` leaves
the exporter with the source's names. Edits go through the schema's object API, which serializes
deterministically (same object, same bytes).

The TFLite frontend (reading a source) and the exporters (writing artifacts) both use it, so it sits
beside them in `converter/`, below both.
"""

from __future__ import annotations

from ..errors import require
from ..targets.arena import read, schema  # one reader of the TFLite schema, device side

__all__ = ["read", "schema"]


def write(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def rename_signature(data: bytes, inputs: list[str], outputs: list[str]) -> bytes:
    """Name the (single) signature's inputs and outputs after the source model's, by position in the
    main subgraph's input/output lists (the order the source declares them in)."""
    model = read(data)
    graph = model.subgraphs[0]
    if not model.signatureDefs:
        return data
    signature = model.signatureDefs[0]
    for entries, order, names in ((signature.inputs, graph.inputs, inputs), (signature.outputs, graph.outputs, outputs)):  # fmt: skip
        if len(names) != len(order):
            continue
        by_tensor = {int(t): n for t, n in zip(order, names, strict=True)}
        for entry in entries or []:
            if entry.tensorIndex in by_tensor:
                entry.name = by_tensor[entry.tensorIndex].encode()
    return write(model)


def set_io_type(data: bytes, io: str) -> bytes:
    """Full-integer models come out with float I/O (a QUANTIZE first, a DEQUANTIZE last); `io` =
    "int8"/"uint8" removes them so the model takes and returns integers (TensorFlow's own tool, the one
    its converter uses for `inference_input_type`)."""
    if io == "float":
        return data
    tf = require("tensorflow", "convert-tflite", "int8/uint8 model I/O")
    from tensorflow.lite.python.util import modify_model_io_type

    dtype = {"int8": tf.int8, "uint8": tf.uint8}[io]
    return bytes(modify_model_io_type(bytes(data), dtype, dtype))


def op_names(data: bytes) -> list[str]:
    """The builtin op names of the main subgraph, in execution order."""
    s = schema()
    codes = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    model = read(data)
    kinds = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [codes.get(kinds[op.opcodeIndex], "CUSTOM") for op in model.subgraphs[0].operators]
