"""`binarize`: 1-bit weights (and optionally 1-bit activations) trained from the float PyTorch model.

This is a PyTorch-level step (`consumes = "torch"`): it needs the module, not an ONNX file. The
library entry point is `binarize_module`; `binary_layers.freeze` then gives a module whose standard
ONNX export has binary-valued weights, which `exporters/binary_onnx.py` and
`exporters/binary_openvino.py` store as bits. The layers themselves (latent weights, STE, scales,
padding) are explained in `binary_layers.py`; the distillation loss in `kd.py`.

Which layers: every Conv2d (groups = 1) and Linear, in the order the model runs them, except those
`keep` names. `keep` holds regexes on module names plus the words "first" and "last" (the first and
last weight layers to run): those stay float by default because they see the raw input and produce
the logits, where one bit costs the most accuracy for the least size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from ...errors import InputError
from ..validate import spec
from . import binary_layers, kd
from .base import StepConfig


@dataclass(frozen=True)
class BinarizeConfig(StepConfig):
    kind: ClassVar[str] = "binarize"
    consumes: ClassVar[str] = "torch"  # runs on the PyTorch module, before the ONNX export
    activations: Literal["binary", "float"] = "binary"  # float: weights-only
    keep: list[str] = spec(default_factory=lambda: ["first", "last"], regex=True)  # stay float
    # regexes of the layers to binarize (None: every supported one)
    layers: list[str] | None = spec(None, regex=True)
    epochs: int = spec(10, ge=0)  # 0: binarize without training
    lr: float = spec(1e-3, gt=0)
    batch_size: int = spec(64, ge=1)
    data: str | None = None  # .npz of training inputs, with `labels` when there are any
    distill: bool = True  # from the full-precision model
    temperature: float = spec(4.0, gt=0)
    alpha: float = spec(0.9, ge=0, le=1)  # weight of the distillation term against the hard-label term
    approx_sign: bool = False  # Bi-Real's ApproxSign backward for the activations
    seed: int = spec(0, ge=0)


def load_training_data(path: str | Path, what: str = "binarize.data") -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs float32, labels int64 or None) from an .npz holding one input array and maybe `labels`."""
    from ..._io import read_arrays

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what}: {path} does not exist; give an .npz of training inputs")
    arrays = read_arrays(path, what)  # never unpickled; a file that is not numpy's is one InputError
    names = [n for n in arrays if n != "labels"]
    if len(names) != 1:
        raise InputError(f"{what}: {path} must hold one input array (plus `labels`), found {names}")
    x = np.asarray(arrays[names[0]], dtype=np.float32)
    y = np.asarray(arrays["labels"], dtype=np.int64) if "labels" in arrays else None
    if y is not None and len(y) != len(x):
        raise InputError(f"{what}: {len(x)} inputs but {len(y)} labels in {path}")
    return x, y


def _run_order(module, sample: np.ndarray) -> list[tuple[str, object]]:
    """(name, module) of the weight layers and batch norms, in the order one forward pass runs them."""
    import torch

    watched = (torch.nn.modules.conv._ConvNd, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm)
    order, hooks = [], []
    for name, child in module.named_modules():
        if isinstance(child, watched):
            hooks.append(child.register_forward_hook(lambda m, i, o, n=name: order.append((n, m))))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(sample[:2], dtype=np.float32)))
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    seen, unique = set(), []
    for name, child in order:  # a layer called twice counts once, where it first ran
        if name not in seen:
            seen.add(name)
            unique.append((name, child))
    return unique


def _supported(layer) -> bool:
    import torch

    return type(layer) is torch.nn.Linear or (type(layer) is torch.nn.Conv2d and layer.groups == 1)


