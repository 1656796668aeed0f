"""tests/models.py's small_cnn in the other backends' formats, built from the same ONNX weights.

- OpenVINO IR: `openvino.convert_model` on the ONNX file, saved without FP16 compression.
- TFLite: the same layers written in TensorFlow (NCHW input, transposed once to NHWC inside), with the
  ONNX initializers as constants, so the .tflite has the ONNX file's input/output names and shapes.
  `int8=True` gives a full-integer model (int8 input and output) calibrated on random inputs;
  `batch=N` a fixed batch size, as litert-torch writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_weights(onnx_path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer}


def small_cnn_openvino(onnx_path: Path, xml_path: Path) -> Path:
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def small_cnn_tflite(
    onnx_path: Path, tflite_path: Path, int8: bool = False, batch: int | None = None
) -> Path:
    import tensorflow as tf

    w = onnx_weights(onnx_path)
    kernel = tf.constant(w["conv_w"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
    conv_b, fc_w, fc_b = (tf.constant(w[k]) for k in ("conv_b", "fc_w", "fc_b"))

    class SmallCNN(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([batch, 1, 28, 28], tf.float32, name="input")])
        def serve(self, x):
            y = tf.nn.conv2d(tf.transpose(x, (0, 2, 3, 1)), kernel, 1, "SAME") + conv_b
            y = tf.reduce_mean(tf.nn.relu(y), axis=(1, 2))
            return {"logits": tf.matmul(y, fc_w, transpose_b=True) + fc_b}

    module = SmallCNN()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    if int8:
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(32):
                yield [rng.standard_normal((1, 1, 28, 28)).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    tflite_path.write_bytes(converter.convert())
    return tflite_path
