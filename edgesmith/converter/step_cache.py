"""A content-addressed cache of PyTorch step results, so runs that share a prefix of steps share work.

Tune trials that prune the same fraction and distill the same number of steps, then quantize
differently, would each redo the pruning and the distillation; with this cache the first trial
computes them and the others load the result. Off unless a caller turns it on (`using(root)`:
`sweep` and `tune` tasks do, unless `--no-cache`); `edgesmith convert` never reads or writes it.

Key of step i: sha256 of the source model's bytes, its example inputs, the calibration settings
and data bytes, the configs of steps 1..i with the bytes of any data file they name, and the tool
versions (`environment.py`, without the machine). The key of a prefix does not depend on what
follows it, which is the point.

Value: the module after the step, without pickle (a cache folder may be shared, and a pickle runs
code when loaded): its tensors in a safetensors file and its modules' plain attributes (numbers,
strings, tuples of them: channel counts, head counts, `training`) in JSON, with the step's report.
A hit copies the step's input module and overwrites those tensors and attributes. That covers steps
that keep the module tree (the same sub-module names and classes: pruning resizes layers in place,
distillation changes weights); a step that replaces sub-modules (binarize, lowrank), shares a
tensor between two places, or whose result does not come back bit for bit (checked on the example
inputs before anything is stored) is simply not cached.

Two processes may fill one entry at once: each writes a private folder and renames it into place
(`publish`); the first rename wins and a reader only ever sees a whole entry. Processes sharing a
file system's flock also wait for each other on one step (`_computing`), so it is computed once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, cast

import numpy as np

from .environment import versions
from .handle import TorchHandle, sha256
from .steps.base import StepResult

_ACTIVE: ContextVar[tuple[Path, dict] | None] = ContextVar("edgesmith_step_cache", default=None)
PLAIN = (bool, int, float, str, type(None))


@contextlib.contextmanager
def using(root: Path | None) -> Iterator[dict]:
    """Cache PyTorch step results under `root` for conversions run inside this block (None: off).
    Yields what happened: {"hits": [step kinds loaded], "stored": [step kinds computed and kept]}."""
    stats: dict[str, list[str]] = {"hits": [], "stored": []}
    token = _ACTIVE.set((Path(root), stats) if root is not None else None)
    try:
        yield stats
    finally:
        _ACTIVE.reset(token)


def canonical(data) -> str:
    """JSON with sorted keys and no spaces: equal data give equal text, so equal hashes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def publish(root: Path, key: str, fill: Callable[[Path], bool]) -> None:
    """Create the entry `root/key` whole: `fill` writes a private folder (and says False when there
    is nothing to keep), which is renamed into place. When another process got there first its entry
    (the same content) is kept and ours dropped."""
    if (root / key).exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", suffix=".partial", dir=root))
    try:
        if fill(tmp):
            os.replace(tmp, root / key)
    except OSError:  # the entry appeared meanwhile (ENOTEMPTY), or the disk is full: no entry
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(handler, config, handle: TorchHandle, ctx, source, done: tuple) -> StepResult:
    """`handler(config, handle, ctx)`, or its result from the cache when one is on; `done` are the
    configs of the steps before this one."""
    active = _ACTIVE.get()
    if active is None or source.path is None or not config.cacheable:  # off, or nothing to key it on
        return handler(config, handle, ctx)
    root, stats = active
    key = step_key(source, ctx, (*done, config))
    with _computing(root, key):  # a second trial asking for the same step waits, then loads it
        hit = _load(root / key, handle)
        if hit is not None:
            stats["hits"].append(config.kind)
            return hit
        result = handler(config, handle, ctx)

        def fill(folder: Path) -> bool:
            kept = _save(folder, handle, result)
            if kept:
                stats["stored"].append(config.kind)
            return kept

        publish(root, key, fill)
    return result


