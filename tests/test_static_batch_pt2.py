"""PyTorch inputs as users make them (issues 10 and 11).

`torch.export.export(model, (x,))`, the way most people export, fixes the batch at x's (1): the PyTorch
steps (prune, distill, binarize) must still train on batches, and the artifacts keep the batch of 1.
And a `.pt2` is a zip of pickles and code-like strings: loading one must never run anything in it.
"""

import io
import json
import zipfile

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL
from models import mobilenet_like, resnet_like

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


def _batch1_pt2(module, path):
    """`module` exported the common way: one example of batch 1, no dynamic shapes."""
    torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 28, 28),)), path)
    return path


@pytest.fixture(scope="module")
def shipped_cnn_batch1(tmp_path_factory):
    """The shipped MNIST CNN (trained, 98.7% top-1), re-exported at batch 1."""
    from edgesmith.converter.frontends.pt2_safety import load_program

    module = load_program(SHIPPED_MODEL.with_suffix(".pt2")).module()
    return _batch1_pt2(module, tmp_path_factory.mktemp("pt2") / "cnn_b1.pt2")


def _input_shapes(artifact):
    import onnx

    graph = onnx.load(str(artifact)).graph
    return [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in graph.input]  # fmt: skip


@pytest.mark.parametrize("make", [resnet_like, mobilenet_like])
def test_lift_frees_the_batch_of_a_batch1_export(make):
    """Residual adds, depthwise convs, a squeeze-excite `view(b, c, 1, 1)` and `view(b, -1)` heads: the
    lifted graph runs at batch 5 and computes exactly what the module does."""
    from edgesmith.converter.frontends.torch_lift import lift, static_batch

    model = make()
    program = torch.export.export(model, (torch.zeros(1, 1, 28, 28),))
    assert static_batch(program) == 1
    with pytest.raises(Exception, match="Guard failed"):  # what the steps used to hit
        program.module()(torch.zeros(2, 1, 28, 28))
    lifted = lift(program).eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(lifted(x), model(x))
    views = [n.args[1] for n in lifted.graph.nodes if str(n.target) == "aten.view.default"]
    assert all(shape[0] == -1 for shape in views)  # the SE gate's view(1, 96, 1, 1) is batch-free now


def test_lift_says_where_a_batch_is_held_that_it_cannot_free():
    from edgesmith.converter.frontends.torch_lift import lift
    from edgesmith.errors import InputError

    class Padded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(12, 3)

        def forward(self, x):  # a zeros(1, 4) made inside forward: the batch is a number, not a shape
            return self.fc(torch.cat([x, torch.zeros(1, 4)], dim=1))

    program = torch.export.export(Padded().eval(), (torch.zeros(1, 8),))
    with pytest.raises(InputError, match=r"fixed batch of 1 .*dynamic_shapes=") as info:
        lift(program)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.slow
def test_batch1_pt2_through_prune_distill_and_int8(cli, tmp_path, shipped_cnn_batch1, mnist_eval_npz):
    """The issue's pipeline from a batch-1 .pt2, short (40 distillation batches), scored on the first
    2,000 real MNIST test images. Measured (Intel Xeon, 2 cores): original 98.3, pruned 37.7, distilled
    96.3, int8 96.25 (drop 2.05; the full preset's 300 batches recover more)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        "[calibration]\nbatch_size = 1\nmax_samples = 64\n\n"
        '[[steps]]\nkind = "prune"\ntarget_macs = 0.5\n\n'
        '[[steps]]\nkind = "distill"\nepochs = 1\nmin_steps = 40\nlr = 2e-3\n\n'
        '[[steps]]\nkind = "quantize"\nmode = "static"\n\n'
        "[verify]\nbatch_size = 1\nmax_samples = 2000\n\n[profile]\nenabled = false\n"
    )
    code, _, err = cli("convert", shipped_cnn_batch1, "--recipe", recipe, "--calibration", SHIPPED_CALIBRATION,
                       "--eval", mnist_eval_npz, "--out", tmp_path / "out", "-q")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    original, pruned, distilled, quantized = report["stages"]
    assert pruned["macs"] <= 0.5 * original["macs"] * 1.01, pruned
    assert pruned["score"] < 60 < distilled["score"], report["stages"]  # distillation did the recovering
    assert original["score"] >= 98.0 and original["score"] - quantized["score"] <= 3.0, report["stages"]
    (artifact,) = report["artifacts"]
    assert artifact["precision"] == "int8" and artifact["verify"]["samples"] == 2000
    assert _input_shapes(artifact["path"]) == [[1, 1, 28, 28]]  # the source's signature, batch 1 kept


@pytest.mark.slow
def test_batch1_pt2_binarize_and_taylor_prune(cli, tmp_path, shipped_cnn_batch1):
    """1-bit weights (trained in batches of 64) and taylor pruning (gradients on batches of 32)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[steps]]\nkind = "prune"\nratio = 0.25\ncriterion = "taylor"\n\n'
        '[[steps]]\nkind = "binarize"\nactivations = "float"\nepochs = 1\n\n'
        "[verify]\nbatch_size = 1\n\n[profile]\nenabled = false\n"
    )
    code, _, err = cli("convert", shipped_cnn_batch1, "--recipe", recipe, "--calibration", SHIPPED_CALIBRATION,
                       "--eval", SHIPPED_CALIBRATION / "holdout.npz", "--out", tmp_path / "out", "-q")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (artifact,) = report["artifacts"]
    assert artifact["precision"] == "binary" and _input_shapes(artifact["path"]) == [[1, 1, 28, 28]]
    assert report["steps"][0]["params_after"] < report["steps"][0]["params_before"]
    assert report["steps"][1]["binary_weight_share"] > 0.5
    # measured 24.6 top-1 (original 98.7): one epoch cannot recover a taylor-pruned net made 1-bit; this
    # checks the run trains and exports at batch 1, not the accuracy (bnn-weights alone: 97.1 on the CLI)
    assert artifact["verify"]["artifact"] >= 20.0, artifact["verify"]


