"""`binarize` on the PyTorch side: layers replaced, STE gradients, freeze, distillation loss, bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from binary_nets import bn_cnn, mnist_train, no_bn_cnn  # noqa: E402

from edgesmith.converter.steps import kd  # noqa: E402
from edgesmith.converter.steps.binarize import BinarizeConfig, binarize_module, load_training_data  # noqa: E402
from edgesmith.converter.steps.binary_layers import ALPHA_BITS, freeze, is_binary, sign_ste  # noqa: E402
from edgesmith.errors import InputError  # noqa: E402

pytestmark = pytest.mark.torch
X = np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)


def test_hidden_layers_replaced_first_and_last_kept():
    model = bn_cnn()
    student, report = binarize_module(model, BinarizeConfig(epochs=0), X)
    binary = {name for name, m in student.named_modules() if is_binary(m)}
    assert binary == {"3", "7", "11"}  # the two hidden convs and the hidden dense
    assert [r["binary"] for r in report["layers"]] == [False, True, True, True, False]
    assert report["layers"][0]["why_float"] == "first/last layer kept float"
    assert not any(is_binary(m) for m in model.modules())  # the input module is untouched


def test_keep_regex_and_empty_keep():
    _, report = binarize_module(bn_cnn(), BinarizeConfig(epochs=0, keep=["first", "last", "^7$"]), X)
    assert [r["binary"] for r in report["layers"]] == [False, True, False, True, False]
    _, report = binarize_module(bn_cnn(), BinarizeConfig(epochs=0, keep=[], activations="float"), X)
    assert all(r["binary"] for r in report["layers"])


def test_freeze_gives_plus_minus_alpha_per_channel_and_same_outputs():
    student, _ = binarize_module(bn_cnn(), BinarizeConfig(epochs=0), X)
    frozen = freeze(student)
    conv = frozen[3][1]  # Sequential(Sign, Conv2d)
    assert type(conv) is torch.nn.Conv2d and conv.padding == (0, 0)
    w = conv.weight.detach()
    alpha = w.abs().flatten(1)
    assert torch.all(alpha == alpha[:, :1]) and torch.all(alpha > 0)
    mantissa, _ = torch.frexp(alpha[:, 0])
    assert torch.all(mantissa * 2**ALPHA_BITS == torch.round(mantissa * 2**ALPHA_BITS))
    expected = w.flatten(1).abs().mean(1)  # alpha_c = mean |W_c| of the latent weights, rounded
    latent = student[3].weight.detach().abs().flatten(1).mean(1)
    assert torch.allclose(expected, latent, rtol=2**-ALPHA_BITS)
    with torch.no_grad():
        assert torch.equal(student(torch.from_numpy(X)), frozen(torch.from_numpy(X)))


def test_ste_gradients_clipped_identity_and_approx_sign():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.5], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1, -1, 1, 1, 1]  # sign(0) = +1
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]
    x.grad = None
    sign_ste(x, approx=True).sum().backward()
    assert x.grad.tolist() == [0, 1, 2, 1.5, 0]  # 2 - 2|x| inside [-1, 1]


def test_latent_weights_train_and_alpha_gets_gradient():
    student, _ = binarize_module(bn_cnn(), BinarizeConfig(epochs=0, activations="float"), X)
    student.train()
    student(torch.from_numpy(X)).pow(2).mean().backward()
    assert student[3].weight.grad is not None and student[3].weight.grad.abs().sum() > 0


def test_kd_loss_is_t2_scaled_kl_plus_ce():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(s / 3, 1), torch.softmax(t / 3, 1), reduction="batchmean"
    )
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(kd.kd_loss(s, t, y, temperature=3, alpha=0.7), 0.7 * 9 * kl + 0.3 * ce, atol=1e-5)
    assert torch.allclose(kd.kd_loss(s, t, None, temperature=3), 9 * kl, atol=1e-5)
    assert torch.equal(kd.kd_loss(s, None, y), ce)


def test_short_distilled_training_is_deterministic_and_learns():
    x, y = mnist_train(256)
    config = BinarizeConfig(epochs=2, lr=5e-3, batch_size=64, seed=1)
    teacher = bn_cnn()
    kd.fit(teacher, x, y, epochs=2, lr=5e-3)
    a, report = binarize_module(teacher, config, x, y)
    b, _ = binarize_module(teacher, config, x, y)
    assert report["distilled"] and report["final_loss"] is not None
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    with torch.no_grad():
        accuracy = (a(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert accuracy > 0.5  # two epochs on 256 images: far above chance, not a benchmark


def test_binary_activations_without_batch_norm_refused():
    with pytest.raises(InputError, match="BatchNorm before each binary layer.*almost constant"):
        binarize_module(no_bn_cnn(), BinarizeConfig(epochs=0), X)
    binarize_module(no_bn_cnn(), BinarizeConfig(epochs=0, activations="float"), X)  # weights only: fine


def test_unbinarizable_layer_named():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 8, 3, groups=8),
        torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.Linear(8 * 24 * 24, 10),
    )  # fmt: skip
    with pytest.raises(InputError, match=r"layer '2' is a Conv2d\(groups=8\), which cannot be binarized"):
        binarize_module(model, BinarizeConfig(epochs=0, layers=["^2$"]), X)
    _, report = binarize_module(model, BinarizeConfig(epochs=0, keep=[], activations="float"), X)
    assert report["layers"][1]["why_float"] == "Conv2d is not binarizable"  # default: kept, said why


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activations": "ternary"}, "activations = 'ternary' is not valid"),
        ({"epochs": -1}, "epochs = -1 must be an integer >= 0"),
        ({"keep": ["("]}, "not a valid regex"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(InputError, match=match):
        BinarizeConfig(**kwargs)


def test_no_labels_no_distill_refused_and_data_file(tmp_path):
    with pytest.raises(InputError, match="nothing to train on"):
        binarize_module(bn_cnn(), BinarizeConfig(epochs=1, distill=False), X)
    np.savez(tmp_path / "d.npz", input=X, labels=np.zeros(len(X), np.int64))
    x, y = load_training_data(tmp_path / "d.npz")
    assert x.shape == X.shape and y.shape == (32,)
    with pytest.raises(InputError, match="does not exist"):
        load_training_data(tmp_path / "missing.npz")