def _select(module, order, config: BinarizeConfig) -> tuple[list[str], dict[str, str]]:
    """(names to binarize, {name: why it stays float}) for the weight layers in run order."""
    import torch

    layers = [(n, m) for n, m in order if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    names = [n for n, _ in layers]
    if config.layers is not None:
        for name, child in module.named_modules():
            leaf = not list(child.children())
            if name and leaf and any(re.search(p, name) for p in config.layers) and not _supported(child):
                kind = type(child).__name__ + (f"(groups={child.groups})" if hasattr(child, "groups") else "")
                raise InputError(
                    f"binarize: layer '{name}' is a {kind}, which cannot be binarized (only Conv2d with "
                    "groups = 1 and Linear); narrow binarize.layers so it does not match"
                )
    kept: dict[str, str] = {}
    for i, (name, layer) in enumerate(layers):
        if (i == 0 and "first" in config.keep) or (i == len(layers) - 1 and "last" in config.keep):
            kept[name] = "first/last layer kept float"
        elif any(re.search(p, name) for p in config.keep if p not in ("first", "last")):
            kept[name] = "kept float by binarize.keep"
        elif config.layers is not None and not any(re.search(p, name) for p in config.layers):
            kept[name] = "not in binarize.layers"
        elif not _supported(layer):
            kept[name] = f"{type(layer).__name__} is not binarizable"
    return [n for n in names if n not in kept], kept


def _check_batch_norm(order, targets: list[str]) -> None:
    """Binary activations need normalized inputs: sign() of an un-normalized activation is nearly
    constant (all +1 after a ReLU, or one sign for a whole channel), so the layer would see nothing."""
    import torch

    previous = None
    for name, layer in order:
        if name in targets and not isinstance(previous, torch.nn.modules.batchnorm._BatchNorm):
            fed_by = "the model input" if previous is None else f"'{type(previous).__name__}' without one"
            raise InputError(
                f"binarize: activations = 'binary' needs a BatchNorm before each binary layer, but '{name}' "
                f"is fed by {fed_by}: the sign of an un-normalized activation is almost constant, so the "
                "layer would see no information; add BatchNorm, keep it float, or use activations = 'float'"
            )
        previous = layer


def binarize_module(
    module, config: BinarizeConfig, train_x, train_y=None, teacher=None, quiet: bool = True, augment=None
):
    """(binarized copy of `module`, report). Trains `config.epochs` epochs on `train_x` (and
    `train_y`), distilling from `teacher` (default: the float module itself) when `config.distill`.
    The input module is not modified. `augment` is passed to `kd.fit`. Freeze the result with
    `binary_layers.freeze` before export."""
    import copy

    import torch

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"binarize works on a PyTorch nn.Module, got {type(module).__name__}")
    if train_x is None or len(train_x) == 0:
        raise InputError(
            "binarize needs training inputs (binarize.data) even with epochs = 0, to trace the model"
        )
    if config.epochs and train_y is None and not config.distill:
        raise InputError(
            "binarize: nothing to train on (no labels and distill = false); add labels or distill"
        )
    order = _run_order(module, train_x)
    targets, kept = _select(module, order, config)
    if not targets:
        raise InputError("binarize: no layer left to binarize; loosen binarize.keep or binarize.layers")
    if config.activations == "binary":
        _check_batch_norm(order, targets)
    if config.distill and teacher is None:
        teacher = copy.deepcopy(module).eval()
    student = copy.deepcopy(module)
    binary = config.activations == "binary"
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = student.get_submodule(parent_name) if parent_name else student
        setattr(parent, attr, binary_layers.to_binary(getattr(parent, attr), binary, config.approx_sign))
    history = []
    if config.epochs:
        history = kd.fit(
            student, train_x, train_y, teacher if config.distill else None, epochs=config.epochs,
            lr=config.lr, batch_size=config.batch_size, temperature=config.temperature,
            alpha=config.alpha, seed=config.seed, augment=augment, quiet=quiet,
        )  # fmt: skip
    student.eval()
    return student, _report(order, targets, kept, config, history)


def _report(order, targets, kept, config: BinarizeConfig, history) -> dict:
    import torch

    rows, counts = [], {"binary": 0, "float": 0}
    for name, layer in order:
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            continue
        binary = name in targets
        counts["binary" if binary else "float"] += layer.weight.numel()
        rows.append({
            "name": name, "type": type(layer).__name__, "shape": list(layer.weight.shape),
            "binary": binary, "activations": config.activations if binary else "float",
            "why_float": None if binary else kept.get(name),
        })  # fmt: skip
    total = max(1, counts["binary"] + counts["float"])
    return {
        "activations": config.activations,
        "layers": rows,
        "binary_weight_share": round(counts["binary"] / total, 4),
        "epochs": config.epochs,
        "distilled": bool(config.distill and config.epochs),
        "final_loss": round(history[-1], 5) if history else None,
    }
