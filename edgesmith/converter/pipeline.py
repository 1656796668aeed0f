"""Run a recipe: load the source, apply the steps, export each format, verify, profile, report.

Everything is written to a hidden staging folder first and moved into place at the end, so a failed
run leaves nothing behind and never touches an existing output folder or the input.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .._io import check_utf8_path, work_folder
from ..errors import InputError, InvalidModel, VerificationFailed
from ..runtime.session import check_feedable
from ..targets.records import (
    Artifact,
    FileRecord,
    Original,
    Report,
    SourceRecord,
    StepRecord,
    Verification,
    write_report,
)
from . import budget, checks, exporters, fastest, input_shapes, metrics, plan
from .data.arrays import ArraySource
from .handle import ModelHandle, file_info, sha256
from .outdir import OutputDir
from .recipe import Recipe
from .steps import HANDLERS, ExportContext, StepContext
from .steps.base import Gate, returned, run_facts
from .steps.quantize import QuantizeConfig


def _split_steps(recipe: Recipe) -> tuple[list, list, QuantizeConfig | None]:
    """(PyTorch steps, ONNX steps, the quantize step). PyTorch steps run first, on the module; quantize
    comes last: each export applies it with its format's quantizer (converter/plan.py)."""
    steps = list(recipe.steps)
    quantize = steps.pop() if steps and isinstance(steps[-1], QuantizeConfig) else None
    if any(isinstance(s, QuantizeConfig) for s in steps):
        raise InputError("a recipe may have one quantize step, and it must be the last step")
    for step in steps:  # a developer's declaration, not the user's recipe: an internal error
        if step.produces != step.consumes:
            raise RuntimeError(
                f"internal error: step '{step.kind}' consumes {step.consumes} and produces {step.produces}; "
                "the pipeline runs PyTorch steps, exports once, then runs ONNX steps (docs/adding_a_step.md)"
            )
    kinds = [s.consumes for s in steps]
    first_onnx = next((i for i, kind in enumerate(kinds) if kind != "torch"), len(kinds))
    if "torch" in kinds[first_onnx:]:
        raise InputError("PyTorch steps (prune, distill, binarize) must come before ONNX steps in the recipe")
    if any(s.kind == "qat" for s in steps) and not (
        isinstance(quantize, QuantizeConfig) and quantize.mode == "static"
    ):
        raise InputError(
            "qat trains the model for static INT8: end the recipe with a quantize step, mode = 'static' "
            "(or use --preset pruned30-qat-int8)"
        )
    return [s for s in steps if s.consumes == "torch"], [s for s in steps if s.consumes != "torch"], quantize  # type: ignore[return-value]  # fmt: skip


def _check_step_data(steps: list, recipe: Recipe) -> None:
    """Steps that train or score on data, without any: say so before a model is loaded."""
    if recipe.calibration.path:
        return
    for step in steps:
        trains = step.kind in ("distill", "qat", "binarize") and not getattr(step, "data", None)
        if trains or (step.kind == "prune" and step.criterion == "taylor"):
            what = "prune.criterion = 'taylor'" if step.kind == "prune" else step.kind
            raise InputError(
                f"{what} needs data: pass --calibration PATH (an .npz, .npy, image folder, or .txt of "
                f"sentences for a text model) or set {step.kind}.data"
            )


