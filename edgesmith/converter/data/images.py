"""A folder of images plus a preprocessing spec -> model-ready float arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tomllib

from ...errors import InputError, require
from ...runtime.session import TensorSpec
from ..validate import build
from .config import PreprocessConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff")
SPEC_FILE = "preprocess.toml"


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
            "add images or pass an .npz/.npy file"
        )
    return files


def resolve_spec(folder: Path, spec: PreprocessConfig | None, model_input: TensorSpec) -> PreprocessConfig:
    """The recipe's spec, else the folder's preprocess.toml, else the model input's size and channels;
    missing size/channels are filled in from the model input."""
    if spec is None and (folder / SPEC_FILE).is_file():
        try:
            data = tomllib.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{folder / SPEC_FILE} is not valid TOML: {exc}") from exc
        spec = build(PreprocessConfig, data, "preprocess", source=str(folder / SPEC_FILE))
    spec = spec or PreprocessConfig()
    shape = model_input.shape
    if len(shape) != 4:
        raise InputError(
            f"image folders feed 4-D (N, C, H, W or N, H, W, C) inputs; the model input "
            f"'{model_input.name}' has shape {list(shape)}; pass an .npz instead"
        )
    nchw = spec.layout == "NCHW"
    channels, height, width = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
    if spec.size is None:
        if not (isinstance(height, int) and isinstance(width, int)):
            raise InputError("the model's image size is dynamic: set preprocess.size = [height, width]")
        spec = dataclasses.replace(spec, size=[height, width])
    if spec.channels is None:
        spec = dataclasses.replace(spec, channels=1 if channels == 1 else 3)
    return spec


def load_image(path: Path, spec: PreprocessConfig) -> np.ndarray:
    """One image as a float array in the spec's layout, without the batch axis."""
    image_module = require("PIL.Image", "convert", "reading calibration images")
    try:
        with image_module.open(path) as img:
            img = img.convert("L" if spec.channels == 1 else "RGB")
            assert spec.size is not None, "image_spec fills the size in"
            height, width = spec.size
            if img.size != (width, height):
                img = img.resize((width, height), image_module.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable image ({exc}); remove or replace it") from exc
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    pixels = (pixels * np.float32(spec.scale) - mean) / std
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=spec.dtype)
