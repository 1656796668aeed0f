"""`quantize.equalize` (steps/equalize.py): cross-layer equalization by AIMET before quantizing. The float
model must compute what it did (real MNIST digits), the per-channel weight ranges must even out, and per-
tensor INT8 must get closer to the float model through the whole pipeline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgesmith.converter.handle import ModelHandle
from edgesmith.converter.recipe import Recipe
from edgesmith.errors import InputError

if importlib.util.find_spec("aimet_onnx") is None:  # not imported here: it takes seconds (torch, bokeh)
    pytest.skip("aimet-onnx is installed with --no-deps by the Makefile", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "calibration_data" / "mnist" / "holdout.npz"
SPREAD = np.logspace(-3, 1, 16)  # the stem's output channels span 10^4x, as a depthwise net's often do


def digits(count: int = 64) -> np.ndarray:
    return np.load(DIGITS)["input"][:count]


class Batches:
    """The `.batches()` of an ArraySource, over real digits."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def batches(self):
        yield {"input": self.x}


@pytest.fixture(scope="module")
def separable(tmp_path_factory) -> Path:
    """A MobileNet-like block (stem conv, depthwise 3x3, pointwise 1x1, each with batch norm and ReLU),
    seeded, whose stem channels differ 10^4x in scale; ONNX with a dynamic batch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 10, 1),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for module in net:
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        # the stem's channel c (after its batch norm and ReLU) scaled by SPREAD[c] and the depthwise
        # conv's channel c by 1 / SPREAD[c]: the same function, but per-tensor INT8 of the stem rounds its
        # narrow channels to a few levels and the depthwise conv's narrow ones to a few others
        spread = torch.tensor(SPREAD, dtype=torch.float32)
        net[1].weight.mul_(spread)
        net[1].bias.mul_(spread)
        net[3].weight.div_(spread.view(16, 1, 1, 1))
    path = tmp_path_factory.mktemp("separable") / "separable.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, opset_version=13)  # fmt: skip
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def weights(path: Path) -> dict[str, np.ndarray]:
    """Each Conv's weight, by node name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.name: init[n.input[1]] for n in model.graph.node if n.op_type == "Conv"}


def spread(w: np.ndarray) -> float:
    """How far apart the output channels' ranges are: the widest channel's max |w| over the narrowest's."""
    ranges = np.abs(w).reshape(len(w), -1).max(1)
    return float(ranges.max() / ranges.min())


def channel_sqnr_db(w: np.ndarray) -> float:
    """The mean over output channels of each channel's SQNR when `w` is rounded to symmetric int8 with one
    scale for the whole tensor (per-tensor INT8): a narrow channel rounds to few levels and scores low."""
    scale = np.abs(w).max() / 127
    signal = (w**2).reshape(len(w), -1).sum(1)
    noise = ((w - np.round(w / scale) * scale) ** 2).reshape(len(w), -1).sum(1)
    return float(np.mean(10 * np.log10(signal / np.maximum(noise, 1e-30))))


def test_the_float_model_is_unchanged_and_the_ranges_even_out(separable, tmp_path):
    from edgesmith.converter.steps.equalize import equalized

    handle, report = equalized(ModelHandle(separable), tmp_path, Batches(digits(8)))
    (tmp_path / "again").mkdir()
    again, _ = equalized(ModelHandle(separable), tmp_path / "again", Batches(digits(8)))
    assert again.path.read_bytes() == handle.path.read_bytes()  # deterministic
    x = digits()
    before, after = run(separable, x), run(handle.path, x)
    assert np.abs(after - before).max() <= 1e-5 * np.abs(before).max()
    assert report["max_relative_change"] <= 1e-5
    # the conv -> depthwise -> pointwise triple and the pointwise -> conv pair
    assert report["layer_sets_scaled"] == 2, report
    old, new = weights(separable), weights(handle.path)
    stem = next(iter(old))
    assert spread(old[stem]) > 300 and spread(new[stem]) < spread(old[stem]) / 10, (
        spread(old[stem]),
        spread(new[stem]),
    )
    # the worst layer under per-tensor INT8 (the stem, 21.5 dB) gains ~17 dB; the others give a few dB
    # each of their ~46 dB: CLE trades range between neighbours
    worst_before = min(channel_sqnr_db(w) for w in old.values())
    worst_after = min(channel_sqnr_db(w) for w in new.values())
    assert worst_after > worst_before + 10, (worst_before, worst_after)


