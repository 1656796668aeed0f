"""Steps a recipe can list, by `kind`. Each step lives in its own module; see docs/adding_a_step.md.

PyTorch-level steps (`consumes = "torch"`: prune, prune_transformer, distill, qat, lowrank,
sparsify, binarize) run on the module before the ONNX export; ONNX-level steps run after it; `quantize` comes
last: converter/plan.py picks, for each export, the first quantizer of `QUANTIZERS` that produces the
export's kind, answers to the recipe's `engine` and applies its mode. The engine names a recipe may
write are those of `QUANTIZERS` (`base.engine_names`, checked by validate.py).
"""

from __future__ import annotations

from . import (
    aeq_quantize,
    inc_quantize,
    keras_tflite,
    nncf_quantize,
    openvino_fp16,
    ort_rescue,
    qat_export,
    quantize,  # noqa: F401  (registers the quantize step's handler)
    torch_steps,  # noqa: F401  (registers the PyTorch-level handlers)
    weight_only,
)
from .base import (
    HANDLERS,
    QUANTIZERS,
    ExportContext,
    Facts,
    Quantizer,
    StepConfig,
    StepContext,
    StepResult,
    engine_names,
    register,
)
from .binarize import BinarizeConfig
from .distill import DistillConfig
from .lowrank import LowRankConfig
from .prune import PruneConfig
from .prune_transformer import TransformerPruneConfig
from .qat import QATConfig
from .quantize import QuantizeConfig
from .sparsify import SparsifyConfig

STEP_CONFIGS: dict[str, type[StepConfig]] = {
    cls.kind: cls
    for cls in (
        PruneConfig,
        TransformerPruneConfig,
        DistillConfig,
        QATConfig,
        LowRankConfig,
        SparsifyConfig,
        BinarizeConfig,
        QuantizeConfig,
    )
}

# Quantizers, in order of preference (engine = "auto" takes the first that fits); a new engine is one
# module with a `Quantizer` and one line here. Its `engines` become valid `quantize.engine` values.
QUANTIZERS[:] = [  # the list base.py holds, which the planner and the validator read
    qat_export.QAT_ONNX,  # the source after a qat step -> ONNX: static, with the ranges it learned
    ort_rescue.ONNXRUNTIME,  # ONNX -> ONNX: static, dynamic, fp16 (rescued when they miss the gate)
    weight_only.ONNX,  # ONNX -> ONNX: weight-only INT8/INT4 (ONNX Runtime's MatMulNBits)
    nncf_quantize.ONNX,  # ONNX -> ONNX: static (engine = "nncf")
    inc_quantize.INC,  # the PyTorch source -> ONNX: static (engine = "inc")
    nncf_quantize.OPENVINO,  # OpenVINO -> OpenVINO: static
    openvino_fp16.OPENVINO_FP16,  # OpenVINO -> OpenVINO: fp16 (compressed weights)
    weight_only.OPENVINO,  # OpenVINO -> OpenVINO: weight-only INT8/INT4 (NNCF compress_weights)
    keras_tflite.KERAS,  # a Keras source -> TFLite: static, dynamic, fp16 (TensorFlow's converter)
    aeq_quantize.AEQ,  # TFLite -> TFLite: static, dynamic, fp16
]

__all__ = [
    "HANDLERS",
    "QUANTIZERS",
    "STEP_CONFIGS",
    "ExportContext",
    "Facts",
    "Quantizer",
    "StepConfig",
    "StepContext",
    "StepResult",
    "engine_names",
    "register",
]
