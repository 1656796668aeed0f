"""What a TFLite export can do with binary weights: int8, not 1 bit.

TFLite has no 1-bit tensor type nor a binary convolution builtin (Larq's LCE ops are a custom-op
runtime tied to old TensorFlow and ARM). The honest path is to store the +-1 weights as int8 with a
per-channel scale alpha_c (+-1 is exact in int8), which TFLite's int8 kernels run: 4x smaller than
fp32, not 32x. The TFLite exporter (owned elsewhere) calls `tflite_plan` to put that in its report
and to refuse a request that insists on 1-bit storage.
"""

from __future__ import annotations

from ...errors import InputError

NOTE = (
    "TFLite has no 1-bit weights or binary convolution builtin: the +-1 weights are stored as int8 with a "
    "per-channel scale (alpha_c), exact but 4x smaller than fp32 instead of 32x; binary activations run "
    "as float sign ops. Use the ONNX or OpenVINO export for 1-bit storage."
)


def tflite_plan(binarize_report: dict, require_1bit: bool = False) -> dict:
    """The report entry for a TFLite export of a binarized model; InputError if `require_1bit`."""
    if require_1bit:
        raise InputError(
            "TFLite cannot store 1-bit (u1) weights: it has no 1-bit type or binary conv builtin; export "
            "to 'onnx' or 'openvino' for bit-packed weights, or accept int8 (+-1 per channel, 4x) for TFLite"
        )
    binary = [row["name"] for row in binarize_report.get("layers", []) if row.get("binary")]
    return {"format": "tflite", "binary_layers": binary, "weight_storage": "int8 per-channel", "note": NOTE}
