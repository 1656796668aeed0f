"""Plain-PyTorch benchmark topologies (no torchvision) and an ONNX export helper.

``MobileNetV2`` and ``ResNet50`` match torchvision's ``mobilenet_v2`` (width 1.0) and ``resnet50``
(bottleneck v1.5) layer for layer, so latency transfers to real checkpoints. Weights are random but
seeded; :func:`realistic_bn` gives BatchNorm non-trivial parameters and data-derived running stats,
so the activation ranges INT8 calibration sees look like a trained network's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

# ONNX Runtime 1.31 loads models up to this IR version.
MAX_IR_VERSION = 13


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
    """Conv (no bias) -> BN -> optional ReLU6, as torchvision's Conv2dNormActivation."""
    conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), *([nn.ReLU6(inplace=True)] if act else []))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision ``mobilenet_v2(width_mult=1.0)``: 3.5 M parameters, 1280 last channels."""

    # (expansion t, output channels c, repeats n, first stride s)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

    def __init__(self, num_classes: int = 1000, last_channels: int = 1280) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (carries the stride) -> 1x1 (x4), plus shortcut."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    """torchvision ``resnet50``: 25.6 M parameters, blocks (3, 4, 6, 3)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = []
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@torch.no_grad()
def realistic_bn(model: nn.Module, seed: int = 0, batches: int = 4) -> nn.Module:
    """Random BN affine params, and running stats averaged over train-mode passes on random data.

    Activations then stay well scaled through the whole depth, as in a trained network, while every
    channel has its own scale and shift; the model is returned in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for _ in range(batches):
        model(torch.randn(8, 3, 224, 224, generator=gen))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


def build(name: str, seed: int = 0) -> nn.Module:
    """Seeded, deterministic ``mobilenet_v2`` or ``resnet50`` in eval mode."""
    torch.manual_seed(seed)
    model = {"mobilenet_v2": MobileNetV2, "resnet50": ResNet50}[name]()
    return realistic_bn(model, seed)


def _hoist_constants(proto: onnx.ModelProto) -> None:
    """Turn ``Constant`` nodes (Clip bounds from the TorchScript exporter) into initializers."""
    graph = proto.graph
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        attr = next((a for a in node.attribute if a.name == "value"), None)
        if attr is None:
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attr.t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)


def export_onnx(
    model: nn.Module, path: str | Path, input_shape: tuple[int, ...] = (1, 3, 224, 224), dynamo: bool = False
) -> Path:
    """Export ``model`` to a single-file fp32 ONNX model with a dynamic batch dim ("batch").

    The default is the TorchScript exporter (``dynamo=False``, opset 17, IR 8): it folds every
    BatchNorm into its Conv and ends in ``GlobalAveragePool`` -> ``Flatten`` -> ``Gemm``, so after
    quantization every op runs on an integer kernel. The dynamo exporter (``dynamo=True``, opset 20,
    IR 10) folds BatchNorm too but pools with ``ReduceMean``, which has no integer kernel and stays
    float between a DequantizeLinear/QuantizeLinear pair. Both quantize to the same speed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dynamo:
        batch = {"dynamic_shapes": ({0: torch.export.Dim("batch")},), "external_data": False}
    else:
        batch = {"dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}, "opset_version": 17}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in torch 2.9, still shipped
        torch.onnx.export(
            model.eval(), (torch.zeros(input_shape),), str(path), dynamo=dynamo, verbose=False,
            input_names=["input"], output_names=["logits"], **batch,
        )  # fmt: skip
    proto = onnx.load(str(path))
    _hoist_constants(proto)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))  # one file: these models are far below protobuf's 2 GB limit
    return path