def _torch_stage(steps: list, source, ctx: StepContext):
    """Run the PyTorch-level steps on the source module, then export the result to ONNX. Returns the
    source the exporters work from (the changed model), the context and the step reports; verification
    still compares every artifact with the original `source`."""
    if not steps:
        return source, ctx, []
    from .frontends import torch_frontend
    from .handle import TorchHandle

    batch = None  # a fixed-batch program's results are exported at its batch: same input signature
    if source.module is None and source.kind in ("pt2", "torch"):  # rebuild the layers the steps change
        from .frontends import torch_lift

        batch = torch_lift.static_batch(source.native)
        source = dataclasses.replace(
            source, module=torch_lift.lift(source.native), example=torch_lift.example_inputs(source.native)
        )
    if source.module is None:
        raise InputError(
            f"step '{steps[0].kind}' changes a PyTorch module, and a {source.kind} file holds none: "
            "start from the PyTorch model (a .pt2, or edgesmith.convert(module, example_inputs=...) in Python)"
        )
    ctx = dataclasses.replace(ctx, original=source.module)
    handle, before = TorchHandle(source.module, source.example), _state_hash(source.module)
    reports: list[StepRecord] = []
    for i, config in enumerate(steps):
        result = _run_torch_step(config, handle, ctx, source, tuple(steps[:i]))
        handle = result.model
        # each step's result is exported, so the report can show what every step bought
        folder = ctx.workdir / f"after-{i + 1}-{config.kind}"
        folder.mkdir()
        changed = torch_frontend.load_module(handle.module, folder, handle.example, batch=batch)
        reports.append(
            StepRecord(kind=config.kind, details=dict(result.report), stage_onnx=changed.onnx.path)
        )
    if _state_hash(source.module) != before:
        raise RuntimeError("internal error: a PyTorch step modified the original module")
    onnx = ModelHandle(changed.onnx.path, handle.precision)
    return dataclasses.replace(changed, onnx=onnx, qat=handle.qat), ctx, reports


def _run_torch_step(config, handle, ctx: StepContext, source, done: tuple):
    """One PyTorch step, or its result from the step cache when a sweep or tune turned that on (`done`:
    the steps before it, part of the key). See step_cache.py."""
    from . import step_cache

    result = step_cache.run(HANDLERS[type(config)], config, handle, ctx, source, done)
    return returned(f"step '{config.kind}'", config.produces, result)


