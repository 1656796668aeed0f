"""PyTorch (and ONNX via onnx2torch) to TFLite: litert-torch converts in fp32, then Google's AI Edge
Quantizer (the engine litert-torch itself hands its quantization recipes to) applies the precision.

Why not litert-torch's PT2E int8 path: it is as accurate on the shipped CNN (98.87% vs 98.85%
top-1, fp32 98.87%), but it re-traces and re-lowers the model (29 s against under 1 s for the AI Edge
Quantizer on the converted graph), has no fp16, and would need a second code path for every
precision. The AI Edge Quantizer calibrates on the graph LiteRT will actually run, covers fp16,
dynamic-range and full-integer INT8 with one recipe format, and writes float I/O (QUANTIZE first,
DEQUANTIZE last) that TensorFlow's I/O tool turns into int8/uint8 I/O.

The batch axis is fixed at 1: litert-torch cannot lower a reshape whose size depends on a symbolic
batch (`view(batch, 576)`), and batch 1 is what edge devices run. edgesmith's LiteRT backend runs bigger feeds in chunks.
"""

from __future__ import annotations

import numpy as np

from ... import _quiet
from ...errors import InputError, require

WHY = "TFLite export from PyTorch and ONNX models"


# litert-torch, JAX and TensorFlow print progress and C++ logs; the CLI's output is ours
quiet = _quiet.tensorflow


def sample_args(inputs) -> tuple:
    """One zero sample per input (batch 1), with the source's dtypes; dynamic axes become 1."""
    torch = require("torch", "convert", WHY)
    return tuple(torch.zeros(spec.concrete_shape(1), dtype=getattr(torch, spec.dtype)) for spec in inputs)


def convert_fp32(module, inputs) -> bytes:
    """A torch module (or `ExportedProgram.module()`) to fp32 `.tflite` bytes, batch 1."""
    litert_torch = require("litert_torch", "convert-tflite", WHY)
    try:
        with quiet():
            edge = litert_torch.convert(module, sample_args(inputs))
            return bytes(edge.model_content())
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"litert-torch could not convert the model to TFLite ({first}); an op may have no TFLite lowering"
        ) from exc


def _recipe(mode: str):
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    manager = recipe_manager.RecipeManager()
    if mode == "static":  # int8 activations (asymmetric, per tensor), int8 weights per channel
        manager.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
        for boundary in (ops.INPUT, ops.OUTPUT):  # float I/O; set_io_type makes it integer on request
            manager.add_quantization_config(".*", boundary, algorithm_key=AlgorithmName.NO_QUANTIZE)
        return manager.get_quantization_recipe()
    if mode == "dynamic":
        return recipe.dynamic_wi8_afp32()
    manager.add_weight_only_config(".*", ops.ALL_SUPPORTED, 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


def quantize(fp32: bytes, mode: str, calibration, names: list[str]) -> tuple[bytes, dict]:
    """Apply `mode` (static | dynamic | fp16) to fp32 `.tflite` bytes whose signature inputs are
    `names` (the source's). Static INT8 calibrates on `calibration` (an ArraySource), one sample at a
    time since the model's batch is 1 (or the source's fixed batch)."""
    aeq = require("ai_edge_quantizer.quantizer", "convert-tflite", "TFLite quantization (ai-edge-quantizer)")
    from ai_edge_litert.interpreter import Interpreter

    (signature,) = Interpreter(model_content=fp32).get_signature_list()
    quantizer = aeq.Quantizer(fp32, _recipe(mode))
    report: dict = {"mode": mode, "engine": "ai-edge-quantizer"}
    with quiet():
        result = None
        if mode == "static":
            samples = [{n: feed[n] for n in names} for feed in calibration.samples()]
            result = quantizer.calibrate({signature: samples}, num_threads=1)
            report["calibration"] = {
                "samples": len(samples),
                "path": str(calibration.path),
                "method": "minmax",
            }
        quantized = quantizer.quantize(result, enable_progress_bar=False, enable_progress_report=False)
    report.update(
        {
            "static": {
                "weights": "int8 per channel (symmetric)",
                "activations": "int8 per tensor (asymmetric)",
            },
            "dynamic": {"weights": "int8 per channel", "activations": "float (quantized at run time)"},
            "fp16": {"weights": "float16", "activations": "float32"},
        }[mode]
    )
    return bytes(quantized.quantized_model), report


def check_close(fp32: bytes, reference, inputs, output: str, atol: float = 1e-3) -> None:
    """Run the converted fp32 model and the reference on one sample: a silent mistranslation (a wrong
    layout, a dropped op) fails here, not on a device."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    feeds = {  # integer inputs (ids, masks, lengths) get ones: random values could be out of range, and
        # an all-zero attention mask leaves nothing to pool
        s.name: (rng.standard_normal(s.concrete_shape(1)) if np.dtype(s.dtype).kind == "f" else
                 np.ones(s.concrete_shape(1))).astype(s.dtype)
        for s in inputs
    }  # fmt: skip
    runner = Interpreter(model_content=fp32).get_signature_runner()
    types = {name: np.dtype(d["dtype"]) for name, d in runner.get_input_details().items()}
    got = runner(**{n: x.astype(types.get(n, x.dtype)) for n, x in feeds.items()})[
        output
    ]  # int64 ids -> int32
    want = np.asarray(reference(feeds)[0])
    scale = max(1.0, float(np.abs(want).max()))
    if got.shape != want.shape or not np.allclose(got, want, atol=atol * scale):
        raise InputError(
            f"the TFLite conversion does not reproduce the model (outputs differ by "
            f"{float(np.abs(got - want).max()) if got.shape == want.shape else 'shape'}); please report it"
        )
