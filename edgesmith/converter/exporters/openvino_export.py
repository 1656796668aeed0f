"""OpenVINO IR export: `<name>.xml` (graph) plus `<name>.bin` (weights).

The fp32 ONNX handle goes through `openvino.convert_model` (`convert`); the planner then runs the
OpenVINO quantizer the recipe asks for, and `write` saves the IR at the handle's precision:
- fp32: saved with `compress_to_fp16=False`. `save_model` compresses weights to FP16 by default, so
  an "fp32" IR would silently hold FP16 weights otherwise.
- fp16: FP16-compressed weights (`compress_to_fp16=True`, steps/openvino_fp16.py), OpenVINO's own
  FP16 IR; the CPU plugin decompresses them at load time and computes in its inference precision.
- int8: NNCF's `quantize` on the OpenVINO model with the recipe's calibration data
  (steps/nncf_quantize.py); OpenVINO's CPU plugin runs the FakeQuantize graph with INT8 kernels.
- weight-only INT8/INT4: NNCF's `compress_weights` (steps/weight_only.py), no calibration data.
- dynamic INT8 (weights-only INT8 with activations quantized at run time) is an ONNX Runtime
  feature with no OpenVINO counterpart: the planner refuses it, with the static preset as the fix.

The same inputs give byte-identical files. Conversion and NNCF compute the same graph every time,
but OpenVINO names the nodes it creates after a process-wide counter (`Constant_31151`), so the
second export in one process would differ; `openvino_names.stable_names` renumbers those names in
graph order. The IR's `rt_info` records only versions and the work file's name (OpenVINO writes the folder as
`DIR`).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError, require
from ..handle import ModelHandle, OpenVINOHandle
from ..precision import BINARY, FP16
from ..steps.base import ExportContext, StepResult
from . import Exported
from .openvino_names import stable_names

FORMAT = "openvino"
SUFFIX = ".xml"
KIND = "openvino"


def convert(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    """The fp32 model as an `openvino.Model`, its generated node names renumbered in graph order
    (before NNCF, which names its nodes after these; TFLite's are counters)."""
    if model.precision == BINARY:  # built from the ONNX file by `write`
        return StepResult(OpenVINOHandle(None, model.path, BINARY))
    ov = require("openvino", "convert-openvino", "the openvino format is written with it")
    # OpenVINO's TFLite frontend reads a .tflite source itself (tf2onnx may have no ONNX for it), unless
    # the ONNX was changed since (quantize.equalize)
    unchanged = ctx.source.kind == "tflite" and model.path == ctx.source.onnx.path
    original = ctx.source.native.path if unchanged else model.path
    ov_model, report = _converted(ov, original, ctx.source.inputs)
    unrolled = _unroll_constant_ifs(ov_model)
    if unrolled:
        report["unrolled_ifs"] = unrolled
    stable_names(ov_model, original)
    return StepResult(OpenVINOHandle(ov_model, original), report)


def _unroll_constant_ifs(model) -> list[str]:
    """Each `If` whose condition OpenVINO's constant folding turns into a constant (a condition on sizes
    the model was converted at) replaced by the body it takes, until none is left; the `If`s unrolled
    ("name: then"). The same computation at these shapes, and NNCF can quantize it: it quantizes an
    `If`'s bodies as models of their own, which the CPU plugin refuses to compile when a nested `If`
    has a dynamic rank (silero-vad's op15 export)."""
    import numpy as np
    from openvino import passes

    unrolled: list[str] = []
    while any(op.get_type_name() == "If" for op in model.get_ordered_ops()):
        manager = passes.Manager()
        manager.register_pass(passes.ConstantFolding())
        manager.run_passes(model)
        decided = [op for op in model.get_ordered_ops()
                   if op.get_type_name() == "If" and op.input_value(0).get_node().get_type_name() == "Constant"]  # fmt: skip
        if not decided:
            break
        for op in decided:
            taken = bool(np.asarray(op.input_value(0).get_node().get_data()).reshape(-1)[0])
            body = op.get_function(0 if taken else 1)  # 0: then_body
            parameters, results = body.get_parameters(), body.get_results()
            for link in op.get_input_descriptions(0 if taken else 1):
                parameters[link.body_parameter_index].output(0).replace(op.input_value(link.input_index))
            for link in op.get_output_descriptions(0 if taken else 1):
                source = results[link.body_value_index].input_value(0)
                source.add_names(op.output(link.output_index).get_names())  # the model's output names
                op.output(link.output_index).replace(source)
            unrolled.append(f"{op.get_friendly_name()}: {'then' if taken else 'else'}")
        model.validate_nodes_and_infer_types()
    return unrolled


def _converted(ov, original: Path, inputs) -> tuple:
    """(the `openvino.Model`, the report's `fixed_shapes` or nothing): converted with the model's own
    dynamic axes; failing that, with the sizes the data or --input-shape give its non-batch axes
    (input_shapes.py, as the TFLite export does). OpenVINO's ONNX frontend needs a static rank after an
    `If` whose branches give different ranks (silero-vad's squeeze-if-size-1 on a dynamic length)."""
    from ...runtime.backends.openvino_backend import error_line

    try:
        return ov.convert_model(str(original)), {}
    except Exception as exc:  # OpenVINO's frontend names the op it cannot convert
        first = exc
    shapes = {spec.name: [d if isinstance(d, int) and d > 0 else -1 for d in spec.shape] for spec in inputs}
    if original.suffix == ".onnx" and any(d > 0 for dims in shapes.values() for d in dims):
        try:
            converted = ov.convert_model(str(original), input=shapes)
        except Exception as exc:
            raise InputError(
                f"OpenVINO cannot convert the model: {error_line(first)}; nor at the data's input sizes "
                f"({_shapes(shapes)}): {error_line(exc)}{_branch_hint(original)}"
            ) from first
        why = "OpenVINO cannot convert the model with its dynamic axes: " + error_line(first)
        return converted, {"fixed_shapes": {"inputs": shapes, "why": why}}
    raise InputError(
        f"OpenVINO cannot convert the model: {error_line(first)}{_branch_hint(original)}"
    ) from first


def _shapes(shapes: dict) -> str:
    return ", ".join(
        f"{name} [{', '.join('?' if d < 0 else str(d) for d in dims)}]" for name, dims in shapes.items()
    )


def _branch_hint(path: Path) -> str:
    """What would make a model with an `If` on an input value convert: one branch, i.e. that input fixed."""
    from ..steps.onnx_branches import deciding_inputs

    onnx = require("onnx", "convert")
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "If" and deciding_inputs(model.graph, node):
            names = ", ".join(f"'{n}'" for n in deciding_inputs(model.graph, node))
            return (
                f" (its `If` '{node.name}' on input {names} has branches OpenVINO cannot convert at one shape; "
                f"convert a model exported for one value of {names}, without the `If`)"
            )
    return ""


def write(
    config, model: OpenVINOHandle, dest: Path, ctx: ExportContext, quantization: dict | None
) -> Exported:
    """`<dest>.xml` and `.bin`: fp32 weights kept fp32 (`save_model` compresses to FP16 by default), fp16
    compressed; a binarized model as BinaryConvolution with u1 weights where it can, u1 weights elsewhere."""
    xml = dest.with_name(dest.name + SUFFIX)
    weights = (xml.with_suffix(".bin"),)
    if model.precision == BINARY:
        from .binary_openvino import convert as binary_ir

        report = binary_ir(model.origin, xml)
        return Exported(xml, BINARY, "edgesmith binary IR", report, weights, True)
    ov = require("openvino", "convert-openvino", "the openvino format is written with it")
    stable_names(model.model, model.origin)
    ov.save_model(model.model, str(xml), compress_to_fp16=model.precision == FP16)
    engine = (quantization or {}).get("engine")
    return Exported(xml, model.precision, engine, quantization, files=weights, files_are_weights=True)
