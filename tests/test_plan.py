"""The export planner (converter/plan.py): which quantizer makes each export, refusals before any model
is loaded, a new quantizer being one file and one registry line, and the kinds steps and quantizers
declare they produce, checked when they run."""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest

from edgesmith.converter import plan
from edgesmith.converter.handle import TFLiteHandle, TorchHandle
from edgesmith.converter.pipeline import run
from edgesmith.converter.recipe import ExportConfig, ProfileConfig, Recipe
from edgesmith.converter.steps import HANDLERS, QUANTIZERS, Quantizer, StepConfig, StepResult, engine_names
from edgesmith.converter.steps.base import Facts
from edgesmith.converter.steps.quantize import QuantizeConfig
from edgesmith.errors import InputError

from conftest import SHIPPED_MODEL

ONNX = Facts("onnx", calibration=True)
PT2 = Facts("pt2", calibration=True)
KERAS = Facts("keras", calibration=True)


@pytest.mark.parametrize(
    ("facts", "fmt", "mode", "engine", "chosen", "precision"),
    [
        (ONNX, "onnx", "static", "auto", "onnxruntime", "int8"),
        (ONNX, "onnx", "dynamic", "auto", "onnxruntime", "int8-dynamic"),
        (ONNX, "onnx", "fp16", "onnxruntime", "onnxruntime", "fp16"),
        (ONNX, "onnx", "static", "nncf", "nncf", "int8"),
        (PT2, "onnx", "static", "inc", "neural-compressor", "int8"),
        (ONNX, "openvino", "static", "auto", "nncf", "int8"),
        (ONNX, "openvino", "fp16", "nncf", "openvino", "fp16"),
        (ONNX, "tflite", "static", "auto", "ai-edge-quantizer", "int8"),
        (ONNX, "c-array", "static", "auto", "ai-edge-quantizer", "int8"),
        (KERAS, "tflite", "dynamic", "auto", "tensorflow.lite", "int8-dynamic"),
        # after an ONNX-level step the Keras model is no longer what TensorFlow's converter would read
        (
            dataclasses.replace(KERAS, onnx_steps=True),
            "tflite",
            "static",
            "auto",
            "ai-edge-quantizer",
            "int8",
        ),
    ],
)
def test_one_quantizer_per_format(facts, fmt, mode, engine, chosen, precision):
    (export,) = plan.exports([ExportConfig(format=fmt)], QuantizeConfig(mode=mode, engine=engine), facts)
    assert export.quantizer.name == chosen
    assert export.precision == precision
    assert export.quantizer.produces == {"c-array": "tflite"}.get(fmt, fmt)


def test_float_and_binary_exports():
    (fp32,) = plan.exports([ExportConfig(format="openvino")], None, ONNX)
    assert fp32.quantizer is None and fp32.precision == "fp32"
    binary = dataclasses.replace(PT2, binary=True)
    onnx, tflite = plan.exports([ExportConfig(format="onnx"), ExportConfig(format="tflite")], None, binary)
    assert onnx.quantizer is None and onnx.precision == "binary"  # stored as bits by the exporter
    # TFLite has no 1-bit weights: full-integer INT8 with calibration data
    assert tflite.quantizer.name == "ai-edge-quantizer" and tflite.quantize.mode == "static"
    assert plan.exports([ExportConfig(format="auto")], None, ONNX) == []  # planned once resolved


@pytest.mark.parametrize(
    ("facts", "export", "mode", "engine", "phrase"),
    [
        (Facts("onnx"), ExportConfig(format="onnx"), "static", "auto", "static INT8 needs calibration data"),
        (ONNX, ExportConfig(format="openvino"), "dynamic", "auto", "OpenVINO has no dynamic INT8"),
        (
            ONNX,
            ExportConfig(format="openvino", io="int8"),
            None,
            "auto",
            "an OpenVINO IR takes and gives float",
        ),
        (ONNX, ExportConfig(format="openvino"), "static", "inc", "OpenVINO IR is quantized by NNCF"),
        (ONNX, ExportConfig(format="c-array"), "fp16", "auto", "TensorFlow Lite Micro has no float16"),
        (ONNX, ExportConfig(format="tflite"), "static", "nncf", "TFLite is quantized by its own converter"),
        (ONNX, ExportConfig(format="tflite", io="uint8"), "dynamic", "auto", "needs full-integer INT8"),
        (ONNX, ExportConfig(format="tflite", io="int8"), None, "auto", "fp32 models take float"),
        (ONNX, ExportConfig(format="onnx"), "dynamic", "nncf", "NNCF quantizes static INT8 only"),
        (ONNX, ExportConfig(format="onnx"), "static", "inc", "this source is onnx"),
        (
            dataclasses.replace(PT2, onnx_steps=True),
            ExportConfig(format="onnx"),
            "static",
            "inc",
            "cannot follow ONNX-level steps",
        ),  # fmt: skip
        (
            dataclasses.replace(PT2, binary=True),
            ExportConfig(format="onnx"),
            "static",
            "auto",
            "drop the quantize step after binarize",
        ),  # fmt: skip
    ],
)
def test_refusals(facts, export, mode, engine, phrase):
    quantize = QuantizeConfig(mode=mode, engine=engine) if mode else None
    with pytest.raises(InputError) as refused:
        plan.exports([export], quantize, facts)
    assert phrase in str(refused.value) and "\n" not in str(refused.value)


