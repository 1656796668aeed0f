"""TFLite fp16 and dynamic-range INT8 of the shipped CNN (AI Edge Quantizer), on 2000 real MNIST test
images: what each precision does to size and accuracy."""

import pytest

from conftest import SHIPPED_MODEL

pytest.importorskip("litert_torch")
pytestmark = pytest.mark.torch


@pytest.mark.parametrize(
    ("preset", "max_drop", "min_agreement", "max_size"),
    [("fp16", 0.02, 99.9, 0.6), ("int8-dynamic", 0.2, 99.5, 0.35)],
)
def test_precision_on_real_data(mnist_eval_npz, tmp_path, preset, max_drop, min_agreement, max_size):
    import edgesmith

    (tmp_path / "r.toml").write_text(
        '[[exports]]\nformat = "tflite"\n[verify]\nmax_samples = 2000\n[profile]\nenabled = false\n'
    )
    report = edgesmith.convert(
        SHIPPED_MODEL,
        recipe=tmp_path / "r.toml",
        preset=preset,
        evaluation=mnist_eval_npz,
        out=tmp_path / "o",
    )
    (row,) = report["artifacts"]
    verify = row["verify"]
    assert row["engine"] == "ai-edge-quantizer" and row["precision"] == preset
    assert verify["drop"] <= max_drop and verify["agreement"] >= min_agreement, verify
    assert row["size_bytes"] <= max_size * report["source"]["size_bytes"]
