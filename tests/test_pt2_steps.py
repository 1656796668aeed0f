"""PyTorch steps on a `.pt2`: the layers are rebuilt from the traced graph (torch_lift), so
`edgesmith convert model.pt2 --preset pruned50-int8` works from the command line."""

import json

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


class _Net(torch.nn.Module):
    """Conv + BN, a depthwise conv, a residual add and a flatten with its size baked in by `view`."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16))
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 16, 1, bias=False)
        self.head = torch.nn.Linear(16 * 8 * 8, 5)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = y + self.pw(torch.relu(self.dw(y)))
        return self.head(y.view(-1, 16 * 8 * 8))


def _trained_bn(model):
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 8, 8))  # running statistics that are not the identity
    return model.eval()


def test_lift_rebuilds_named_layers_that_compute_exactly_the_same():
    from edgesmith.converter.frontends.torch_lift import example_inputs, lift

    model = _trained_bn(_Net())
    x = torch.randn(4, 3, 8, 8)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    lifted = lift(program).eval()
    layers = {name: type(m).__name__ for name, m in lifted.named_modules()}
    assert layers["stem.0"] == "Conv2d" and layers["stem.1"] == "BatchNorm2d"
    assert layers["dw"] == layers["pw"] == "Conv2d" and layers["head"] == "Linear"
    assert lifted.dw.groups == 16 and lifted.pw.bias is None
    left = {str(n.target) for n in lifted.graph.nodes if n.op == "call_function"}
    assert not left & {
        "aten.conv2d.default",
        "aten.linear.default",
        "aten.batch_norm.default",
        "aten.view.default",
    }
    with torch.no_grad():
        assert torch.equal(lifted(x), model(x))
    assert [a.shape for a in example_inputs(program)] == [(2, 3, 8, 8)]
    # the program itself is untouched: its graph still calls aten ops on its own weights
    assert "aten.conv2d.default" in {str(n.target) for n in program.graph.nodes}


def test_transposed_convs_are_lifted_and_bare_parameters_are_named():
    from edgesmith.converter.frontends.torch_lift import lift
    from edgesmith.converter.steps.prune import _unlifted_hint

    class Up(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(3, 8, 2, stride=2)
            self.scale = torch.nn.Parameter(torch.linspace(0.5, 1.5, 8).view(8, 1, 1))

        def forward(self, x):
            return (self.up(x) * self.scale).mean((2, 3))

    model, x = Up().eval(), torch.randn(2, 3, 4, 4)
    lifted = lift(torch.export.export(model, (x,)))
    assert isinstance(lifted.up, torch.nn.ConvTranspose2d) and lifted.up.stride == (2, 2)
    with torch.no_grad():
        assert torch.equal(lifted(x), model(x))
    assert lifted.meta["edgesmith_unlifted"] == ["scale (in aten.mul.Tensor)"]
    assert "scale (in aten.mul.Tensor)" in _unlifted_hint(lifted)


def test_lifted_pt2_prunes_and_the_flatten_follows_the_pruned_width():
    from edgesmith.converter.frontends.torch_lift import example_inputs, lift
    from edgesmith.converter.steps.prune import PruneConfig, prune_module

    program = torch.export.export(_trained_bn(_Net()), (torch.randn(2, 3, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    pruned, report = prune_module(lift(program), PruneConfig(ratio=0.5, round_to=1), example_inputs(program))
    assert pruned.get_submodule("stem.0").out_channels == 8 and pruned.head.in_features == 8 * 8 * 8
    assert pruned(torch.randn(3, 3, 8, 8)).shape == (3, 5)
    assert report["macs_after"] < 0.6 * report["macs_before"]


def test_pruned50_int8_preset_on_the_shipped_pt2_from_the_cli(cli, tmp_path, mnist_eval_npz):
    """The issue's command on the shipped CNN, scored on the 10,000 real MNIST test images. The
    distillation runs on the 256 shipped calibration images (repeated: min_steps)."""
    pt2 = SHIPPED_MODEL.with_suffix(".pt2")
    before = pt2.read_bytes()
    code, out, err = cli("convert", pt2, "--preset", "pruned50-int8", "--calibration", SHIPPED_CALIBRATION,
                         "--eval", mnist_eval_npz, "--out", tmp_path / "out", "-q")  # fmt: skip
    assert code == 0, err
    assert pt2.read_bytes() == before
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    original, pruned, distilled, quantized = report["stages"]
    assert [s["after"] for s in report["stages"]] == ["original", "prune", "distill", "quantize"]
    assert pruned["macs"] <= 0.5 * original["macs"] * 1.01, pruned
    assert pruned["params"] < original["params"] and pruned["size_bytes"] < 0.6 * original["size_bytes"]
    assert original["score"] - distilled["score"] <= 1.0, report["stages"]
    assert original["score"] - quantized["score"] <= 1.2, report["stages"]
    assert quantized["size_bytes"] < 0.2 * original["size_bytes"]
    assert all(s["p50_ms"] > 0 for s in report["stages"])
    assert report["artifacts"][0]["verify"]["samples"] == 10000


def test_summary_prints_the_table_of_steps(cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[steps]]\nkind = "prune"\nratio = 0.25\n\n[profile]\nenabled = false\n')
    code, out, err = cli("convert", SHIPPED_MODEL.with_suffix(".pt2"), "--recipe", recipe, "--eval",
                         SHIPPED_CALIBRATION / "holdout.npz", "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("after step"))
    assert lines[header + 2].split()[0] == "original" and lines[header + 3].split()[0] == "prune"
    stages = json.loads((tmp_path / "out" / "report.json").read_text())["stages"]
    assert stages[1]["params"] < stages[0]["params"] and np.isfinite(stages[1]["score"])
    # the HTML report shows the same steps
    code, _, err = cli("report", tmp_path / "out", "--target", "rpi4")
    assert code == 0, err
    html = (tmp_path / "out" / "report.html").read_text()
    section = html[html.index('<section id="stages">') :].split("</section>")[0]
    assert section.count("<tr>") == 1 + len(stages) and "<td>prune</td>" in section


def test_prune_and_distill_give_byte_identical_artifacts(cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[steps]]\nkind = "prune"\ntarget_macs = 0.5\n\n[[steps]]\nkind = "distill"\nepochs = 1\n\n'
        "[profile]\nenabled = false\n"
    )
    outputs = []
    for run in ("a", "b"):
        code, _, err = cli("convert", SHIPPED_MODEL.with_suffix(".pt2"), "--recipe", recipe, "--calibration",
                           SHIPPED_CALIBRATION, "--out", tmp_path / run, "-q")  # fmt: skip
        assert code == 0, err
        outputs.append((tmp_path / run / "mnist_cnn.fp32.onnx").read_bytes())
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) < 0.6 * SHIPPED_MODEL.stat().st_size  # pruned, not the original re-exported


def test_bnn_weights_preset_on_the_shipped_pt2(cli, tmp_path, mnist_eval_npz):
    """1-bit weights from a .pt2 (before torch_lift this needed the module in Python)."""
    code, _, err = cli("convert", SHIPPED_MODEL.with_suffix(".pt2"), "--preset", "bnn-weights", "--calibration",
                       SHIPPED_CALIBRATION, "--eval", mnist_eval_npz, "--out", tmp_path / "out", "-q")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (artifact,) = report["artifacts"]
    assert artifact["precision"] == "binary" and artifact["path"].endswith("mnist_cnn.binary.onnx")
    assert artifact["size_bytes"] < 0.35 * report["original"]["size_bytes"]
    assert artifact["verify"]["drop"] <= 2.0, artifact["verify"]  # measured 1.23 (256 images, no labels)
    assert [s["after"] for s in report["stages"]] == ["original", "binarize", "export (1-bit)"]


@pytest.mark.parametrize(
    ("step", "match"),
    [
        ('kind = "distill"', "distill needs data"),
        ('kind = "binarize"', "binarize needs data"),
        ('kind = "prune"\nratio = 0.3\ncriterion = "taylor"', "prune.criterion = 'taylor' needs data"),
    ],
)
def test_steps_without_data_fail_before_any_work(cli, tmp_path, step, match):
    (tmp_path / "r.toml").write_text(f"[[steps]]\n{step}\n")
    code, _, err = cli("convert", SHIPPED_MODEL.with_suffix(".pt2"), "--recipe", tmp_path / "r.toml", "--out",
                       tmp_path / "out", "-q")  # fmt: skip
    assert code == 2 and match in err and "--calibration" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
