"""ONNX files as users export them (issue 10, causes 1-4): a fixed batch, an old opset with the
initializers listed as graph inputs, and dynamic H/W. Each model is built here, small, and run
through the real pipeline; artifacts are reloaded and compared with the original."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgesmith
from edgesmith.converter.recipe import Recipe
from edgesmith.errors import InputError
from edgesmith.targets.graph import layers

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

QUICK_PROFILE = {"runs": 3, "warmup": 1}


def _run(path, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got, want = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


# -- 1. fixed batch -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch1_model(tmp_path_factory):
    """The shipped MNIST CNN with its batch axis fixed at 1, as most exported files have it."""
    model = onnx.load(str(SHIPPED_MODEL))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    path = tmp_path_factory.mktemp("batch1") / "mnist_b1.onnx"
    onnx.save(model, str(path))
    return path


def test_fixed_batch_source_reads_batches_of_the_model_batch(tmp_path):
    from edgesmith.converter.data.arrays import ArraySource
    from edgesmith.runtime.session import TensorSpec

    path = tmp_path / "data.npz"
    np.savez(path, x=np.arange(7 * 3, dtype=np.float32).reshape(7, 3))
    source = ArraySource(path, (TensorSpec("x", (2, 3), "float32"),), batch_size=16)
    batches = [b["x"] for b in source.batches()]
    assert [len(b) for b in batches] == [2, 2, 2] and len(source) == 6  # the 7th sample fills no batch
    assert np.array_equal(np.concatenate(batches), np.arange(18, dtype=np.float32).reshape(6, 3))
    assert [len(s["x"]) for s in source.samples()] == [2, 2, 2]
    with pytest.raises(InputError, match="batches of exactly 8"):
        ArraySource(path, (TensorSpec("x", (8, 3), "float32"),))


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("openvino", marks=pytest.mark.slow)])  # NNCF: ~1 min
def test_batch1_onnx_to_static_int8(batch1_model, mnist_test, tmp_path, fmt):
    images, labels = mnist_test
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, input=images[:500], labels=labels[:500])
    recipe = Recipe.from_dict({
        "calibration": {"path": str(SHIPPED_CALIBRATION), "max_samples": 64},
        "steps": [{"kind": "quantize", "mode": "static"}],
        "exports": [{"format": fmt}],
        "verify": {"eval": str(eval_npz)},
        "profile": QUICK_PROFILE,
    })  # fmt: skip
    report = edgesmith.convert(batch1_model, recipe=recipe, out=tmp_path / "out")
    assert report["original"]["score"] > 98.0
    (artifact,) = report["artifacts"]
    verify = artifact["verify"]
    assert verify["samples"] == 500 and verify["drop"] <= 0.6 and verify["agreement"] >= 99.0, verify
    assert artifact["quantization"]["calibration"]["samples"] == 64
    if fmt == "onnx":
        model = onnx.load(artifact["path"])
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    else:
        import openvino as ov

        shape = list(ov.Core().read_model(artifact["path"]).inputs[0].get_shape())
    assert shape == [1, 1, 28, 28]  # the source's signature is kept
    assert report["original_latency"]["batch"] == 1


# -- 2 + 3. opset 9, initializers listed as graph inputs --------------------------------------------


@pytest.fixture(scope="module")
def opset9_model(tmp_path_factory):
    """A small CNN written as old exporters did: opset 9, weights also listed as graph inputs."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(32 * 11 * 11, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10), torch.nn.Softmax(-1),
    ).eval()  # fmt: skip
    path = tmp_path_factory.mktemp("opset9") / "old.onnx"
    with pytest.warns(DeprecationWarning):  # the TorchScript exporter: the one that writes opset 9
        torch.onnx.export(net, (torch.randn(1, 1, 28, 28),), str(path), opset_version=9, dynamo=False,
                          keep_initializers_as_inputs=True, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})  # fmt: skip
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 9 and len(model.graph.input) > 1
    return path


@pytest.mark.parametrize(("preset", "size_ratio", "min_cosine"), [("fp16", (0.45, 0.55), 0.999),
                                                                   ("int8-dynamic", (0.2, 0.3), 0.99)])  # fmt: skip
