"""Recipes: what to do to a model, as data.

A recipe is TOML with `[model]`, `[calibration]`, `[[steps]]`, `[[exports]]`, `[verify]` and
`[profile]`. CLI flags and presets compile into the same `Recipe`, and `--dump-recipe` prints it, so
any run can be saved and replayed. Unknown keys are errors that name the closest valid key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import tomllib

from ..errors import InputError, closest
from .steps import STEP_CONFIGS, StepConfig

RECIPE_VERSION = 1


def _choice(where: str, name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(
            f"{where}.{name} = {value!r} is not valid{closest(str(value), choices)}; "
            f"choose from {sorted(choices)}"
        )


@dataclass
class ModelConfig:
    path: str | None = None
    input_shapes: dict[str, list[int]] | None = (
        None  # sizes of dynamic input axes: {images = [1, 3, 320, 320]}
    )


@dataclass
class PreprocessConfig:
    """How to turn image files into model inputs: resize, scale, normalize, lay out."""

    size: list[int] | None = None  # [height, width]; default: the model input's
    channels: int | None = None  # 1 = grayscale, 3 = RGB; default: the model input's
    scale: float = 1 / 255
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self):
        _choice("preprocess", "layout", self.layout, {"NCHW", "NHWC"})
        _choice("preprocess", "channels", self.channels, {None, 1, 3})
        if any(s == 0 for s in self.std):
            raise InputError("preprocess.std has a zero; every std must be non-zero")


@dataclass
class CalibrationConfig:
    path: str | None = None
    method: str = "minmax"
    max_samples: int = 256
    batch_size: int = 16
    percentile: float = 99.999
    preprocess: PreprocessConfig | None = None

    def __post_init__(self):
        _choice("calibration", "method", self.method, {"minmax", "percentile", "entropy"})
        if self.max_samples < 1 or self.batch_size < 1:
            raise InputError("calibration.max_samples and batch_size must be >= 1")
        if not 0 < self.percentile <= 100:
            raise InputError("calibration.percentile must be in (0, 100], e.g. 99.999")


@dataclass
class ExportConfig:
    format: str = "onnx"
    name: str | None = None  # file stem; default: <model>.<precision>
    io: str = "float"  # full-integer formats: "int8" or "uint8" model inputs/outputs instead of float

    def __post_init__(self):
        from .exporters import FORMATS

        _choice("exports", "format", self.format, set(FORMATS))
        _choice("exports", "io", self.io, {"float", "int8", "uint8"})


@dataclass
class VerifyConfig:
    eval: str | None = None  # .npz with the model inputs plus `labels`
    max_drop: float | None = None  # metric points (e.g. 0.5 = half a percent of top-1)
    min_cosine: float | None = None  # every output, every sample; default by precision (verify.py)
    max_samples: int | None = None
    batch_size: int = 64


@dataclass
class ProfileConfig:
    enabled: bool = True
    runs: int = 100
    warmup: int = 10
    threads: int = 1
    targets: list[str] = field(default_factory=list)  # device specs to estimate on (edgesmith targets)

    def __post_init__(self):
        if self.runs < 1 or self.warmup < 0 or self.threads < 0:
            raise InputError("profile.runs must be >= 1, warmup >= 0, threads >= 0 (0 = all cores)")
        if self.targets:
            from ..targets import spec

            for name in self.targets:
                spec.get(name)  # an unknown name fails here, before any long work, with a suggestion


@dataclass
class Recipe:
    version: int = RECIPE_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    steps: list[StepConfig] = field(default_factory=list)
    exports: list[ExportConfig] = field(default_factory=lambda: [ExportConfig()])
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    SECTIONS: ClassVar = {
        "model": ModelConfig,
        "calibration": CalibrationConfig,
        "verify": VerifyConfig,
        "profile": ProfileConfig,
    }

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "recipe") -> Recipe:
        _check_keys(where, data, [f.name for f in dataclasses.fields(cls)])
        version = data.get("version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise InputError(
                f"{where}: version {version} is not supported; this edgesmith reads version {RECIPE_VERSION}"
            )
        recipe = cls(version=version)
        for name, config_cls in cls.SECTIONS.items():
            if name in data:
                setattr(recipe, name, _build(config_cls, data[name], name))
        if "steps" in data:
            recipe.steps = [_build_step(s, f"steps[{i}]") for i, s in enumerate(data["steps"])]
        if "exports" in data:
            recipe.exports = [_build(ExportConfig, e, f"exports[{i}]") for i, e in enumerate(data["exports"])]
        return recipe

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"recipe {path}: no such file; check the path")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"recipe {path} is not valid TOML: {exc}") from exc
        return cls.from_dict(data, where=str(path))

    # -- writing ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def clean(obj):
            if dataclasses.is_dataclass(obj):
                out = {"kind": obj.kind} if isinstance(obj, StepConfig) else {}
                for f in dataclasses.fields(obj):
                    value = clean(getattr(obj, f.name))
                    if value is not None:
                        out[f.name] = value
                return out
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            return obj

        return clean(self)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


def _check_keys(where: str, data: Any, valid: list[str]) -> None:
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a table of keys, got {type(data).__name__}")
    for key in data:
        if key not in valid:
            raise InputError(
                f"unknown key '{key}' in {where}{closest(key, valid)}; valid keys: {', '.join(valid)}"
            )


_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str}


def _build(config_cls, data: Any, where: str):
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    _check_keys(where, data, list(fields))
    values = {}
    for key, value in data.items():
        if "PreprocessConfig" in str(fields[key].type):
            value = _build(PreprocessConfig, value, f"{where}.preprocess")
        else:
            _check_type(f"{where}.{key}", value, str(fields[key].type))
        values[key] = value
    return config_cls(**values)


def _check_type(where: str, value: Any, annotation: str) -> None:
    """Check a TOML value against a field annotation such as 'int', 'float | None', 'list[str]'."""
    allowed = [a.strip() for a in annotation.split("|")]
    for a in allowed:
        base = a.split("[")[0]
        if base == "None" or (
            base in ("list", "dict") and isinstance(value, {"list": list, "dict": dict}[base])
        ):
            return
        if (
            base in _TYPES
            and isinstance(value, _TYPES[base])
            and not (base != "bool" and isinstance(value, bool))
        ):
            return
    raise InputError(f"{where} = {value!r} has the wrong type; expected {annotation}")


def _build_step(data: Any, where: str) -> StepConfig:
    if not isinstance(data, dict) or "kind" not in data:
        raise InputError(f"{where} needs a `kind`; choose from {sorted(STEP_CONFIGS)}")
    kind = data["kind"]
    if kind not in STEP_CONFIGS:
        raise InputError(
            f"{where}: unknown step kind '{kind}'{closest(kind, STEP_CONFIGS)}; "
            f"choose from {sorted(STEP_CONFIGS)}"
        )
    return _build(STEP_CONFIGS[kind], {k: v for k, v in data.items() if k != "kind"}, where)
