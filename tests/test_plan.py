"""The export planner (converter/plan.py): which quantizer makes each export, refusals before any model
is loaded, and a new quantizer being one declaration in the registry."""

import dataclasses

import pytest

from edgesmith.converter import plan
from edgesmith.converter.recipe import ExportConfig
from edgesmith.converter.steps import QUANTIZERS, Quantizer
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
