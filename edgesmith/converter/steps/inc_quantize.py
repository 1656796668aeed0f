"""Static INT8 with Intel Neural Compressor's PT2E path (`engine = "inc"` on an ONNX export).

INC quantizes the PyTorch program, not the ONNX file: `export` -> `prepare` (observers placed by
torch's X86InductorQuantizer: uint8 asymmetric per-tensor activations, int8 symmetric per-channel
weights) -> the recipe's calibration batches -> `convert` (quantize/dequantize pairs in the graph).
torch's ONNX exporter turns the pairs into QuantizeLinear/DequantizeLinear: a QDQ model for ONNX
Runtime. The exporter keeps the weights in float behind QuantizeLinear -> Clip -> DequantizeLinear;
`_fold_weights` stores them as int8, as ONNX Runtime's quantizer does (a quarter of the size).

It needs the torch model, so it applies to PyTorch sources only (a module given in Python or a
`.pt2`), and to the model after the PyTorch-level steps (prune, lowrank ...), which is what the
ExportContext's source holds: a quantizer that consumes the source (`INC` below) and produces ONNX.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..._quiet import quiet
from ...errors import InputError, require
from ..handle import ModelHandle
from ..precision import INT8
from .base import ExportContext, Facts, Quantizer, StepResult, run_facts

WHY = "engine = 'inc' uses Intel Neural Compressor"
ALGOS = {"minmax": "minmax", "entropy": "kl"}  # the recipe's calibration.method -> INC's act_algo


def quantize_onnx(config, model: ModelHandle, ctx: ExportContext) -> StepResult:
    """`engine = "inc"`: the PyTorch source (`ctx.source`) quantized and exported to ONNX; `model` is
    the fp32 ONNX export, whose file name the result takes."""
    source, step = ctx.source, ctx.step
    check(config, run_facts(model, ctx))
    torch = require("torch", "convert-inc", WHY)
    inc = require("neural_compressor", "convert-inc", WHY)
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import StaticQuantConfig, convert, prepare

    from ..progress import bar

    cal = step.calibration()
    if cal is None:
        raise InputError("static INT8 needs calibration data: pass --calibration PATH")
    names = [s.name for s in source.inputs]
    args, dynamic = export_args(cal, names)
    algo = ALGOS[step.calibration_config.method]
    with quiet("neural_compressor", python_warnings=False), torch.no_grad():  # INC logs every stage at INFO
        if source.module is not None:
            graph = export(source.module.eval(), args, dynamic_shapes=dynamic)
        else:  # a .pt2: already exported (INC's `export` would call .eval(), which its module refuses)
            graph = source.native.module()
            graph._exported, graph.dynamic_shapes = True, None  # what INC's `export` marks
        prepared = prepare(graph, StaticQuantConfig(act_algo=algo))
        with bar(len(cal), "calibrating (inc)", "sample", step.quiet) as progress:
            for feeds in cal.batches():
                prepared(*(torch.from_numpy(feeds[n]) for n in names))
                progress.update(len(feeds[names[0]]))
        quantized = convert(prepared)
    out = step.workdir / f"{model.path.stem}.inc-int8.onnx"
    folded = export_qdq(quantized, args, dynamic, names, out)
    report = {
        "engine": "neural-compressor",
        "version": inc.__version__,
        "mode": "static",
        "format": "qdq",
        "path": "pt2e (X86InductorQuantizer)",
        "activations": "uint8 asymmetric per-tensor",
        "weights": "int8 symmetric per-channel",
        "per_channel": True,
        "calibration": {"method": algo, "samples": len(cal), "path": str(cal.path)},
        "folded_weights": folded,
    }
    return StepResult(ModelHandle(out, INT8), report)


def export_args(cal, names: list[str]) -> tuple[tuple, Any]:
    """(inputs, dynamic_shapes) to capture the model with: the first calibration batch at the model's
    own batch when that is fixed (a static-batch .pt2 keeps its signature), else doubled to a batch of
    at least 2 with a dynamic batch dimension."""
    import torch

    first = next(iter(cal.batches()))
    if cal.fixed_batch:
        return tuple(torch.from_numpy(first[n]) for n in names), None
    args = tuple(torch.from_numpy(np.concatenate([first[n]] * 2)) for n in names)
    batch = torch.export.Dim("batch")
    return args, tuple({0: batch} for _ in args)


def export_qdq(quantized, args: tuple, dynamic, names: list[str], out) -> int:
    """A PT2E-converted graph (quantize/dequantize pairs) -> a QDQ ONNX file at `out`, with the
    source's input `names` and int8 weight initializers; returns how many weights were folded."""
    import torch

    from ..frontends.torch_frontend import quiet_exporter, strip_debug_info

    with quiet_exporter(), torch.no_grad():
        program = torch.export.export(quantized, args, dynamic_shapes=dynamic)
        onnx_program = torch.onnx.export(program, (), dynamo=True, external_data=False, verbose=False)
    proto = onnx_program.model_proto
    strip_debug_info(proto)
    folded = _fold_weights(proto)
    for value, name in zip(proto.graph.input, names, strict=True):  # keep the source's input names
        _rename(proto.graph, value.name, name)
    require("onnx", "convert").save(proto, str(out))
    return folded


