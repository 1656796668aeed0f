"""The latency cost model: MAC counts, roofline, thread scaling, fitting, host per-layer profiles,
TFLite graphs and the MCU arena estimate, on models built in code and the shipped CNN."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from edgesmith.targets import costmodel, graph, hostprofile, mcu, spec

from conftest import SHIPPED_MODEL
from models import small_cnn


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return small_cnn(tmp_path_factory.mktemp("cm") / "cnn.onnx")


def test_layers_and_macs(cnn):
    layers = graph.layers(cnn)
    assert [lay.op_class for lay in layers] == ["conv", "pool", "gemm"]  # relu fused, flatten free
    conv, pool, fc = layers
    assert conv.macs == 8 * 28 * 28 * 9 and conv.outputs[-1] == "r" and conv.out_bytes == 8 * 28 * 28 * 4
    assert fc.macs == 10 * 8 and fc.param_bytes == (10 * 8 + 10) * 4 and fc.inputs == ["p"]


def test_roofline_threads_and_overhead(cnn):
    rpi4 = spec.get("rpi4")
    one, four = costmodel.estimate(cnn, rpi4, 1), costmodel.estimate(cnn, rpi4, 4)
    assert four.p50_ms < one.p50_ms and four.threads == 4
    slow_memory = dataclasses.replace(rpi4, bandwidth_gbs=0.001)
    conv = graph.layers(cnn)[0]
    assert costmodel.layer_ms(conv, slow_memory) == pytest.approx(
        conv.bytes / 1e3 + rpi4.op_overhead_us / 1e3
    )
    assert one.p50_ms > len(one.layers) * rpi4.op_overhead_us / 1e3


def test_fit_recovers_the_efficiencies_that_produced_the_times(cnn):
    """Times generated with known efficiencies and overhead are fitted back to them."""
    truth = dataclasses.replace(spec.get("host"), op_overhead_us=5.0,
                                efficiency={"fp32": {"conv": 0.7, "pool": 0.2, "gemm": 0.3}})  # fmt: skip
    samples = []
    for path in (cnn, SHIPPED_MODEL):
        layers = graph.layers(path)
        samples.append((layers, {lay.name: costmodel.layer_ms(lay, truth, 1) for lay in layers}))
    table, overhead = costmodel.fit(samples, dataclasses.replace(truth, efficiency={"fp32": {}}), threads=1)
    assert overhead == pytest.approx(5.0, rel=0.05)
    assert table["fp32"]["conv"] == pytest.approx(0.7, rel=0.05)  # tiny layers pin the overhead, not MACs


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_host_profile_matches_every_layer_and_estimate_is_in_range():
    layers = graph.layers(SHIPPED_MODEL)
    times = hostprofile.match(layers, hostprofile.ort_node_times(SHIPPED_MODEL, 1, runs=10))
    assert {lay.name for lay in layers} <= set(times)
    measured = sum(times.values())
    estimated = costmodel.estimate(layers, spec.get("host"), 1).p50_ms
    assert 0.25 < estimated / measured < 4  # the accuracy figures are in benchmarks/costmodel_validation.py


def test_arena_of_a_chain_is_the_largest_input_plus_output(cnn):
    layers = graph.layers(cnn)
    # input (1x1x28x28 fp32) and conv output (8x28x28 fp32) are live together at the first layer
    assert mcu.arena_bytes(layers) == 28 * 28 * 4 + 8 * 28 * 28 * 4
    fit = mcu.fit(cnn, spec.get("nrf52840"), layers)
    assert fit["fits"] and fit["ram_needed_bytes"] == fit["arena_bytes"] + 10 * 1024
    assert "fits on nrf52840" in mcu.describe(fit, spec.get("nrf52840"))


def test_a_model_too_big_for_an_mcu_says_by_how_much(tmp_path):
    big = small_cnn(tmp_path / "big.onnx", classes=10)
    tiny = dataclasses.replace(spec.get("nrf52840"), ram_bytes=1024, flash_bytes=2048)
    fit = mcu.fit(big, tiny)
    assert not fit["fits"] and fit["ram_margin_bytes"] < 0
    assert "does not fit" in mcu.describe(fit, tiny) and "over" in mcu.describe(fit, tiny)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("ai_edge_litert")
                    is None, reason="needs tensorflow and ai-edge-litert to build and read a .tflite")  # fmt: skip
def test_tflite_graph_and_mcu_profile(tmp_path, cli):
    import json

    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((28, 28, 1), batch_size=1),
                                 tf.keras.layers.Conv2D(8, 3, activation="relu"),
                                 tf.keras.layers.DepthwiseConv2D(3), tf.keras.layers.GlobalAveragePooling2D(),
                                 tf.keras.layers.Dense(10)])  # fmt: skip
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    layers = graph.layers(path)
    assert [lay.op for lay in layers] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert layers[0].macs == 26 * 26 * 8 * 9 and layers[1].macs == 24 * 24 * 8 * 9 and layers[3].macs == 80
    code, out, err = cli("profile", path, "--target", "stm32f746", "--json")
    assert code == 0, err
    data = json.loads(out.strip().splitlines()[-1])  # the TF converter printed above it
    assert data["source"] == "estimated" and data["mcu_fit"]["fits"] and "note" in data["mcu_fit"]
