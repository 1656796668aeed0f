"""The host calibration's rules (targets/hostcal.py), on recorded numbers: no benchmark runs here
except one short timing of two tiny networks. The calibration itself against held-out models is
`benchmarks/host_estimate.py` (docs/targets.md) and the slow test in test_targets_costmodel.py."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from edgesmith.targets import costmodel, hostcal, spec
from edgesmith.targets.layer import Layer

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")


@needs_ort
def test_the_calibration_cache_is_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    here = hostcal.cache_path()
    assert here.parent == tmp_path / "edgesmith" and here.name.startswith("host-")
    assert hostcal.cache_path() == here  # the same CPU and runtime: the same file
    monkeypatch.setattr(hostcal, "_cpu_model", lambda: "AMD EPYC 9R14 96-Core Processor")
    other_cpu = hostcal.cache_path()
    monkeypatch.setattr(hostcal, "_cores", lambda: 64)
    more_cores = hostcal.cache_path()
    monkeypatch.setattr(hostcal, "VERSION", hostcal.VERSION + 1)
    assert len({here, other_cpu, more_cores, hostcal.cache_path()}) == 4


@needs_ort
def test_a_cache_file_of_another_version_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = hostcal.cache_path()
    hostcal._write_atomic(path, {"version": hostcal.VERSION - 1, "efficiency": {}})
    assert hostcal._read(path) is None
    hostcal._write_atomic(path, {"version": hostcal.VERSION})
    assert hostcal._read(path) == {"version": hostcal.VERSION}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_dispatch_costs_split_a_chain_into_per_op_and_per_run():
    # 1 tiny conv: 10 us a run; 40 of them: 49 us -> 1 us per op, 9 us per run beyond its one op
    assert hostcal.dispatch_costs(0.010, 0.049, 40) == (1.0, 9.0)
    assert hostcal.dispatch_costs(0.010, 0.009, 40) == (0.0, 10.0)  # noise never makes a cost negative


def _layer(name: str, op_class: str, macs: int, dtype: str = "fp32", depth: int = 288) -> Layer:
    in_channels = depth if op_class == "conv" and depth < 64 else 32  # depth == in_channels: a 1x1
    return Layer(name, "Conv", op_class, dtype, macs, 0, 4096, 4096, depth=depth, in_channels=in_channels)


def test_each_class_level_is_set_by_whole_runs_of_one_class_networks():
    """Whole-run times made from known per-class factors (1x1 convolutions 1.3x slower than the
    profile-fitted table says, 3x3 1.4x, depthwise 0.8x, the rest 1.1x): anchor_classes recovers
    them, so every network's estimate matches its time, the mixed one included."""
    host = dataclasses.replace(spec.get("host"), op_overhead_us=1.0, run_overhead_us=5.0, depth_half={})
    table = {"fp32": {"conv": 0.9, "pointwise": 0.8, "dwconv": 0.2, "gemm": 0.05, "pool": 0.3, "other": 0.1}}
    host = dataclasses.replace(host, efficiency=table)
    nets = {
        "pointwise": [_layer(f"p{i}", "conv", 20_000_000, depth=32) for i in range(4)],
        "conv": [_layer(f"c{i}", "conv", 40_000_000) for i in range(4)],
        "dwconv": [_layer(f"d{i}", "dwconv", 2_000_000, depth=9) for i in range(4)],
        "gemm": [_layer("fc", "gemm", 500_000, depth=512), _layer("gap", "pool", 30_000, depth=0)],
        "mixed": [_layer("m0", "conv", 30_000_000), _layer("m1", "dwconv", 1_000_000, depth=9),
                  _layer("m2", "conv", 10_000_000, depth=32), _layer("m3", "pool", 100_000, depth=0)],
    }  # fmt: skip
    slower = {"pointwise": 1.3, "conv": 1.4, "dwconv": 0.8, "gemm": 1.0}
    truth = {"fp32": {c: v / slower.get(c, 1.1) for c, v in table["fp32"].items()}}
    measured = {
        n: costmodel.estimate(g, dataclasses.replace(host, efficiency=truth), 1).p50_ms
        for n, g in nets.items()
    }
    before = {n: costmodel.estimate(g, host, 1).p50_ms / measured[n] for n, g in nets.items()}
    assert all(abs(r - 1) > 0.05 for n, r in before.items() if n != "gemm"), before  # the table is off

    anchored = hostcal.anchor_classes(table, [(g, measured[n]) for n, g in nets.items()], host)
    for op_class, value in truth["fp32"].items():
        assert anchored["fp32"][op_class] == pytest.approx(value, rel=0.01), op_class
    fitted = dataclasses.replace(host, efficiency=anchored)
    for name, graph in nets.items():
        assert costmodel.estimate(graph, fitted, 1).p50_ms == pytest.approx(measured[name], rel=0.01), name


@needs_ort
def test_best_cpu_ms_times_every_network_in_turns(tmp_path):
    one = hostcal.build_net(tmp_path / "one.onnx", hostcal.TINY[:1], hostcal.TINY_INPUT)
    chain = hostcal.build_net(tmp_path / "chain.onnx", hostcal.TINY, hostcal.TINY_INPUT)
    best = hostcal.best_cpu_ms({"one": one, "chain": chain}, passes=2, runs=3)
    assert set(best) == {"one", "chain"} and 0 < best["one"] < best["chain"]  # 1 kernel against 40


def test_a_kernel_within_the_private_cache_is_not_held_to_the_dram_roof(tmp_path):
    index = tmp_path / "index2"
    index.mkdir()
    for name, text in (("level", "2\n"), ("type", "Unified\n"), ("size", "2048K\n")):
        (index / name).write_text(text)
    (tmp_path / "index0").mkdir()  # an L1 entry whose files cannot be read is skipped
    assert hostcal.private_cache_kb(tmp_path) == 2048
    assert hostcal.private_cache_kb(tmp_path / "absent") == 0

    host = dataclasses.replace(spec.get("host"), bandwidth_gbs=20.0, cache_kb=2048)
    pool = Layer("pool", "MaxPool", "pool", "fp32", 12_544, 0, 50_176, 12_544)  # the demo CNN's first
    big = dataclasses.replace(pool, in_bytes=8 << 20)  # 8 MB: streamed from DRAM
    assert host.memory_s(pool.bytes) == 0 and host.memory_s(big.bytes) == pytest.approx(big.bytes / 20e9)
    one_roof = dataclasses.replace(host, cache_kb=0)
    assert costmodel.layer_ms(pool, host) < costmodel.layer_ms(pool, one_roof)
    assert costmodel.layer_ms(big, host) == costmodel.layer_ms(big, one_roof)
