"""Sizes for the input axes a model leaves dynamic, other than the batch (the H/W of a detector
exported with dynamic axes, a sequence length ...).

They come from `[model] input_shapes` (`--input-shape NAME=1x3x320x320`), else from the calibration and
eval data, which must then agree on one shape. Never 1 by default: a model with an axis nothing
sizes is refused when a stage needs a size (profiling, cost-model estimates, TFLite export, which
would otherwise fold a 1x1 input and pool it to 0x0).

The sizes go into `Source.inputs` (the batch axis stays as the model has it), which profiling,
estimates and the TFLite exporter read; the ONNX and OpenVINO artifacts keep the source's dynamic axes.
"""

from __future__ import annotations

import dataclasses

from ..errors import InputError
from ..runtime.session import TensorSpec
from ..targets.latency import check_names, input_shape

FIXED_FORMATS = ("tflite", "c-array")  # formats that are written at one shape


def resolve(source, recipe, *datasets):
    """`source` with the dynamic non-batch axes of its inputs sized (see the module docstring)."""
    given = recipe.model.input_shapes or {}
    for name, sizes in given.items():
        if not isinstance(sizes, list) or not all(isinstance(d, int) and d > 0 for d in sizes):
            raise InputError(
                f"[model] input_shapes.{name} = {sizes!r} is not a list of sizes >= 1; e.g. [1, 3, 320, 320]"
            )
    check_names(given, [spec.name for spec in source.inputs])
    needed = recipe.profile.enabled or any(e.format in FIXED_FORMATS for e in recipe.exports)
    inputs = tuple(_sized(spec, given.get(spec.name), [d for d in datasets if d is not None], needed)
                   for spec in source.inputs)  # fmt: skip
    return source if inputs == source.inputs else dataclasses.replace(source, inputs=inputs)


def _sized(spec: TensorSpec, given: list[int] | None, datasets: list, needed: bool) -> TensorSpec:
    """`spec` with its dynamic non-batch axes sized by `given` or the data (all agreeing)."""
    if given:
        input_shape(spec.name, spec.shape, 1, {spec.name: given})  # its rank and fixed sizes must fit
    whole = any(spec.name in getattr(data, "whole", ()) for data in datasets)
    if all(isinstance(d, int) and d > 0 for d in spec.shape[0 if whole else 1 :]):
        return spec
    batch = () if whole else (spec.shape[0],)  # data fed whole sizes axis 0 too (arrays.fed_whole)
    seen = {"--input-shape": (*batch, *given[len(batch) :])} if given else {}
    seen |= {data.what: (*batch, *data.sample_shape(spec.name)) for data in datasets}
    if len(set(seen.values())) > 1:
        told = ", ".join(f"{what} {list(shape[len(batch) :])}" for what, shape in seen.items())
        raise InputError(
            f"input '{spec.name}' has dynamic sizes and they are given differently (per sample: {told}); "
            "give the data and --input-shape at one shape"
        )
    if not seen:
        if needed:  # refused now, not after the long work
            input_shape(spec.name, spec.shape)
        return spec
    sizes = next(iter(seen.values()))
    fitted = [d if isinstance(d, int) and d > 0 else n for d, n in zip(spec.shape, sizes, strict=True)]
    return dataclasses.replace(spec, shape=tuple(fitted))
