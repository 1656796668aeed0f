"""One validator for every config dataclass: the recipe's sections, its steps and its exports.

Why one: checks written by hand in each config drifted apart (a field annotated `int | None` took
anything, list elements were never looked at, a bad regex surfaced only after the model had loaded).
Here the rules come from the dataclass itself. The type annotation says what a value may be (`int`,
`float`, `str`, `bool`, `list[T]`, `dict[str, T]`, `Literal[...]`, `X | None`, a nested config) and
`spec(...)` adds what a type cannot say: ranges, choices from a registry, regexes, lengths. A recipe is
checked while it is read, before any model is loaded; a config built in Python is checked by its
`__post_init__` (the `Checked` base). Every message has the same shape, naming the key, the bad value,
what is expected and the closest valid choice:

    verify.batch_size = 0 must be a positive integer (closest valid: 1)
    calibration.method = 'entropi' is not valid; expected one of 'minmax', 'percentile', 'entropy' (did you mean 'entropy'?)
    steps[0].exclude[1] = '(' is not a valid regex (missing ), unterminated subpattern at position 0); expected a Python regular expression
    calibration.preprocess.mean[0] = 'x' has the wrong type; expected a number
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal, Union

from ..errors import InputError, closest

_CONTAINER_RULES = ("length", "nonempty")  # apply to a list or table itself, the others to its elements


def spec(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    nonzero: bool = False,
    choices: Iterable | Callable[[], Iterable] | None = None,
    regex: bool = False,
    pattern: tuple[str, str] | None = None,
    length: int | None = None,
    nonempty: bool = False,
) -> Any:
    """A dataclass field with validation rules beyond its type.

    ge/gt/le/lt: bounds of a number (or of every number in a list or table), inclusive / exclusive.
    nonzero: the number(s) must not be 0. choices: the allowed strings, or a function returning them
    (for registries filled elsewhere, such as the export formats). regex: the string(s), or a table's
    keys, are regular expressions and must compile. pattern: (regex, description) every string must
    match whole. length / nonempty: of the list or table itself.
    """
    rules = {
        "ge": ge, "gt": gt, "le": le, "lt": lt, "nonzero": nonzero, "choices": choices,
        "regex": regex, "pattern": pattern, "length": length, "nonempty": nonempty,
    }  # fmt: skip
    metadata = {"rules": {k: v for k, v in rules.items() if v is not None and v is not False}}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


class Checked:
    """Base of the config dataclasses: validates every field when an instance is created.

    A subclass with a rule across fields (say, "exactly one of ratio or target_macs") overrides
    `__post_init__`, calls `super().__post_init__()` first, then checks the rest.
    """

    section: typing.ClassVar[str] = ""  # the recipe section a message names, e.g. "verify"

    def __post_init__(self) -> None:
        check(self)


def where_of(obj: Any) -> str:
    """The default name of a config in messages: its recipe section, or its step kind."""
    return getattr(obj, "section", "") or getattr(obj, "kind", "") or type(obj).__name__


def check(obj: Any, where: str | None = None) -> None:
    """Raise InputError for the first field of dataclass `obj` whose value breaks its type or rules."""
    where = where or where_of(obj)
    hints = _hints(obj.__class__)
    for f in dataclasses.fields(obj):
        if f.init:
            value = getattr(obj, f.name)
            _value(f"{where}.{f.name}", value, hints[f.name], f.metadata.get("rules", {}), _example(f))


def build(cls: type, data: Any, where: str, source: str | None = None) -> Any:
    """An instance of config dataclass `cls` from a TOML table, each value checked against its field
    under the name `where.key`; a field holding another config (`preprocess`) is built from its table.
    `source`: the file the table came from, which then starts every message."""
    if source is not None:
        try:
            return build(cls, data, where)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(where, data, list(fields))
    hints = _hints(cls)
    values = {}
    for key, value in data.items():
        name, tp = f"{where}.{key}", hints[key]
        config = _config_type(tp)
        if config is not None and isinstance(value, dict):
            value = build(config, value, name)
        _value(name, value, tp, fields[key].metadata.get("rules", {}), _example(fields[key]))
        values[key] = value
    return cls(**values)


def check_keys(where: str, data: Any, valid: list[str]) -> None:
    """`data` must be a table whose keys are all in `valid`; a typo names the closest key."""
    if not isinstance(data, dict):
        raise fail(where, data, "has the wrong type; expected a table of keys")
    for key in data:
        if key not in valid:
            raise InputError(
                f"unknown key '{key}' in {where}{closest(str(key), valid)}; valid keys: {', '.join(valid)}"
            )


def fail(where: str, value: Any, problem: str, hint: str = "") -> InputError:
    """The one message shape: `KEY = VALUE problem; what is expected (closest valid choice)`."""
    return InputError(f"{where} = {_show(value)} {problem}{hint}")


# -- one value against one type -------------------------------------------------------------------


def _value(where: str, value: Any, tp: Any, rules: dict, example: Any = None) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value(where, value, options[0], rules, example)
        for option in options:  # several types allowed: the first that fits decides
            if _fits(value, option):
                return _value(where, value, option, rules, example)
        raise _wrong_type(where, value, tp, example)
    if origin is Literal:
        return _choice(where, value, args)
    if origin is list:
        return _sequence(where, value, tp, args[0], rules, example)
    if origin is dict:
        return _table(where, value, tp, args[1], rules, example)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            raise _wrong_type(where, value, tp, example)
        return None
    if tp in (int, float):
        return _number(where, value, tp, rules, example)
    if tp is bool and not isinstance(value, bool):
        raise _wrong_type(where, value, tp, example)
    if tp is str:
        return _string(where, value, rules, example)
    return None


def _sequence(where: str, value: Any, tp: Any, item: Any, rules: dict, example: Any) -> None:
    if not isinstance(value, list):
        raise _wrong_type(where, value, tp, example)
    _size(where, value, rules, tp)
    inner = {k: v for k, v in rules.items() if k not in _CONTAINER_RULES}
    for i, element in enumerate(value):
        _value(f"{where}[{i}]", element, item, inner)


def _table(where: str, value: Any, tp: Any, item: Any, rules: dict, example: Any) -> None:
    if not isinstance(value, dict):
        raise _wrong_type(where, value, tp, example)
    _size(where, value, rules, tp)
    inner = {k: v for k, v in rules.items() if k not in (*_CONTAINER_RULES, "regex")}
    for key, element in value.items():
        if not isinstance(key, str):
            raise fail(where, value, "has a key that is not a string", f": {_show(key)}")
        if rules.get("regex"):
            _regex(f"{where} key", key)
        _value(f"{where}[{key!r}]", element, item, inner)


def _size(where: str, value: Any, rules: dict, tp: Any) -> None:
    length = rules.get("length")
    if length is not None and len(value) != length:
        raise fail(where, value, f"must be {_describe(tp)} with {length} entries")
    if rules.get("nonempty") and not value:
        raise fail(where, value, f"must be a non-empty {_describe(tp).removeprefix('a ')}")


def _number(where: str, value: Any, tp: type, rules: dict, example: Any) -> None:
    kind = numbers.Integral if tp is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _wrong_type(where, value, tp, example)
    if tp is float and not math.isfinite(value):
        raise fail(where, value, "must be a finite number", _for_example(example))
    low = ("ge", rules["ge"]) if "ge" in rules else ("gt", rules["gt"]) if "gt" in rules else None
    high = ("le", rules["le"]) if "le" in rules else ("lt", rules["lt"]) if "lt" in rules else None
    inside = (
        (low is None or (value >= low[1] if low[0] == "ge" else value > low[1]))
        and (high is None or (value <= high[1] if high[0] == "le" else value < high[1]))
        and not (rules.get("nonzero") and value == 0)
    )
    if not inside:
        raise fail(
            where,
            value,
            f"must be {_range_text(tp, low, high, rules)}",
            _nearest(tp, value, low, high, example),
        )


def _string(where: str, value: Any, rules: dict, example: Any) -> None:
    if not isinstance(value, str):
        raise _wrong_type(where, value, str, example)
    choices = rules.get("choices")
    if choices is not None:
        _choice(where, value, tuple(choices() if callable(choices) else choices))
    if rules.get("regex"):
        _regex(where, value)
    pattern = rules.get("pattern")
    if pattern is not None and not re.fullmatch(pattern[0], value):
        raise fail(where, value, f"is not valid; expected {pattern[1]}")


def _choice(where: str, value: Any, choices: tuple) -> None:
    # `True in (1, 3)` holds in Python; a recipe's `channels = true` must not
    if not any(type(value) is type(c) and value == c for c in choices):
        raise fail(
            where,
            value,
            f"is not valid; expected {_one_of(choices)}",
            closest(str(value), [str(c) for c in choices]),
        )


def _regex(where: str, value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise fail(
            where, value, f"is not a valid regex ({exc}); expected a Python regular expression"
        ) from None


# -- messages -------------------------------------------------------------------------------------


def _wrong_type(where: str, value: Any, tp: Any, example: Any) -> InputError:
    hint = _for_example(example)
    if isinstance(value, str):  # `batch_size = "8"`: the number was quoted
        for parse in (int, float):
            try:
                unquoted = parse(value)
            except ValueError:
                continue
            if _fits(unquoted, tp):
                hint = f" (did you mean {value} without quotes?)"
                break
    return fail(where, value, f"has the wrong type; expected {_describe(tp)}", hint)


def _fits(value: Any, tp: Any) -> bool:
    """Whether `value` has type `tp` (its outer type only: the elements are checked one by one)."""
    origin = typing.get_origin(tp) or tp
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if isinstance(value, bool):
        return origin is bool
    if origin is float:
        return isinstance(value, numbers.Real)
    if origin is int:
        return isinstance(value, numbers.Integral)
    return isinstance(value, origin)


_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "true/false values")}  # fmt: skip


def _describe(tp: Any, plural: bool = False) -> str:
    """'an integer', 'a list of numbers', 'a table of lists of integers' ... for a type annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):  # None is what leaving the key out gives
        return " or ".join(_describe(a, plural) for a in args if a is not type(None))
    if origin is Literal:
        return f"values from {', '.join(_show(a) for a in args)}" if plural else _one_of(args)
    if origin in (list, dict):
        what = "list" if origin is list else "table"
        return (
            f"{what}s of {_describe(args[-1], True)}"
            if plural
            else f"a {what} of {_describe(args[-1], True)}"
        )
    if dataclasses.is_dataclass(tp):
        return "tables" if plural else "a table"
    names = _NAMES.get(tp)
    return (names[1] if plural else names[0]) if names else getattr(tp, "__name__", str(tp))


