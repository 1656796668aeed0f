"""What `edgesmith tune` may vary for a model and target, and the recipe a point of it stands for.

The space (`Space.sample`, Optuna's define-by-run): the format the target runs; the quantization mode
(static/dynamic/fp16/weight-only/none) with, per mode, the calibration method, the weights' width,
keeping the first and/or last layer float, per-layer precision from the sensitivity ranking (static
INT8 to ONNX of a small model: the fewest most sensitive layers float that meet max_drop); for
PyTorch sources a pruning ratio with distillation steps and 1-bit layers; for Hugging Face encoders
a fraction of the heads and FFN neurons (`prune_transformer`) with distillation. `Space.named_seeds`
are the trials asked before the sampler proposes any (the presets first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..converter.recipe import ExportConfig, Recipe
from ..converter.steps.binarize import BinarizeConfig
from ..converter.steps.distill import DistillConfig
from ..converter.steps.prune import PruneConfig
from ..converter.steps.prune_transformer import TransformerPruneConfig
from ..converter.steps.quantize import QuantizeConfig
from ..errors import InputError, require

SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino"}
# The sensitivity search (converter/accuracy.py: rank the layers by SQNR, keep the fewest float that
# meet max_drop) re-quantizes and re-verifies a model many times: seconds to a minute for a CNN of a
# few MB, tens of minutes for a 90 MB transformer, too long for a trial.
SEARCH_MAX_BYTES = 20 * 2**20
FORMAT_MODULES = {"onnx": "onnxruntime", "tflite": "litert_torch", "openvino": "nncf"}  # what each needs
# Fractions of the MACs pruning removes. The light end matters: a preset that loses nothing (INT8 of
# an MNIST CNN) is dominated only by a point as accurate, and on MNISTNet 50 % cost 0.45 points after
# distilling on 256 calibration images (docs/scale.md), so lighter ratios are in the space too.
PRUNE = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
DISTILL_STEPS = (100, 300, 600)  # after pruning, on the calibration data or --train-data
# A Hugging Face encoder: the fraction of attention heads and of FFN neurons `prune_transformer`
# removes in every layer (docs/pruning.md: half of both, distilled, kept 81.1 of 82.0 STS-B points);
# 10 %: one head of 12, the lightest step from a preset that loses nothing
TRANSFORMER_PRUNE = (0.0, 0.1, 0.25, 0.5)
# 1-bit layers (the `binarize` step, every Conv2d/Linear but the first and last, trained with
# distillation on the calibration data): weights only, or weights and activations (which needs a
# BatchNorm before each binary layer; a model without fails that trial in one line)
BINARIZE: dict[str, Literal["float", "binary"] | None] = {
    "none": None,
    "weights": "float",
    "binary": "binary",
}
# Weight-only quantization (steps/weight_only.py: MatMul weights in 4 or 8 bits, one scale per 128
# input channels, activations float) for models whose weights are MatMuls: the smallest artifact of a
# transformer (all-MiniLM-L6-v2 at 4 bits, embeddings included: 12.1 MB of 90, STS-B within noise;
# docs/accuracy.md). ONNX and OpenVINO store it; TFLite has no such kernels (that trial fails in one line).
WEIGHT_BITS = (4, 8)
WEIGHT_ONLY_FORMATS = ("onnx", "openvino")


@dataclass(frozen=True)
class Space:
    """What the search may vary for this model and target."""

    formats: tuple[str, ...]
    layers: tuple[str, ...]  # compute nodes of an ONNX source, first to last (for `exclude`)
    torch: bool  # a PyTorch source: pruning and distillation are open
    static: bool  # calibration data given: static INT8 is open
    search: bool = False  # small enough for the sensitivity search per trial (see SEARCH_MAX_BYTES)
    mcu: bool = False  # TFLite Micro runs float32 and full-integer INT8 only (no hybrid, no fp16 kernels)
    transformer: bool = False  # a Hugging Face encoder: heads and FFN neurons pruning, then distillation
    matmuls: bool = False  # its weights are MatMuls' (an encoder, an ONNX transformer): weight-only is open
    trained: bool = False  # --train-data: pruned models are distilled on more than the calibration data

    @property
    def binarize(self) -> bool:
        """1-bit layers are open for PyTorch CNNs/MLPs exported to ONNX or OpenVINO (they store the bits;
        TFLite and TFLite Micro would keep float weights)."""
        return self.torch and not self.mcu and bool({"onnx", "openvino"} & set(self.formats))

    @property
    def weight_only(self) -> bool:
        """Weight-only INT4/INT8 is open for MatMul models going to a format that stores it."""
        return self.matmuls and not self.mcu and bool(set(WEIGHT_ONLY_FORMATS) & set(self.formats))

    @property
    def modes(self) -> list[str]:
        """The quantization modes the target can run; static needs calibration data."""
        modes = ["static", "none"] if self.mcu else ["static", "dynamic", "fp16", "weight-only", "none"]
        return [
            m for m in modes if (m != "static" or self.static) and (m != "weight-only" or self.weight_only)
        ]

    def sample(self, trial) -> None:
        """Optuna's define-by-run space: the parameters a trial depends on, conditionally."""
        fmt = trial.suggest_categorical("format", list(self.formats))
        binary = trial.suggest_categorical("binarize", list(BINARIZE)) if self.binarize else "none"
        # a binarized model is exported as it is: its 1-bit layers are the compression
        mode = trial.suggest_categorical("mode", self.modes) if binary == "none" else "none"
        if mode == "static":
            trial.suggest_categorical("calibration", ["minmax", "percentile", "entropy"])
            if self.search and fmt == "onnx":  # per-layer precision from the sensitivity ranking
                trial.suggest_categorical("layers", ["rule", "sensitivity"])
        if mode == "weight-only":
            trial.suggest_categorical("bits", list(WEIGHT_BITS))
        if mode in ("static", "dynamic") and self.layers:
            trial.suggest_categorical("keep_float", ["none", "first", "last", "first+last"])
        if self.torch or self.transformer:
            prune = trial.suggest_categorical("prune", list(TRANSFORMER_PRUNE if self.transformer else PRUNE))
            if prune:
                trial.suggest_categorical("distill_steps", list(DISTILL_STEPS))

    def presets(self) -> list[dict]:
        """The presets' parameters: the search starts from what a user would try by hand, and the
        front shows whether it found better."""
        return list(self.named_presets().values())

    def named_seeds(self) -> dict[str, dict]:
        """The trials run before the sampler proposes any: the presets, then (PyTorch sources) each
        preset with the lightest pruning and the shortest distillation.

        Why the neighbours: a preset that loses nothing (INT8 of an MNIST CNN) is dominated only by a
        point as accurate and cheaper, and the lightest pruning is the nearest such step from it
        (MNISTNet pruned 10 % and distilled 100 steps scores above the fp32 original). A sampler
        given 8-10 trials over ~1000 points drew it with fp16 but never with INT8 (docs/scale.md,
        "Tune, second round"). The neighbours share one pruning through the step cache, so all but
        the first cost a quantization and a verification.

        Last, where the space binarizes, the converter's `bnn-weights` preset (1-bit weights): the
        smallest point a user would try by hand, which a sampler with a few trials may not draw.
        It is a seed, not one of the presets the front is judged against (those quantize). Likewise,
        where weight-only is open, INT4 weight-only: the smallest point of a transformer.

        A transformer's pruned seed (dynamic INT8, 10 % of the heads and FFN neurons, the longest
        distillation) only with --train-data: distilled on 256 calibration sentences, 25 % lost 1.35
        STS-B points (docs/scale.md, session 7), and 2 epochs on 10k sentences won 50 % back to
        within 0.9 (docs/pruning.md)."""
        seeds = self.named_presets()
        if self.transformer and self.trained and "int8-dynamic" in seeds:
            light = {"prune": min(p for p in TRANSFORMER_PRUNE if p), "distill_steps": max(DISTILL_STEPS)}
            seeds[f"int8-dynamic + prune {light['prune']:.0%}"] = {**seeds["int8-dynamic"], **light}
        if self.torch:
            light = {"prune": min(p for p in PRUNE if p), "distill_steps": min(DISTILL_STEPS)}
            seeds |= {f"{name} + prune {light['prune']:.0%}": {**params, **light}
                      for name, params in self.named_presets().items()}  # fmt: skip
        if self.binarize:
            bits = next(f for f in self.formats if f in ("onnx", "openvino"))
            seeds["bnn-weights"] = {"format": bits, "binarize": "weights", "prune": 0.0}
        if self.weight_only:
            fmt = next(f for f in self.formats if f in WEIGHT_ONLY_FORMATS)
            pruning = {"prune": 0.0} if self.torch or self.transformer else {}
            seeds["int4 weight-only"] = {"format": fmt, "mode": "weight-only", "bits": 4, **pruning}
        return seeds

    def named_presets(self) -> dict[str, dict]:
        """int8, int8-dynamic and fp16 in the target's first format, those the target runs (an MCU:
        int8, and fp32 to compare with). Every parameter the space asks for is given, or Optuna
        would sample the rest."""
        fmt = self.formats[0]
        keep = {"keep_float": "none"} if self.layers else {}
        rule = {"layers": "rule"} if self.search and fmt == "onnx" else {}
        points = {
            "int8": {"format": fmt, "mode": "static", "calibration": "minmax", **keep, **rule},
            "int8-dynamic": {"format": fmt, "mode": "dynamic", **keep},
            "fp16": {"format": fmt, "mode": "fp16"},
            "fp32": {"format": fmt, "mode": "none"},
        }
        wanted = ["int8", "fp32"] if self.mcu else ["int8", "int8-dynamic", "fp16"]
        named = {k: points[k] for k in wanted if points[k]["mode"] in self.modes}
        if self.binarize:
            named = {k: {**p, "binarize": "none"} for k, p in named.items()}
        return {k: {**p, "prune": 0.0} if self.torch or self.transformer else p for k, p in named.items()}


