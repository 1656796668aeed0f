"""The graphs behind the published device figures, rebuilt in Keras with random weights and
converted to TFLite (weights do not change MACs or bytes; the published figures used randomized or
their own trained weights of the same topology).

- XNNPACK's end2end_bench models: MobileNet v1 1.0, v2 1.0, v3 Large, v3 Small at 224x224x3, fp32.
- MLPerf Tiny reference models (github.com/mlcommons/tiny, benchmark/training/*), full-integer INT8:
  visual wake words (MobileNetV1 0.25, 96x96x3, 2 classes), image classification (ResNet-8 on
  32x32x3 CIFAR-10), keyword spotting (DS-CNN small, 49x10x1 MFCC, 12 classes), anomaly detection
  (FC autoencoder, 640 inputs).
- TFLite Micro's person_detection example (MobileNetV1 0.25, 96x96x1 grayscale, 2 classes), INT8.
- Ultralytics YOLO11n / YOLO11s detectors at 640x640, fp32, built from the package's model YAML
  (random weights) and exported to ONNX with torch's TorchScript exporter (Ultralytics' own ONNX
  export path); needs `pip install ultralytics` (it brings opencv and torchvision).

    .venv/bin/python benchmarks/device_graphs.py      # builds what is missing in the cache and
                                                      # rewrites benchmarks/data/device_layers.json
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(os.environ.get("EDGESMITH_BENCH_CACHE", "/tmp/edgesmith-costmodel")) / "device"
LAYERS = Path(__file__).with_name("data") / "device_layers.json"
FP32 = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")
YOLO = ("yolo11n", "yolo11s")
INT8 = ("vww", "person_detect", "ic_resnet8", "kws_dscnn", "ad_fc_ae", "mobilenet_v2_int8")


def _keras(name: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras import layers

    apps = keras.applications
    if name == "mobilenet_v1":
        return apps.MobileNet(input_shape=(224, 224, 3), weights=None)
    if name in ("mobilenet_v2", "mobilenet_v2_int8"):
        return apps.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    if name == "mobilenet_v3_large":
        return apps.MobileNetV3Large(input_shape=(224, 224, 3), weights=None, include_preprocessing=False)
    if name == "mobilenet_v3_small":
        return apps.MobileNetV3Small(input_shape=(224, 224, 3), weights=None, include_preprocessing=False)
    if name == "vww":
        return apps.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None, classes=2)
    if name == "person_detect":
        return apps.MobileNet(input_shape=(96, 96, 1), alpha=0.25, weights=None, classes=2)

    def bn_relu(x):
        return layers.Activation("relu")(layers.BatchNormalization()(x))

    if name == "ic_resnet8":  # mlcommons/tiny benchmark/training/image_classification/keras_model.py
        inp = keras.Input((32, 32, 3))
        x = bn_relu(layers.Conv2D(16, 3, padding="same")(inp))
        for filters, stride in ((16, 1), (32, 2), (64, 2)):
            y = bn_relu(layers.Conv2D(filters, 3, strides=stride, padding="same")(x))
            y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(y))
            if stride != 1:
                x = layers.Conv2D(filters, 1, strides=stride, padding="same")(x)
            x = layers.Activation("relu")(layers.Add()([x, y]))
        x = layers.Flatten()(layers.AveragePooling2D(pool_size=8)(x))
        return keras.Model(inp, layers.Dense(10, activation="softmax")(x))
    if name == "kws_dscnn":  # mlcommons/tiny benchmark/training/keyword_spotting/keras_model.py
        inp = keras.Input((49, 10, 1))
        x = bn_relu(layers.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(inp))
        for _ in range(4):
            x = bn_relu(layers.DepthwiseConv2D(3, padding="same")(x))
            x = bn_relu(layers.Conv2D(64, 1, padding="same")(x))
        x = layers.Flatten()(layers.AveragePooling2D(pool_size=(25, 5))(x))
        return keras.Model(inp, layers.Dense(12, activation="softmax")(x))
    if name == "ad_fc_ae":  # mlcommons/tiny benchmark/training/anomaly_detection/keras_model.py
        inp = keras.Input((640,))
        x = inp
        for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
            x = bn_relu(layers.Dense(units)(x))
        return keras.Model(inp, layers.Dense(640)(x))
    raise KeyError(name)


def yolo(name: str) -> Path:
    """An Ultralytics detector with random weights (the YAML, not a download), as ONNX."""
    path = CACHE / f"{name}.onnx"
    if path.exists():
        return path
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(f"{name}.yaml", verbose=False).eval().fuse(verbose=False)
    for module in model.modules():  # what Ultralytics' exporter sets before tracing
        if hasattr(module, "export"):
            module.export, module.format = True, "onnx"
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 3, 640, 640), str(path), opset_version=17, dynamo=False,
                      input_names=["images"], output_names=["output0"])  # fmt: skip
    return path


def build(name: str) -> Path:
    if name in YOLO:
        return yolo(name)
    path = CACHE / f"{name}.tflite"
    if path.exists():
        return path
    import numpy as np
    import tensorflow as tf

    model = _keras(name)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if name in INT8:
        shape = [1, *model.input_shape[1:]]
        rng = np.random.default_rng(0)

        def data():
            for _ in range(8):
                yield [rng.standard_normal(shape).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    return path


def all_graphs() -> dict[str, Path]:
    return {name: build(name) for name in FP32 + INT8 + YOLO}


if __name__ == "__main__":
    from edgesmith.targets import figures, graph

    layers = {name: graph.layers(p) for name, p in all_graphs().items()}
    for name, lays in layers.items():
        print(f"{name:20} {sum(lay.macs for lay in lays) / 1e6:9.2f} M MACs  {len(lays):3d} kernels")
    figures.save_layers(layers, LAYERS)
    print(f"wrote {LAYERS}")