def test_opset9_with_initializer_inputs(opset9_model, mnist_test, tmp_path, preset, size_ratio, min_cosine):
    images = mnist_test[0][:256]
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, input=images)
    recipe = Recipe.from_dict({"verify": {"eval": str(eval_npz)}, "profile": QUICK_PROFILE})
    report = edgesmith.convert(opset9_model, recipe=recipe, preset=preset, out=tmp_path / "out")
    assert report["source"]["fixes"] == [
        "8 initializers listed as graph inputs made constants",
        "opset 9 upgraded to 13 (onnx.version_converter)",
    ]
    (artifact,) = report["artifacts"]
    ratio = artifact["size_bytes"] / report["source"]["size_bytes"]
    assert size_ratio[0] <= ratio <= size_ratio[1], ratio  # every weight converted, none left in fp32
    model = onnx.load(artifact["path"])
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    cosine = _cosines(_run(artifact["path"], {"input": images}), _run(opset9_model, {"input": images}))
    assert cosine.min() >= min_cosine, cosine.min()


def test_opset_upgrade_failure_is_one_line_naming_the_op(opset9_model, tmp_path, monkeypatch):
    from onnx import version_converter

    def fails(model, version):  # the converter's own message when an adapter gives up
        raise RuntimeError(
            "/project/onnx/version_converter/adapters/scatter_10_11.h:21: adapt_scatter_10_11: Assertion "
            "`inputs.size() >= 3` failed: Scatter in opset 10 needs to have at least 3 inputs."
        )

    monkeypatch.setattr(version_converter, "convert_version", fails)
    with pytest.raises(InputError) as error:
        edgesmith.convert(opset9_model, preset="fp16", out=tmp_path / "out")
    message = str(error.value)
    assert "\n" not in message and "/project/" not in message and "Scatter in opset 10" in message
    assert "re-export the model with opset >= 13" in message
    assert not (tmp_path / "out").exists()


# -- 4. dynamic height and width --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynamic_hw(tmp_path_factory):
    """A detector-like net exported with dynamic batch, height and width, and data at 64x64."""
    import torch

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            )  # fmt: skip
            self.head = torch.nn.Conv2d(16, 6, 1)

        def forward(self, x):
            return self.head(self.body(x)).flatten(2).transpose(1, 2)  # (batch, anchors, 6)

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dynamic")
    path = folder / "detector.onnx"
    with pytest.warns(DeprecationWarning):
        torch.onnx.export(Detector().eval(), (torch.randn(1, 3, 64, 64),), str(path), dynamo=False,
                          opset_version=17, input_names=["images"], output_names=["boxes"],
                          dynamic_axes={"images": {0: "batch", 2: "h", 3: "w"}, "boxes": {0: "batch", 1: "n"}})  # fmt: skip
    rng = np.random.default_rng(0)
    for size in (64, 96):
        np.savez(folder / f"data{size}.npz", images=rng.random((24, 3, size, size), dtype=np.float32))
    return path


def test_dynamic_hw_takes_its_size_from_the_calibration_data(dynamic_hw, tmp_path):
    data = dynamic_hw.parent / "data64.npz"
    recipe = Recipe.from_dict({"calibration": {"path": str(data)}, "verify": {"eval": str(data)},
                               "steps": [{"kind": "quantize", "mode": "static"}], "profile": QUICK_PROFILE})  # fmt: skip
    report = edgesmith.convert(dynamic_hw, recipe=recipe, out=tmp_path / "out")
    (artifact,) = report["artifacts"]
    model = onnx.load(artifact["path"])
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))  # still dynamic
    # the stages table counts MACs at the data's 64x64: as for a copy of the model fixed at that size
    fixed = onnx.load(str(dynamic_hw))
    for dim, size in zip(fixed.graph.input[0].type.tensor_type.shape.dim, (1, 3, 64, 64), strict=True):
        dim.dim_value = size
    onnx.save(fixed, str(tmp_path / "fixed.onnx"))
    macs = sum(layer.macs for layer in layers(tmp_path / "fixed.onnx"))
    assert report["stages"][0]["macs"] == macs > 3 * 8 * 9 * 32 * 32
    images = np.load(dynamic_hw.parent / "data96.npz")["images"][:4]  # and it still runs at any size
    cosine = _cosines(_run(artifact["path"], {"images": images}), _run(dynamic_hw, {"images": images}))
    assert cosine.min() >= 0.98, cosine