def test_module_that_bakes_its_batch_is_lifted_like_a_pt2(tmp_path):
    """An nn.Module whose forward holds the batch (view(1, -1)), given a batch-1 example: exported at
    batch 1, pruned on the lifted program, the artifact at batch 1 and still computing the same."""
    import edgesmith
    from edgesmith.runtime import load

    class Baked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16 * 7 * 7, 10)

        def forward(self, x):
            return self.fc(torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 4).view(1, -1))

    torch.manual_seed(0)
    model = Baked().eval()
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[steps]]\nkind = "prune"\nratio = 0.5\nround_to = 1\n\n[profile]\nenabled = false\n')
    x = np.random.default_rng(0).normal(size=(1, 1, 28, 28)).astype(np.float32)
    report = edgesmith.convert(model, recipe=recipe, out=tmp_path / "out", example_inputs=(x,))
    (artifact,) = report["artifacts"]
    assert _input_shapes(artifact["path"]) == [[1, 1, 28, 28]]
    assert report["steps"][0]["params_after"] < 0.6 * report["steps"][0]["params_before"]
    session = load(artifact["path"])
    assert session.run({session.inputs[0].name: x})[session.outputs[0].name].shape == (1, 10)


# --- issue 11: a .pt2 never runs code ---------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.system: what a malicious `sample_inputs` pickle does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _edited_pt2(tmp_path, edit):
    """A copy of the shipped .pt2 with one zip entry rewritten by `edit(name, data) -> data`."""
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(SHIPPED_MODEL.with_suffix(".pt2")) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))
    return path


def test_pt2_with_a_pickle_payload_is_refused_without_running_it(cli, tmp_path):
    marker = tmp_path / "pwned"

    def payload(name, data):
        if not name.endswith("sample_inputs/model.pt"):
            return data
        buffer = io.BytesIO()
        torch.save(((_Payload(marker),), {}), buffer)
        return buffer.getvalue()

    model = _edited_pt2(tmp_path, payload)
    before = model.read_bytes()
    code, _, err = cli("convert", model, "--preset", "fp32", "--out", tmp_path / "out", "-q")
    assert code == 2 and not marker.exists()
    assert len(err.strip().splitlines()) == 1 and "posix.system" in err and "weights-only" in err
    assert not (tmp_path / "out").exists() and model.read_bytes() == before


@pytest.mark.parametrize(
    ("entry", "old", "new", "match"),
    [  # a shape expression sympy would eval, a guard torch would exec, an operator resolved by getattr
        ("models/model.json", b"Symbol('s31', positive=True, integer=True)",
         b"__import__('os').system('touch MARKER')", "shape expression"),
        ("models/model.json", b'"guards_code": []', b'"guards_code": ["__import__(\'os\').system(\'touch MARKER\')"]',
         "guard that is code"),
        ("models/model.json", b'"torch.ops.aten.relu.default"', b'"torch.os.system"', "torch.os.system"),
    ],
)  # fmt: skip
def test_pt2_with_code_in_its_program_is_refused(tmp_path, entry, old, new, match):
    from edgesmith.converter.frontends.pt2_safety import load_program
    from edgesmith.errors import InputError

    marker = tmp_path / "pwned"

    def edit(name, data):
        assert not name.endswith(entry) or old in data, f"the shipped .pt2 no longer holds {old!r}"
        return (
            data.replace(old, new.replace(b"MARKER", str(marker).encode())) if name.endswith(entry) else data
        )

    model = _edited_pt2(tmp_path, edit)
    with pytest.raises(InputError, match=match):
        load_program(model).module()(torch.zeros(2, 1, 28, 28))
    assert not marker.exists()
