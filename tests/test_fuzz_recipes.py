"""Fuzzed recipes and CLI options, generated from the recipe schema: refused in one line before any
model is read, or replayed identically (the contract: tests/fuzzkit.py)."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest
import tomllib
from fuzzkit import (
    cli,
    examples,
    sandbox_factory,
)
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    return sandbox_factory(tmp_path_factory.mktemp("fuzz"))


# -- recipes generated from the schema ------------------------------------------------------------------


def _schema() -> list[tuple[str, type, dataclasses.Field]]:
    """(place, config class, field) for every value a recipe can set."""
    from edgesmith.converter.recipe import ExportConfig, PreprocessConfig, Recipe
    from edgesmith.converter.steps import STEP_CONFIGS

    places = [
        *Recipe.SECTIONS.items(),
        ("calibration.preprocess", PreprocessConfig),
        ("exports", ExportConfig),
    ]
    places += [(f"steps:{kind}", cls) for kind, cls in STEP_CONFIGS.items()]
    return [(place, cls, f) for place, cls in places for f in dataclasses.fields(cls) if f.init]


SCHEMA = _schema()


def place(where: str, key: str, value) -> tuple[dict, str]:
    """A recipe table setting `key` = `value` at `where`, and the name a message must use for it."""
    if where == "calibration.preprocess":
        return {"calibration": {"preprocess": {key: value}}}, f"{where}.{key}"
    if where == "exports":
        return {"exports": [{key: value}]}, f"exports[0].{key}"
    if where.startswith("steps:"):
        kind = where.split(":")[1]
        base = {"ratio": 0.3} if kind == "prune" and key not in ("ratio", "target_macs", "ratios") else {}
        return {"steps": [{"kind": kind, **base, key: value}]}, f"steps[0].{key}"
    return {where: {key: value}}, f"{where}.{key}"


scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 16, 100, 0.0, 0.5, 1.0, -0.5, 1.5, 99.999, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=10),
    st.sampled_from(
        ["", "(", "[a-", "static", "onnx", "NCHW", "logits", "l1", "global", "rpi4", "../x", "a b"]
    ),
)
toml_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def _choices(tp) -> list:
    """The literal values a field's type names (Literal[...], also inside list/Optional)."""
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return [c for arg in typing.get_args(tp) for c in _choices(arg)]


def values_for(cls: type, f: dataclasses.Field):
    """Values of the field's own type (often valid, often just outside a range) or any TOML value."""
    tp = typing.get_type_hints(cls)[f.name]
    rules = f.metadata.get("rules", {})
    near = [rules[k] + d for k in ("ge", "gt", "le", "lt") if k in rules for d in (-1, 0, 1, 0.5, -0.5)]
    choices = _choices(tp) + list(rules.get("choices", ()) if not callable(rules.get("choices")) else ())
    typed = (
        st.sampled_from([*near, *choices, *([[c] for c in choices]), [], {}]) if near or choices else scalars
    )
    return st.one_of(typed, toml_values)


def outer_type_is_wrong(tp, value) -> bool:
    """An oracle simpler than the validator: does `value` already fail on its outer TOML type?"""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(outer_type_is_wrong(a, value) for a in args)
    origin = typing.get_origin(tp) or tp
    if origin is typing.Literal:
        return value not in args or isinstance(value, bool) != isinstance(args[0], bool)
    if origin is bool:
        return not isinstance(value, bool)
    if origin is int:
        return isinstance(value, bool) or not isinstance(value, int)
    if origin is float:
        return isinstance(value, bool) or not isinstance(value, (int, float))
    if origin in (str, list, dict):
        return not isinstance(value, origin)
    return not isinstance(value, dict)  # a nested config: a table


@settings(max_examples=examples(400))
@given(st.data())
def test_recipe_values_from_the_schema(data):
    """Any value at any recipe key: refused in one line naming the key, or accepted and round-tripped
    exactly through TOML; a value of the wrong outer type is never accepted."""
    from edgesmith.converter.recipe import Recipe
    from edgesmith.errors import InputError

    where, cls, f = data.draw(st.sampled_from(SCHEMA), label="field")
    value = data.draw(values_for(cls, f), label="value")
    table, name = place(where, f.name, value)
    try:
        recipe = Recipe.from_dict(table)
    except InputError as exc:
        event("refused")
        message = str(exc)
        assert "\n" not in message
        assert name in message or "unknown target" in message or message.startswith("prune needs"), message
        return
    event("accepted")
    assert not outer_type_is_wrong(typing.get_type_hints(cls)[f.name], value), f"{name} = {value!r} accepted"
    assert Recipe.from_dict(tomllib.loads(recipe.to_toml())) == recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_the_schema_covers_every_field_the_fuzzer_fills():
    """The fuzzer's schema is read from the dataclasses: a new field is fuzzed without touching this file."""
    names = {(where, f.name) for where, _, f in SCHEMA}
    assert {
        ("verify", "max_drop"),
        ("steps:quantize", "exclude"),
        ("calibration.preprocess", "mean"),
    } <= names
    assert len(SCHEMA) > 80
    assert {("verify", "batch_size"), ("calibration.preprocess", "size"), ("model", "input_shapes")} <= {
        (where, f.name) for where, _, f in BOUNDED
    }