@pytest.mark.slow
def test_dynamic_hw_tflite_is_written_at_the_data_size(dynamic_hw, tmp_path):
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    data = dynamic_hw.parent / "data64.npz"
    report = edgesmith.convert(
        dynamic_hw,
        recipe=Recipe.from_dict(
            {"exports": [{"format": "tflite"}], "verify": {"eval": str(data)}, "profile": QUICK_PROFILE}
        ),  # fmt: skip
        out=tmp_path / "tflite",
        preset="fp32",
    )
    (artifact,) = report["artifacts"]
    runner = Interpreter(model_path=artifact["path"])
    assert list(runner.get_input_details()[0]["shape"]) == [1, 3, 64, 64]
    assert artifact["verify"]["max_abs_error"] < 1e-4  # not folded at 1x1: it computes the model


def test_profile_sizes_dynamic_axes_from_input_shape(dynamic_hw, cli):
    code, out, err = cli("profile", dynamic_hw, "--input-shape", "images=1x3x96x96", "--runs", "3",
                         "--warmup", "1", "--probe", "none", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["source"] == "measured"
    macs = {}
    for size in (48, 96):
        code, out, err = cli("profile", dynamic_hw, "--target", "rpi4", "--input-shape", f"images=1x3x{size}x{size}",
                             "--json")  # fmt: skip
        assert code == 0, err
        macs[size] = json.loads(out)["macs"]
    assert macs[96] == pytest.approx(4 * macs[48], rel=1e-3)  # the cost model counts at the given size


@pytest.mark.parametrize(
    "command",
    [
        ["profile", "{model}"],
        ["profile", "{model}", "--target", "rpi4"],
        ["convert", "{model}", "--preset", "fp16", "--out", "{out}"],
    ],
)
def test_unknown_dims_are_refused_in_one_line(dynamic_hw, cli, tmp_path, command):
    code, out, err = cli(*[c.format(model=dynamic_hw, out=tmp_path / "out") for c in command])
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "pass --input-shape images=1x3xNxN" in line, err
    assert not (tmp_path / "out").exists()


def test_data_at_two_sizes_is_refused(dynamic_hw, cli, tmp_path):
    folder = dynamic_hw.parent
    code, _, err = cli("convert", dynamic_hw, "--calibration", folder / "data64.npz", "--eval",
                       folder / "data96.npz", "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "calibration [3, 64, 64], eval [3, 96, 96]" in err, err
    code, _, err = cli("convert", dynamic_hw, "--preset", "fp16", "--eval", folder / "data64.npz",
                       "--input-shape", "images=1x3x96x96", "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "--input-shape [3, 96, 96], eval [3, 64, 64]" in err, err


# -- names ONNX Runtime's quantizer derives ---------------------------------------------------------


def test_static_int8_survives_colliding_tensor_names(tmp_path):
    """A bias shared by three Convs whose outputs are named `bias0`..`bias2`: ONNX Runtime's quantizer
    copies the shared bias as `bias0`, `bias1` ... and, unguarded, wires those copies in place of the
    activations (tf2onnx graphs such as basic-pitch's have such names). Four input channels: the stem
    padding pass leaves them alone."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), f"w{i}")
        for i in range(3)
    ]
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias")
    nodes = [helper.make_node("Conv", ["x", f"w{i}", "bias"], [f"bias{i}"], name=f"conv{i}", pads=[1, 1, 1, 1])
             for i in range(3)]  # fmt: skip
    nodes.append(helper.make_node("Sum", ["bias0", "bias1", "bias2"], ["y"], name="sum"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])], [*weights, bias],
    )  # fmt: skip
    path = tmp_path / "shared_bias.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8), str(path))
    data = tmp_path / "x.npz"
    x = rng.standard_normal((32, 4, 8, 8)).astype(np.float32)
    np.savez(data, x=x)
    report = edgesmith.convert(path, recipe=Recipe.from_dict({"profile": QUICK_PROFILE}), preset="int8",
                               calibration=data, out=tmp_path / "out")  # fmt: skip
    (artifact,) = report["artifacts"]
    cosine = _cosines(_run(artifact["path"], {"x": x}), _run(path, {"x": x}))
    assert cosine.min() >= 0.99, cosine.min()


@pytest.mark.parametrize("command", ["profile", "convert"])
def test_input_shape_for_an_input_the_model_lacks_is_refused(dynamic_hw, cli, tmp_path, command):
    extra = ["--preset", "fp16", "--out", tmp_path / "out"] if command == "convert" else []
    code, _, err = cli(command, dynamic_hw, "--input-shape", "image=1x3x64x64", *extra)
    assert code == 2 and "--input-shape names ['image'], but the model's inputs are ['images']" in err, err
    code, _, err = cli(command, dynamic_hw, "--input-shape", "images=1x3x64", *extra)
    assert code == 2 and "give one size per axis" in err, err


@pytest.mark.slow  # INC's PT2E path: ~1 min
def test_static_batch_pt2_through_inc_keeps_its_batch(mnistnet, mnist_test, tmp_path):
    pytest.importorskip("neural_compressor")
    import torch

    path = tmp_path / "mnistnet_b1.pt2"
    torch.export.save(torch.export.export(mnistnet, (torch.zeros(1, 1, 28, 28),)), str(path))
    images, labels = mnist_test
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, input=images[:256], labels=labels[:256])
    recipe = Recipe.from_dict({
        "calibration": {"path": str(SHIPPED_CALIBRATION), "max_samples": 32},
        "steps": [{"kind": "quantize", "mode": "static", "engine": "inc"}],
        "verify": {"eval": str(eval_npz)},
        "profile": QUICK_PROFILE,
    })  # fmt: skip
    report = edgesmith.convert(path, recipe=recipe, out=tmp_path / "out")
    (artifact,) = report["artifacts"]
    assert artifact["verify"]["drop"] <= 0.5, artifact["verify"]
    dims = [d.dim_value for d in onnx.load(artifact["path"]).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 28, 28]


@pytest.fixture(scope="module")
def shape_computed(tmp_path_factory):
    """A net exported with dynamic batch, height and width whose Resize sizes and final Reshape are
    computed from the input's Shape (Shape -> Gather -> Concat chains, as PP-OCR's detector has them)."""
    import torch

    class Upsampler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.down, self.out = torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.Conv2d(8, 4, 3, 1, 1)

        def forward(self, x):
            y = torch.nn.functional.interpolate(torch.relu(self.down(x)), size=(x.shape[2], x.shape[3]),
                                                mode="bilinear", align_corners=False)  # fmt: skip
            y = self.out(y)
            return y.reshape(y.shape[0], y.shape[1], -1)

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("shape_computed")
    path = folder / "upsampler.onnx"
    with pytest.warns(DeprecationWarning):
        torch.onnx.export(Upsampler().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                          opset_version=13, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch", 2: "hw"}})  # fmt: skip
    assert {"Shape", "Resize"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    np.savez(folder / "eval.npz", x=np.random.default_rng(0).random((3, 3, 40, 56), dtype=np.float32))
    return path


def test_shape_computed_resize_traces_once_static(shape_computed, tmp_path):
    """torch.export read Resize's folded sizes from a tensor (a data-dependent guard that failed PP-OCR
    det's TFLite export): at the data's size they are baked in, and the module computes the model."""
    import importlib.util

    import torch

    from edgesmith.converter.exporters.tflite_onnx import to_torch

    if importlib.util.find_spec("onnx2torch") is None:  # imported through tflite_onnx (torchvision stub)
        pytest.skip("onnx2torch is not installed")
    from edgesmith.runtime.session import TensorSpec

    module = to_torch(shape_computed, [TensorSpec("x", (1, 3, 40, 56), "float32")], tmp_path)
    x = np.load(shape_computed.parent / "eval.npz")["x"][:1]
    program = torch.export.export(module, (torch.from_numpy(x),))
    with torch.no_grad():
        got = program.module()(torch.from_numpy(x))
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(got.numpy(), _run(shape_computed, {"x": x}), atol=1e-5)


@pytest.mark.slow
def test_shape_computed_resize_reaches_tflite_at_the_data_size(shape_computed, tmp_path):
    pytest.importorskip("litert_torch")
    eval_npz = shape_computed.parent / "eval.npz"
    report = edgesmith.convert(
        shape_computed,
        recipe=Recipe.from_dict(
            {
                "exports": [{"format": "tflite"}],
                "verify": {"eval": str(eval_npz)},
                "profile": {"enabled": False},
            }
        ),  # fmt: skip
        out=tmp_path / "tflite",
        preset="fp32",
    )
    (artifact,) = report["artifacts"]
    from ai_edge_litert.interpreter import Interpreter

    assert list(Interpreter(model_path=artifact["path"]).get_input_details()[0]["shape"]) == [1, 3, 40, 56]
    session = edgesmith.load(artifact["path"], exact=True)
    for x in np.load(eval_npz)["x"]:
        (got,) = session.run({"x": x[None]}).values()
        np.testing.assert_allclose(got, _run(shape_computed, {"x": x[None]}), atol=1e-4)
