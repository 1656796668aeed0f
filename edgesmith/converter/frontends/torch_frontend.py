"""PyTorch: `torch.export` programs (`.pt2`) and `nn.Module`s, exported to ONNX with the dynamo exporter."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np

from ..._quiet import quiet
from ...errors import InputError, require
from ...runtime import load as load_session
from ..handle import ModelHandle

WHY = "PyTorch models"


def load_pt2(path: Path, workdir: Path):
    """A `.pt2` file, loaded without running anything in it (`pt2_safety`)."""
    from .pt2_safety import load_program

    require("torch", "convert", WHY)
    try:
        program = load_program(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path} is not a torch.export program ({str(exc).splitlines()[0][:200]}); "
            "save one with torch.export.save(torch.export.export(model, args), path)"
        ) from exc
    return _from_program(program, "pt2", path, workdir, path.stem)


def load_module(module, workdir: Path, example_inputs: tuple | None):
    torch = require("torch", "convert", WHY)
    if isinstance(module, torch.export.ExportedProgram):
        return _from_program(module, "torch", None, workdir, "model")
    if not isinstance(module, torch.nn.Module):
        raise InputError(
            f"cannot convert a {type(module).__name__}; give a path (.onnx, .pt2), a "
            "torch.nn.Module or a torch.export.ExportedProgram"
        )
    if not example_inputs:
        raise InputError(
            "a torch.nn.Module needs example inputs to be exported: pass "
            "example_inputs=(array, ...) with a batch of at least 2 samples"
        )
    args = tuple(torch.as_tensor(np.asarray(a)) for a in example_inputs)
    if args[0].shape[0] < 2:  # torch.export specializes a batch of 1; 2 keeps the batch dynamic
        args = tuple(torch.cat([a, a]) for a in args)
    names = list(inspect.signature(module.forward).parameters)[: len(args)]
    batch = torch.export.Dim("batch")
    try:
        program = torch.export.export(module.eval(), args, dynamic_shapes={n: {0: batch} for n in names})
    except Exception as exc:
        raise InputError(
            f"torch.export could not trace the module ({str(exc).splitlines()[0][:200]}); "
            "make forward() traceable or export it yourself and pass the .pt2"
        ) from exc
    source = _from_program(program, "torch", None, workdir, type(module).__name__.lower())
    example = tuple(a.numpy() for a in args)
    return dataclasses.replace(source, module=module, example=example)


def strip_debug_info(proto) -> None:
    """Drop the exporter's debug metadata (FX node dumps, stack traces with absolute paths): runtimes
    ignore it, and it would make the bytes depend on where the code lives, breaking determinism."""
    graph = proto.graph
    for item in [
        proto,
        graph,
        *graph.node,
        *graph.input,
        *graph.output,
        *graph.value_info,
        *graph.initializer,
    ]:
        del item.metadata_props[:]
        if hasattr(item, "doc_string"):
            item.doc_string = ""


def quiet_exporter():
    """Silence the exporter's chatter (missing torchvision ops, deprecation notices)."""
    return quiet("torch.onnx", "onnxscript")  # onnxscript: "Evaluation failed" while folding constants


def _from_program(program, kind: str, path: Path | None, workdir: Path, stem: str):
    from .source import Source

    torch = require("torch", "convert", WHY)
    require("onnxscript", "convert", "torch's ONNX exporter needs it")
    out = workdir / f"{stem}.onnx"
    try:
        with quiet_exporter():
            onnx_program = torch.onnx.export(program, (), dynamo=True, external_data=False, verbose=False)
    except Exception as exc:
        raise InputError(
            f"torch.onnx.export failed on this model ({str(exc).splitlines()[0][:200]}); "
            "an op may have no ONNX translation"
        ) from exc
    proto = onnx_program.model_proto
    strip_debug_info(proto)
    require("onnx", "convert").save(proto, str(out))
    session = load_session(out, backend="ort")
    module = program.module()

    def reference(feeds):
        with torch.no_grad():
            outputs = module(*(torch.from_numpy(np.asarray(feeds[s.name])) for s in session.inputs))
        flat, _ = torch.utils._pytree.tree_flatten(outputs)
        return [t.numpy() for t in flat]

    return Source(kind, path, ModelHandle(out, "fp32"), session.inputs, reference, program)
