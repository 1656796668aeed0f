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
