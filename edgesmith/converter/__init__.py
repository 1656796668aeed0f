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
) -> Recipe:
    """A Recipe from a TOML file (or object), with a preset and data paths layered on top."""
    from .presets import steps_for

    if isinstance(recipe, Recipe):
        result = Recipe.from_dict(recipe.to_dict())  # a copy: the caller's object stays as it was
    elif recipe is not None:
        result = Recipe.load(recipe)
        result.source_file = Path(recipe)  # an input like the model: --out may not replace it
    else:  # no recipe: static INT8 when there is data to calibrate on, else export, verify and profile
        result = Recipe(steps=steps_for("int8" if calibration is not None or preset else "fp32"))
    if preset is not None:
        result.steps = steps_for(preset)
    if calibration is not None:
        result.calibration.path = str(calibration)
    if evaluation is not None:
        result.verify.eval = str(evaluation)
    if formats:
        from .recipe import ExportConfig

        result.exports = [ExportConfig(format=f) for f in formats]
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

    Returns the report that is also written to `out/report.json`.
    """
    from .pipeline import run

    return run(
        build_recipe(recipe, preset, calibration, evaluation), model, out, force, quiet, example_inputs
    )