@contextlib.contextmanager
def _computing(root: Path, key: str) -> Iterator[None]:
    """An exclusive flock on `root/.KEY.lock` while a step is looked up and computed: two tune trials
    that start the same pruning a minute apart would otherwise both prune and distill (each minutes),
    where the second can wait and load the first's result. The lock file is removed by its holder:
    a process still waiting on the removed file, or one arriving after, finds the entry published
    (or, for a step that is not kept, computes it as it would have without the lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; both compute and the first rename wins, as before
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".{key}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def step_key(source, ctx, steps: tuple) -> str:
    """The key of the result of `steps` (the last one included) on `source` (see the docstring)."""
    calibration = dataclasses.asdict(ctx.calibration_config)
    calibration["path"] = _bytes_hash(calibration["path"])
    examples = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in source.example or ()))
    parts = {
        "model": sha256(Path(source.path)),
        "example": examples.hexdigest(),
        "calibration": calibration,
        "steps": [{"kind": s.kind, **dataclasses.asdict(s)} for s in steps],
        "data": [_bytes_hash(getattr(s, "data", None)) for s in steps],
        "tools": versions(deterministic=True),
    }
    return hashlib.sha256(canonical(parts).encode()).hexdigest()


def _bytes_hash(path: str | None) -> str | None:
    return sha256(Path(path)) if path and Path(path).exists() else None


# -- a module without pickle -------------------------------------------------------------------------


def _tree(module) -> list[list[str]]:
    return [[name, f"{type(m).__module__}.{type(m).__qualname__}"] for name, m in module.named_modules()]


def _encode(value):
    """Plain attributes as JSON (tuples tagged, so kernel_size comes back a tuple); None if not plain."""
    if isinstance(value, PLAIN):
        return {"v": value}
    if isinstance(value, (tuple, list)) and all(isinstance(v, PLAIN) for v in value):
        return {"tuple" if isinstance(value, tuple) else "list": list(value)}
    return None


def _decode(encoded: dict):
    if "tuple" in encoded:
        return tuple(encoded["tuple"])
    return encoded["list"] if "list" in encoded else encoded["v"]


def _state(module) -> tuple[dict, dict]:
    """(tensors by 'module|name', JSON-able description) of a module's parameters, buffers and
    plain attributes."""
    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {"tree": _tree(module), "modules": {}}
    for name, sub in module.named_modules():
        entry: dict[str, dict[str, Any]] = {"attributes": {}, "parameters": {}, "buffers": {}}
        for attr, value in vars(sub).items():
            encoded = None if attr.startswith("_") else _encode(value)
            if encoded is not None:
                entry["attributes"][attr] = encoded
        for kind in ("parameters", "buffers"):
            for attr, tensor in getattr(sub, f"_{kind}").items():
                entry[kind][attr] = None if tensor is None else {"requires_grad": tensor.requires_grad}
                if tensor is not None:
                    tensors[f"{name}|{attr}"] = tensor.detach()
        meta["modules"][name] = entry
    return tensors, meta


def _shares_storage(tensors: dict) -> bool:
    pointers = [t.untyped_storage().data_ptr() for t in tensors.values() if t.numel()]
    return len(set(pointers)) != len(pointers)


def _save(folder: Path, before: TorchHandle, result: StepResult) -> bool:
    """Write the step's result into `folder`; False (not cached) if it would not come back exactly."""
    from safetensors.torch import save_file

    after = cast(TorchHandle, result.model).module  # a PyTorch step gives a TorchHandle
    if _tree(after) != _tree(before.module):  # the step replaced sub-modules
        return False
    tensors, meta = _state(after)
    meta |= {"report": result.report, "precision": result.model.precision}
    try:
        text = json.dumps(meta, sort_keys=True)
    except TypeError:  # a report that is not plain data
        return False
    if _shares_storage(tensors) or not _same_outputs(
        after, _restore(before.module, meta, tensors), before.example
    ):
        return False
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(folder / "tensors.safetensors"))
    (folder / "step.json").write_text(text)
    return True


def _load(entry: Path, before: TorchHandle) -> StepResult | None:
    """The cached result of a step on `before`, or None (no entry, or one that does not fit)."""
    if not (entry / "step.json").is_file():
        return None
    from safetensors.torch import load_file

    meta = json.loads((entry / "step.json").read_text())
    if meta["tree"] != _tree(before.module):
        return None
    module = _restore(before.module, meta, load_file(str(entry / "tensors.safetensors")))
    model: Any = TorchHandle(module, before.example, meta["precision"])  # StepResult is typed for ONNX steps
    return StepResult(model, meta["report"])


def _restore(start, meta: dict, tensors: dict):
    """A copy of `start` with the tensors and plain attributes of `meta`."""
    import torch

    module = copy.deepcopy(start)
    subs = dict(module.named_modules())
    for name, entry in meta["modules"].items():
        sub = subs[name]
        for attr, encoded in entry["attributes"].items():
            setattr(sub, attr, _decode(encoded))
        for attr, info in entry["parameters"].items():
            value = tensors[f"{name}|{attr}"].clone() if info else None
            sub._parameters[attr] = (
                None if value is None else torch.nn.Parameter(value, info["requires_grad"])
            )
        for attr, info in entry["buffers"].items():
            sub._buffers[attr] = tensors[f"{name}|{attr}"].clone() if info else None
    return module


def _same_outputs(a, b, example: tuple) -> bool:
    """Both modules give bit-identical outputs on the example inputs (copies run: no side effects)."""
    import torch

    args = tuple(torch.as_tensor(np.asarray(x)) for x in example)
    try:
        with torch.no_grad():
            out_a, out_b = copy.deepcopy(a).eval()(*args), copy.deepcopy(b).eval()(*args)
    except Exception:  # a module that does not run on its example alone: not cached, never an error
        return False
    flat_a, flat_b = _flatten(out_a), _flatten(out_b)
    return len(flat_a) == len(flat_b) and all(torch.equal(x, y) for x, y in zip(flat_a, flat_b, strict=True))


def _flatten(output) -> list:
    import torch

    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _flatten(item)]
    values = getattr(output, "to_tuple", None)  # Hugging Face ModelOutput
    return _flatten(values()) if values else []
