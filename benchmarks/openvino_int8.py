"""OpenVINO INT8 p50 / FP32 p50 at 1 thread, batch 1: edgesmith's NNCF settings vs NNCF's default
`quantize`, with ONNX Runtime FP32/INT8 (edgesmith's onnx export) side by side.

    .venv/bin/python benchmarks/openvino_int8.py [--models mobilenet_v2,resnet50] [--runs 60]

Models: MobileNetV2 and ResNet-50 from zoo.py (torchvision's topologies, seeded random weights, BN
statistics from data), exported to ONNX with zoo.export_onnx.

Data: "structured" inputs, not white noise: per image, a 3x14x14 normal field upsampled bilinearly
to 224x224 plus a little pixel noise, standardised as ImageNet inputs are. Calibration uses
`--calib` of them (the same .npy for every engine); the accuracy proxy is top-1 agreement with the
FP32 model (OpenVINO, f32) and the largest logit error over `--eval` others.

Variants, each an OpenVINO IR of the same ONNX file:
- `fp32`       convert_model + save_model(compress_to_fp16=False), run with precision f32;
- `nncf-default` nncf.quantize(model, Dataset(samples)) with every argument at its default;
- `edgesmith`  `edgesmith convert --preset int8 --format onnx --format openvino` (the same call also
               gives the ORT INT8 `.onnx`);
with `--tflite`, LiteRT FP32 and INT8 from edgesmith's tflite export, and the `--explore` grid (preset mixed, full bias correction, ...) to justify the chosen settings.

Latency: all sessions of a model are loaded at once and timed in interleaved blocks (every session
runs `--block` times in turn, the order reversing each round) until each has `--runs` timed runs, so
other tenants' load hits every variant alike. The clock is the calling thread's CPU time: with one
thread, OpenVINO, ONNX Runtime and LiteRT all compute on the calling thread (checked: thread CPU time
equals process CPU time), and it leaves out the time the thread waits while other processes hold the
core, which on this shared 2-core machine is most of the noise.
Ratio = p50(INT8) / p50(OpenVINO FP32 in f32). INT8 IRs run with the runtime's default precision
hint, as a user would run them (layers NNCF left in float run in bf16 on this CPU).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nncf
import openvino as ov
import zoo
from common import interleaved_p50, structured_images, table_header

import edgesmith
import edgesmith.runtime
from edgesmith.converter.recipe import Recipe

LABELS = {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet-50"}
REFERENCE = {"mobilenet_v2": 0.73, "resnet50": 0.54}  # NNCF default quantize, measured before


def nncf_variant(onnx_path: Path, xml: Path, calib: np.ndarray, **kwargs) -> Path:
    model = ov.convert_model(str(onnx_path))
    data = nncf.Dataset([{"input": calib[i : i + 1]} for i in range(len(calib))])
    ov.save_model(nncf.quantize(model, data, **kwargs), str(xml), compress_to_fp16=False)
    return xml


GRID = {
    "mixed": {"preset": nncf.QuantizationPreset.MIXED},
    "full-bc": {"fast_bias_correction": False},
    "cpu-device": {"target_device": nncf.TargetDevice.CPU},
    "subset-16": {"subset_size": 16},
}


def build(name: str, work: Path, calib_count: int, explore: list[str], tflite: bool) -> dict[str, Path]:
    onnx_path = zoo.export_onnx(zoo.build(name), work / f"{name}.onnx")
    calib = structured_images(calib_count, seed=1)
    np.save(work / "calib.npy", calib)
    fp32 = work / f"{name}.fp32.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(fp32), compress_to_fp16=False)
    paths = {"fp32": fp32, "ort-fp32": onnx_path}
    t = time.perf_counter()
    paths["nncf-default"] = nncf_variant(onnx_path, work / "default.xml", calib)
    print(f"  nncf default quantize: {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    recipe = Recipe.from_dict({"steps": [{"kind": "quantize"}], "exports": [{"format": "onnx"}, {"format": "openvino"}],
                               "calibration": {"path": str(work / "calib.npy"), "max_samples": calib_count},
                               "profile": {"enabled": False}})  # fmt: skip
    report = edgesmith.convert(onnx_path, recipe=recipe, out=work / "es", force=True)
    print(f"  edgesmith convert (ORT + NNCF): {time.perf_counter() - t:.0f} s", flush=True)
    paths["ort-int8"], paths["edgesmith"] = (Path(a["path"]) for a in report["artifacts"])
    if tflite:  # LiteRT FP32 and full-integer INT8 through edgesmith's tflite export
        for preset, key in (("fp32", "litert-fp32"), ("int8", "litert-int8")):
            steps = [{"kind": "quantize"}] if preset == "int8" else []
            tfl = Recipe.from_dict({**recipe.to_dict(), "steps": steps, "exports": [{"format": "tflite"}]})
            out = edgesmith.convert(onnx_path, recipe=tfl, out=work / key, force=True)
            paths[key] = Path(out["artifacts"][0]["path"])
    for label in explore:
        paths[label] = nncf_variant(onnx_path, work / f"{label}.xml", calib, **GRID[label])
    return paths


def accuracy(sessions: dict, images: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """Top-1 agreement % with FP32, relative L2 error of the logits, largest logit error."""
    outputs = {k: np.concatenate([s.run({"input": images[i : i + 8]})["logits"] for i in range(0, len(images), 8)])
               for k, s in sessions.items()}  # fmt: skip
    ref = outputs["fp32"]
    return {k: (float((o.argmax(1) == ref.argmax(1)).mean() * 100),
                float(np.linalg.norm(o - ref) / np.linalg.norm(ref)), float(np.abs(o - ref).max()))
            for k, o in outputs.items()}  # fmt: skip


def latency(sessions: dict, runs: int, block: int) -> dict[str, float]:
    """p50 per session, in ms of the calling thread's CPU time (see the module docstring)."""
    x = {"input": structured_images(1, seed=99)}
    return interleaved_p50({k: partial(s.run, x) for k, s in sessions.items()}, runs, block, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mobilenet_v2,resnet50")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--eval", type=int, default=64)
    parser.add_argument(
        "--tflite", action="store_true", help="also LiteRT FP32/INT8 (edgesmith's tflite export)"
    )
    parser.add_argument("--explore", default="", help=f"also time other NNCF settings: {','.join(GRID)}")
    args = parser.parse_args()
    nncf.set_log_level(logging.ERROR)
    print(f"openvino {ov.__version__}, nncf {nncf.__version__}, 1 thread, batch 1, {args.runs} runs\n")
    rows = []
    for name in args.models.split(","):
        print(f"{LABELS[name]}:", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            paths = build(name, Path(tmp), args.calib, [e for e in args.explore.split(",") if e], args.tflite)
            load = edgesmith.runtime.load
            sessions = {
                k: load(p, threads=1, **({"precision": "f32"} if k == "fp32" else {}))
                for k, p in paths.items()
            }
            # The same FP32 IR with the CPU plugin's default hint (bf16 here), as `load()` runs it.
            sessions["fp32-bf16"] = load(paths["fp32"], threads=1, precision="bf16")
            same = (
                paths["edgesmith"].with_suffix(".bin").read_bytes()
                == paths["nncf-default"].with_suffix(".bin").read_bytes()
            )
            acc = accuracy(sessions, structured_images(args.eval, seed=2))
            p50 = latency(sessions, args.runs, args.block)
        for key in sessions:
            family = key.split("-")[0]
            base = p50[f"{family}-fp32"] if family in ("ort", "litert") else p50["fp32"]
            rows.append((LABELS[name], key, p50[key], p50[key] / base, *acc[key]))
        for base in ("fp32", "fp32-bf16"):
            ours, default = p50["edgesmith"] / p50[base], p50["nncf-default"] / p50[base]
            print(f"  OpenVINO INT8 / {base} p50: edgesmith {ours:.2f}, nncf default {default:.2f} "
                  f"(reference {REFERENCE[name]})", flush=True)  # fmt: skip
        print(f"  same weights (.bin) as nncf default: {same}\n", flush=True)
    print(table_header("model", "variant", "p50 ms", "ratio vs its FP32", "top-1 agreement %", "rel. L2 err",
                       "max abs err"))  # fmt: skip
    for model, key, ms, ratio, agree, rel, err in rows:
        print(f"| {model} | {key} | {ms:.2f} | {ratio:.2f} | {agree:.1f} | {rel:.4f} | {err:.3f} |")


if __name__ == "__main__":
    main()