def out_of_range(tp, rules: dict) -> list:
    """Numbers just outside a field's declared bounds, shaped like the field (a list or table of them)."""
    bad = [rules["ge"] - 1] if "ge" in rules else [rules["gt"], rules["gt"] - 1] if "gt" in rules else []
    bad += [rules["le"] + 1] if "le" in rules else [rules["lt"], rules["lt"] + 1] if "lt" in rules else []
    origin, args = typing.get_origin(tp), [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return out_of_range(args[0], rules)
    if origin is list:
        return [[v] for v in out_of_range(args[0], rules)]
    if origin is dict:
        return [{"x": v} for v in out_of_range(args[1], rules)]
    return [int(v) if tp is int else float(v) for v in bad] if tp in (int, float) else []


BOUNDED = [
    (w, c, f)
    for w, c, f in SCHEMA
    if out_of_range(typing.get_type_hints(c)[f.name], f.metadata.get("rules", {}))
]


@st.composite
def wrong_setting(draw):
    """(place, field, value) with a value of the wrong outer type, or of the right type out of range."""
    if draw(st.booleans()):
        where, cls, f = draw(st.sampled_from(BOUNDED))
        rules = f.metadata.get("rules", {})
        return where, f, draw(st.sampled_from(out_of_range(typing.get_type_hints(cls)[f.name], rules)))
    where, cls, f = draw(st.sampled_from(SCHEMA))
    tp = typing.get_type_hints(cls)[f.name]
    return where, f, draw(toml_values.filter(lambda v: outer_type_is_wrong(tp, v)))


@settings(max_examples=examples(30))
@given(wrong_setting())
def test_bad_recipe_through_the_cli_is_refused_before_the_model_is_read(sandboxes, setting):
    """A wrong value in a recipe file: exit 2 and one line naming the key, before the model is opened
    (the model here is not even a model), with no output folder."""
    import tomli_w

    where, f, value = setting
    table, name = place(where, f.name, value)
    with sandboxes() as box:
        recipe = box.write("r.toml", tomli_w.dumps(table))
        model = box.write("model.onnx", "not a model: the recipe must fail first\n")
        code, _, err = cli(box, "convert", model, "--recipe", recipe, "--out", box.out)
        assert code == 2 and name in err, err
        assert not box.out.exists()


@settings(max_examples=examples(25))
@given(
    preset=st.one_of(
        st.none(), st.sampled_from(["int8", "fp16", "fp32", "bnn", "int8-dynamic"]), st.text(max_size=8)
    ),
    formats=st.lists(
        st.one_of(st.sampled_from(["onnx", "tflite", "openvino", "c-array"]), st.text(max_size=6))
    ),
    calibration=st.one_of(st.none(), st.text(min_size=1, max_size=12)),
    evaluation=st.one_of(st.none(), st.text(min_size=1, max_size=12)),
)
def test_cli_options_dump_a_recipe_that_replays_identically(
    sandboxes, preset, formats, calibration, evaluation
):
    """`convert --dump-recipe` with any options: exit 0 with a recipe that `--recipe` reads back to the
    same dump, or exit 2 in one line."""
    assume(all("\x00" not in s for s in [preset or "", calibration or "", evaluation or "", *formats]))
    options = [f"--format={f}" for f in formats]
    options += [f"--preset={preset}"] * (preset is not None)
    options += [f"--calibration={calibration}"] * (calibration is not None)
    options += [f"--eval={evaluation}"] * (evaluation is not None)
    with sandboxes() as box:
        code, dumped, err = cli(box, "convert", "m.onnx", *options, "--dump-recipe")
        if code != 0:
            assert code == 2, err
            return
        recipe = box.write("dumped.toml", dumped)
        code, again, err = cli(box, "convert", "--recipe", recipe, "--dump-recipe")
        assert code == 0 and again == dumped, err