def _state_hash(module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _open_data(recipe: Recipe, source) -> tuple[ArraySource | None, ArraySource | None, ArraySource | None]:
    """Calibration data, eval data and the calibration samples held out from calibration (`_held_out`;
    None with an eval set), opened and checked before any long work starts."""
    cal, ver = recipe.calibration, recipe.verify
    calibration = evaluation = held_out = None
    tokenize = getattr(source.module, "tokenize", None)  # text models (Hugging Face folders): .txt data
    if cal.path:
        calibration = ArraySource(cal.path, source.inputs, "calibration", cal.max_samples, cal.batch_size,
                                  cal.preprocess, tokenize=tokenize)  # fmt: skip
        calibration.check_finite()
    if ver.eval:
        evaluation = ArraySource(ver.eval, source.inputs, "eval", ver.max_samples, ver.batch_size,
                                 tokenize=tokenize)  # fmt: skip
    elif calibration is not None and _calibrates(recipe):
        held_out = _held_out(calibration, ver.max_samples or VERIFY_ON_CALIBRATION)
    return calibration, evaluation, held_out


VERIFY_ON_CALIBRATION = 64  # samples of the calibration data that verify artifacts when no eval set is given
HOLD_OUT_FROM = 8  # calibration sets at least this large give a quarter of their samples to verification
UNCALIBRATED = ("dynamic", "fp16")  # quantize modes that read no calibration data (but the rescue's ranking)


def _calibrates(recipe: Recipe) -> bool:
    """Whether the calibration samples shape the artifact (static INT8 ranges, a PyTorch step training on
    them): only then are some held out from it. int8-dynamic, fp16 and a plain export never read them,
    so every sample verifies, none of them seen."""
    return any(getattr(step, "mode", None) not in UNCALIBRATED for step in recipe.steps)


def _held_out(calibration: ArraySource, most: int) -> ArraySource | None:
    """Every 4th calibration sample (a quarter, at most `most`, whole fixed batches) is held out from
    calibration, so the gate sees inputs the quantizer did not; None (nothing held out) when there are
    fewer than 8."""
    step = 1 if calibration.whole else calibration.fixed_batch or 1
    count = min(len(calibration) // 4, most) // step * step
    if len(calibration) < HOLD_OUT_FROM or count == 0:
        return None
    return calibration.split_off(count, "held-out calibration")


def _verification_data(recipe: Recipe, source, evaluation: ArraySource | None,
                       calibration: ArraySource | None = None, held_out: ArraySource | None = None):  # fmt: skip
    """What every artifact is compared with the original on: the eval set; else calibration samples, at
    most 64 (`[verify] max_samples`): those held out from calibration and then those it calibrated on, the
    gate holding each output on the worst of the two parts (verify.Joined). The held-out ones are inputs
    the quantizer never saw; the others add the variety a few samples lack (on 4 held-out crops a
    face detector's INT8 passed at 0.985 and was 0.95 on others). Else seeded random inputs (a run never
    skips verification)."""
    from . import verify

    if evaluation is not None:
        return evaluation
    if calibration is None:
        return verify.RandomSamples(source.inputs)
    most = recipe.verify.max_samples or VERIFY_ON_CALIBRATION
    seen = len(held_out) if held_out is not None else 0
    calibrated = calibration.head(most - seen, "calibration") if most > seen else None
    if held_out is None:
        return verify.Joined([calibrated], "calibration")
    if calibrated is None or not len(calibrated):
        return held_out
    what = f"calibration: {seen} held out, {len(calibrated)} calibrated on"
    return verify.Joined([held_out, calibrated], what)


def run(recipe: Recipe, model: Any, out: str | Path, force: bool = False, quiet: bool = False,
        example_inputs: tuple | None = None) -> Report:  # fmt: skip
    from . import frontends

    model = model if model is not None else recipe.model.path
    if model is None:
        raise InputError("no model given: pass MODEL or set [model] path in the recipe")
    model_path = Path(model) if isinstance(model, (str, Path)) else None
    kind = frontends.kind_of(model)  # a missing file or unknown format fails before anything else
    if model_path is not None:
        check_utf8_path(model_path, "the model")
    torch_steps, steps, quantize = _split_steps(recipe)
    _check_step_data(torch_steps, recipe)
    metrics.resolve(recipe.verify.metric)  # a user's module:function that does not import fails now
    # what no quantizer can do for an export (or without data) is refused now, before the model is loaded
    plan.exports(recipe.exports, quantize, plan.recipe_facts(recipe, model, kind, bool(steps)))
    input_hash = sha256(model_path) if model_path else None
    output = OutputDir(out, force, inputs=input_paths(recipe, model_path))
    try:
        with work_folder() as tmp:
            source = frontends.load(model, Path(tmp), example_inputs)
            check_feedable(source.inputs, model_path or "the model")  # text inputs, a huge declared shape
            calibration, evaluation, held_out = _open_data(recipe, source)
            source = input_shapes.resolve(
                source, recipe, calibration, evaluation, held_out
            )  # dynamic H/W ...
            ctx = StepContext(
                Path(tmp),
                lambda: calibration,  # type: ignore[arg-type,return-value]  # None without data: steps check
                recipe.calibration,
                quiet,
                devices=tuple(recipe.profile.targets),
            )  # the targets pick the INT8 types
            changed, ctx, step_reports = _torch_stage(torch_steps, source, ctx)
            handle = changed.onnx
            for config in steps:
                handle, step_report = _apply(config, handle, ctx)
                step_reports.append(step_report)
            report = _report(recipe, model_path, source, step_reports)
            found: dict = {}  # what the accuracy search and the fastest-format comparison add
            checked_on = _verification_data(recipe, source, evaluation, calibration, held_out)
            quantize = budget.meet_budget(quantize, handle, ctx, recipe, source, checked_on, found)
            stem = model_path.stem if model_path else source.onnx.path.stem
            hf_folder = None
            if torch_steps:
                hf_folder = _save_hf_folder(changed.module, output, f"{stem}-hf", model_path)
            reference = _Reference(source, checked_on, quiet, recipe.verify.metric)
            export_ctx = ExportContext(changed, ctx, gate=_gate(recipe, reference, checked_on))
            recipe = fastest.resolve(recipe, handle, quantize, export_ctx, found)  # targets, format auto
            artifacts: list[Artifact] = []
            for export_plan in plan.exports(recipe.exports, quantize, run_facts(handle, export_ctx)):
                artifacts.append(_export(export_plan, handle, stem, output, export_ctx, artifacts, recipe,
                                         input_hash))  # fmt: skip
            report = _exported(report, artifacts, quantize is not None, found, hf_folder)
            report, ref = _verify(source, checked_on, report, reference(), quiet)
            report = checks.emulate_on_arm(report, recipe, checked_on)
            if recipe.profile.enabled:
                report = checks.profile_all(source, report, recipe, checks.one_sample(checked_on))
            if report.steps:
                report = dataclasses.replace(
                    report, stages=checks.stages(source, report, ref, checked_on, recipe, quiet)
                )
            report = _relativize(report, output.staging, output.path)
            write_report(report, output.staging)
            if recipe.profile.enabled and recipe.profile.targets:
                _html_report(output, recipe)
    except BaseException:
        output.discard()
        raise
    if model_path is not None and sha256(model_path) != input_hash:  # a step broke its contract
        output.discard()
        raise RuntimeError(f"internal error: {model_path} was modified during conversion")
    try:
        checks.check_gate(report, recipe)
    except VerificationFailed as exc:  # the previous output stays; this run goes beside it
        kept = output.reject()
        raise VerificationFailed(f"{exc}. {output.path} was left as it was; this run is in {kept}") from None
    output.commit()
    return report


def input_paths(recipe: Recipe, model_path: Path | None) -> tuple[Path, ...]:
    """Every file or folder the run reads: the output may neither replace nor go inside one."""
    paths = [model_path, recipe.calibration.path, recipe.verify.eval, getattr(recipe, "source_file", None)]
    paths += [getattr(step, "data", None) for step in recipe.steps]  # distill/binarize training data
    return tuple(Path(p) for p in paths if isinstance(p, (str, Path)) and str(p))


def _save_hf_folder(module, output: OutputDir, name: str, model_path: Path | None) -> str | None:
    """A changed Hugging Face model is also written as a model folder (config.json + safetensors, the
    tokenizer files copied), so it can be reloaded, fine-tuned or converted again. Returns where it
    will be (None for other models)."""
    from .frontends import hf_frontend

    if not hf_frontend.is_encoder(module):
        return None
    hf_frontend.save_folder(module, output.staging / name, model_path)
    return str(output.path / name)


def _apply(config, handle: ModelHandle, ctx: StepContext) -> tuple[ModelHandle, StepRecord]:
    before = sha256(handle.path)
    result = returned(f"step '{config.kind}'", config.produces, HANDLERS[type(config)](config, handle, ctx))
    if sha256(handle.path) != before or result.model.path == handle.path:
        raise RuntimeError(f"step '{config.kind}' broke its contract: it must write a new file")
    sizes = {"size_before": handle.size_bytes, "size_after": result.model.size_bytes}
    return result.model, StepRecord(kind=config.kind, details={**result.report, **sizes},
                                    stage_onnx=result.model.path)  # fmt: skip


def _report(recipe: Recipe, model_path: Path | None, source, steps: list[StepRecord]) -> Report:
    """The report before export: the source, the recipe as given (`format = "auto"` unresolved) and
    the steps that ran."""
    from .environment import versions

    origin = file_info(model_path) if model_path else {**file_info(source.onnx.path), "path": None}
    source_record = SourceRecord(**origin, fixes=tuple(source.notes) or None, kind=source.kind)
    return Report(source=source_record, recipe=recipe.to_dict(), steps=tuple(steps), artifacts=(),
                  environment=versions())  # fmt: skip


def _exported(report: Report, artifacts: list[Artifact], quantized: bool, found: dict,
              hf_folder: str | None) -> Report:  # fmt: skip
    """The report with the artifacts, the quantize step's entry (the first artifact's quantization
    and each format's engine: each exporter applies the step its own way), and what the accuracy
    search and the fastest-format comparison `found` (keyed as in report.json)."""
    steps = report.steps
    if quantized:
        engines = {a.format: a.engine for a in artifacts}
        steps += (
            StepRecord(kind="quantize", details={**(artifacts[0].quantization or {}), "engines": engines}),
        )
    sensitivity = found.get("sensitivity")
    return dataclasses.replace(
        report,
        steps=steps,
        artifacts=tuple(artifacts),
        sensitivity_skipped=found.get("sensitivity_skipped"),
        sensitivity=None if sensitivity is None else tuple(sensitivity),
        accuracy_search=found.get("accuracy_search"),
        hf_folder=hf_folder,
        fastest=found.get("fastest"),
    )


def _export(export_plan, handle, stem, output, ctx, artifacts, recipe, input_hash) -> Artifact:
    """Export one format (and quantize it, as the plan says) into the staging folder, with its
    manifest; `artifacts` are the ones written before (two exports may not write one file)."""
    config = export_plan.export
    dest = output.staging / (config.name or f"{stem}.{export_plan.precision}")
    exported = plan.run(export_plan, handle, dest, ctx)
    if str(exported.path) in {a.path for a in artifacts}:
        raise InputError(f"two exports write {exported.path.name}; give one of them a `name`")
    exporters.write_manifest(
        exported.path, _manifest(exported, config.format, ctx.source, recipe, input_hash)
    )
    entry = exporters.artifact_entry(config.format, exported)
    files = entry.pop("files", None)
    return Artifact(**entry, files=None if files is None else tuple(FileRecord(**f) for f in files),
                    quantization=exported.quantization or None)  # fmt: skip


class _Reference:
    """The original's outputs on the verification data, computed at the first call (by a quantizer's
    gate, or by verification after the exports) and kept."""

    def __init__(self, source, data, quiet: bool, metric: str):
        self.source, self.data, self.quiet, self.metric = source, data, quiet, metric
        self.value: Any = None  # verify.Reference

    def __call__(self):
        from . import verify

        if self.value is None:
            self.value = verify.reference(self.source, self.data, self.quiet, self.metric)
        return self.value


def _gate(recipe: Recipe, reference: _Reference, data) -> Gate:
    """The verification gate as quantizers can apply it to their candidates (steps/base.Gate)."""
    from . import verify

    def measure(path: Path) -> Verification:
        return Verification.from_json(verify.verify(path, reference(), data, quiet=True))

    return Gate(measure, lambda precision: checks.cosine_bar(recipe, precision), recipe.verify.max_drop, data)


def _verify(source, data, report: Report, ref, quiet: bool):
    """Every artifact against the original on `data` (`ref`: the original's outputs on it): (the report
    with `verify` on each artifact, the first one's as the report's, and the original's metric; `ref`)."""
    from . import verify

    artifacts = tuple(
        dataclasses.replace(a, verify=Verification.from_json(verify.verify(Path(a.path), ref, data, quiet)))
        for a in report.artifacts
    )
    original = Original(metric=ref.metric, score=ref.score, size_bytes=source.onnx.size_bytes)
    return dataclasses.replace(
        report, artifacts=artifacts, verify=artifacts[0].verify, original=original
    ), ref


def _html_report(output: OutputDir, recipe: Recipe) -> None:
    """report.html next to report.json; artifact paths in report.json already point at the final folder,
    so the report reads the staged copies by file name."""
    from ..targets.report import write

    write(output.staging, recipe.profile.targets)


def _manifest(exported, fmt: str, source, recipe: Recipe, input_hash) -> dict:
    from ..runtime import load as load_session
    from .environment import versions

    try:
        session = load_session(exported.path)
    except InvalidModel as exc:  # we wrote it: not the user's input
        cause = str(exc).split("(", 1)[-1].rsplit(")", 1)[0]
        raise RuntimeError(
            f"the {fmt} exporter wrote {exported.path.name}, which its runtime refuses ({cause})"
        ) from exc
    preprocess = recipe.calibration.preprocess
    return {
        "format": fmt,
        "precision": exported.precision,
        "inputs": [s.to_json() for s in session.inputs],
        "outputs": [s.to_json() for s in session.outputs],
        "quantization": exported.quantization,
        "preprocess": preprocess.__dict__ if preprocess else None,
        "provenance": {
            "source_sha256": input_hash,
            "source_kind": source.kind,
            "recipe": recipe.to_dict(),
            "tools": versions(deterministic=True),
        },  # fmt: skip
    }


def _relativize(report: Report, staging: Path, final: Path) -> Report:
    """The report with artifact paths in the final output folder instead of the staging folder."""

    def moved(record):
        return dataclasses.replace(record, path=str(final / Path(record.path).relative_to(staging)))

    artifacts = tuple(
        dataclasses.replace(moved(a), files=None if a.files is None else tuple(moved(f) for f in a.files))
        for a in report.artifacts
    )
    return dataclasses.replace(report, artifacts=artifacts)