def space_for(model: Path, target: str, calibration: str | None, train: str | None = None) -> Space:
    """The space for `model` on `target`: formats the target runs that an exporter is installed for."""
    import importlib.util

    from ..converter.frontends import kind_of
    from ..targets.spec import get

    spec = get(target)
    runs = spec.formats
    formats = tuple(
        f for suffix, f in SUFFIX_FORMATS.items()
        if suffix in runs and importlib.util.find_spec(FORMAT_MODULES[f]) is not None
    )  # fmt: skip
    if not formats:
        raise InputError(f"no exporter for a format {target} runs ({', '.join(runs)}) is installed; "
                         "run `pip install 'edgesmith[all]'`")  # fmt: skip
    kind = kind_of(model)
    small = model_bytes(model) <= SEARCH_MAX_BYTES
    layers, matmuls = _onnx_layers(model) if kind == "onnx" else ((), kind == "hf")
    return Space(formats, layers, kind in ("pt2", "torch"), calibration is not None, search=small,
                 mcu=spec.is_mcu, transformer=kind == "hf" and calibration is not None,
                 matmuls=matmuls, trained=train is not None)  # fmt: skip


def model_bytes(model: Path) -> int:
    """The model's size in bytes (a Hugging Face folder: its files')."""
    from ..converter.handle import file_info

    return file_info(model)["size_bytes"]


