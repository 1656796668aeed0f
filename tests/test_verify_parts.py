"""Verification without --eval: the held-out calibration samples and the calibrated-on ones, each
output held on the worst of the two parts; samples at rounding level of the output's scale match."""

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL


def _int8_on_dark_digits(model, digits: np.ndarray, out) -> str:
    """ONNX Runtime's static INT8 (QDQ) of `model`, calibrated on real digits (black background)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"input": d[None]} for d in digits])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ)
    return out


@pytest.fixture(scope="module")
def digits():
    return np.load(SHIPPED_CALIBRATION / "holdout.npz")["input"]


def test_a_bad_calibrated_on_sample_fails_an_artifact_the_held_out_samples_pass(digits, tmp_path):
    """16 real digits, one of them at 3x the contrast (an over-exposed scan, beyond the ranges the INT8
    model was calibrated on): it sits among the calibrated-on samples, the 4 held out are ordinary.
    The held-out part alone passes the artifact; the output's cosine is the worst part's, and fails."""
    from edgesmith.converter import frontends, verify
    from edgesmith.converter.data.arrays import ArraySource

    artifact = _int8_on_dark_digits(SHIPPED_MODEL, digits[100:132], tmp_path / "int8.onnx")
    samples = digits[:16].copy()
    samples[5] *= 3  # the same digit, over-exposed
    np.save(tmp_path / "cal.npy", samples)
    (tmp_path / "work").mkdir()
    source = frontends.load(SHIPPED_MODEL, tmp_path / "work", None)
    calibration = ArraySource(tmp_path / "cal.npy", source.inputs)
    held_out = calibration.split_off(4, "held-out calibration")  # every 4th: 3, 7, 11, 15
    data = verify.Joined([held_out, calibration.head(12, "calibration")], "calibration (4 + 12)")
    assert len(data) == 16 and data.batch_parts == [0, 1]

    only_held_out = verify.verify(artifact, verify.reference(source, held_out, True), held_out, True)
    both = verify.verify(artifact, verify.reference(source, data, True), data, True)
    [held], [worst] = only_held_out["outputs"], both["outputs"]
    assert held["cosine"] >= 0.99  # what the gate saw before: 4 ordinary held-out digits
    assert worst["cosine"] < 0.98 and both["cosine_min"] == worst["cosine"]  # the over-exposed digit
    # the calibrated-on part alone is what fails: its cosine is the output's
    calibrated = calibration.head(12, "calibration")
    alone = verify.verify(artifact, verify.reference(source, calibrated, True), calibrated, True)
    assert alone["outputs"][0]["cosine"] == pytest.approx(worst["cosine"], abs=1e-6)
    assert worst["cosine_worst_sample"] < 0.98 <= held["cosine_worst_sample"]


def test_the_parts_cosine_is_the_worst_not_the_pooled_one():
    """Pooled, a part with large outputs hides a part with small ones; per part, it cannot."""
    from edgesmith.converter import verify

    big = np.array([[10.0, 0.0, 0.0]])
    small_want, small_got = np.array([[0.0, 1.0, 0.0]]), np.array([[0.0, 0.6, 0.8]])  # cosine 0.6
    stat = verify._OutputStats("y", scale=10.0)
    stat.add(big, big, 1, part=0)
    stat.add(small_got, small_want, 1, part=1)
    assert stat.cosine() == pytest.approx(0.6)
    pooled = verify._OutputStats("y", scale=10.0)
    pooled.add(np.vstack([big, small_got]), np.vstack([big, small_want]), 2)
    assert pooled.cosine() > 0.99


def test_a_sample_at_rounding_level_of_the_outputs_scale_matches_whatever_its_cosine():
    """A text detector's map of a crop without text (4e-5 everywhere) beside one with text (up to 1):
    the artifact's rounding noise on the empty map has any cosine, and counts as a match; an error of
    1% of the scale on it does not."""
    from edgesmith.converter import verify

    rng = np.random.default_rng(0)
    text = rng.uniform(0, 1, (1, 64))
    empty = np.full((1, 64), 4e-5)
    noisy = empty + rng.normal(0, 3e-5, empty.shape)  # cosine to `empty` well below 0.98
    assert verify.cosines(noisy, empty)[0] < 0.98

    stat = verify._OutputStats("map", scale=1.0)
    stat.add(np.vstack([text, noisy]), np.vstack([text, empty]), 2)
    result = stat.to_json()
    assert result["cosine"] == 1.0 and result["cosine_worst_sample"] == 1.0
    assert result["max_abs_error"] == pytest.approx(np.abs(noisy - empty).max())

    broken = empty + rng.uniform(0, 0.02, empty.shape)  # up to 2% of the scale off on the empty crop: counted
    stat = verify._OutputStats("map", scale=1.0)
    stat.add(np.vstack([text, broken]), np.vstack([text, empty]), 2)
    assert stat.to_json()["cosine_worst_sample"] < 0.98
    # without a larger sample to give the scale, the floor is the absolute one (records.NOISE_FLOOR)
    alone = verify._OutputStats("map", scale=float(empty.max()))
    alone.add(noisy, empty, 1)
    assert alone.cosine() < 0.98


@pytest.mark.parametrize(
    ("preset", "held", "what"),
    [("int8", 4, "calibration: 4 held out, 12 calibrated on"), ("int8-dynamic", 0, "calibration")],
)
def test_what_verifies_without_eval(digits, tmp_path, preset, held, what):
    """16 calibration samples: static INT8 calibrates on 12 and verifies on the 4 held out and then those
    12; int8-dynamic reads no calibration data, so nothing is held out and all 16 verify."""
    from edgesmith.converter import build_recipe, frontends, pipeline

    np.save(tmp_path / "cal.npy", digits[:16])
    recipe = build_recipe(preset=preset, calibration=tmp_path / "cal.npy")
    (tmp_path / "work").mkdir()
    source = frontends.load(SHIPPED_MODEL, tmp_path / "work", None)
    calibration, evaluation, held_out = pipeline._open_data(recipe, source)
    data = pipeline._verification_data(recipe, source, evaluation, calibration, held_out)
    assert evaluation is None and len(calibration) == 16 - held and len(data) == 16 and data.what == what
    assert (held_out is None) == (held == 0)


def test_the_gate_names_the_worst_output_and_for_fp16_what_fp16_loses(tmp_path):
    """basic-pitch's SavedModel in fp16 (docs/conformance.md): three outputs below 0.999; the gate names
    the worst one (onset), not the first, and says fp16 itself loses it (its float32 ONNX matches
    TensorFlow to 1e-6): more calibration data would not help."""
    from edgesmith.converter import build_recipe, checks
    from edgesmith.errors import VerificationFailed
    from edgesmith.targets.records import Artifact, OutputCheck, Report, Verification

    outputs = (OutputCheck(name="contour", cosine=0.997549, max_abs_error=0.29),
               OutputCheck(name="note", cosine=0.999076, max_abs_error=0.24),
               OutputCheck(name="onset", cosine=0.98792, max_abs_error=0.43))  # fmt: skip
    tried = [
        {"float_layers": 0, "cosine_min": 0.9829, "passes": False},
        {"float_layers": 5, "cosine_min": 0.98792, "passes": False},
    ]  # the rescue's candidates
    checked = Verification(data="calibration", metric=None, original=None, artifact=None, samples=16,
                           outputs=outputs, cosine_min=0.98792, max_abs_error=0.43)  # fmt: skip
    artifact = Artifact(format="onnx", path=str(tmp_path / "nmp.fp16.onnx"), size_bytes=1, sha256="",
                        precision="fp16", engine="onnxruntime", verify=checked,
                        quantization={"kept_float": {"tried": tried}})  # fmt: skip
    with pytest.raises(VerificationFailed) as failed:
        checks.check_gate(Report(artifacts=(artifact,)), build_recipe(preset="fp16"))
    message = str(failed.value)
    assert "output 'onset' has cosine 0.9879" in message and "on 16 samples of calibration" in message
    assert "the rescue tried 2 candidates" in message and "best of them: cosine 0.9879" in message
    assert "fp16 arithmetic itself loses it" in message and "calibration data" not in message
