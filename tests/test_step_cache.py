"""The PyTorch step cache (converter/step_cache.py): a pruned module comes back from the cache exactly
(weights, shapes, behaviour) without running the step again; the key follows the prefix of steps and
the model; it is off unless turned on; a step that replaces sub-modules is not cached."""

import types

import numpy as np
import pytest

from edgesmith.converter import step_cache
from edgesmith.converter.data.config import CalibrationConfig
from edgesmith.converter.handle import TorchHandle
from edgesmith.converter.steps import HANDLERS, StepContext, StepResult
from edgesmith.converter.steps.distill import DistillConfig
from edgesmith.converter.steps.prune import PruneConfig

pytestmark = pytest.mark.torch


def _setup(tmp_path, model_bytes: bytes = b"model v1"):
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))  # fmt: skip
    example = (np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32),)
    model = tmp_path / "model.pt2"
    model.write_bytes(model_bytes)  # only its bytes are keyed on
    source = types.SimpleNamespace(path=model, example=example)
    ctx = StepContext(tmp_path, lambda: None, CalibrationConfig())
    return TorchHandle(net, example), source, ctx


def _refuse(*_):
    raise AssertionError("the step ran although its result was cached")


def test_a_pruned_module_comes_back_from_the_cache_exactly(tmp_path):
    import torch

    handle, source, ctx = _setup(tmp_path)
    prune = PruneConfig(target_macs=0.5)
    with step_cache.using(tmp_path / "cache") as stats:
        first = step_cache.run(HANDLERS[PruneConfig], prune, handle, ctx, source, ())
    assert stats == {"hits": [], "stored": ["prune"]}
    with step_cache.using(tmp_path / "cache") as stats:
        again = step_cache.run(_refuse, prune, handle, ctx, source, ())
    assert stats == {"hits": ["prune"], "stored": []}
    assert again.report == first.report
    fresh, cached = first.model.module.state_dict(), again.model.module.state_dict()
    assert fresh.keys() == cached.keys()
    assert all(torch.equal(fresh[k], cached[k]) for k in fresh)
    assert again.model.module[0].out_channels == first.model.module[0].out_channels < 16  # pruned in place
    x = torch.as_tensor(handle.example[0])
    with torch.no_grad():
        assert torch.equal(first.model.module.eval()(x), again.model.module.eval()(x))
    assert handle.module[0].out_channels == 16  # the step's input is untouched


def test_the_key_follows_the_prefix_of_steps_and_the_model(tmp_path):
    handle, source, ctx = _setup(tmp_path)
    prune, distill = PruneConfig(target_macs=0.5), DistillConfig(min_steps=100)
    keys = {
        step_cache.step_key(source, ctx, (prune,)),
        step_cache.step_key(source, ctx, (PruneConfig(target_macs=0.7),)),
        step_cache.step_key(source, ctx, (prune, distill)),
        step_cache.step_key(source, ctx, (prune, DistillConfig(min_steps=300))),
    }
    assert len(keys) == 4
    (tmp_path / "other").mkdir()
    _, other_model, _ = _setup(tmp_path / "other", b"model v2")
    assert step_cache.step_key(other_model, ctx, (prune,)) != step_cache.step_key(source, ctx, (prune,))
    assert step_cache.step_key(source, ctx, (prune,)) == step_cache.step_key(source, ctx, (prune,))


def test_off_unless_turned_on_and_a_step_that_replaces_modules_is_not_cached(tmp_path):
    from torch import nn

    handle, source, ctx = _setup(tmp_path)
    calls = []

    def replace_head(config, model, ctx):
        calls.append(config)
        module = nn.Sequential(*list(model.module)[:-1], nn.Identity())
        return StepResult(TorchHandle(module, model.example), {"replaced": True})

    prune = PruneConfig(target_macs=0.5)
    step_cache.run(replace_head, prune, handle, ctx, source, ())  # no `using`: no cache at all
    assert not (tmp_path / "cache").exists()
    for _ in range(2):
        with step_cache.using(tmp_path / "cache") as stats:
            step_cache.run(replace_head, prune, handle, ctx, source, ())
        assert stats == {"hits": [], "stored": []}
    assert len(calls) == 3
    assert not [p for p in (tmp_path / "cache").iterdir()]  # no entry, no partial left