def _onnx_layers(model: Path) -> tuple[tuple[str, ...], bool]:
    """An ONNX model's compute nodes, first to last, and whether any is a MatMul of a constant weight."""
    onnx = require("onnx", "convert")
    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    layers = tuple(n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"))
    matmuls = any(n.op_type == "MatMul" and n.input[1] in constants for n in graph.node)
    return layers, matmuls


def recipe_for(params: dict, base: Recipe, space: Space, train: str | None = None) -> Recipe:
    """The recipe a trial's parameters stand for (what best-N.toml will hold); a pruned model is
    distilled on `train` (an absolute path) if given, else on the calibration data."""
    steps: list = []
    if params.get("prune") and space.transformer:  # distilled on the embeddings and every hidden state
        steps += [TransformerPruneConfig(heads=params["prune"], ffn=params["prune"]),
                  DistillConfig(losses=["embedding", "hidden"], epochs=1, min_steps=params["distill_steps"],
                                lr=2e-4, batch_size=32, data=train)]  # fmt: skip
    elif params.get("prune"):
        steps += [PruneConfig(target_macs=round(1 - params["prune"], 3)),
                  DistillConfig(epochs=1, min_steps=params["distill_steps"], lr=2e-3, data=train)]  # fmt: skip
    activations = BINARIZE[params.get("binarize", "none")]
    if activations is not None:
        steps.append(BinarizeConfig(activations=activations))
    mode = params.get("mode", "none")
    if mode != "none":
        keep = params.get("keep_float", "none")
        names = ([space.layers[0]] if "first" in keep else []) + (
            [space.layers[-1]] if "last" in keep else []
        )
        # the converter's default (`rescue`: sensitive layers back to float only when the artifact
        # misses the gate) unless the sensitivity search was drawn: the presets are the presets
        quantize = QuantizeConfig(
            mode=mode, exclude=[f"^{re.escape(n)}$" for n in names], bits=params.get("bits", 8)
        )
        steps.append(replace(quantize, search="auto") if params.get("layers") == "sensitivity" else quantize)
    calibration = base.calibration
    if params.get("calibration"):
        calibration = replace(calibration, method=params["calibration"])
    return replace(
        base, steps=steps, calibration=calibration, exports=[ExportConfig(format=params["format"])]
    )
