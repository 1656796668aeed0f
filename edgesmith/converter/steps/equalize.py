"""`quantize.equalize = true`: cross-layer equalization (CLE; Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction") of the float ONNX model before it is quantized, by
AIMET's ONNX implementation (aimet-onnx).

Why: a layer quantized per tensor shares one scale across its output channels, so a channel whose weights
span 100x less than the widest rounds to a few levels. Depthwise convolutions are where this bites
(MediaPipe's face detectors, MobileNets). For two layers joined by nothing, ReLU or PReLU (positively
homogeneous: f(s x) = s f(x) for s > 0), output channel i of the first can be divided by s_i and input
channel i of the second multiplied by s_i without changing what the pair computes; CLE picks
s_i = sqrt(r1_i / r2_i) (r: the channel's weight range), which equalizes both ranges.

What runs here, in order:
1. Initializers read by more than one Conv/Gemm/BatchNormalization get a copy each. tf2onnx shares one
   zero bias among all of MediaPipe's depthwise convolutions, and AIMET skips every layer set that
   holds a shared parameter (face-back: every set; with copies, 32 are scaled). Copies left unscaled are merged back.
2. AIMET's batch-norm folding (`fold_all_batch_norms_to_weight`), then its cross-layer scaling
   (`CrossLayerScaling.scale_model`: chains of Conv/ConvTranspose, depthwise triples included; AIMET
   scales no Gemm/MatMul).
3. The result is run beside the input on one batch of real data: it must compute the same outputs
   (relative error <= `TOLERANCE`), else it is an internal error and nothing is written.

Left out of AIMET's `equalize_model` on purpose: it also replaces ReLU6 by ReLU (which changes the
model) and folds high biases into the next layer (exact only where its Gaussian assumption about the
batch-norm statistics holds). Without them the equalized model is the original to float rounding.

Applied to the float model every export's quantizer starts from (`plan.run`): ONNX (ONNX Runtime, NNCF),
OpenVINO (NNCF, converted from the equalized ONNX) and TFLite converted from ONNX. A `.tflite` source's
TFLite export quantizes the file itself, so equalize is refused there (`check`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ...errors import InputError, require
from ..handle import ModelHandle

TOLERANCE = 1e-4  # the largest relative output change accepted (float rounding of rescaled weights)
PARAMETERIZED = ("Conv", "ConvTranspose", "Gemm", "BatchNormalization")
INSTALL = "pip install --no-deps aimet-onnx==2.42.0 bokeh tornado xyzservices"


def check(export_format: str, source_kind: str) -> None:
    """Refuse, in one line, an export whose quantizer never sees the equalized ONNX model."""
    if export_format in ("tflite", "c-array") and source_kind == "tflite":
        raise InputError(
            f"quantize.equalize rescales the ONNX model, but the {export_format} export of a .tflite source "
            "quantizes the .tflite itself; remove equalize or export onnx/openvino"
        )


def equalized(model: ModelHandle, workdir: Path, data=None) -> tuple[ModelHandle, dict]:
    """`model` cross-layer equalized (written once in `workdir`), and the report: batch norms folded,
    layer sets scaled, the relative output change measured on the first batch of `data` (if any)."""
    if model.path.suffix != ".onnx":
        raise InputError(
            f"quantize.equalize needs an ONNX model and this one has none ({model.path.name}); remove equalize"
        )
    onnx = require("onnx", "convert")
    proto = onnx.load(str(model.path))
    copies = _unshare(proto)
    folded, sets = _equalize(proto)
    kept = _reshare(proto, copies)
    out = workdir / f"{model.path.stem}.equalized.onnx"
    onnx.save(proto, str(out))
    report = {
        "engine": f"aimet-onnx {_version()} (batch-norm folding + cross-layer scaling)",
        "batch_norms_folded": folded,
        "layer_sets_scaled": len(sets),
        "layers_scaled": sorted({name for layers in sets for name in layers}),
        "parameters_copied": kept,  # shared parameters that each layer now holds scaled
    }
    batch = next(iter(data.batches()), None) if data is not None else None
    if batch is not None:
        report["max_relative_change"] = _check_exact(model.path, out, batch)
    return ModelHandle(out, model.precision), report


def _unshare(proto) -> dict[str, str]:
    """Give every Conv/Gemm/BatchNormalization its own copy of an initializer other nodes read too (AIMET
    scales no layer with a shared parameter); {copy's name: the original's}."""
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    seen: set[str] = set()
    copies: dict[str, str] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name not in initializers:
                continue
            if name in seen and node.op_type in PARAMETERIZED:
                tensor = copy.deepcopy(initializers[name])
                tensor.name = f"{name}__{node.name or node.output[0]}"
                graph.initializer.append(tensor)
                node.input[index] = tensor.name
                copies[tensor.name] = name
            seen.add(name)
    return copies


def _reshare(proto, copies: dict[str, str]) -> int:
    """Undo `_unshare` for the copies equalization left as they were (no duplicated weights in the
    artifact); how many copies stay (scaled, so now different from the original)."""
    from onnx import numpy_helper

    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    same = {
        name: original
        for name, original in copies.items()
        if np.array_equal(
            numpy_helper.to_array(initializers[name]), numpy_helper.to_array(initializers[original])
        )
    }
    for node in graph.node:
        node.input[:] = [same.get(name, name) for name in node.input]
    for name in same:
        graph.initializer.remove(initializers[name])
    return len(copies) - len(same)


def _equalize(proto) -> tuple[int, list[list[str]]]:
    """AIMET's batch-norm folding and cross-layer scaling, in place; (batch norms folded, the names of the
    layers of each set scaled)."""
    why = f"cross-layer equalization uses AIMET's: {INSTALL}"
    try:
        from aimet_onnx.batch_norm_fold import fold_all_batch_norms_to_weight
        from aimet_onnx.cross_layer_equalization import CrossLayerScaling
    except ImportError as exc:
        raise InputError(f"'aimet_onnx' is not installed ({why})") from exc
    try:
        conv_bn, bn_conv = fold_all_batch_norms_to_weight(proto)
        sets = CrossLayerScaling(proto).scale_model()
    except Exception as exc:  # AIMET's graph reader on a graph it does not know
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise RuntimeError(
            f"AIMET's cross-layer equalization failed on this model ({cause}); remove quantize.equalize"
        ) from exc
    return len(conv_bn) + len(bn_conv), [_names(info) for info in sets]


def _names(info) -> list[str]:
    """The layer names of one AIMET ClsSetInfo (a pair, or a conv-depthwise-conv triple)."""
    names: list[str] = []
    for pair in info.cls_pair_info_list:
        for layer in (pair.layer1, pair.layer2):
            if layer.name not in names:
                names.append(layer.name)
    return names


def _check_exact(original: Path, equalized: Path, batch: dict[str, np.ndarray]) -> float:
    """The largest relative change of any output on `batch` (per output: max |a - b| / max |a|); an
    internal error past TOLERANCE, since CLE must not change what the float model computes."""
    ort = require("onnxruntime", "convert")

    def outputs(path: Path) -> list[np.ndarray]:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        return session.run(None, {k: v for k, v in batch.items() if k in names})

    change = 0.0
    for before, after in zip(outputs(original), outputs(equalized), strict=True):
        before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
        scale = float(np.abs(before).max()) or 1.0
        change = max(change, float(np.abs(before - after).max()) / scale)
    if not change <= TOLERANCE:
        raise RuntimeError(
            f"cross-layer equalization changed the float model's outputs (relative error {change:.2e} > "
            f"{TOLERANCE:g}); remove quantize.equalize"
        )
    return float(f"{change:.3g}")


def _version() -> str:
    from importlib.metadata import version

    return version("aimet-onnx")
