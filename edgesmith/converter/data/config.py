"""The recipe's data sections: `[calibration]` and its `[calibration.preprocess]`.

They live here, below both the recipe and the steps, because the data readers (`arrays.py`,
`images.py`) and the step context (`steps/base.py`) need them and the recipe imports the steps:
with the configs in `recipe.py`, reading data would import the recipe, which imports every step.
`recipe.py` assembles them into a `Recipe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..validate import Checked, spec


@dataclass(frozen=True)
class PreprocessConfig(Checked):
    """How to turn image files into model inputs: resize, scale, normalize, lay out."""

    section = "calibration.preprocess"

    size: list[int] | None = spec(None, ge=1, length=2)  # [height, width]; default: the model input's
    channels: Literal[1, 3] | None = None  # 1 = grayscale, 3 = RGB; default: the model input's
    scale: float = spec(1 / 255, gt=0)
    mean: list[float] = spec(default_factory=lambda: [0.0], nonempty=True)
    std: list[float] = spec(default_factory=lambda: [1.0], nonempty=True, nonzero=True)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "float64", "uint8", "int8"] = "float32"


@dataclass(frozen=True)
class CalibrationConfig(Checked):
    section = "calibration"

    path: str | None = None
    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    max_samples: int = spec(256, ge=1)
    batch_size: int = spec(16, ge=1)
    percentile: float = spec(99.999, gt=0, le=100)
    preprocess: PreprocessConfig | None = None
