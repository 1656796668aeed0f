"""`qat`: quantization-aware training, distilling from the float original, before the INT8 export.

Why: post-training INT8 rounds weights and activations the network never saw; a pruned network has
less slack to absorb that. QAT trains with the rounding in the forward pass (fake quantization,
straight-through gradients) so the weights settle where INT8 costs little. The loss is the
distillation loss of `kd.py` against the unchanged original (the teacher), so no labels are needed
and the same step also recovers what a `prune` before it removed.

How: PyTorch's PT2E flow as torchao ships it (`torch.ao.quantization.quantize_pt2e` moved there):
the module is captured with `torch.export` (dynamic batch), `prepare_qat_pt2e` with the
`X86InductorQuantizer`'s QAT config inserts fake quantizers (uint8 asymmetric activations with
moving-average ranges, int8 symmetric per-channel weights: the scheme ONNX Runtime uses on this x86
host and the one NNCF and the AI Edge Quantizer use for weights), and `kd.fit` trains it.

What leaves the step: the original module's structure with the QAT-trained float weights (copied
back by name from the captured graph), and the trained graph itself (`TorchHandle.qat`). The ONNX
export turns the graph into Q/DQ with the learned ranges (steps/qat_export.py); OpenVINO and TFLite
start from the float weights, and their quantizers (NNCF, the AI Edge Quantizer) calibrate the
activation ranges again. The report gives the fake-quantized model's and the float result's
distillation loss and agreement with the teacher, to compare with the artifacts' scores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import InputError, require
from ..validate import spec
from .base import StepConfig
from .kd import fit, kd_loss

ENGINE = "torchao PT2E QAT (X86InductorQuantizer)"
PROBE = 256  # training samples the report scores the model on
EXPORT = (
    "ONNX (engine auto or qat): the learned ranges as Q/DQ; other formats and engine = 'onnxruntime': "
    "the QAT-trained float weights, whose activations the format's INT8 quantizer calibrates again"
)


@dataclass(frozen=True)
class QATConfig(StepConfig):
    kind: ClassVar[str] = "qat"
    consumes: ClassVar[str] = "torch"
    # its result carries the trained PT2E graph, which converter/step_cache.py does not keep
    cacheable: ClassVar[bool] = False
    epochs: int = spec(3, ge=1)
    min_steps: int = spec(0, ge=0)  # train at least this many batches: a small data set is repeated
    lr: float = spec(1e-4, gt=0)  # fine-tuning: well below a from-scratch rate
    batch_size: int = spec(64, ge=1)
    temperature: float = spec(4.0, gt=0)
    alpha: float = spec(0.9, ge=0, le=1)  # weight of the soft term when the data has labels
    data: str | None = None  # an .npz of training inputs (+ optional labels); default: calibration data
    seed: int = spec(0, ge=0)


def _capture(torch, module, sample):
    """The module as a graph `prepare_qat_pt2e` can rewrite, with a dynamic batch for training."""
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(module, (sample,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise InputError(
            f"qat cannot capture {type(module).__name__} with a dynamic batch "
            f"({str(exc).splitlines()[0][:160]}); its forward must not fix the batch size"
        ) from exc
    return program.module()


def _fake_quantized(torch, module, sample):
    """`module` with PT2E fake quantizers, trainable with .train()/.eval()."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(_capture(torch, module, sample), quantizer)
    allow_exported_model_train_eval(prepared)
    return prepared


def trained_weights(student, prepared):
    """A copy of `student` holding the weights (and batch-norm statistics) trained in `prepared`:
    torch.export keeps every parameter and buffer under its module path, so they map back by name."""
    trained = prepared.state_dict()
    result = copy.deepcopy(student)
    # batch norm's step counter is not part of the QAT graph; it only matters with momentum=None
    state = {k: v for k, v in result.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k, v in state.items() if k not in trained or trained[k].shape != v.shape]
    if missing:
        raise RuntimeError(f"internal error: qat lost track of {missing[0]!r} in the captured graph")
    result.load_state_dict({k: trained[k].detach().clone() for k in state}, strict=False)
    return result.eval()


def _score(torch, model, teacher, x, config) -> dict[str, float]:
    """Distillation loss and top-1 agreement with the teacher on `x`, in eval mode (a fake-quantized
    model's observers still update its ranges unless they were disabled)."""
    model.eval()
    with torch.no_grad():
        out, target = model(x), teacher(x)
    loss = kd_loss(out, target, None, config.temperature, config.alpha)
    agree = float((out.argmax(1) == target.argmax(1)).float().mean())
    return {"kd_loss": round(float(loss), 5), "agreement": round(agree, 4)}


def train_fake_quant(
    student,
    teacher,
    config: QATConfig,
    data: np.ndarray,
    labels: np.ndarray | None = None,
    quiet: bool = True,
) -> tuple[Any, dict]:
    """Return (the fake-quantized PT2E graph of `student` after QAT, with its ranges frozen; report).
    `data`: inputs (N, ...) as an array, `labels` optional (hard-label term, weighted 1 - alpha).
    Neither module is changed. `convert_pt2e` turns the result into a Q/DQ graph."""
    torch = require("torch", "convert", "quantization-aware training trains a PyTorch module")
    require("torchao", "convert", "quantization-aware training uses torchao's PT2E quantizer")
    from torchao.quantization.pt2e import disable_observer

    if data is None or len(data) == 0:
        raise InputError("qat needs data: give calibration data or qat.data (an .npz of training inputs)")
    torch.manual_seed(config.seed)
    teacher.eval()
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    probe = x[: min(len(x), PROBE)]
    prepared = _fake_quantized(torch, copy.deepcopy(student).eval(), x[:2])
    before = _score(torch, prepared, teacher, probe, config)  # ranges observed on the probe: PTQ-like
    per_epoch = -(-len(x) // config.batch_size)
    epochs = max(config.epochs, -(-config.min_steps // per_epoch))
    history = fit(prepared, data, labels, teacher, epochs=epochs, lr=config.lr, batch_size=config.batch_size,
                  temperature=config.temperature, alpha=config.alpha, seed=config.seed, quiet=quiet)  # fmt: skip
    prepared.apply(disable_observer)  # scoring must not move the learned ranges
    report = {
        "engine": ENGINE,
        "samples": len(x),
        "epochs": epochs,
        "steps": epochs * per_epoch,
        "epoch_loss": [round(v, 5) for v in history],
        "fake_quant_before": before,
        "fake_quant_after": _score(torch, prepared, teacher, probe, config),
        "scored_on": f"the first {len(probe)} training samples, against the original",
    }
    return prepared, report


def qat_module(
    student,
    teacher,
    config: QATConfig,
    data: np.ndarray,
    labels: np.ndarray | None = None,
    quiet: bool = True,
) -> tuple[Any, Any, dict]:
    """Return (a copy of `student` with QAT-trained float weights, the trained fake-quantized graph,
    report); see `train_fake_quant`."""
    import torch

    prepared, report = train_fake_quant(student, teacher, config, data, labels, quiet)
    result = trained_weights(student, prepared)
    probe = torch.from_numpy(np.ascontiguousarray(data[:PROBE], dtype=np.float32))
    report["float_after"] = _score(torch, result, teacher, probe, config)
    report["export"] = EXPORT
    return result, prepared, report
