"""Transformer pruning (`steps/prune_transformer.py`): heads, FFN neurons and layers come out of a
BERT model; the result keeps a consistent config, reloads from disk and runs in ONNX Runtime."""

import json

import numpy as np
import pytest

from edgesmith.converter.steps.prune_transformer import encoder_module
from edgesmith.errors import InputError

pytestmark = pytest.mark.torch
transformers = pytest.importorskip("transformers")


def _bert():
    import torch

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=4, num_attention_heads=8, intermediate_size=128,
        max_position_embeddings=64,
    )  # fmt: skip
    return transformers.BertModel(config, add_pooling_layer=False).eval()


RNG = np.random.default_rng(0)
DATA = {"input_ids": RNG.integers(1, 100, (16, 12)), "attention_mask": np.ones((16, 12), np.int64)}
DATA["attention_mask"][:4, 8:] = 0


def _run(model, data=DATA):
    import torch

    with torch.no_grad():
        return model(**{k: torch.as_tensor(v) for k, v in data.items()}).last_hidden_state.numpy()


def _prune(model=None, data=DATA, **kw):
    from edgesmith.converter.steps.prune_transformer import TransformerPruneConfig, prune_transformer

    return prune_transformer(model if model is not None else _bert(), TransformerPruneConfig(**kw), data=data)


def test_heads_ffn_and_layers_are_removed_consistently():
    model, report = _prune(heads=0.5, ffn=0.5, layers=2)
    assert (
        report["heads_per_layer"] == [8, 4]
        and report["ffn_neurons"] == [128, 64]
        and report["layers"] == [4, 2]
    )
    assert model.config.num_hidden_layers == len(model.encoder.layer) == 2
    assert model.config.intermediate_size == 64
    for layer in model.encoder.layer:
        assert layer.attention.self.query.out_features == layer.attention.output.dense.in_features == 32
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features == 64
    assert _run(model).shape == (16, 12, 64)
    assert report["params"][1] < 0.75 * report["params"][0]


def test_data_importance_keeps_the_output_closer_than_dropping_the_weakest_heads_blindly():
    reference = _run(_bert())
    kept, _ = _prune(heads=0.25)
    assert np.abs(_run(kept) - reference).mean() < np.abs(reference).mean()  # still the same model, roughly


def test_round_trip_through_save_pretrained(tmp_path):
    from edgesmith.converter.steps.prune_transformer import load_model

    model, _ = _prune(heads=0.5, ffn=0.25, layers=3)
    model.save_pretrained(tmp_path / "pruned")
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["intermediate_size"] == 96
    assert [len(h) for h in config["edgesmith_heads"]] == [4, 4, 4]
    again = load_model(tmp_path / "pruned")
    np.testing.assert_allclose(_run(again), _run(model), atol=1e-5)


def test_ffn_and_layer_drop_load_with_stock_from_pretrained(tmp_path):
    model, _ = _prune(ffn=0.5, layers=2, data=None)
    model.save_pretrained(tmp_path / "p")
    again = transformers.AutoModel.from_pretrained(str(tmp_path / "p")).eval()
    np.testing.assert_allclose(_run(again), _run(model), atol=1e-5)


def test_pruned_model_exports_to_onnx(tmp_path):
    import onnxruntime as ort
    import torch

    model, _ = _prune(heads=0.5, ffn=0.5)
    ids, mask = torch.as_tensor(DATA["input_ids"][:2]), torch.as_tensor(DATA["attention_mask"][:2])
    path = tmp_path / "bert.onnx"
    names = ["input_ids", "attention_mask"]
    torch.onnx.export(encoder_module(model).eval(), (ids, mask), str(path), dynamo=False, input_names=names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(got, _run(model, {"input_ids": ids, "attention_mask": mask}), atol=1e-4)


@pytest.mark.parametrize(
    "kw, match",
    [({"heads": 1.0}, r"in \[0, 1\)"), ({"ffn": -0.1}, r"in \[0, 1\)"), ({"layers": 9}, "only 4 layers")],
)
def test_bad_input(kw, match, tmp_path):
    with pytest.raises(InputError, match=match):
        _prune(**kw)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        _prune(tmp_path)


def test_recipe_step_on_a_module_through_the_python_api(tmp_path):
    """`prune_transformer` as a recipe step on a transformers model given in Python, scored on an .npz
    of token arrays (the calibration data), then distilled from the original and exported to ONNX."""
    import onnxruntime as ort

    from edgesmith.converter import convert
    from edgesmith.converter.recipe import Recipe

    np.savez(tmp_path / "tokens.npz", **DATA)
    recipe = Recipe.from_dict({
        "calibration": {"path": str(tmp_path / "tokens.npz")},
        "steps": [{"kind": "prune_transformer", "heads": 0.5, "ffn": 0.5, "layers": 3},
                  {"kind": "distill", "losses": ["hidden", "attention"], "epochs": 1, "batch_size": 8}],
        "exports": [{"format": "onnx"}],
        "verify": {"eval": str(tmp_path / "tokens.npz")},
        "profile": {"enabled": False},
    })  # fmt: skip
    original = _bert()
    before = _run(original)
    report = convert(original, recipe=recipe, out=tmp_path / "out", example_inputs=tuple(DATA.values()))
    prune, distill = report["steps"]
    assert prune["heads_per_layer"] == [8, 4] and prune["layers"] == [4, 3] and prune["importance"] == "data"
    assert distill["samples"] == 16 and distill["losses"] == ["hidden", "attention"]
    np.testing.assert_array_equal(_run(original), before)  # the original is not modified
    session = ort.InferenceSession(report["artifacts"][0]["path"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert session.run(None, DATA)[0].shape == (16, 12, 64)  # last_hidden_state: no pooling for a module
    assert report["verify"]["samples"] == 16


def test_the_step_refuses_a_model_that_is_not_a_transformer(tmp_path):
    import torch

    from edgesmith.converter import convert
    from edgesmith.converter.recipe import Recipe

    recipe = Recipe.from_dict(
        {"steps": [{"kind": "prune_transformer", "heads": 0.5}], "profile": {"enabled": False}}
    )
    with pytest.raises(InputError, match="works on Hugging Face transformers"):
        convert(
            torch.nn.Linear(4, 2),
            recipe=recipe,
            out=tmp_path / "o",
            example_inputs=(np.ones((2, 4), np.float32),),
        )
