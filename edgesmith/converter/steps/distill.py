"""`distill`: train a compressed student to imitate its original (the teacher), from unlabeled data.

Why: pruning removes capacity and a few thousand samples are too few to retrain on hard labels; the
teacher's outputs carry far more signal per sample. Terms (`losses`, summed):

- `logits`: Hinton KD (kd.py's `kd_loss`: T^2-scaled KL, plus hard-label CE when labels are given).
- `hidden`: MSE between intermediate features. A pruned layer is narrower than its teacher's, so a
  learned projection (1x1 conv / linear, trained with the student, then discarded) maps the student's
  width to the teacher's. CNNs name the layers in `hidden_layers` (student name -> teacher name);
  Hugging Face models use their hidden states, student layer i matched to teacher layer i*Lt/Ls.
- `attention`: MSE between attention maps averaged over heads (head-count independent, so a student
  with pruned heads or dropped layers still compares), same layer matching.
- `embedding`: for sentence encoders, cosine (or MSE) between mean-pooled token embeddings.

Seeded (shuffling, projections, torch's RNG): the same inputs give the same weights. Runs on CPU
with a progress bar on stderr (silent when quiet).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ...errors import InputError, require
from ..progress import bar
from ..validate import spec
from .base import StepConfig
from .kd import kd_loss


@dataclass(frozen=True)
class DistillConfig(StepConfig):
    kind: ClassVar[str] = "distill"
    consumes: ClassVar[str] = "torch"
    losses: list[Literal["logits", "hidden", "attention", "embedding"]] = spec(
        default_factory=lambda: ["logits"], nonempty=True
    )
    temperature: float = spec(4.0, gt=0)
    alpha: float = spec(0.9, ge=0, le=1)  # weight of the soft term when labels exist
    epochs: int = spec(5, ge=1)
    min_steps: int = spec(0, ge=0)  # train at least this many batches: a small data set is repeated
    lr: float = spec(1e-3, gt=0)
    batch_size: int = spec(64, ge=1)
    weights: dict[str, float] = spec(default_factory=dict, ge=0)  # per-term weight, default 1
    hidden_layers: dict[str, str] = spec(default_factory=dict)  # CNNs: student module -> teacher module
    embedding: Literal["cosine", "mse"] = "cosine"
    data: str | None = None  # a training folder or .npz of inputs (default: the calibration data)
    seed: int = spec(0, ge=0)


class _Features:
    """Forward hooks that keep the outputs of named modules (CNN hidden-state distillation)."""

    def __init__(self, module, names):
        found = dict(module.named_modules())
        missing = [n for n in names if n not in found]
        if missing:
            raise InputError(f"distill.hidden_layers names no module {missing[0]!r}; e.g. {list(found)[1:4]}")
        self.out: dict[str, Any] = {}
        self.hooks = [found[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name):
        def hook(module, inputs, output):
            self.out[name] = output

        return hook

    def close(self):
        for h in self.hooks:
            h.remove()


def _is_hf(model) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "num_hidden_layers")


def _run(model, batch, config, hf: bool):
    """Returns dict with 'logits'/'embedding'/'hidden'/'attention' as available."""
    if not hf:
        return {"logits": model(batch)}
    want_att = "attention" in config.losses
    out = model(**batch, output_hidden_states="hidden" in config.losses, output_attentions=want_att)
    result = {"hidden": getattr(out, "hidden_states", None), "attention": getattr(out, "attentions", None)}
    if getattr(out, "logits", None) is not None:
        result["logits"] = out.logits
    if getattr(out, "last_hidden_state", None) is not None:
        mask = batch["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
        result["embedding"] = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return result


def _pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Student layer i (1-based; 0 = embeddings) -> teacher layer round(i * Lt / Ls)."""
    return [(i, round(i * n_teacher / n_student)) for i in range(n_student + 1)]


def _hidden_pairs(config, s_out, t_out, s_feats, t_feats, hf: bool) -> list[tuple]:
    """(key, student feature, teacher feature) for each distilled hidden state: evenly spaced layer
    pairs for transformers, the recipe's `hidden_layers` map for CNNs."""
    if hf:
        return [
            (str(i), s_out["hidden"][i], t_out["hidden"][j])
            for i, j in _pairs(len(s_out["hidden"]) - 1, len(t_out["hidden"]) - 1)
        ]
    return [(s.replace(".", "_"), s_feats.out[s], t_feats.out[t]) for s, t in config.hidden_layers.items()]


def _projections(torch, config, s_out, t_out, s_feats, t_feats, hf: bool):
    """Learned width adapters where a student feature is narrower than its teacher's."""
    projections = torch.nn.ModuleDict()
    if "hidden" not in config.losses:
        return projections
    for key, s, t in _hidden_pairs(config, s_out, t_out, s_feats, t_feats, hf):
        ds, dt = s.shape[1 if s.dim() == 4 else -1], t.shape[1 if t.dim() == 4 else -1]
        if ds != dt:
            projections[key] = (
                torch.nn.Conv2d(ds, dt, 1, bias=False)
                if s.dim() == 4
                else torch.nn.Linear(ds, dt, bias=False)
            )
    return projections


