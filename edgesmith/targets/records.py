"""The records of a conversion: what `edgesmith convert` made and measured, typed and frozen.

`converter/pipeline.py` builds a `Report` as the run goes (each stage returns new records; nothing is
changed in place), writes it to report.json with `write_report`, and returns it; the summary
`convert` prints (cli/summary.py) reads that `Report`. `read_report` reads report.json back into the
same types for `edgesmith report` (targets/report.py) and for the measurements a device profile saves
beside it (targets/measurements.py). One serializer and one reader, so what is written is what is read.

The records live here, in `targets/`, because `targets/report.py` reads them and `targets/` may
import no converter module; they need nothing but the standard library and `latency.Measurement`.

JSON form: a record's fields are its keys, in field order. A field made with `omitted_if_none()` is left
out when None (report.json never had the key then); other None fields are written as null. Parts
whose keys depend on the step, quantizer, target or device (a step's report, a quantizer's settings,
the cost model's estimate, the emulation result ...) stay JSON objects (`JSON`), written and read as
they are; the ones a reader looks into are checked against a `shape` when read.
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from ..errors import InputError
from .latency import Measurement

JSON = dict[str, Any]  # a free-form JSON object, kept as the code that made it wrote it
R = TypeVar("R", bound="Record")


class Malformed(ValueError):
    """What is wrong with a JSON value read as a record (`where` it is, and how)."""


def omitted_if_none(**metadata: Any) -> Any:
    """A field whose key is left out of the JSON form when the value is None."""
    return field(default=None, metadata={"omit_if_none": True, **metadata})


def shaped(shape: Any, **metadata: Any) -> Any:
    """A free-form JSON field that a reader looks into: checked against `shape` (see `mismatch`)."""
    return omitted_if_none(shape=shape, **metadata)


class Record:
    """Base of the records: a frozen dataclass with a JSON form (`to_json`) and a checked reader
    (`from_json`), both driven by the fields and their annotations."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_json(self) -> JSON:
        out: JSON = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("json") is False or (value is None and f.metadata.get("omit_if_none")):
                continue
            out[f.name] = _dump(value)
        return out

    @classmethod
    def from_json(cls: type[R], value: Any, where: str = "report") -> R:
        """The record `value` (parsed JSON) describes; `Malformed` names the first field that is wrong.
        Keys the record does not know are ignored; a missing key takes the field's default."""
        if not isinstance(value, dict):
            raise Malformed(f"{where} should be an object")
        hints = get_type_hints(cls)
        found: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.metadata.get("json") is False:
                continue
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if f.name not in value or (value[f.name] is None and f.metadata.get("omit_if_none")):
                if not has_default:
                    raise Malformed(f"{where} has no '{f.name}'")
                continue
            found[f.name] = _read(hints[f.name], value[f.name], f"{where}.{f.name}")
            if "shape" in f.metadata and (
                problem := mismatch(found[f.name], f.metadata["shape"], f"{where}.{f.name}")
            ):
                raise Malformed(problem)
        return cls(**found)


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):  # a mapping of records (or free-form JSON, returned as it is)
        return (
            {k: _dump(v) for k, v in value.items()}
            if any(isinstance(v, Record) for v in value.values())
            else value
        )
    return value