def test_refused_before_the_model_is_loaded(cli, tmp_path):
    """A combination no quantizer can do is refused by the planner, not after loading: a file that is
    not a model at all gets the planner's message, not the loader's."""
    bogus = tmp_path / "not-a-model.onnx"
    bogus.write_bytes(b"not an onnx file")
    out = tmp_path / "out"
    code, _, err = cli("convert", bogus, "--preset", "int8-dynamic", "--format", "openvino", "--out", out)
    assert code == 2 and "OpenVINO has no dynamic INT8" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    recipe = tmp_path / "inc.toml"
    recipe.write_text('[[steps]]\nkind = "quantize"\nengine = "inc"\n')
    code, _, err = cli("convert", bogus, "--recipe", recipe, "--calibration", tmp_path, "--out", out)
    assert code == 2 and "engine 'inc' quantizes PyTorch models" in err, err
    assert not out.exists()


def _matmul_only(config, model, ctx):
    """A new engine for the test: ONNX Runtime's dynamic INT8 of the Gemm/MatMul layers only."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgesmith.converter.handle import ModelHandle
    from edgesmith.converter.steps.base import StepResult

    out = ctx.step.workdir / f"{model.path.stem}.gemm-int8.onnx"
    quantize_dynamic(
        str(model.path), str(out), op_types_to_quantize=["Gemm", "MatMul"], weight_type=QuantType.QInt8
    )
    return StepResult(ModelHandle(out, "int8-dynamic"), {"mode": "dynamic", "engine": "gemm-only"})


def test_a_new_quantizer_is_one_registry_entry(monkeypatch, tmp_path):
    """Declared first in the registry, a new engine makes the ONNX export end to end: planned, run,
    verified against the original and described in the report."""
    from edgesmith import convert

    gemm_only = Quantizer("gemm-only", "onnx", "onnx", ("dynamic",), ("auto",), _matmul_only)
    monkeypatch.setattr(plan, "QUANTIZERS", (gemm_only, *QUANTIZERS))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[exports]]\nformat = "onnx"\n[profile]\nenabled = false\n')
    report = convert(SHIPPED_MODEL, recipe=recipe, preset="int8-dynamic", out=tmp_path / "out")
    (artifact,) = report["artifacts"]
    assert artifact["engine"] == "gemm-only" and artifact["precision"] == "int8-dynamic"
    import onnx

    ops = {n.op_type for n in onnx.load(artifact["path"]).graph.node}
    assert "MatMulInteger" in ops and "ConvInteger" not in ops  # only the dense layers quantized
    outputs = artifact["verify"]["outputs"]  # its outputs against the original's, on the same inputs
    assert outputs and min(o["cosine"] for o in outputs) >= 0.98


def test_the_fastest_comparison_and_the_onnx_export_share_one_quantization(monkeypatch, tmp_path):
    """With a target, the fastest-format comparison quantizes the ONNX model before the exports; the
    ONNX export takes that result (a transformer's rescue took 20+ minutes, and ran twice); the
    TFLite export, another format, is quantized by its own engine."""
    from edgesmith import convert

    calls = []

    def counted(config, model, ctx):
        calls.append(ctx.format)
        return _matmul_only(config, model, ctx)

    monkeypatch.setattr(plan, "QUANTIZERS", (Quantizer("counted", "onnx", "onnx", ("dynamic",), ("auto",), counted),
                                             *QUANTIZERS))  # fmt: skip
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[exports]]\nformat = "onnx"\n[profile]\ntargets = ["host"]\nruns = 3\nwarmup = 1\n')
    report = convert(SHIPPED_MODEL, recipe=recipe, preset="int8-dynamic", out=tmp_path / "out")
    assert calls == ["onnx"]  # once, for both
    assert {c["graph"] for c in report["fastest"]["host"]["candidates"]} >= {"mnist_cnn.int8-dynamic.onnx"}
    (artifact,) = report["artifacts"]
    assert artifact["engine"] == "gemm-only" and artifact["verify"]["outputs"]


def test_a_new_engine_is_one_file_and_one_registry_line(tmp_path, mnist_test):
    """tests/extra_quantizer.py is a whole engine. Appended to QUANTIZERS, its name becomes a valid
    `quantize.engine` (the validator's choices come from the registry), the planner picks it by that
    name, and the artifact it makes reloads and classifies real MNIST digits like the float model."""
    import extra_quantizer

    from edgesmith import convert, runtime

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[[steps]]\nkind = "quantize"\nmode = "dynamic"\nengine = "{extra_quantizer.ENGINE}"\n'
        '[[exports]]\nformat = "onnx"\n[profile]\nenabled = false\n'
    )
    with pytest.raises(InputError) as unknown:  # not registered yet: one line naming the known engines
        Recipe.load(recipe)
    known = ", ".join(repr(name) for name in engine_names())  # 'auto' and every registered engine
    message = f"steps[0].engine = 'ort-per-tensor' is not valid; expected one of {known}"
    assert str(unknown.value).endswith(message) and "\n" not in str(unknown.value)
    assert {"'onnxruntime'", "'nncf'", "'inc'", "'qat'"} <= set(known.split(", "))
    QUANTIZERS.append(extra_quantizer.PER_TENSOR)
    try:
        assert engine_names()[-1] == extra_quantizer.ENGINE
        report = convert(SHIPPED_MODEL, recipe=recipe, out=tmp_path / "out")
    finally:
        QUANTIZERS.remove(extra_quantizer.PER_TENSOR)
    assert extra_quantizer.ENGINE not in engine_names()
    (artifact,) = report["artifacts"]
    assert artifact["engine"] == extra_quantizer.ENGINE and artifact["precision"] == "int8-dynamic"
    assert artifact["quantization"]["weights"] == "int8, one scale per tensor"
    import onnx

    model = onnx.load(artifact["path"])
    assert {"ConvInteger", "MatMulInteger"} <= {n.op_type for n in model.graph.node}
    weight_scales = [i for i in model.graph.initializer if i.name.endswith("_scale")]
    assert weight_scales and all(list(i.dims) in ([], [1]) for i in weight_scales)  # per tensor
    images, labels = mnist_test[0][:2000], mnist_test[1][:2000]
    quantized = runtime.load(artifact["path"], backend="ort").run({"input": images})
    original = runtime.load(SHIPPED_MODEL, backend="ort").run({"input": images})
    (q,), (f,) = quantized.values(), original.values()
    assert (q.argmax(1) == f.argmax(1)).mean() >= 0.99
    assert (q.argmax(1) == labels).mean() >= (f.argmax(1) == labels).mean() - 0.01


@dataclass(frozen=True)
class _OnnxStep(StepConfig):
    kind: ClassVar[str] = "test-onnx-step"  # consumes and (by default) produces "onnx"


@dataclass(frozen=True)
class _TorchToOnnx(StepConfig):
    kind: ClassVar[str] = "test-torch-to-onnx"
    consumes: ClassVar[str] = "torch"
    produces: ClassVar[str] = "onnx"


def _float_only(tmp_path, *steps) -> tuple[Recipe, object]:
    return Recipe(steps=list(steps), profile=ProfileConfig(enabled=False)), tmp_path / "out"


def test_a_step_declares_what_it_produces(tmp_path, monkeypatch):
    """A step that returns another kind than it declares is an internal error, named when it returns;
    a declaration the pipeline cannot chain (a PyTorch step producing ONNX) before any model is loaded.
    Neither leaves an output folder."""
    assert _OnnxStep.produces == "onnx" and _TorchToOnnx.produces == "onnx"
    monkeypatch.setitem(HANDLERS, _OnnxStep, lambda config, model, ctx: StepResult(TorchHandle(None, ())))
    recipe, out = _float_only(tmp_path, _OnnxStep())
    with pytest.raises(
        RuntimeError, match="step 'test-onnx-step' declares it produces onnx but returned torch"
    ):
        run(recipe, SHIPPED_MODEL, out)
    assert not out.exists()
    recipe, out = _float_only(tmp_path, _TorchToOnnx())
    with pytest.raises(RuntimeError, match="step 'test-torch-to-onnx' consumes torch and produces onnx"):
        run(recipe, SHIPPED_MODEL, out)
    assert not out.exists()


def test_a_quantizer_returning_another_kind_is_an_internal_error(tmp_path, monkeypatch):
    liar = Quantizer(
        "liar", "onnx", "onnx", ("dynamic",), ("auto",), lambda c, m, x: StepResult(TFLiteHandle(b""))
    )
    monkeypatch.setattr(plan, "QUANTIZERS", (liar, *QUANTIZERS))
    recipe = Recipe(steps=[QuantizeConfig(mode="dynamic")], profile=ProfileConfig(enabled=False))
    with pytest.raises(RuntimeError, match="quantizer 'liar' declares it produces onnx but returned tflite"):
        run(recipe, SHIPPED_MODEL, tmp_path / "out")
    assert not (tmp_path / "out").exists()
