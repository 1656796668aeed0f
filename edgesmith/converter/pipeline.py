"""Run a recipe: load the source, apply the steps, export, verify, profile, write `report.json`.

Everything is written to a hidden staging folder first and moved into place at the end, so a failed
run leaves nothing behind and never touches an existing output folder or the input.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InputError, VerificationFailed
from .data.arrays import ArraySource
from .exporters import artifact_entry, onnx_export, write_manifest
from .handle import ModelHandle, file_info, sha256
from .outdir import OutputDir
from .recipe import Recipe
from .steps import HANDLERS, StepContext
from .steps.quantize import QuantizeConfig


def _needs_calibration(recipe: Recipe) -> bool:
    return any(isinstance(s, QuantizeConfig) and s.mode == "static" for s in recipe.steps)


def run(
    recipe: Recipe,
    model: Any,
    out: str | Path,
    force: bool = False,
    quiet: bool = False,
    example_inputs: tuple | None = None,
) -> dict:
    from . import frontends, profile_step, verify
    from .environment import versions

    model = model if model is not None else recipe.model.path
    if model is None:
        raise InputError("no model given: pass MODEL or set [model] path in the recipe")
    model_path = Path(model) if isinstance(model, (str, Path)) else None
    frontends.kind_of(model)  # a missing file or unknown format fails before anything else
    if _needs_calibration(recipe) and not recipe.calibration.path:
        raise InputError(
            "static INT8 needs calibration data: pass --calibration PATH (an .npz, .npy "
            "or image folder) or use --preset int8-dynamic"
        )
    input_hash = sha256(model_path) if model_path else None
    output = OutputDir(out, force, protect=(model_path,) if model_path else ())
    try:
        with tempfile.TemporaryDirectory(prefix="edgesmith-") as tmp:
            work = Path(tmp)
            source = frontends.load(model, work, example_inputs)
            cal_cfg = recipe.calibration
            calibration = None
            if cal_cfg.path:  # opened (and checked) before any long work starts
                calibration = ArraySource(
                    cal_cfg.path,
                    source.inputs,
                    "calibration",
                    cal_cfg.max_samples,
                    cal_cfg.batch_size,
                    cal_cfg.preprocess,
                )
                calibration.check_finite()
            evaluation = None
            if recipe.verify.eval:
                evaluation = ArraySource(
                    recipe.verify.eval,
                    source.inputs,
                    "eval",
                    recipe.verify.max_samples,
                    recipe.verify.batch_size,
                )
            ctx = StepContext(work, lambda: calibration, cal_cfg, quiet)
            handle, steps = source.onnx, []
            for config in recipe.steps:
                handle, step_report = _apply(config, handle, ctx)
                steps.append(step_report)
            report = {
                "source": {**file_info(model_path), "kind": source.kind}
                if model_path
                else {"path": None, "kind": source.kind, **file_info(source.onnx.path) | {"path": None}},
                "recipe": recipe.to_dict(),
                "steps": steps,
                "artifacts": [],
                "environment": versions(),
            }
            stem = model_path.stem if model_path else source.onnx.path.stem
            engine = next((s.get("engine") for s in steps if s.get("engine")), None)
            for export in recipe.exports:
                name = export.name or f"{stem}.{handle.precision}"
                path = onnx_export.export(handle, output.staging / name)
                manifest = _manifest(path, handle, source, recipe, steps, input_hash)
                write_manifest(path, manifest)
                report["artifacts"].append(artifact_entry(export.format, path, handle.precision, engine))
            if evaluation is not None:
                ref = verify.reference(source, evaluation, quiet)
                for entry in report["artifacts"]:
                    entry["verify"] = verify.verify(Path(entry["path"]), ref, evaluation, quiet)
                report["verify"] = report["artifacts"][0]["verify"]
                report["original"] = {
                    "metric": ref.metric,
                    "score": ref.score,
                    "size_bytes": source.onnx.size_bytes,
                }
            if recipe.profile.enabled:
                report["original_latency"] = profile_step.profile(source.onnx.path, recipe.profile)
                for entry in report["artifacts"]:
                    entry["latency"] = profile_step.profile(Path(entry["path"]), recipe.profile)
            _relativize(report, output.staging, output.path)
            (output.staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    except BaseException:
        output.discard()
        raise
    if model_path is not None and sha256(model_path) != input_hash:  # a step broke its contract
        output.discard()
        raise RuntimeError(f"internal error: {model_path} was modified during conversion")
    output.commit()
    _check_drop(report, recipe)
    return report


def _apply(config, handle: ModelHandle, ctx: StepContext):
    before = sha256(handle.path)
    result = HANDLERS[type(config)](config, handle, ctx)
    if sha256(handle.path) != before or result.model.path == handle.path:
        raise RuntimeError(f"step '{config.kind}' broke its contract: it must write a new file")
    sizes = {"size_before": handle.size_bytes, "size_after": result.model.size_bytes}
    return result.model, {"kind": config.kind, **result.report, **sizes}


def _manifest(path: Path, handle: ModelHandle, source, recipe: Recipe, steps, input_hash) -> dict:
    from ..runtime import load as load_session
    from .environment import versions

    session = load_session(path)
    preprocess = recipe.calibration.preprocess
    return {
        "format": "onnx",
        "precision": handle.precision,
        "inputs": [s.to_json() for s in session.inputs],
        "outputs": [s.to_json() for s in session.outputs],
        "quantization": next((s for s in steps if s["kind"] == "quantize"), None),
        "preprocess": preprocess.__dict__ if preprocess else None,
        "provenance": {
            "source_sha256": input_hash,
            "source_kind": source.kind,
            "recipe": recipe.to_dict(),
            "tools": versions(deterministic=True),
        },
    }


def _relativize(report: dict, staging: Path, final: Path) -> None:
    for entry in report["artifacts"]:
        entry["path"] = str(final / Path(entry["path"]).relative_to(staging))


def _check_drop(report: dict, recipe: Recipe) -> None:
    limit = recipe.verify.max_drop
    if limit is None:
        return
    for entry in report["artifacts"]:
        drop = entry.get("verify", {}).get("drop")
        if drop is not None and drop > limit:
            raise VerificationFailed(
                f"{entry['path']}: {entry['verify']['metric']} dropped {drop:.2f} "
                f"points, more than [verify] max_drop = {limit}; try "
                "calibration.method = 'percentile' or exclude sensitive layers"
            )
