"""Small real models built in code with ONNX's helper (no torch needed), for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IR_VERSION = 10  # onnx 1.23 writes 14 by default, which onnxruntime 1.31 refuses


def small_cnn(path: Path, seed: int = 0, classes: int = 10, channels: int = 1) -> Path:
    """Conv(channels->8, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->classes), dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "conv_w": rng.normal(0, 0.5, (8, channels, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, 8).astype(np.float32),
        "fc_w": rng.normal(0, 0.5, (classes, 8)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, classes).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp(path: Path) -> Path:
    """x (batch, 256) -> MatMul 256x256 -> Relu -> MatMul 256x64: weights ~ 320 KB in fp32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.06, (256, 256)).astype(np.float32)
    w2 = rng.normal(0, 0.06, (256, 64)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],  # fmt: skip
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    onnx.save(model, str(path))
    return path


def two_input_add(path: Path) -> Path:
    """y = a + b for two (batch, 4) inputs: a multi-input model."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    onnx.save(model, str(path))
    return path


def resnet_like(classes: int = 10, seed: int = 0):
    """A small ResNet-like torch module for 1x28x28 inputs, torchvision-free: a conv-BN stem, two
    basic blocks with residual adds (the second with a strided 1x1 projection shortcut), global average
    pooling and a head that flattens with `view(x.size(0), -1)` (a batch-1 export bakes the 1 in)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNetLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.layer1 = Block(16, 16, 1)
            self.layer2 = Block(16, 32, 2)
            self.fc = nn.Linear(32, classes)

        def forward(self, x):
            y = self.layer2(self.layer1(self.stem(x)))
            y = y.mean((2, 3), keepdim=True)
            return self.fc(y.view(y.size(0), -1))

    torch.manual_seed(seed)
    return _with_running_stats(ResNetLike())


def mobilenet_like(classes: int = 10, seed: int = 0):
    """A small MobileNet-like torch module for 1x28x28 inputs: inverted residual blocks (1x1 expand,
    3x3 depthwise, a squeeze-excite gate in the last, 1x1 project, ReLU6, a residual add where shapes
    match), adaptive pooling and a `reshape(batch, -1)` head."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, kernel, stride=1, groups=1, act=True):
        layers = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class SqueezeExcite(nn.Module):
        """MobileNetV3's channel gate, written as people do: pooled (b, c) -> view(b, c, 1, 1) ->
        expand_as(x). A batch-1 export bakes b = 1 into the view and the expand."""

        def __init__(self, channels: int):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(channels, channels // 4), nn.Linear(channels // 4, channels)

        def forward(self, x):
            b, c = x.shape[:2]
            w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
            return x * w.view(b, c, 1, 1).expand_as(x)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int = 4, se: bool = False):
            super().__init__()
            hidden = cin * expand
            self.use_residual = stride == 1 and cin == cout
            self.block = nn.Sequential(
                conv_bn(cin, hidden, 1),
                conv_bn(hidden, hidden, 3, stride, groups=hidden),
                *([SqueezeExcite(hidden)] if se else []),
                conv_bn(hidden, cout, 1, act=False),
            )

        def forward(self, x):
            y = self.block(x)
            return x + y if self.use_residual else y

    class MobileNetLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv_bn(1, 16, 3, 2)
            self.blocks = nn.Sequential(InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
                                        InvertedResidual(24, 24, 1, se=True))  # fmt: skip
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(24, classes)

        def forward(self, x):
            y = self.pool(self.blocks(self.stem(x)))
            return self.classifier(y.reshape(x.shape[0], -1))

    torch.manual_seed(seed)
    return _with_running_stats(MobileNetLike())


def _with_running_stats(model):
    """Batch-norm running statistics that are not the identity (a few training-mode passes on noise),
    then eval mode: a lifted or exported copy must reproduce real statistics, not 0/1."""
    import torch

    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 28, 28))
    return model.eval()
