"""Firmware C array: the generated `.cc` compiles with g++ and holds exactly the `.tflite` bytes, 16-byte
aligned; the tensor-arena estimate follows TFLM's planner (checked by hand on the shipped CNN)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgesmith.errors import InputError

from conftest import SHIPPED_CALIBRATION, SHIPPED_MODEL

pytest.importorskip("litert_torch")
pytestmark = pytest.mark.torch

RECIPE = '[[exports]]\nformat = "c-array"\nio = "int8"\n[profile]\nenabled = false\n'
MAIN = """
#include <cstdint>
#include <cstdio>
#include "mnist_cnn_int8_model_data.h"
int main() {
  std::fprintf(stderr, "%d", int(reinterpret_cast<std::uintptr_t>(g_mnist_cnn_int8_model_data) % 16));
  std::fwrite(g_mnist_cnn_int8_model_data, 1, g_mnist_cnn_int8_model_data_len, stdout);
  return 0;
}
"""


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    import edgesmith

    tmp = tmp_path_factory.mktemp("carray")
    (tmp / "r.toml").write_text(RECIPE)
    report = edgesmith.convert(SHIPPED_MODEL, recipe=tmp / "r.toml", preset="int8",
                               calibration=SHIPPED_CALIBRATION, out=tmp / "out")  # fmt: skip
    return tmp / "out", report


def test_report_lists_header_source_and_arena(firmware):
    out, report = firmware
    (row,) = report["artifacts"]
    assert row["format"] == "c-array" and row["precision"] == "int8"
    assert sorted(Path(f["path"]).name for f in row["files"]) == [
        "mnist_cnn_int8_model_data.cc",
        "mnist_cnn_int8_model_data.h",
    ]
    micro = json.loads((out / "mnist_cnn_int8_model_data.tflite.json").read_text())["quantization"]["micro"]
    assert micro["flash_bytes_estimate"] == row["size_bytes"] + 16 * 1024
    assert (
        "alignas(16) const unsigned char g_mnist_cnn_int8_model_data[]"
        in (out / "mnist_cnn_int8_model_data.cc").read_text()
    )


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_generated_cc_compiles_and_holds_the_tflite_bytes(firmware, tmp_path):
    out, _ = firmware
    (tmp_path / "main.cc").write_text(MAIN)
    objects = []
    for source in (out / "mnist_cnn_int8_model_data.cc", tmp_path / "main.cc"):
        obj = tmp_path / (source.stem + ".o")
        subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", str(source), "-I", str(out), "-o", str(obj)],
                       check=True)  # fmt: skip
        objects.append(str(obj))
    subprocess.run(["g++", *objects, "-o", str(tmp_path / "dump")], check=True)
    run = subprocess.run([str(tmp_path / "dump")], check=True, capture_output=True)
    assert run.stdout == (out / "mnist_cnn_int8_model_data.tflite").read_bytes()
    assert run.stderr == b"0", "the array must be 16-byte aligned"


def test_arena_plan_matches_the_hand_computed_peak(firmware):
    """int8 I/O, batch 1: the peak is conv1's output (16x28x28 = 12544 B) alive with pool1's output
    (16x14x14 = 3136 B) -- the input (784 B) is dead by then. Every tensor apart: 29968 B."""
    from edgesmith.targets import arena, graph, mcu, spec

    out, _ = firmware
    data = (out / "mnist_cnn_int8_model_data.tflite").read_bytes()
    plan = arena.estimate(data)
    assert plan["planned_bytes"] == 12544 + 3136
    assert plan["naive_bytes"] == 29968
    assert plan["planned_bytes"] < plan["total_bytes_estimate"] < plan["planned_bytes"] + 4096
    buffers = arena.lifetimes(arena.read(data))
    offsets = arena.greedy_plan(buffers)
    for a in buffers:  # no two tensors alive at the same step share bytes
        for b in buffers:
            if a.tensor < b.tensor and a.alive_with(b):
                ea, eb = offsets[a.tensor] + a.size, offsets[b.tensor] + b.size
                assert ea <= offsets[b.tensor] or eb <= offsets[a.tensor], (a, b)
    # one planner: the exporter's report and the MCU fit count the same arena
    micro = json.loads((out / "mnist_cnn_int8_model_data.tflite.json").read_text())["quantization"]["micro"]
    assert micro["arena"] == plan
    tflite = out / "mnist_cnn_int8_model_data.tflite"
    fit = mcu.fit(tflite, spec.get("stm32f746"), graph.layers(tflite))
    assert fit["arena_planned_bytes"] == 15680 and fit["arena_bytes"] == plan["total_bytes_estimate"]


def test_dynamic_range_int8_is_refused_for_microcontrollers(tmp_path):
    import edgesmith

    (tmp_path / "r.toml").write_text('[[exports]]\nformat = "c-array"\n[profile]\nenabled = false\n')
    with pytest.raises(InputError, match="no hybrid INT8 kernels"):
        edgesmith.convert(
            SHIPPED_MODEL, recipe=tmp_path / "r.toml", preset="int8-dynamic", out=tmp_path / "o"
        )
