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
from .torch_lift import static_batch

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


def load_module(module, workdir: Path, example_inputs: tuple | None, batch: int | None = None):
    """Export a module to ONNX, with a dynamic batch, or at `batch` when that is given (a step result
    from a fixed-batch .pt2 keeps the source's input signature). A module that only traces at the
    batch of its example inputs (its forward bakes the batch in) is exported at that batch, and the
    source holds no module: the steps then lift the program like a fixed-batch .pt2's."""
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
    given = tuple(torch.as_tensor(np.asarray(a)) for a in example_inputs)
    stem = type(module).__name__.lower()
    if batch is not None:
        args = tuple(_at_batch(torch, a, batch) for a in given)
        program = _export(torch, module, args, None)
    else:
        args = given
        if args[0].shape[0] < 2:  # torch.export specializes a batch of 1; 2 keeps the batch dynamic
            args = tuple(torch.cat([a, a]) for a in args)
        names = list(inspect.signature(module.forward).parameters)[: len(args)]
        dim = torch.export.Dim("batch")
        try:
            program = _export(torch, module, args, {n: {0: dim} for n in names})
        except InputError as dynamic_failure:
            try:  # forward holds the batch: export at the user's own batch, steps lift the program
                program = _export(torch, module, given, None)
            except InputError:
                raise dynamic_failure from None
            return _from_program(program, "torch", None, workdir, stem)
    source = _from_program(program, "torch", None, workdir, stem)
    example = tuple(a.numpy() for a in args)
    return dataclasses.replace(source, module=module, example=example)


def _export(torch, module, args: tuple, dynamic_shapes):
    try:
        with quiet("torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes"):
            return torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes)
    except Exception as exc:
        raise InputError(
            f"torch.export could not trace the module ({str(exc).splitlines()[0][:200]}); "
            "make forward() traceable or export it yourself and pass the .pt2"
        ) from exc


def _at_batch(torch, tensor, batch: int):
    """`tensor` with exactly `batch` samples (its first ones, repeated if there are fewer)."""
    repeats = -(-batch // tensor.shape[0])
    return torch.cat([tensor] * repeats)[:batch] if repeats > 1 else tensor[:batch]


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
    step = static_batch(program)  # a fixed-batch program runs on slices of its batch, whatever is fed

    def run(inputs) -> list[np.ndarray]:
        with torch.no_grad():
            outputs = module(*inputs)
        return [t.numpy() for t in torch.utils._pytree.tree_leaves(outputs)]

    def reference(feeds):
        arrays = [torch.from_numpy(np.asarray(feeds[s.name])) for s in session.inputs]
        count = len(arrays[0]) if arrays and arrays[0].dim() else 0
        if step is None or count <= step:
            return run(arrays)
        parts = [run([a[i : i + step] for a in arrays]) for i in range(0, count, step)]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    return Source(kind, path, ModelHandle(out), session.inputs, reference, program)
