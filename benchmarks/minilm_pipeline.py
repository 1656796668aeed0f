"""all-MiniLM-L6-v2 through the whole pipeline, from its Hugging Face folder: prune 50% heads + 50% FFN,
distill on the unlabeled STS-B train sentences, export ONNX + OpenVINO, verify, profile; then dynamic
INT8 of the pruned ONNX with the pipeline's own quantize step. Prints STS-B test Spearman (all 1,379
pairs, scored on the artifacts) and ONNX Runtime p50 at batch 1, sequence length 128, one thread
(interleaved, thread CPU time; `time_ort` from minilm_prune.py), side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/minilm_pipeline.py [--epochs 2 --lr 2e-4 --threads 1]

The recipe it runs is printed first: the same file works with
`edgesmith convert MODEL_FOLDER --recipe minilm.toml --out out/`.
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_prune import MODEL, STSB, log, time_ort

from edgesmith.converter.data.stsb import read_sts, spearman
from edgesmith.converter.frontends import hf_frontend
from edgesmith.converter.pipeline import run
from edgesmith.converter.recipe import Recipe
from edgesmith.runtime import load

RECIPE = """\
[calibration]
path = "{train}"
max_samples = 1024

[[steps]]
kind = "prune_transformer"
heads = 0.5
ffn = 0.5

[[steps]]
kind = "distill"
losses = ["embedding", "hidden"]
epochs = {epochs}
lr = {lr}
batch_size = 32
data = "{train}"

[[exports]]
format = "onnx"

[[exports]]
format = "openvino"

[verify]
eval = "{eval}"

[profile]
runs = 50
"""


def score(path: Path, tokenize, test, batch: int = 64) -> float:
    session = load(path, exact=True)

    def embed(sentences):
        return np.concatenate([next(iter(session.run(tokenize(sentences[i : i + batch])).values()))
                               for i in range(0, len(sentences), batch)])  # fmt: skip

    return round(spearman(embed(test[0]), embed(test[1]), test[2]), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument(
        "--sentences", type=int, default=None, help="distill on the first N (default: all 10,566)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokenize = hf_frontend.tokenizer_for(MODEL)
    test = read_sts(STSB / "sts-test.csv")
    train_a, train_b, _ = read_sts(STSB / "sts-train.csv")
    dev_a, _, _ = read_sts(STSB / "sts-dev.csv")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "train.txt").write_text(
            "\n".join(sorted(set(train_a + train_b))[: args.sentences]) + "\n"
        )  # sentences only
        (tmp / "eval.txt").write_text("\n".join(dev_a[:256]) + "\n")
        text = RECIPE.format(train=tmp / "train.txt", eval=tmp / "eval.txt", epochs=args.epochs, lr=args.lr)
        log(text)
        (tmp / "minilm.toml").write_text(text)
        t0 = time.time()
        original = run(
            Recipe.from_dict({"profile": {"enabled": False}}), str(MODEL), tmp / "original", quiet=True
        )
        t1 = time.time()
        report = run(Recipe.load(tmp / "minilm.toml"), str(MODEL), tmp / "pruned", quiet=False)
        log(f"pipeline: {time.time() - t1:.0f} s (original fp32 export: {t1 - t0:.0f} s)")
        paths = {"original": Path(original["artifacts"][0]["path"])}
        paths.update({f"pruned-{a['format']}": Path(a["path"]) for a in report["artifacts"]})
        paths["pruned-onnx-int8-dynamic"] = quantize_dynamic(paths["pruned-onnx"], tmp)
        results = {k: {"spearman": score(p, tokenize, test)} for k, p in paths.items()}
        for k, r in results.items():
            log(f"{k}: {r}")
        onnx = {k: p for k, p in paths.items() if p.suffix == ".onnx"}
        p50 = time_ort(onnx, args.runs)
    for k, v in p50.items():
        results[k].update(ort_p50_ms=v, speedup=round(p50["original"] / v, 2))
    results["steps"] = report["steps"]
    results["verify"] = {a["format"]: a["verify"] for a in report["artifacts"]}
    print(json.dumps(results, indent=1))


def quantize_dynamic(path: Path, tmp: Path) -> Path:
    """The pipeline's dynamic INT8 (ONNX Runtime's quantizer) on the pruned fp32 ONNX."""
    from edgesmith.converter.handle import ModelHandle
    from edgesmith.converter.recipe import CalibrationConfig
    from edgesmith.converter.steps import HANDLERS, StepContext
    from edgesmith.converter.steps.quantize import QuantizeConfig

    (tmp / "q").mkdir()
    config = QuantizeConfig(mode="dynamic")
    ctx = StepContext(tmp / "q", lambda: None, CalibrationConfig(), quiet=True)
    return HANDLERS[QuantizeConfig](config, ModelHandle(path), ctx).model.path


if __name__ == "__main__":
    main()
