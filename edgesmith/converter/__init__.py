"""Host-side conversion: `convert(model, preset="int8", calibration=..., eval=..., out=...)`.

Heavy frameworks (torch, onnx, onnxruntime's quantizer) are imported by the step that needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .recipe import Recipe


def build_recipe(
    recipe: str | Path | Recipe | None = None,
    preset: str | None = None,
    calibration: str | Path | None = None,
    evaluation: str | Path | None = None,
    formats: list[str] | None = None,
    model: str | Path | None = None,
    targets: list[str] | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    metric: str | None = None,
) -> Recipe:
    """A Recipe from a TOML file (or object), with a preset, data paths and the model layered on top.

    Recipes are frozen, so each layer is a `replace`, which checks the new value like a recipe's own.
    """
    from dataclasses import replace

    from .presets import steps_for

    if isinstance(recipe, Recipe):
        result = Recipe.from_dict(recipe.to_dict())  # a copy: the caller's lists stay as they were
    elif recipe is not None:
        result = Recipe.load(recipe)
    else:  # no recipe: static INT8 when there is data to calibrate on, else export, verify and profile
        result = Recipe(steps=steps_for("int8" if calibration is not None or preset else "fp32"))
    if preset is not None:
        result = replace(result, steps=steps_for(preset))
    if calibration is not None:
        result = replace(result, calibration=replace(result.calibration, path=str(calibration)))
    if evaluation is not None:
        result = replace(result, verify=replace(result.verify, eval=str(evaluation)))
    if metric is not None:  # --metric NAME: the task metric max_drop is in
        result = replace(result, verify=replace(result.verify, metric=metric))
    if formats:
        from .recipe import ExportConfig

        result = replace(result, exports=[ExportConfig(format=f) for f in formats])
    if model:  # the CLI's MODEL, when given
        result = replace(result, model=replace(result.model, path=str(model)))
    if targets:  # --target NAME ...: device estimates
        result = replace(result, profile=replace(result.profile, targets=list(targets)))
    if input_shapes:  # --input-shape NAME=DIMS ...: over the recipe's own
        shapes = {**(result.model.input_shapes or {}), **input_shapes}
        result = replace(result, model=replace(result.model, input_shapes=shapes))
    if recipe is not None and not isinstance(recipe, Recipe):
        # the recipe file is an input like the model: --out may not replace it (not part of the recipe)
        object.__setattr__(result, "source_file", Path(recipe))
    return result


def convert(
    model: Any,
    *,
    recipe: str | Path | Recipe | None = None,
    preset: str | None = None,
    calibration: str | Path | None = None,
    evaluation: str | Path | None = None,
    out: str | Path = "edgesmith-out",
    force: bool = False,
    quiet: bool = True,
    example_inputs: tuple | None = None,
) -> dict:
    """Compress, export, verify and profile `model` (a path, a torch module or ExportedProgram).

    Returns the report that is also written to `out/report.json`, as parsed JSON (the pipeline's typed
    record is `pipeline.run`'s result: targets/records.Report).
    """
    from .pipeline import run

    report = run(
        build_recipe(recipe, preset, calibration, evaluation), model, out, force, quiet, example_inputs
    )
    return report.to_json()
