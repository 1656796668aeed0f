"""Low-rank factorization (`steps/lowrank.py`): applied only where it lowers the MACs, exact at full
energy, close to the original on a layer that really is low rank, and the result exports to ONNX."""

import numpy as np
import pytest

from edgesmith.errors import InputError

pytestmark = pytest.mark.torch


def _net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10),
    )  # fmt: skip
    with torch.no_grad():  # make the big Linear truly rank 16, the 1x1 conv full rank
        net[5].weight.copy_(torch.randn(256, 16) @ torch.randn(16, 64 * 8 * 8) / 64)
    return net.eval()


X = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)


def _factor(model=None, **kw):
    from edgesmith.converter.steps.lowrank import LowRankConfig, factorize_module

    return factorize_module(model or _net(), LowRankConfig(**kw))


def test_factorizes_only_where_it_pays(tmp_path):
    import onnxruntime as ort
    import torch

    original = _net()
    model, report = _factor(original, energy=0.99)
    done = {e["layer"]: e for e in report["factorized"]}
    assert list(done) == ["5"] and done["5"]["rank"] == 16 and done["5"]["macs_saving"] > 0.9
    assert {e["layer"] for e in report["skipped"]} == {"2", "7"}  # full-rank 1x1 conv; tiny head
    with torch.no_grad():
        ref, got = original(torch.from_numpy(X)).numpy(), model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
    path = tmp_path / "lowrank.onnx"
    torch.onnx.export(model, (torch.from_numpy(X),), str(path), dynamo=False, input_names=["x"])
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    np.testing.assert_allclose(out, got, atol=1e-4)


def test_rank_ratio_and_1x1_conv():
    import torch

    model, report = _factor(rank_ratio=0.25, min_saving=0.0, ignore=["^5$", "^7$"])
    assert [e["layer"] for e in report["factorized"]] == ["2"]
    assert isinstance(model[2], torch.nn.Sequential) and model[2][0].out_channels == 16
    assert model(torch.from_numpy(X)).shape == (4, 10)


@pytest.mark.parametrize(
    "kw, match",
    [({"energy": 0.0}, "energy"), ({"rank_ratio": 1.0}, "rank_ratio"), ({"min_saving": 1.0}, "min_saving")],
)
def test_bad_input(kw, match):
    with pytest.raises(InputError, match=match):
        _factor(**kw)
