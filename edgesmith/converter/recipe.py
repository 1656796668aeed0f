"""Recipes: what to do to a model, as data.

A recipe is TOML with `[model]`, `[calibration]`, `[[steps]]`, `[[exports]]`, `[verify]` and
`[profile]`. CLI flags and presets compile into the same `Recipe`, and `--dump-recipe` prints it, so
any run can be saved and replayed. Unknown keys are errors that name the closest valid key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomllib

from ..errors import InputError, closest
from .data.config import CalibrationConfig, PreprocessConfig  # noqa: F401  (importable from here too)
from .exporters import FORMATS
from .steps import STEP_CONFIGS, StepConfig
from .validate import Checked, build, check_keys, fail, spec

RECIPE_VERSION = 1


@dataclass(frozen=True)
class ModelConfig(Checked):
    section = "model"

    path: str | None = None
    # fixed sizes for the model's dynamic input dimensions, by input name: {"input": [1, 3, 224, 224]}
    input_shapes: dict[str, list[int]] | None = spec(None, ge=1, nonempty=True)


# an artifact's file stem: a plain name inside the output folder, never a path out of it
_FILE_NAME = (r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}", "a file name of letters, digits, '.', '_', '+', '-'")


@dataclass(frozen=True)
class ExportConfig(Checked):
    section = "exports"

    format: str = spec("onnx", choices=lambda: FORMATS)
    name: str | None = spec(None, pattern=_FILE_NAME)  # file stem; default: <model>.<precision>
    # full-integer formats: "int8" or "uint8" model inputs/outputs instead of float
    io: Literal["float", "int8", "uint8"] = "float"


@dataclass(frozen=True)
class VerifyConfig(Checked):
    section = "verify"

    eval: str | None = None  # .npz with the model inputs plus `labels`
    # the task metric max_drop is in: "auto" (top-1 with class-id labels), "top1", "spearman" (sentence
    # pairs), or "module:function" / "file.py:function" of your own (converter/metrics.py)
    metric: str = spec(
        "auto",
        pattern=(
            r"auto|top1|spearman|[^:]+:[A-Za-z_][A-Za-z0-9_]*",
            "auto, top1, spearman, or module:function",
        ),
    )
    max_drop: float | None = spec(None, ge=0)  # metric points (e.g. 0.5 = half a percent of top-1)
    max_samples: int | None = spec(None, ge=1)
    batch_size: int = spec(64, ge=1)
    min_cosine: float | None = spec(
        None, ge=-1, le=1
    )  # every output and sample; default by precision (verify.py)
    sensitivity: bool = (
        False  # per-layer sensitivity of static INT8 in report.json (converter/sensitivity.py)
    )


@dataclass(frozen=True)
class ProfileConfig(Checked):
    section = "profile"

    enabled: bool = True
    runs: int = spec(100, ge=1)
    warmup: int = spec(10, ge=0)
    threads: int = spec(1, ge=0)  # 0 = all cores
    targets: list[str] = spec(default_factory=list)  # device specs to estimate on (edgesmith targets)

    def __post_init__(self):
        super().__post_init__()
        if self.targets:
            from ..targets import spec as target_spec

            for name in self.targets:
                target_spec.get(name)  # an unknown name fails here, before any long work, with a suggestion


@dataclass(frozen=True)
class Recipe(Checked):
    section = "recipe"

    version: int = RECIPE_VERSION
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)
    steps: list[StepConfig] = dataclasses.field(default_factory=list)
    exports: list[ExportConfig] = dataclasses.field(default_factory=lambda: [ExportConfig()])
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    profile: ProfileConfig = dataclasses.field(default_factory=ProfileConfig)

    SECTIONS: ClassVar = {
        "model": ModelConfig,
        "calibration": CalibrationConfig,
        "verify": VerifyConfig,
        "profile": ProfileConfig,
    }

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "recipe") -> Recipe:
        """A recipe from parsed TOML; every value is checked here, before any model is loaded."""
        check_keys(where, data, [f.name for f in dataclasses.fields(cls)])
        version = data.get("version", RECIPE_VERSION)
        if version != RECIPE_VERSION or isinstance(version, bool):
            raise InputError(
                f"{where}: version {version!r} is not supported; this edgesmith reads version {RECIPE_VERSION}"
            )
        values: dict[str, Any] = {"version": version}
        for name, config_cls in cls.SECTIONS.items():
            if name in data:
                values[name] = build(config_cls, data[name], name)
        if "steps" in data:
            values["steps"] = [_build_step(s, f"steps[{i}]") for i, s in enumerate(_tables(data, "steps"))]
        if "exports" in data:
            values["exports"] = [
                build(ExportConfig, e, f"exports[{i}]") for i, e in enumerate(_tables(data, "exports"))
            ]
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"recipe {path}: no such file; check the path")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"recipe {path} is not valid TOML: {exc}") from exc
        try:
            return cls.from_dict(data)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None

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


def _tables(data: dict, key: str) -> list:
    """`steps` / `exports`: a list of tables, as `[[steps]]` sections give."""
    if not isinstance(data[key], list):
        raise fail(key, data[key], f"has the wrong type; expected a list of tables ([[{key}]] sections)")
    return data[key]


def _build_step(data: Any, where: str) -> StepConfig:
    if not isinstance(data, dict) or "kind" not in data:
        raise InputError(f"{where} needs a `kind`; choose from {sorted(STEP_CONFIGS)}")
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in STEP_CONFIGS:
        raise InputError(
            f"{where}: unknown step kind {kind!r}{closest(str(kind), STEP_CONFIGS)}; "
            f"choose from {sorted(STEP_CONFIGS)}"
        )
    return build(STEP_CONFIGS[kind], {k: v for k, v in data.items() if k != "kind"}, where)
