"""Unstructured sparsity (`steps/sparsify.py`): the sparsity asked for is reached, the compressed size
drops, iterative / lottery-ticket rounds call the training callback, and the report says plainly that
dense runtimes do not get faster."""

import numpy as np
import pytest

from edgesmith.errors import InputError

pytestmark = pytest.mark.torch


def _net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 10)
    ).eval()


def _sparsify(model=None, train=None, **kw):
    from edgesmith.converter.steps.sparsify import SparsifyConfig, sparsify_module

    return sparsify_module(model or _net(), SparsifyConfig(**kw), train=train)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_sparsity_is_reached_and_the_compressed_size_drops(scope):
    import torch

    original = _net()
    model, report = _sparsify(original, sparsity=0.8, scope=scope)
    assert abs(report["sparsity"] - 0.8) < 0.01
    if scope == "layer":
        assert all(abs(v - 0.8) < 0.02 for v in report["layers"].values())
    assert report["size_after"]["zip_bytes"] < 0.5 * report["size_before"]["zip_bytes"]
    assert report["size_after"]["bitmask_bytes"] < 0.3 * report["size_after"]["dense_bytes"]
    assert report["size_after"]["dense_bytes"] == report["size_before"]["dense_bytes"]
    assert "not get faster" in report["note"]
    assert float((original[3].weight == 0).float().mean()) == 0.0  # the given module is untouched
    x = torch.zeros(2, 1, 8, 8)
    assert model(x).shape == (2, 10)


def test_small_sparsity_keeps_outputs_close():
    import torch

    original = _net()
    model, _ = _sparsify(original, sparsity=0.2)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32))
    with torch.no_grad():
        ref, got = original(x), model(x)
    assert float((got - ref).abs().max()) < 0.1 * float(ref.abs().max())


@pytest.mark.parametrize("rewind", [False, True])
def test_iterative_rounds_retrain_and_keep_zeros(rewind):
    import torch

    calls = []

    def train(model):  # a stand-in for fine-tuning: moves every weight, zeros included
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)

    model, report = _sparsify(sparsity=0.75, iterations=3, rewind=rewind, train=train)
    assert len(calls) == (3 if rewind else 2)
    assert abs(report["sparsity"] - 0.75) < 0.01  # zeros re-applied after each retraining


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"sparsity": 1.0}, "between 0 and 1"),
        ({"scope": "net"}, "'global' or 'layer'"),
        ({"iterations": 2}, "train"),
        ({"ignore": ["."]}, "no Linear/Conv"),
    ],
)
def test_bad_input(kw, match):
    with pytest.raises(InputError, match=match):
        _sparsify(**kw)
