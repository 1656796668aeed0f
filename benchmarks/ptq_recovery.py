"""PTQ recovery keys of the quantize step (steps/recovery.py), each on a real model, OpenVINO IR (NNCF):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ptq_recovery.py [--only bias|smooth|equalize] [--pairs 150]
        [--model face-back] [--formats onnx,openvino] [--weights per-tensor,per-channel]

- `bias_correction` off / fast / full: ccexam's trained MNISTNet (99.05 % top-1), static INT8 calibrated
  on the first 300 images of the real MNIST test set; on the other 9,700: top-1, the mean shift of
  each logit against fp32 (averaged over the 10 logits: what bias correction targets) and the mean
  absolute logit error.
- `smooth_quant` 0 (off) / 0.5 / unset (NNCF's 0.95 for transformers): all-MiniLM-L6-v2 exported by the
  pipeline (fp32 ONNX, sequence 128), static INT8 calibrated on 128 STS-B train sentences, Spearman x
  100 on the first `--pairs` STS-B test pairs.
- `equalize` false / true (cross-layer equalization, steps/equalize.py): a model of
  benchmarks/conformance_models.py (default MediaPipe's face-back detector) with its 16 real calibration
  crops, per-tensor and per-channel static INT8, each through `edgesmith convert --recipe` as a user
  runs it (the rescue on): exit code, the first attempt's and the written artifact's cosine on the
  gate's held-out samples, layers the rescue kept float, size / original, and the min cosine on the 8
  other real crops (conformance_compare.compare, as benchmarks/conformance.py measures it).
The bias/smooth variants go through the openvino exporter's code path (steps/nncf_quantize.quantize_model) and
runs in OpenVINO's CPU plugin pinned to f32 inference (so the INT8 model is compared with true fp32).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_mnistnet, log, mnist_test, table_header, table_row

from edgesmith import runtime
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.recipe import CalibrationConfig
from edgesmith.converter.steps import StepContext
from edgesmith.converter.steps.nncf_quantize import quantize_model
from edgesmith.converter.steps.quantize import QuantizeConfig


def compiled(model):
    import openvino as ov

    return ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"}
    )


def quantized(onnx_path: Path, cal: Path, work: Path, **keys):
    import openvino as ov

    source = ArraySource(str(cal), runtime.load(onnx_path).inputs, "calibration", 100000, 16, None)
    ctx = StepContext(work, lambda: source, CalibrationConfig(path=str(cal)), quiet=True)
    t0 = time.time()
    model, report = quantize_model(ov.convert_model(str(onnx_path)), QuantizeConfig(**keys), ctx)
    return compiled(model), report, time.time() - t0


def bias(work: Path) -> list[tuple]:
    import torch

    images, labels = mnist_test()
    onnx_path = work / "mnistnet.onnx"
    torch.onnx.export(load_mnistnet(), (torch.zeros(1, 1, 28, 28),), str(onnx_path), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})  # fmt: skip
    np.save(work / "mnist-cal.npy", images[:300])
    test_x, test_y = images[300:], labels[300:]

    def logits(model) -> np.ndarray:
        return np.concatenate([model(test_x[i : i + 500])[0] for i in range(0, len(test_x), 500)])

    reference = logits(compiled(str(onnx_path)))

    def row(name: str, mode: str, out: np.ndarray, seconds: str) -> tuple:
        """top-1, the mean logit shift against fp32 (what bias correction removes) and the mean |error|."""
        error = out - reference
        top1 = round(float((out.argmax(1) == test_y).mean() * 100), 2)
        return name, mode, top1, f"{np.abs(error.mean(0)).mean():.4f}", f"{np.abs(error).mean():.4f}", seconds

    rows = [row("fp32", "-", reference, "-")]
    for mode in ("off", "fast", "full"):
        model, report, seconds = quantized(onnx_path, work / "mnist-cal.npy", work, bias_correction=mode)
        rows.append(row("INT8", report["bias_correction"], logits(model), f"{seconds:.0f}"))
        log(f"bias_correction {mode}: {rows[-1]}")
    return rows


def smooth(work: Path, pairs: int) -> list[tuple]:
    from minilm_prune import MODEL, STSB

    from edgesmith.converter.data.stsb import read_sts, spearman
    from edgesmith.converter.frontends import hf_frontend
    from edgesmith.converter.pipeline import run
    from edgesmith.converter.recipe import Recipe

    tokenize = hf_frontend.tokenizer_for(MODEL)
    train_a, train_b, _ = read_sts(STSB / "sts-train.csv")
    np.savez(work / "sts-cal.npz", **tokenize(sorted(set(train_a + train_b))[::37][:128]))
    a, b, gold = (x[:pairs] for x in read_sts(STSB / "sts-test.csv"))
    run(Recipe.from_dict({"profile": {"enabled": False}}), str(MODEL), work / "fp32", quiet=True)
    onnx_path = work / "fp32" / "model.fp32.onnx"

    def score(model) -> float:
        def embed(sentences):
            enc = tokenize(sentences)
            return np.concatenate([model({k: v[i : i + 32] for k, v in enc.items()})[0]
                                   for i in range(0, len(sentences), 32)])  # fmt: skip

        return round(spearman(embed(a), embed(b), gold), 2)

    rows = [("fp32", "-", score(compiled(str(onnx_path))), "-")]
    for alpha in (0.0, 0.5, None):
        model, report, seconds = quantized(onnx_path, work / "sts-cal.npz", work, smooth_quant=alpha)
        rows.append(("INT8", report["smooth_quant"], score(model), f"{seconds:.0f}"))
        log(f"smooth_quant {alpha}: {rows[-1]}")
    return rows


def equalize(work: Path, name: str, formats: list[str], weights: list[str]) -> list[tuple]:
    """Static INT8 of a conformance model with and without `quantize.equalize`, per tensor and per channel."""
    import json
    import subprocess

    from conformance_compare import compare, prepare

    prepare(name, work, 16, 8)
    info = json.loads((work / "prepared.json").read_text())
    original = Path(info["model"]).stat().st_size
    edgesmith = Path(sys.executable).parent / "edgesmith"
    rows = []
    for fmt in formats:
        for per_channel in [w == "per-channel" for w in weights]:
            for on in (False, True):
                recipe = work / f"r-{per_channel}-{on}.toml"
                recipe.write_text(f'[[steps]]\nkind = "quantize"\nper_channel = {str(per_channel).lower()}\n'
                                  f"equalize = {str(on).lower()}\n")  # fmt: skip
                out = work / f"out-{fmt}-{per_channel}-{on}"
                command = [str(edgesmith), "convert", info["model"], "--recipe", str(recipe), "--calibration",
                           info["calibration"], "--format", fmt, "--out", str(out), "--force", "--quiet"]  # fmt: skip
                t0 = time.time()
                code = subprocess.run(command, capture_output=True, text=True).returncode
                seconds = time.time() - t0
                folder = out if code == 0 else out.with_name(out.name + ".rejected")
                report = json.loads((folder / "report.json").read_text())
                artifact = report["artifacts"][0]
                quantization = artifact.get("quantization") or {}
                kept = quantization.get("kept_float") or {}
                tried = kept.get("tried") or [{"cosine_min": artifact["verify"]["cosine_min"]}]
                path = folder / Path(artifact["path"]).name
                size = sum(
                    f.stat().st_size
                    for f in folder.glob(path.stem + ".*")
                    if f.suffix in (".onnx", ".xml", ".bin")
                )
                held_out = min(compare(path, work)["cosine"].values())
                rows.append((fmt, "per-channel" if per_channel else "per-tensor", "on" if on else "off", code,
                             f"{tried[0]['cosine_min']:.4f}", f"{artifact['verify']['cosine_min']:.4f}",
                             f"{len(kept.get('layers', []))} / {kept.get('layers_ranked', '-')}",
                             f"{size / original:.2f}", f"{held_out:.4f}", f"{seconds:.0f}"))  # fmt: skip
                log(f"equalize {fmt} per_channel={per_channel} {on}: {rows[-1]}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["bias", "smooth", "equalize"], default=None)
    ap.add_argument("--model", default="face-back", help="a model of benchmarks/conformance_models.py")
    ap.add_argument("--formats", default="onnx,openvino")
    ap.add_argument("--weights", default="per-tensor,per-channel", help="INT8 weight scales, in this order")
    ap.add_argument("--pairs", type=int, default=150)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "bias"):
            print("\nccexam MNISTNet, MNIST test (9,700 images), OpenVINO f32 inference\n")
            print(table_header("model", "bias_correction", "top-1 %", "mean logit shift vs fp32", "mean abs logit error",
                               "quantize s"))  # fmt: skip
            for row in bias(Path(tmp)):
                print(table_row(*row))
        if args.only in (None, "smooth"):
            print(f"\nall-MiniLM-L6-v2, STS-B test (first {args.pairs} pairs), OpenVINO f32 inference\n")
            print(table_header("model", "smooth_quant alpha", "Spearman", "quantize s"))
            for row in smooth(Path(tmp), args.pairs):
                print(table_row(*row))
        if args.only in (None, "equalize"):
            print(
                f"\n{args.model}, static INT8 with and without quantize.equalize (cross-layer equalization)\n"
            )
            print(table_header("format", "weights", "equalize", "exit", "first attempt cos", "written cos",
                               "kept float", "size / original", "8 other crops min cos", "convert s"))  # fmt: skip
            for row in equalize(
                Path(tmp) / args.model, args.model, args.formats.split(","), args.weights.split(",")
            ):
                print(table_row(*row))


if __name__ == "__main__":
    main()
