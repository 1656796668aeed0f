"""Speed of a binarized ResNet-18-like network in OpenVINO against the float model of the same topology
(issue 5, figure c). Goal: p50 >= 5x faster at batch 1, 1 thread, 224x224.

Topology: ResNet-18's stages (64-128-256-512, two blocks each) in the Bi-Real arrangement (a real-valued
shortcut around every 3x3 conv, BatchNorm after it, no ReLU so sign() carries a bit; downsampling
shortcuts are AvgPool + 1x1 conv + BN). The binarized model (epochs = 0: speed does not depend on the
weights) has every hidden conv binary, weights and activations (OpenVINO `BinaryConvolution`); the
7x7 stem conv and the classifier stay float. The two models are compiled with f32 inference precision
(BinaryConvolution needs it; the float model is also timed in the CPU's default precision) and timed
interleaved, request by request, so load from other processes hits both alike.

    .venv/bin/python benchmarks/binarize_speed.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from torch import nn

from edgesmith.converter.exporters import binary_openvino
from edgesmith.converter.frontends.torch_frontend import load_module
from edgesmith.converter.steps.binarize import BinarizeConfig, binarize_module
from edgesmith.converter.steps.binary_layers import freeze


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.AvgPool2d(stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = self.bn1(self.conv1(x)) + (x if self.down is None else self.down(x))
        return self.bn2(self.conv2(y)) + y


def resnet18_like(classes: int = 1000) -> nn.Sequential:
    torch.manual_seed(0)
    stages, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    model = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.MaxPool2d(3, 2, 1), *stages,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes),
    )  # fmt: skip
    for module in model.modules():  # BN statistics that keep activations of both signs
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)
    return model.eval()


def p50_interleaved(compiled: dict, x: np.ndarray, runs: int = 60) -> dict[str, float]:
    requests = {name: c.create_infer_request() for name, c in compiled.items()}
    for request in requests.values():
        for _ in range(3):
            request.infer([x])
    times = {name: [] for name in requests}
    for _ in range(runs):
        for name, request in requests.items():
            start = time.perf_counter()
            request.infer([x])
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def main() -> None:
    torch.set_num_threads(1)
    model = resnet18_like()
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    binarized, report = binarize_module(model, BinarizeConfig(epochs=0), x)
    binary_layers = sum(row["binary"] for row in report["layers"])
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "float").mkdir()
        (tmp / "binary").mkdir()
        float_onnx = load_module(model, tmp / "float", (x,))
        binary_onnx = load_module(freeze(binarized), tmp / "binary", (x,))
        float_model = ov.convert_model(str(float_onnx.onnx.path))
        float_model.reshape([1, 3, 224, 224])
        ov.save_model(float_model, str(tmp / "float.xml"), compress_to_fp16=False)
        ov_report = binary_openvino.convert(binary_onnx.onnx.path, tmp / "binary.xml", batch=1)
        config = {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
        f32 = {**config, "INFERENCE_PRECISION_HINT": "f32"}
        compiled = {
            "float (f32)": core.compile_model(str(tmp / "float.xml"), "CPU", f32),
            "float (CPU default precision)": core.compile_model(str(tmp / "float.xml"), "CPU", config),
            "binary (BinaryConvolution)": core.compile_model(str(tmp / "binary.xml"), "CPU", f32),
        }
        default_precision = compiled["float (CPU default precision)"].get_property("INFERENCE_PRECISION_HINT")
        p50 = p50_interleaved(compiled, x[:1])
        sizes = {"float": (tmp / "float.bin").stat().st_size, "binary": (tmp / "binary.bin").stat().st_size}
    ops = [row["op"] for row in ov_report["layers"]]
    print(
        f"ResNet-18-like, 224x224, batch 1, 1 thread; {binary_layers} binary convs "
        f"({ops.count('BinaryConvolution')} as BinaryConvolution); CPU default precision: {default_precision}"
    )
    print("\n| model | p50 ms | speed-up vs float f32 | .bin size |\n|---|---|---|---|")
    base = p50["float (f32)"]
    for name, ms in p50.items():
        size = sizes["binary" if name.startswith("binary") else "float"]
        print(f"| {name} | {ms:.1f} | {base / ms:.1f}x | {size / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
