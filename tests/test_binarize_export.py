"""Binary exports: bit-packed ONNX and OpenVINO BinaryConvolution, checked against PyTorch on the real
MNIST test set and bit for bit against the numpy XNOR-popcount kernel."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from binary_nets import bn_cnn, mnist_train, trained_like_bn  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgesmith.converter.exporters import binary_onnx, binary_openvino  # noqa: E402
from edgesmith.converter.exporters.binary_tflite import tflite_plan  # noqa: E402
from edgesmith.converter.frontends.torch_frontend import load_module  # noqa: E402
from edgesmith.converter.steps import kd  # noqa: E402
from edgesmith.converter.steps.binarize import BinarizeConfig, binarize_module  # noqa: E402
from edgesmith.converter.steps.binary_layers import freeze, round_alpha  # noqa: E402
from edgesmith.errors import InputError  # noqa: E402
from edgesmith.runtime import load  # noqa: E402
from edgesmith.runtime.backends import xnor  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def binarized(tmp_path_factory):
    """A small CNN trained for a second, binarized (weights and activations), frozen, exported."""
    torch.set_num_threads(1)
    x, y = mnist_train(1000)
    teacher = bn_cnn()
    kd.fit(teacher, x, y, epochs=1, lr=5e-3)
    student, report = binarize_module(teacher, BinarizeConfig(epochs=1, lr=5e-3), x, y)
    frozen = freeze(student)
    folder = tmp_path_factory.mktemp("binary")
    source = load_module(frozen, folder, (x[:2],))
    return student, source.onnx.path, folder, report


def _torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_packed_onnx_equals_torch_on_mnist(binarized, mnist_test):
    student, plain, folder, _ = binarized
    report = binary_onnx.pack(plain, folder / "packed.onnx")
    assert [row["op"] for row in report["layers"]] == ["Conv", "Conv", "Gemm"]
    assert report["binary_ratio"] < 0.05
    x, _ = mnist_test
    packed = load(folder / "packed.onnx", backend="ort").run({"input": x})
    unpacked = load(plain, backend="ort").run({"input": x})
    (name,) = packed
    assert np.array_equal(packed[name], unpacked[name])  # the bits rebuild the weights exactly
    expected = _torch_logits(student, x)
    error = float(np.abs(packed[name] - expected).max())
    print(f"packed ONNX vs PyTorch on 10,000 MNIST test images: max abs error {error:.2e}")
    assert np.array_equal(packed[name].argmax(1), expected.argmax(1))  # top-1 agreement 100 %
    assert error < 1e-4
    small = load(folder / "packed.onnx", backend="numpy").run({"input": x[:16]})  # onnx's own evaluator
    assert np.array_equal(small[name].argmax(1), expected[:16].argmax(1))


def test_openvino_binary_convolution_equals_torch_on_mnist(binarized, mnist_test):
    pytest.importorskip("openvino")
    student, plain, folder, _ = binarized
    report = binary_openvino.convert(plain, folder / "binary.xml", batch=1000)
    assert [row["op"] for row in report["layers"]] == [
        "BinaryConvolution",
        "BinaryConvolution",
        "BinaryConvolution 1x1",
    ]
    session = load(folder / "binary.xml", backend="openvino", threads=1, exact=True)
    x, _ = mnist_test
    (name,) = [s.name for s in session.outputs]
    got = np.concatenate(
        [session.run({session.inputs[0].name: x[i : i + 1000]})[name] for i in range(0, 10000, 1000)]
    )
    expected = _torch_logits(student, x)
    per_sample = np.abs(got - expected).max(1)
    exact = float((per_sample < 1e-4).mean())
    print(f"OpenVINO BinaryConvolution vs PyTorch on 10,000 MNIST test images: {exact:.2%} within 1e-4, "
          f"max abs error {per_sample.max():.2e}")  # fmt: skip
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    # A float pre-activation within rounding of 0 may take the other sign bit under another kernel's
    # summation order (AVX-512 on a Xeon vs AVX2 on an EPYC): that flips one +-alpha term of a binary
    # layer for a few samples. Everything else must match to float rounding.
    assert exact >= 0.995
    assert per_sample.max() < 0.5


def _binary_conv_onnx(path, cin=64, cout=128, seed=0):
    """sign(x) -> Pad(+1) -> Conv(+-alpha_c weights): one binary-activation layer, as freeze exports it."""
    rng = np.random.default_rng(seed)
    alpha = round_alpha(torch.from_numpy(rng.uniform(0.01, 0.2, cout).astype(np.float32))).numpy()
    weight = np.where(rng.standard_normal((cout, cin, 3, 3)) >= 0, 1.0, -1.0).astype(np.float32)
    weight *= alpha[:, None, None, None]
    consts = {
        "zero": np.array(0, np.float32), "one": np.array(1, np.float32), "minus1": np.array(-1, np.float32),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w": weight,
    }  # fmt: skip
    nodes = [
        helper.make_node("GreaterOrEqual", ["x", "zero"], ["ge"]),
        helper.make_node("Where", ["ge", "one", "minus1"], ["signs"]),
        helper.make_node("Pad", ["signs", "pads", "one"], ["padded"]),
        helper.make_node("Conv", ["padded", "w"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes, "binary_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, cin, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, cout, 12, 12])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = binary_onnx.IR_VERSION
    onnx.save(model, str(path))
    return weight, alpha


def test_xnor_kernel_matches_packed_onnx_and_openvino_bit_exactly(tmp_path):
    weight, alpha = _binary_conv_onnx(tmp_path / "conv.onnx")
    x = np.random.default_rng(1).standard_normal((2, 64, 12, 12)).astype(np.float32)
    x[0, 0, :3] = 0.0  # sign(0) = +1 everywhere
    report = binary_onnx.pack(tmp_path / "conv.onnx", tmp_path / "packed.onnx")
    float_size, packed_size = (tmp_path / "conv.onnx").stat().st_size, report["file_bytes"]
    assert packed_size < 11_000 and float_size > 290_000  # 64x128x3x3: ~10 KB instead of 295 KB
    expected = xnor.binary_conv2d(x, weight, alpha, padding=(1, 1))
    got = load(tmp_path / "packed.onnx", backend="ort").run({"x": x})["y"]
    assert np.array_equal(got, expected)
    pytest.importorskip("openvino")
    binary_openvino.convert(tmp_path / "conv.onnx", tmp_path / "conv.xml", batch=2)
    session = load(tmp_path / "conv.xml", backend="openvino", threads=1, exact=True)
    assert np.array_equal(session.run({session.inputs[0].name: x})[session.outputs[0].name], expected)


def test_xnor_kernel_equals_float_conv_of_signs():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 24, 9, 9)).astype(np.float32), rng.standard_normal((5, 24, 3, 3))
    signs = lambda a: torch.from_numpy(np.where(a >= 0, 1.0, -1.0).astype(np.float32))  # noqa: E731
    padded = torch.nn.functional.pad(signs(x), (1, 1, 1, 1), value=1.0)
    expected = torch.nn.functional.conv2d(padded, signs(w), stride=2).numpy()
    assert np.array_equal(xnor.binary_conv2d(x, w, stride=(2, 2), padding=(1, 1)), expected)
    a, b = rng.standard_normal((4, 130)), rng.standard_normal((3, 130))
    assert np.array_equal(xnor.binary_dense(a, b), (signs(a) @ signs(b).T).numpy())


def test_exports_are_byte_identical(binarized, tmp_path):
    _, plain, _, _ = binarized
    for i in range(2):
        binary_onnx.pack(plain, tmp_path / f"p{i}.onnx")
    assert (tmp_path / "p0.onnx").read_bytes() == (tmp_path / "p1.onnx").read_bytes()
    pytest.importorskip("openvino")
    for i in range(2):
        binary_openvino.convert(plain, tmp_path / f"m{i}.xml")
    for suffix in (".xml", ".bin"):
        assert (tmp_path / f"m0{suffix}").read_bytes() == (tmp_path / f"m1{suffix}").read_bytes()


def test_bad_export_requests(binarized, tmp_path):
    *_, report = binarized
    with pytest.raises(InputError, match="TFLite cannot store 1-bit"):
        tflite_plan(report, require_1bit=True)
    assert tflite_plan(report)["weight_storage"] == "int8 per-channel"
    _binary_conv_onnx(tmp_path / "conv.onnx")
    model = onnx.load(str(tmp_path / "conv.onnx"))
    model.opset_import[0].version = 17
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(InputError, match="opset >= 18"):
        binary_onnx.pack(tmp_path / "old.onnx", tmp_path / "x.onnx")


@pytest.mark.parametrize(
    ("activations", "width", "ops"),
    [
        ("float", 8, ["Convolution (u1 weights)", "Convolution (u1 weights)", "MatMul (u1 weights)"]),
        ("binary", 6, ["Convolution (u1 weights)", "Convolution (u1 weights)", "MatMul (u1 weights)"]),
    ],
)
def test_openvino_u1_weight_path(tmp_path, activations, width, ops):
    """Weights-only layers, and binary layers whose input channels are not a multiple of 8 (which the
    CPU's BinaryConvolution cannot take), get u1 weights unpacked by the graph, still exact."""
    pytest.importorskip("openvino")
    x = np.random.default_rng(3).standard_normal((16, 1, 28, 28)).astype(np.float32)
    model = trained_like_bn(bn_cnn(width))
    student, _ = binarize_module(model, BinarizeConfig(epochs=0, activations=activations), x)
    plain = load_module(freeze(student), tmp_path, (x[:2],)).onnx.path
    report = binary_openvino.convert(plain, tmp_path / "m.xml", batch=16)
    assert [row["op"] for row in report["layers"]] == ops
    session = load(tmp_path / "m.xml", backend="openvino", threads=1, exact=True)
    got = session.run({session.inputs[0].name: x})[session.outputs[0].name]
    assert np.abs(got - _torch_logits(student, x)).max() < 1e-4


def test_numpy_reference_runs_binary_convs_with_xnor_popcount(tmp_path):
    """The numpy reference backend computes the packed graph's binary conv with its XNOR kernel, and
    agrees bit for bit with ONNX Runtime."""
    from edgesmith.runtime.backends import numpy_reference

    _binary_conv_onnx(tmp_path / "conv.onnx")
    binary_onnx.pack(tmp_path / "conv.onnx", tmp_path / "packed.onnx")
    x = np.random.default_rng(2).standard_normal((2, 64, 12, 12)).astype(np.float32)
    reference = load(tmp_path / "packed.onnx", backend="numpy")
    before = numpy_reference._xnor_calls()
    got = reference.run({"x": x})["y"]
    assert numpy_reference._xnor_calls() == before + 1
    assert np.array_equal(got, load(tmp_path / "packed.onnx", backend="ort").run({"x": x})["y"])
