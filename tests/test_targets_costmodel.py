"""The latency cost model: MAC counts, roofline, thread scaling, fitting, host per-layer profiles,
TFLite graphs and the MCU arena estimate, on models built in code and the shipped CNN."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from edgesmith.errors import InputError
from edgesmith.targets import costmodel, graph, hostprofile, mcu, spec
from edgesmith.targets.graph import Layer

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


def test_a_qdq_model_reads_as_the_kernels_runtimes_run(cnn, tmp_path):
    """QDQ ONNX as `convert --preset int8` writes it: the ReLU behind Q/DQ joins its conv and the pool
    between DQ and Q is an int8 kernel (1 byte per element), as in the .tflite of the same model."""
    from edgesmith.targets import hostcal

    qdq = hostcal.quantize_net(cnn, tmp_path / "cnn_int8.onnx", shape=(1, 1, 28, 28))
    fp32, int8 = graph.layers(cnn), graph.layers(qdq)
    assert [lay.op_class for lay in int8] == [lay.op_class for lay in fp32] == ["conv", "pool", "gemm"]
    assert [lay.dtype for lay in int8] == ["int8", "int8", "int8"]
    assert int8[1].in_bytes * 4 == fp32[1].in_bytes


def test_layers_after_a_computed_slice_keep_their_shapes(tmp_path, monkeypatch):
    """A TorchScript export of `x.chunk(2, 1)` (YOLO's C2f/C3k2 blocks) slices at positions computed
    from Shape: ONNX's shape inference leaves every later tensor unsized; the fallback sizes them."""
    torch = pytest.importorskip("torch")

    class Split(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            left, right = self.a(x).chunk(2, 1)
            return torch.cat([left, self.b(right)], 1)

    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    calls = []
    real = SymbolicShapeInference.infer_shapes
    monkeypatch.setattr(
        SymbolicShapeInference, "infer_shapes", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    path = tmp_path / "split.onnx"
    torch.onnx.export(Split().eval(), torch.zeros(1, 3, 32, 32), str(path), dynamo=False, opset_version=17)
    convs = [lay for lay in graph.layers(path) if lay.op_class == "conv"]
    assert [c.macs for c in convs] == [32 * 32 * 16 * 27, 32 * 32 * 8 * 72]
    assert convs[1].in_bytes == 32 * 32 * 8 * 4 and calls == [1]
    graph.layers(SHIPPED_MODEL)  # ONNX's pass sizes everything: no fallback (it costs seconds)
    assert calls == [1]


def test_fit_depth_recovers_the_depth_constant_and_a_slow_stem():
    """Per-layer times made with K0 = 32 for INT8 and stems 10x slower per MAC than other convs with
    a K0 of their own (128): `fit_depth` finds all three (issue 15: ORT's x86 INT8 stems, 3x3 and 7x7,
    and shallow convolutions)."""
    host = dataclasses.replace(spec.get("host"), macs_per_cycle={"fp32": 32, "int8": 128}, clock_ghz=2.0)
    truth = dataclasses.replace(host, depth_half={"int8": 32.0, "int8.stem": 128.0}, op_overhead_us=5.0,
                                efficiency={"int8": {"conv": 0.6, "stem": 0.06}, "fp32": host.efficiency["fp32"]})  # fmt: skip
    # (depth, input channels, outputs): the depth cost is paid per output, so outputs must vary
    shapes = [(27, 3, 112), (147, 3, 112), (16, 16, 56), (32, 32, 56), (64, 64, 28), (288, 32, 56), (576, 64, 28),
              (1152, 128, 14), (48, 48, 28), (96, 96, 14)]  # fmt: skip
    layers = [Layer(f"c{i}", "Conv", "conv", "int8", h * h * 64 * k, 0, 0, 0, depth=k, in_channels=c)
              for i, (k, c, h) in enumerate(shapes)]  # fmt: skip
    measured = {lay.name: costmodel.layer_ms(lay, truth) for lay in layers}
    table, overhead, depth_half = costmodel.fit_depth([(layers, measured)], host)
    assert depth_half == {"int8": 32.0, "int8.stem": 128.0} and overhead == pytest.approx(5.0, rel=0.01)
    assert table["int8"]["conv"] == pytest.approx(0.6, rel=0.01) and table["int8"]["stem"] == pytest.approx(
        0.06, rel=0.01
    )
    fitted = dataclasses.replace(host, efficiency=table, depth_half=depth_half, op_overhead_us=overhead)
    shallow, deep = layers[2], layers[7]
    assert (
        costmodel.layer_ms(shallow, fitted) / shallow.macs > 2 * costmodel.layer_ms(deep, fitted) / deep.macs
    )
    plain = dataclasses.replace(fitted, efficiency={"int8": {"conv": 0.6}, "fp32": host.efficiency["fp32"]})
    assert costmodel.kernel_class(layers[0], plain.efficiency["int8"]) == "conv", "no stem entry: a conv"


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
    # the per-inference overhead (measured by the host calibration) is paid once, not per layer
    per_run = costmodel.estimate(cnn, dataclasses.replace(rpi4, run_overhead_us=12.0), 1)
    assert per_run.p50_ms == pytest.approx(one.p50_ms + 0.012) and per_run.layers == one.layers


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


def mobilenet_v1(alpha=1.0, res=224, cin=3, classes=1000, dtype="fp32") -> list[Layer]:
    """MobileNet v1 as the TFLite converter lays out Keras' `MobileNet` (benchmarks/device_graphs.py
    builds the same graph; graph.layers of that file gives these layers, checked when written):
    conv, 13 x (depthwise, pointwise), mean, 1x1 classifier, softmax."""
    size, bias = (1 if dtype == "int8" else 4), 4

    def ch(n):
        return int(n * alpha)

    h, c = res // 2, ch(32)
    out = [Layer("conv1", "CONV_2D", "conv", dtype, h * h * c * 9 * cin, c * (9 * cin * size + bias),
                 res * res * cin * size, h * h * c * size)]  # fmt: skip
    cfg = (
        [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    )
    for i, (cout, stride) in enumerate(cfg):
        hin, h = h, h // stride
        out += [Layer(f"dw{i}", "DEPTHWISE_CONV_2D", "dwconv", dtype, h * h * c * 9, c * (9 * size + bias),
                      hin * hin * c * size, h * h * c * size),
                Layer(f"pw{i}", "CONV_2D", "conv", dtype, h * h * ch(cout) * c, ch(cout) * (c * size + bias),
                      h * h * c * size, h * h * ch(cout) * size)]  # fmt: skip
        c = ch(cout)
    return out + [
        Layer("pool", "MEAN", "pool", dtype, c, 0, h * h * c * size, c * size),
        Layer(
            "fc", "CONV_2D", "conv", dtype, c * classes, classes * (c * size + bias), c * size, classes * size
        ),
        Layer("softmax", "SOFTMAX", "elementwise", dtype, classes, 0, classes * size, classes * size),
    ]


def on_board(name: str, stack: str, clock_ghz: float) -> spec.Target:
    """A spec's core on another board (as benchmarks/costmodel_validation.py does for MCU figures)."""
    target = spec.get(name).with_stack(stack)
    scale = clock_ghz / target.clock_ghz
    return dataclasses.replace(target, clock_ghz=clock_ghz, bandwidth_gbs=target.bandwidth_gbs * scale,
                               op_overhead_us=target.op_overhead_us / scale)  # fmt: skip


@pytest.mark.parametrize(
    ("target", "layers", "threads", "published_ms", "tolerance"),
    [  # published figures (docs/device_figures.md); tolerances are what the model achieves, rounded up
        ("pixel2", dict(), 1, 86, 0.05),  # fit: XNNPACK README, Pixel 2, 1 thread
        ("pixel3a", dict(), 1, 88, 0.11),  # held out (other core): Pixel 3a, 1 thread (-10.5%)
        ("pixel3a", dict(), 2, 46, 0.06),  # held out: Pixel 3a, 2 threads
        (("nrf52840", "x-cube-ai", 0.12), dict(alpha=0.25, res=96, classes=2, dtype="int8"), 1, 221.14, 0.06),
        (("stm32h7a3", "x-cube-ai", 0.28), dict(alpha=0.25, res=96, classes=2, dtype="int8"), 1, 50.34, 0.12),
    ],
    ids=[
        "pixel2-v1-fit",
        "pixel3a-v1-held-out",
        "pixel3a-v1-2t-held-out",
        "vww-l4r5-fit",
        "vww-h7a3-held-out",
    ],
)
def test_estimate_matches_published_figures(target, layers, threads, published_ms, tolerance):
    target = spec.get(target) if isinstance(target, str) else on_board(*target)
    estimated = costmodel.estimate(mobilenet_v1(**layers), target, threads).p50_ms
    assert estimated == pytest.approx(published_ms, rel=tolerance)


def test_cores_follow_arms_per_clock_ratios_and_issue_width_shapes_the_rate():
    pixel2, pixel3a, rpi4 = spec.get("pixel2"), spec.get("pixel3a"), spec.get("rpi4")
    a73, a75, a76 = (spec.get(n).macs_per_cycle_for("fp32", "conv") for n in ("pixel2", "pixel3a", "rpi5"))
    # convolutions run at the per-clock fp32 rate: the A76's FMA peak, divided down by Arm's published
    # gains (A76/A75 +35%, A75/A73 +33% floating point at the same clock), not capped by decode
    assert (a76, a76 / a75, a75 / a73) == (8, pytest.approx(1.35, abs=0.01), pytest.approx(1.33, abs=0.01))
    # the depthwise loop (1.4 MACs/instruction) is held by decode width: 2-wide A73, 3-wide A75
    assert pixel2.macs_per_cycle_for("fp32", "dwconv") == pytest.approx(2 * 1.4)
    assert pixel3a.macs_per_cycle_for("fp32", "dwconv") == pytest.approx(3 * 1.4)
    assert pixel2.macs_per_cycle_for("fp32", "pool") == pixel2.macs_per_cycle["fp32"]  # no loop declared
    assert pixel2.efficiency == pixel3a.efficiency, "one xnnpack-arm64 table, cores differ in the cpu section"
    armv7 = rpi4.with_stack("xnnpack-armv7")
    assert (
        armv7.stack == "xnnpack-armv7"
        and armv7.efficiency != rpi4.efficiency
        and rpi4.with_stack(rpi4.stack) is rpi4
    )
    v1 = mobilenet_v1()
    assert costmodel.estimate(v1, armv7, 4).p50_ms > 1.5 * costmodel.estimate(v1, rpi4, 4).p50_ms
    with pytest.raises(InputError, match="did you mean 'xnnpack-armv7'"):
        rpi4.with_stack("xnnpack-armv8")


def test_fit_figures_and_parallel_fraction_recover_what_produced_the_times():
    """End-to-end times made with known efficiencies on two cores are fitted back to them."""
    truth = {"fp32": {"conv": 0.5, "dwconv": 0.15, "pool": 0.1, "elementwise": 0.1}}
    cores = [
        dataclasses.replace(spec.get(n), efficiency=truth, parallel_fraction=0.8)
        for n in ("pixel2", "pixel3a")
    ]
    graphs = [mobilenet_v1(), mobilenet_v1(alpha=0.5, res=160)]
    figures = [(g, costmodel.estimate(g, t, 1).p50_ms, t, 1) for g in graphs for t in cores]
    start = [(g, ms, dataclasses.replace(t, efficiency={"fp32": {"pool": 0.1, "elementwise": 0.1}}), n)
             for g, ms, t, n in figures]  # fmt: skip
    table = costmodel.fit_figures(start)
    assert table["fp32"]["conv"] == pytest.approx(0.5, rel=0.02) and table["fp32"]["dwconv"] == pytest.approx(
        0.15, rel=0.05
    )
    threads = [(g, costmodel.estimate(g, t, 2).p50_ms, dataclasses.replace(t, parallel_fraction=0.3), 2)
               for g in graphs for t in cores]  # fmt: skip
    assert costmodel.fit_parallel(threads) == pytest.approx(0.8, abs=0.01)


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


# a small network unlike the calibration one (other sizes, no residual add): held out of the fit
HELD_OUT_NET = [("conv3", 16, 32, 1), ("conv1", 32, 96, 1), ("dw", 96, 96, 2), ("conv1", 96, 48, 1),
                ("conv3", 48, 64, 1), ("gap",), ("gemm", 64, 10)]  # fmt: skip


@pytest.mark.slow  # ~12 s of calibration (35 s on a loaded 2-core machine)
@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_host_calibration_is_cached_and_estimates_a_held_out_net(tmp_path, monkeypatch):
    from edgesmith.targets import hostcal

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    host = spec.get("host")
    calibrated = hostcal.calibrated(host)
    cached = hostcal.cache_path()
    assert cached.parent == tmp_path / "cache" / "edgesmith" and cached.is_file()
    assert calibrated.fitted.startswith("calibrated on this CPU") and calibrated.efficiency != host.efficiency
    # the calibration network's RGB stem is fitted as its own class, in both dtypes
    assert "stem" in calibrated.efficiency["int8"] and "stem" in calibrated.efficiency["fp32"]
    assert set(calibrated.depth_half) <= {"fp32", "int8", "fp32.stem", "int8.stem"}

    def fails(_target):
        raise AssertionError("calibrated twice: the cache was not used")

    monkeypatch.setattr(hostcal, "calibrate", fails)
    assert hostcal.calibrated(host) == calibrated  # read back from the cache, not benchmarked again

    net = hostcal.build_net(tmp_path / "held_out.onnx", HELD_OUT_NET, (1, 16, 64, 64))
    measured = hostcal.cpu_ms(net, runs=30)  # right after the calibration, under the same load
    estimated = costmodel.estimate(net, calibrated, 1).p50_ms
    # benchmarks/costmodel_validation.py measures the accuracy (MobileNetV2, ResNet-18: within 15%)
    assert 0.6 < estimated / measured < 1.6, (estimated, measured)


@pytest.fixture(scope="module")
def net_pair(tmp_path_factory):
    """The held-out net at fp32 and as ORT's QDQ INT8 (what `--preset int8` writes)."""
    from edgesmith.targets import hostcal

    folder = tmp_path_factory.mktemp("fastest")
    fp32 = hostcal.build_net(folder / "net.onnx", HELD_OUT_NET, (1, 16, 64, 64))
    return {"fp32": fp32, "int8": hostcal.quantize_net(fp32, folder / "net_int8.onnx", (1, 16, 64, 64))}


@pytest.mark.slow  # builds, quantizes and times 5 sessions: ~30 s on a loaded 2-core machine
@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_fastest_measures_every_runtime_and_precision_here(net_pair, tmp_path):
    from edgesmith.converter import fastest
    from edgesmith.runtime import backends

    result = fastest.compare("host", net_pair, tmp_path, 1)
    rows = result["candidates"]
    seen = {(r["runtime"], r["precision"].split(" ")[0]) for r in rows}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8")} <= seen
    if backends.get("openvino").available():
        assert {("openvino", "f32"), ("openvino", "int8")} <= seen
    assert [r["ms"] for r in rows] == sorted(r["ms"] for r in rows) and result["fastest"] == rows[0]
    default = result["default"]
    assert default["default"] and default["precision"].split(" ")[0] in ("fp32", "f32", "bf16")
    for row in rows:  # speed-ups are against the default, not against ONNX Runtime fp32
        assert row["speedup_vs_default"] == pytest.approx(default["ms"] / row["ms"], abs=0.01)
    assert fastest.fastest_at(result, "int8")["precision"] == "int8"
    # each row names the file it timed: the ONNX file, or the OpenVINO IR made from it
    assert {r["graph"].split(" ")[0] for r in rows if r["runtime"] == "onnxruntime"} == {
        "net.onnx",
        "net_int8.onnx",
    }


def test_fastest_on_a_device_is_the_cost_model_per_precision(net_pair, tmp_path):
    from edgesmith.converter import fastest

    result = fastest.compare("rpi5", net_pair, tmp_path, None)
    by_precision = {r["precision"]: r for r in result["candidates"]}
    rpi5 = spec.get("rpi5")
    for precision, path in net_pair.items():
        assert by_precision[precision]["ms"] == pytest.approx(costmodel.estimate(path, rpi5).p50_ms, abs=1e-3)
        # issue 15: it estimates the ONNX graph (a QDQ file for int8) with the stack's kernels; the
        # label names that, not "litert int8 (tflite)", and `exports` the format a device runs
        row = by_precision[precision]
        assert (row["runtime"], row["format"], row["graph"]) == (
            "cost model (xnnpack-arm64)",
            "onnx",
            path.name,
        )
        assert row["exports"] == "tflite" and path.name in fastest.label(row)
    assert result["default"]["precision"] == "fp32" and result["source"].startswith("estimated")


def test_format_auto_exports_the_fastest_format(cli, tmp_path):
    import json

    from edgesmith.runtime import load

    code, out, _ = cli("convert", SHIPPED_MODEL, "--format", "auto", "--out", tmp_path / "out", "--quiet")
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    chosen = report["fastest"]["host"]["exported"]
    (artifact,) = report["artifacts"]
    assert artifact["format"] == chosen["format"] != "auto"
    assert chosen["ms"] == min(r["ms"] for r in report["fastest"]["host"]["candidates"]
                               if r["precision"] == "fp32" or r["default"])  # fmt: skip
    load(artifact["path"]).run({"input": __import__("numpy").zeros((1, 1, 28, 28), "float32")})
