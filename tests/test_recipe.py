import pytest

from edgesmith.converter import build_recipe
from edgesmith.converter.recipe import Recipe
from edgesmith.converter.steps.quantize import QuantizeConfig
from edgesmith.errors import InputError


def test_unknown_top_level_key_names_the_closest():
    with pytest.raises(InputError, match=r"unknown key 'calibraton'.*did you mean 'calibration'"):
        Recipe.from_dict({"calibraton": {"path": "x"}})


def test_unknown_step_key_names_the_closest():
    with pytest.raises(InputError, match=r"unknown key 'per_chanel' in steps\[0\].*'per_channel'"):
        Recipe.from_dict({"steps": [{"kind": "quantize", "per_chanel": True}]})


def test_unknown_step_kind_and_bad_choice():
    with pytest.raises(InputError, match="unknown step kind 'quantise'.*'quantize'"):
        Recipe.from_dict({"steps": [{"kind": "quantise"}]})
    with pytest.raises(InputError, match="method = 'entropi'.*'entropy'"):
        Recipe.from_dict({"calibration": {"method": "entropi"}})


def test_wrong_type_is_an_error():
    with pytest.raises(InputError, match="max_samples = 'many' has the wrong type"):
        Recipe.from_dict({"calibration": {"max_samples": "many"}})


def test_toml_round_trip(tmp_path):
    recipe = Recipe.from_dict(
        {
            "model": {"path": "m.onnx"},
            "calibration": {
                "path": "cal",
                "method": "percentile",
                "percentile": 99.9,
                "preprocess": {"size": [28, 28], "channels": 1, "mean": [0.5], "std": [0.25]},
            },
            "steps": [{"kind": "quantize", "mode": "static", "target": "arm", "exclude": ["^fc"]}],
            "verify": {"eval": "e.npz", "max_drop": 0.2},
        }
    )
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    again = Recipe.load(path)
    assert again.to_dict() == recipe.to_dict()
    assert again.steps[0] == QuantizeConfig(target="arm", exclude=["^fc"])
    assert again.calibration.preprocess.std == [0.25]


def test_presets_and_flags_compile_into_a_recipe():
    recipe = build_recipe(preset="int8-dynamic", calibration="c.npz", evaluation="e.npz")
    assert recipe.steps == [QuantizeConfig(mode="dynamic")]
    assert (recipe.calibration.path, recipe.verify.eval) == ("c.npz", "e.npz")
    assert build_recipe().steps == []  # no data to calibrate on: export, verify and profile
    assert build_recipe(calibration="c").steps == [
        QuantizeConfig(mode="static", per_channel=True, format="qdq")
    ]
    with pytest.raises(InputError, match="unknown preset 'int9'.*'int8'"):
        build_recipe(preset="int9")


def test_dump_recipe_golden(cli):
    code, out, _ = cli("convert", "m.onnx", "--preset", "int8", "--calibration", "cal", "--dump-recipe")
    assert code == 0
    assert out == GOLDEN


GOLDEN = """\
version = 1
exports = [
    { format = "onnx", io = "float" },
]

[model]
path = "m.onnx"

[calibration]
path = "cal"
method = "minmax"
max_samples = 256
batch_size = 16
percentile = 99.999

[[steps]]
kind = "quantize"
mode = "static"
per_channel = true
format = "qdq"
activations = "auto"
weights = "int8"
target = "host"
exclude = []
preprocess = true
engine = "auto"

[verify]
batch_size = 64

[profile]
enabled = true
runs = 100
warmup = 10
threads = 1
targets = []
"""