def _loss(torch, config, s_out, t_out, s_feats, t_feats, projections, labels, hf: bool):
    F = torch.nn.functional
    w = config.weights
    terms = {}
    if "logits" in config.losses:
        terms["logits"] = kd_loss(s_out["logits"], t_out["logits"], labels, config.temperature, config.alpha)
    if "embedding" in config.losses:
        s, t = s_out["embedding"], t_out["embedding"].detach()
        terms["embedding"] = (
            (1 - F.cosine_similarity(s, t, dim=-1)).mean()
            if config.embedding == "cosine"
            else F.mse_loss(s, t)
        )
    if "hidden" in config.losses:
        pairs = _hidden_pairs(config, s_out, t_out, s_feats, t_feats, hf)
        parts = [F.mse_loss(projections[k](s) if k in projections else s, t.detach()) for k, s, t in pairs]
        terms["hidden"] = sum(parts) / max(1, len(parts))
    if "attention" in config.losses:
        s_att, t_att = s_out["attention"], t_out["attention"]
        pairs = _pairs(len(s_att), len(t_att))[1:]
        parts = [F.mse_loss(s_att[i - 1].mean(1), t_att[j - 1].mean(1).detach()) for i, j in pairs]
        terms["attention"] = sum(parts) / max(1, len(parts))
    return sum(w.get(k, 1.0) * v for k, v in terms.items()), terms


def _batches(torch, data, labels):
    """Tensors (or a dict of tensors for Hugging Face models) and the sample count."""
    if isinstance(data, dict):
        tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in data.items()}
        n = len(next(iter(tensors.values())))
    else:
        tensors = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32))
        n = len(tensors)
    y = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return tensors, y, n


def _take(data, index):
    """One batch; token batches are cut to their longest sequence (padding costs time, adds nothing)."""
    if not isinstance(data, dict):
        return data[index]
    batch = {k: v[index] for k, v in data.items()}
    if "attention_mask" in batch and batch["attention_mask"].dim() == 2:
        length = max(1, int(batch["attention_mask"].sum(1).max()))
        batch = {k: v[:, :length] if v.dim() == 2 else v for k, v in batch.items()}
    return batch


def distill_module(
    student, teacher, config: DistillConfig, data, labels=None, quiet: bool = True
) -> tuple[Any, dict]:
    """Return (a distilled copy of `student`, report). `data`: inputs (N, ...) as an array, or for a
    Hugging Face model a dict of arrays (input_ids, attention_mask, ...); `labels` optional."""
    torch = require("torch", "convert", "distillation trains a PyTorch module")
    if (
        data is None
        or (not isinstance(data, dict) and len(data) == 0)
        or (isinstance(data, dict) and not data)
    ):
        raise InputError(
            "distillation needs data: give calibration data, a training folder or an .npz of inputs"
        )
    hf = _is_hf(student)
    if ("attention" in config.losses or "embedding" in config.losses) and not hf:
        raise InputError("distill losses 'attention' and 'embedding' need a Hugging Face transformer")
    if hf and "attention" in config.losses:
        for m in (student, teacher):
            if hasattr(m, "set_attn_implementation"):
                m.set_attn_implementation("eager")  # SDPA kernels do not return attention maps
    torch.manual_seed(config.seed)
    student = copy.deepcopy(student)
    teacher.eval()
    inputs, y, n = _batches(torch, data, labels)
    s_feats = t_feats = None
    if not hf and "hidden" in config.losses:
        if not config.hidden_layers:
            raise InputError(
                "distill loss 'hidden' on a CNN needs hidden_layers = {student_module = teacher_module}"
            )
        s_feats, t_feats = (
            _Features(student, list(config.hidden_layers)),
            _Features(teacher, list(config.hidden_layers.values())),
        )
    probe = _take(inputs, slice(0, min(n, config.batch_size)))
    with torch.no_grad():
        student.eval()
        s_out, t_out = _run(student, probe, config, hf), _run(teacher, probe, config, hf)
        projections = _projections(torch, config, s_out, t_out, s_feats, t_feats, hf)
        before = {
            k: float(v)
            for k, v in _loss(torch, config, s_out, t_out, s_feats, t_feats, projections, None, hf)[1].items()
        }
    params = [p for p in student.parameters() if p.requires_grad] + list(projections.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    per_epoch = -(-n // config.batch_size)
    epochs = max(config.epochs, -(-config.min_steps // per_epoch))
    steps = epochs * per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    rng = np.random.default_rng(config.seed)
    history = []
    with bar(steps, "distill", "batch", quiet) as progress:
        for _ in range(epochs):
            student.train()
            order = torch.from_numpy(rng.permutation(n))
            total = 0.0
            for start in range(0, n, config.batch_size):
                index = order[start : start + config.batch_size]
                batch = _take(inputs, index)
                with torch.no_grad():
                    t_out = _run(teacher, batch, config, hf)
                s_out = _run(student, batch, config, hf)
                loss, _ = _loss(
                    torch,
                    config,
                    s_out,
                    t_out,
                    s_feats,
                    t_feats,
                    projections,
                    None if y is None else y[index],
                    hf,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(index)
                progress.update(1)
            history.append(round(total / n, 5))
    student.eval()
    with torch.no_grad():
        s_out, t_out = _run(student, probe, config, hf), _run(teacher, probe, config, hf)
        after = {
            k: float(v)
            for k, v in _loss(torch, config, s_out, t_out, s_feats, t_feats, projections, None, hf)[1].items()
        }
    for f in (s_feats, t_feats):
        if f is not None:
            f.close()
    report = {"losses": list(config.losses), "samples": n, "epochs": epochs, "epoch_loss": history,
              "before": before, "after": after}  # fmt: skip
    return student, report