def _read(kind: Any, value: Any, where: str) -> Any:
    """`value` as the annotation `kind` says: records, tuples of them, {name: ...}, text, numbers."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(get_args(kind)):
            return None
        return _read(options[0], value, where)
    if kind is Any:
        return value
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_json(value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise Malformed(f"{where} should be a list")
        return tuple(_read(get_args(kind)[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise Malformed(f"{where} should be an object")
        item = get_args(kind)[1]
        return value if item is Any else {k: _read(item, v, f"{where}.{k}") for k, v in value.items()}
    problem = mismatch(value, NUMBER if kind is float else kind, where)
    if problem:
        raise Malformed(problem)
    return value


# -- the records, in the order their keys appear in report.json -------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FileRecord(Record):
    """A file convert wrote or read (converter/handle.file_info)."""

    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class SourceRecord(Record):
    """The model the user gave: its file (path None for a module given in Python), what the frontend
    repaired in it (`fixes`, frontends/source.py `notes`) and which frontend read it."""

    path: str | None
    size_bytes: int
    sha256: str
    fixes: tuple[str, ...] | None = omitted_if_none()
    kind: str


@dataclass(frozen=True, kw_only=True)
class StepRecord(Record):
    """One step of the recipe: its kind and what it reported (free-form, by kind: a quantizer's types,
    a pruner's sparsity ...). `stage_onnx` is the step's ONNX result in the work folder, for the
    stages table; it is never written."""

    kind: str
    details: JSON = field(default_factory=dict)
    stage_onnx: Path | None = field(default=None, metadata={"json": False})

    def to_json(self) -> JSON:
        return {"kind": self.kind, **self.details}

    @classmethod
    def from_json(cls, value: Any, where: str = "step") -> StepRecord:
        if not isinstance(value, dict):
            raise Malformed(f"{where} should be an object")
        if not isinstance(value.get("kind"), str):
            raise Malformed(f"{where}.kind should be text")
        return cls(kind=value["kind"], details={k: v for k, v in value.items() if k != "kind"})


@dataclass(frozen=True, kw_only=True)
class OutputCheck(Record):
    """One output of an artifact against the original's (converter/verify.py): cosine over all samples
    (the gate), per sample (worst, mean), max abs error; or `error` when the shapes differ."""

    name: str
    cosine: float
    cosine_worst_sample: float | None = omitted_if_none()
    cosine_mean_sample: float | None = omitted_if_none()
    max_abs_error: float | None = omitted_if_none()
    error: str | None = omitted_if_none()


# An output within this of the original's everywhere matches it whatever its cosine: on samples where
# the original's output is itself at rounding level (a text detector's probability map of a photo with
# no text: 1e-7 everywhere), the cosine measures rounding noise, not the artifact.
NOISE_FLOOR = 1e-5


def _within_noise(output: OutputCheck) -> bool:
    return output.max_abs_error is not None and output.max_abs_error <= NOISE_FLOOR


@dataclass(frozen=True, kw_only=True)
class Verification(Record):
    """An artifact run on the verification samples beside the original (converter/verify.verify)."""

    data: str  # "eval", "calibration" or "random inputs"
    metric: str | None
    original: float | None  # the original's metric
    artifact: float | None  # the artifact's
    samples: int
    outputs: tuple[OutputCheck, ...]
    cosine_min: float  # the least similar output
    max_abs_error: float
    cosine: float | None = omitted_if_none()  # embeddings: mean cosine to the original's
    agreement: float | None = omitted_if_none()  # class scores: arg-max agreement, %
    drop: float | None = omitted_if_none()  # with a metric: original - artifact

    def below(self, limit: float) -> OutputCheck | None:
        """The first output whose cosine to the original's is below `limit` (and that differs from the
        original's by more than NOISE_FLOOR somewhere), or None. A NaN cosine (an output of inf or NaN)
        is below any limit."""
        return next((o for o in self.outputs if not o.cosine >= limit and not _within_noise(o)), None)


@dataclass(frozen=True, kw_only=True)
class Latency(Record, Measurement):
    """Host latency of a model (targets/latency.Measurement) and how long measuring it took."""

    profile_s: float | None = omitted_if_none()


# What a reader looks into in the free-form parts: "key?" may be missing or null, [shape] is a list of
# that shape, {str: shape} a mapping of names to it.
NUMBER = (int, float)
TARGET_SHAPE = {"p50_ms?": NUMBER, "source?": str, "note?": str, "device?": str, "threads?": int,
                "runs_format?": bool, "energy_mj?": NUMBER, "energy_source?": str, "stale_measurement?": str,
                "estimate?": {"p50_ms?": NUMBER, "error_pct?": NUMBER},
                "mcu_fit?": {"fits": bool, "ram_needed_bytes": int, "flash_needed_bytes": int},
                "layers?": [{"name": str, "ms": NUMBER}]}  # fmt: skip
SENSITIVITY_SHAPE = {"tensor": str, "nodes": [str], "sqnr_db?": NUMBER, "channel_sqnr_db?": NUMBER,
                     "metric_change?": NUMBER}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Artifact(Record):
    """One exported file (exporters.artifact_entry) and everything measured on it."""

    format: str
    path: str  # where it is in the output folder
    size_bytes: int  # the model's size: with companions that hold weights (OpenVINO's .bin)
    sha256: str
    precision: str  # fp32, fp16, int8, int8-dynamic, binary ...
    engine: str | None  # the quantizer (or converter) that made it
    files: tuple[FileRecord, ...] | None = omitted_if_none()  # companions: weights .bin, .h/.cc
    quantization: JSON | None = omitted_if_none()  # what the quantizer did (as in the manifest)
    verify: Verification | None = omitted_if_none()
    emulated: dict[str, JSON] | None = omitted_if_none()  # target: its ARM run (targets/emulate.py)
    latency: Latency | None = omitted_if_none()
    targets: dict[str, JSON] | None = shaped({str: TARGET_SHAPE})  # target: cost-model estimate

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True)
class Original(Record):
    """The original model on the verification samples: its metric (None without labels) and size."""

    metric: str | None
    score: float | None
    size_bytes: int


@dataclass(frozen=True, kw_only=True)
class Stage(Record):
    """The model after one step (the first row is the original, the last the first artifact): what it
    costs and how close it stays to the original."""

    after: str
    macs: float | None = None
    params: int | None = None
    size_bytes: int
    metric: str | None = None
    score: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    cosine_min: float | None = None
    p50_ms: float | None = omitted_if_none()


@dataclass(frozen=True, kw_only=True)
class Report(Record):
    """A conversion: report.json. Only `artifacts` is required of a report read back (what `edgesmith
    report` needs); convert writes the rest whenever it has it."""

    source: SourceRecord | None = omitted_if_none()
    recipe: JSON | None = shaped({"profile?": {"targets?": [str]}})  # as Recipe.to_dict wrote it
    steps: tuple[StepRecord, ...] = ()
    artifacts: tuple[Artifact, ...]
    environment: JSON | None = omitted_if_none()  # tool versions, python, machine
    sensitivity_skipped: str | None = omitted_if_none()  # why there is no `sensitivity`
    sensitivity: tuple[JSON, ...] | None = shaped([SENSITIVITY_SHAPE])  # converter/sensitivity.py
    accuracy_search: JSON | None = omitted_if_none()  # converter/accuracy.py: what it kept float
    hf_folder: str | None = omitted_if_none()  # a changed Hugging Face model, saved as a model folder
    fastest: JSON | None = omitted_if_none()  # target: every runtime x precision (converter/fastest.py)
    verify: Verification | None = omitted_if_none()  # the first artifact's
    original: Original | None = omitted_if_none()
    emulation: JSON | None = omitted_if_none()  # {"skipped": why} when ARM emulation could not run
    original_latency: Latency | None = omitted_if_none()
    original_targets: dict[str, JSON] | None = shaped({str: TARGET_SHAPE})
    stages: tuple[Stage, ...] | None = omitted_if_none()


def write_report(report: Report, folder: Path) -> Path:
    """FOLDER/report.json: the report's JSON form, indented, keys in field order."""
    path = folder / "report.json"
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return path


def read_report(source: Path) -> Report:
    """report.json as a `Report`: a truncated, edited or foreign file is one InputError naming the
    first field that is wrong."""
    fix = "run `edgesmith convert` again to rewrite it"
    try:
        parsed = json.loads(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{source} is not valid JSON ({exc}); it may be truncated: {fix}") from None
    try:
        return Report.from_json(parsed)
    except Malformed as exc:
        raise InputError(f"{source} is not a report edgesmith wrote: {exc}; {fix}") from None


def mismatch(value: Any, shape: Any, where: str) -> str | None:
    """Why `value` does not have `shape`, or None."""
    if isinstance(shape, list):
        if not isinstance(value, (list, tuple)):
            return f"{where} should be a list"
        return next((m for i, v in enumerate(value) if (m := mismatch(v, shape[0], f"{where}[{i}]"))), None)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where} should be an object"
        if str in shape:
            items = ((f"{where}.{k}", v, shape[str]) for k, v in value.items())
        else:
            missing = [k for k in shape if not k.endswith("?") and k not in value]
            if missing:
                return f"{where} has no '{missing[0]}'"
            items = ((f"{where}.{k.rstrip('?')}", value.get(k.rstrip("?")), s) for k, s in shape.items()
                     if not (k.endswith("?") and value.get(k.rstrip("?")) is None))  # fmt: skip
        return next((m for w, v, s in items if (m := mismatch(v, s, w))), None)
    if isinstance(value, bool) and shape is not bool:
        return f"{where} should be {_name(shape)}, not true/false"
    if not isinstance(value, shape):
        return f"{where} should be {_name(shape)}, not {json.dumps(value)[:40]}"
    return None


def _name(shape: Any) -> str:
    return "a number" if shape is NUMBER else {str: "text", int: "an integer", bool: "true/false"}[shape]