def check(config, facts: Facts) -> None:
    """What INC cannot do, refused before any model is loaded."""
    if facts.source_kind not in SOURCES:
        raise InputError(
            f"engine 'inc' quantizes PyTorch models (PT2E); this source is {facts.source_kind} "
            f"({facts.source_path or 'in memory'}): use engine = 'onnxruntime' or 'nncf'"
        )
    if facts.onnx_steps:  # INC would quantize the model without them
        raise InputError(
            "engine 'inc' quantizes the PyTorch model, so it cannot follow ONNX-level steps; "
            "use engine = 'onnxruntime' or 'nncf'"
        )
    if config.mode != "static":
        raise InputError(f"engine 'inc' quantizes static INT8 only, not mode = {config.mode!r}")
    method = facts.calibration_method
    if method not in ALGOS:
        raise InputError(f"engine 'inc' calibrates with {sorted(ALGOS)}, not calibration.method = {method!r}")
    unsupported = [n for n, on in (("exclude", config.exclude), ("op_types", config.op_types),
                                   ("format = 'qoperator'", config.format != "qdq")) if on]  # fmt: skip
    if unsupported:
        raise InputError(f"engine 'inc' does not take quantize.{unsupported[0]}; use engine = 'onnxruntime'")


SOURCES = ("torch", "pt2")
INC = Quantizer("neural-compressor", "source", "onnx", ("static",), ("inc",), quantize_onnx, SOURCES, check)


def _fold_weights(proto) -> int:
    """QuantizeLinear (and Clip) on a constant -> an int8 initializer that feeds DequantizeLinear."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    done = []
    for node in graph.node:
        constant = len(node.input) == 3 and all(i in inits for i in node.input)
        if node.op_type != "QuantizeLinear" or not constant:
            continue
        w, scale, zero = (numpy_helper.to_array(inits[i]) for i in node.input)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [-1 if d == axis % w.ndim and scale.ndim else 1 for d in range(w.ndim)]
        limits = np.iinfo(zero.dtype)
        q = np.rint(w / scale.reshape(shape)) + zero.astype(np.int32).reshape(shape)
        q, chain = np.clip(q, limits.min, limits.max), [node]
        clip = users.get(node.output[0], [])
        if len(clip) == 1 and clip[0].op_type == "Clip" and all(i in inits for i in clip[0].input[1:]):
            bounds = [numpy_helper.to_array(inits[i]) for i in clip[0].input[1:]]
            q, chain = np.clip(q, *bounds), [node, clip[0]]
        graph.initializer.append(numpy_helper.from_array(q.astype(zero.dtype), chain[-1].output[0]))
        done += chain
    for node in done:
        graph.node.remove(node)
    used = Counter(i for n in graph.node for i in n.input)
    kept = [t for t in graph.initializer if used[t.name]]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return sum(n.op_type == "QuantizeLinear" for n in done)


def _rename(graph, old: str, new: str) -> None:
    if old == new:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