def test_shared_parameters_are_copied_so_their_layers_are_scaled(tmp_path):
    """tf2onnx shares one bias among MediaPipe's depthwise convs: AIMET skips a set with a shared
    parameter, so each layer gets its own copy first (kept where it was scaled)."""
    import onnx
    import torch
    from torch import nn

    from edgesmith.converter.steps.equalize import equalized

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                        nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()  # fmt: skip
    with torch.no_grad():
        net[0].bias.fill_(0.1)
        net[2].bias.fill_(0.1)
    path = tmp_path / "shared.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=13)  # fmt: skip
    model = onnx.load(str(path))
    stem, depthwise = (n for n in model.graph.node if n.op_type == "Conv" and n.name != "/4/Conv")
    depthwise.input[2] = stem.input[2]  # both read one bias, as tf2onnx writes them
    for node in [n for n in model.graph.node if n.op_type == "Identity"]:  # torch's own copy of it
        model.graph.node.remove(node)
    onnx.save(model, str(path))
    handle, report = equalized(ModelHandle(path), tmp_path, Batches(digits(8)))
    assert report["parameters_copied"] == 1  # the depthwise conv's bias, scaled
    assert report["layers_scaled"] == ["/0/Conv", "/2/Conv", "/4/Conv"], report
    x = digits()
    before, after = run(path, x), run(handle.path, x)
    assert np.abs(after - before).max() <= 1e-5 * np.abs(before).max()


def test_the_key_is_validated_and_refused_where_no_onnx_is_quantized():
    from edgesmith.converter import plan
    from edgesmith.converter.recipe import ExportConfig
    from edgesmith.converter.steps import Facts
    from edgesmith.converter.steps.quantize import QuantizeConfig

    with pytest.raises(
        InputError, match=r"steps\[0\].equalize = 'yes' has the wrong type; expected true or false"
    ):
        Recipe.from_dict({"steps": [{"kind": "quantize", "equalize": "yes"}]})
    tflite = Facts("tflite", calibration=True)
    with pytest.raises(
        InputError, match=r"the tflite export of a .tflite source quantizes the .tflite itself"
    ):
        plan.one(ExportConfig(format="tflite"), QuantizeConfig(equalize=True), tflite)
    assert plan.one(ExportConfig(format="onnx"), QuantizeConfig(equalize=True), tflite).quantizer is not None


def test_per_tensor_int8_gets_closer_to_float_through_convert(separable, tmp_path):
    """The pipeline applies it before ONNX Runtime's quantizer: per-tensor static INT8 of the separable
    block, calibrated and verified on real digits, with and without equalize (rescue off)."""
    from edgesmith import convert

    x = digits(96)
    np.save(tmp_path / "cal.npy", x[:64])
    np.savez(tmp_path / "eval.npz", input=x[64:])
    cosine, reports = {}, {}
    for on in (False, True):
        recipe = tmp_path / f"r-{on}.toml"
        recipe.write_text(
            f'[[steps]]\nkind = "quantize"\nper_channel = false\nsearch = "off"\nequalize = {str(on).lower()}\n'
            '[verify]\nmin_cosine = 0.0\n[profile]\nenabled = false\n'
        )  # fmt: skip
        report = convert(separable, recipe=recipe, calibration=tmp_path / "cal.npy",
                         evaluation=tmp_path / "eval.npz", out=tmp_path / f"out-{on}")  # fmt: skip
        artifact = report["artifacts"][0]
        cosine[on], reports[on] = artifact["verify"]["cosine_min"], artifact["quantization"]
        assert run(Path(artifact["path"]), x[64:]).shape == (32, 10, 28, 28)  # the artifact reloads and runs
    assert "equalize" not in reports[False]
    assert reports[True]["equalize"]["layer_sets_scaled"] == 2
    # measured: 0.9927 without, 0.99999 with (the narrow channels no longer round to a few levels)
    assert cosine[False] < 0.995 and cosine[True] > 0.9999, cosine
