"""Knowledge distillation (Hinton et al. 2015): the loss and a small training loop, shared by the
`binarize` step and the future `distill` step.

Why distill: a compressed student trained on a few thousand images overfits its hard labels; the
teacher's softened outputs say how similar the classes look for each image, which is far more signal
per image. The soft term is scaled by T^2 so its gradients keep the same size as the hard term's
whatever the temperature.
"""

from __future__ import annotations

import numpy as np


def kd_loss(student_logits, teacher_logits=None, labels=None, temperature: float = 4.0, alpha: float = 0.9):
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels).

    Without labels only the soft term is used; without a teacher only the hard term.
    """
    import torch.nn.functional as F

    if teacher_logits is None and labels is None:
        raise ValueError("kd_loss needs teacher logits, labels, or both")
    hard = F.cross_entropy(student_logits, labels) if labels is not None else None
    if teacher_logits is None:
        return hard
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits.detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    return soft if hard is None else alpha * soft + (1 - alpha) * hard


def fit(
    student,
    x: np.ndarray,
    y: np.ndarray | None = None,
    teacher=None,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    temperature: float = 4.0,
    alpha: float = 0.9,
    seed: int = 0,
    augment=None,
    quiet: bool = True,
) -> list[float]:
    """Train `student` in place with Adam and a cosine schedule on (x, y) and/or a teacher's logits.

    Seeded (shuffling and torch's RNG) so the same inputs give the same weights. `augment(batch,
    generator)` may transform each input batch (the teacher sees the same augmented batch). Returns
    the mean loss of each epoch.
    """
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    labels = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))
    steps_per_epoch = max(1, -(-len(inputs) // batch_size))
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * steps_per_epoch))
    if teacher is not None:
        teacher.eval()
    history = []
    for epoch in range(epochs):
        student.train()
        order = torch.from_numpy(rng.permutation(len(inputs)))
        total = 0.0
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            batch = inputs[index] if augment is None else augment(inputs[index], generator)
            with torch.no_grad():
                target = teacher(batch) if teacher is not None else None
            loss = kd_loss(
                student(batch), target, None if labels is None else labels[index], temperature, alpha
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        history.append(total / len(inputs))
        if not quiet:
            print(f"  epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}")
    student.eval()
    return history
