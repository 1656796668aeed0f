"""Frontends turn what the user gives (an ONNX file, a `.pt2`, a torch module, Keras, a `.tflite`, a TF SavedModel
or Hugging Face folder) into a `Source`:
the original model, runnable for reference, plus an fp32 ONNX file the steps work on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import InputError
from .source import Source

SUFFIXES = {
    ".onnx": "onnx",
    ".pt2": "pt2",
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".tflite": "tflite",
}


def kind_of(model: Any) -> str:
    """'onnx', 'pt2', 'keras', 'tflite', 'savedmodel' (a TF SavedModel folder), 'hf' (a Hugging Face model
    folder) or 'torch', after checking a path exists and has a known suffix or, for a folder, a
    saved_model.pb or a config.json (cheap)."""
    if not isinstance(model, (str, Path)):
        return "torch"
    path = Path(model)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        from .hf_frontend import check_folder
        from .savedmodel_frontend import is_savedmodel

        if is_savedmodel(path):
            return "savedmodel"

        check_folder(path)
        return "hf"
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None and path.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt"):
        raise InputError(
            f"{path}: pickled PyTorch files are not loaded (unsafe, and they hold no "
            "graph); save the model with torch.export.save(...) as .pt2, or pass the "
            "module to edgesmith.convert() in Python"
        )
    if kind is None and path.suffix.lower() in (".jit", ".torchscript", ".ptl"):
        raise InputError(
            f"{path}: TorchScript archives are not loaded (they hold pickled code); export the model "
            "with torch.export.save(...) as .pt2 or torch.onnx.export(...) as .onnx"
        )
    if kind is None:
        raise InputError(f"{path}: unknown model format '{path.suffix}'; expected one of {sorted(SUFFIXES)}")
    return kind


def load(model: Any, workdir: Path, example_inputs: tuple | None = None) -> Source:
    """Dispatch on what `model` is: a path (by suffix) or a torch module / ExportedProgram."""
    kind = kind_of(model)
    if kind == "onnx":
        from . import onnx_frontend

        return onnx_frontend.load(Path(model), workdir)
    if kind == "keras":
        from . import keras_frontend

        return keras_frontend.load(Path(model), workdir)
    if kind == "tflite":
        from . import tflite_frontend

        return tflite_frontend.load(Path(model), workdir)
    if kind == "savedmodel":
        from . import savedmodel_frontend

        return savedmodel_frontend.load(Path(model), workdir)
    if kind == "hf":
        from . import hf_frontend

        return hf_frontend.load_folder(Path(model), workdir)
    from . import hf_frontend, torch_frontend

    if kind == "pt2":
        return torch_frontend.load_pt2(Path(model), workdir)
    if hf_frontend.is_encoder(model) or hf_frontend.is_bert_like(model):
        return hf_frontend.load_module(model, workdir, example_inputs)
    return torch_frontend.load_module(model, workdir, example_inputs)
