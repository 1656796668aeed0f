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
search = "rescue"
bits = 8
block_size = 128
equalize = false

[verify]
metric = "auto"
batch_size = 64
sensitivity = false

[profile]
enabled = true
runs = 100
warmup = 10
threads = 1
targets = []
"""


# -- the validator: every class of bad value issue 11 lists, in one message shape --------------------

BAD_VALUES = [
    ({"calibration": {"preprocess": {"mean": ["x"]}}}, "calibration.preprocess.mean[0] = 'x' has the wrong type; expected a number"),
    ({"calibration": {"preprocess": {"size": ["a", "b"]}}}, "calibration.preprocess.size[0] = 'a' has the wrong type; expected an integer"),
    ({"calibration": {"preprocess": {"size": [28]}}}, "size = [28] must be a list of integers with 2 entries"),
    ({"calibration": {"preprocess": {"std": [0.5, 0]}}}, "std[1] = 0 must be a non-zero number"),
    ({"calibration": {"preprocess": {"channels": True}}}, "channels = true is not valid; expected 1 or 3"),
    ({"steps": 5}, "steps = 5 has the wrong type; expected a list of tables ([[steps]] sections)"),
    ({"exports": {"format": "onnx"}}, "exports = {'format': 'onnx'} has the wrong type"),
    ({"calibration": {"path": 5}}, "calibration.path = 5 has the wrong type; expected a string"),
    ({"verify": {"max_samples": "x"}}, "verify.max_samples = 'x' has the wrong type; expected an integer"),
    ({"verify": {"max_samples": "5"}}, "(did you mean 5 without quotes?)"),
    ({"verify": {"batch_size": 0}}, "verify.batch_size = 0 must be a positive integer (closest valid: 1)"),
    ({"verify": {"max_samples": -5}}, "verify.max_samples = -5 must be a positive integer (closest valid: 1)"),
    ({"verify": {"max_drop": -1}}, "verify.max_drop = -1 must be a number >= 0 (closest valid: 0.0)"),
    ({"verify": {"max_drop": "abc"}}, "verify.max_drop = 'abc' has the wrong type; expected a number"),
    ({"verify": {"max_drop": float("nan")}}, "verify.max_drop = nan must be a finite number"),
    ({"verify": {"min_cosine": 1.5}}, "verify.min_cosine = 1.5 must be a number in [-1, 1] (closest valid: 1.0)"),
    ({"profile": {"runs": True}}, "profile.runs = true has the wrong type; expected an integer (e.g. 100)"),
    ({"profile": {"targets": "rpi4"}}, "profile.targets = 'rpi4' has the wrong type; expected a list of strings"),
    ({"model": {"input_shapes": {"x": [1, 0]}}}, "model.input_shapes['x'][1] = 0 must be a positive integer"),
    ({"exports": [{"format": "onx"}]}, "exports[0].format = 'onx' is not valid; expected one of 'onnx'"),
    ({"exports": [{"name": "../../escape"}]}, "exports[0].name = '../../escape' is not valid; expected a file name"),
    ({"steps": [{"kind": "quantize", "exclude": ["^fc", "("]}]}, "steps[0].exclude[1] = '(' is not a valid regex (missing )"),
    ({"steps": [{"kind": "quantize", "mode": "statc"}]}, "steps[0].mode = 'statc' is not valid; expected one of 'static', 'dynamic', 'fp16', 'weight-only' (did you mean 'static'?)"),
    ({"steps": [{"kind": "prune", "ratios": {"conv[": 0.5}}]}, "steps[0].ratios key = 'conv[' is not a valid regex"),
    ({"steps": [{"kind": "prune", "ratios": {"conv": 1.5}}]}, "steps[0].ratios['conv'] = 1.5 must be a number between 0 and 1 (exclusive)"),
    ({"steps": [{"kind": "distill", "losses": []}]}, "steps[0].losses = [] must be a non-empty list"),
    ({"steps": [{"kind": "distill", "weights": {"logits": "1"}}]}, "steps[0].weights['logits'] = '1' has the wrong type"),
    ({"steps": [{"kind": "binarize", "seed": -1}]}, "steps[0].seed = -1 must be an integer >= 0 (closest valid: 0)"),
    ({"steps": [{"kind": ["quantize"]}]}, "steps[0]: unknown step kind ['quantize']"),
    ({"calibration": {"preprocess": 5}}, "calibration.preprocess = 5 has the wrong type; expected a table"),
]  # fmt: skip


@pytest.mark.parametrize("data, message", BAD_VALUES, ids=[m.split(" ")[0] for _, m in BAD_VALUES])
def test_bad_values_are_refused_in_one_line_naming_key_value_and_fix(data, message):
    with pytest.raises(InputError) as info:
        Recipe.from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_configs_built_in_python_are_checked_the_same_way():
    from edgesmith.converter.recipe import PreprocessConfig, VerifyConfig
    from edgesmith.converter.steps.prune import PruneConfig

    with pytest.raises(InputError, match=r"^verify.batch_size = 0 must be a positive integer"):
        VerifyConfig(batch_size=0)
    with pytest.raises(InputError, match=r"^prune.ignore\[0\] = '\(' is not a valid regex"):
        PruneConfig(ratio=0.3, ignore=["("])
    with pytest.raises(InputError, match=r"^calibration.preprocess.layout = 'NCWH' is not valid.*'NCHW'"):
        PreprocessConfig(layout="NCWH")


def test_configs_are_frozen_and_flags_layer_by_replacing():
    import dataclasses

    recipe = build_recipe(preset="fp32", calibration="c.npz", evaluation="e.npz", formats=["onnx"], model="m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.verify.max_drop = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.steps = []
    assert (recipe.model.path, recipe.calibration.path, recipe.verify.eval) == ("m", "c.npz", "e.npz")
    with pytest.raises(InputError, match="exports.format = 'onx' is not valid.*did you mean 'onnx'"):
        build_recipe(formats=["onx"])


def test_accepted_values_round_trip_exactly(tmp_path):
    data = {
        "model": {"path": "m.onnx", "input_shapes": {"input": [1, 1, 28, 28]}},
        "calibration": {"preprocess": {"size": [28, 28], "channels": 3, "std": [0.2, 0.3, 0.4]}},
        "steps": [
            {"kind": "prune", "ratios": {"^conv": 0.25}, "ignore": ["fc$"]},
            {"kind": "distill", "losses": ["logits", "hidden"], "weights": {"hidden": 0.5}},
            {"kind": "quantize", "mode": "dynamic", "op_types": ["MatMul"]},
        ],
        "exports": [{"format": "onnx", "name": "model.v2_int8"}],
        "verify": {"max_drop": 0, "max_samples": 1, "min_cosine": -1},
        "profile": {"threads": 0, "warmup": 0},
    }
    recipe = Recipe.from_dict(data)
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    assert Recipe.load(path) == recipe
