"""PyTorch (and ONNX via onnx2torch) to TFLite: litert-torch converts in fp32; the precision is the
AI Edge Quantizer's step (steps/aeq_quantize.py, picked by converter/plan.py).

The batch axis is fixed at 1: litert-torch cannot lower a reshape whose size depends on a symbolic
batch (`view(batch, 576)`), and batch 1 is what edge devices run. edgesmith's LiteRT backend runs bigger feeds in chunks.
"""

from __future__ import annotations

import numpy as np

from ... import _quiet
from ...errors import InputError, require
from ..steps.aeq_quantize import quantize  # noqa: F401  (its old home: tflite_torch.quantize)

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