def _one_of(choices: Iterable) -> str:
    shown = [_show(c) for c in choices]
    return " or ".join(shown) if len(shown) <= 2 else "one of " + ", ".join(shown)


def _range_text(tp: type, low, high, rules: dict) -> str:
    noun = "integer" if tp is int else "number"
    if high is None and (low == ("gt", 0) or (tp is int and low == ("ge", 1))):
        return f"a positive {noun}"
    if low and high:
        if low[0] == "gt" and high[0] == "lt":
            return f"a {noun} between {low[1]} and {high[1]} (exclusive)"
        left, right = "[" if low[0] == "ge" else "(", "]" if high[0] == "le" else ")"
        return f"a {noun} in {left}{low[1]}, {high[1]}{right}"
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [f"{ops[b[0]]} {b[1]}" for b in (low, high) if b]
    if rules.get("nonzero") and not bounds:
        return f"a non-zero {noun}"
    return f"{'an' if tp is int else 'a'} {noun} {' and '.join(bounds)}"


def _nearest(tp: type, value, low, high, example) -> str:
    """' (closest valid: B)' when an inclusive bound was crossed, else the field's default as example."""
    for bound, crossed in ((low, low and value < low[1]), (high, high and value > high[1])):
        if crossed and bound[0] in ("ge", "le"):
            return f" (closest valid: {_show(tp(bound[1]))})"
    return _for_example(example)


def _for_example(example: Any) -> str:
    return f" (e.g. {_show(example)})" if example not in (None, [], {}) else ""


def _show(value: Any) -> str:
    """A value as the recipe spells it: TOML's true/false, Python's repr for the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- reading the dataclasses ----------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _example(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _config_type(tp: Any) -> type | None:
    """The config class a field holds (`PreprocessConfig | None` -> PreprocessConfig), else None."""
    union = typing.get_origin(tp) in (Union, types.UnionType)
    for candidate in typing.get_args(tp) if union else (tp,):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None
