"""How far apart two artifacts' STS-B Spearman must be to be a measured difference: a paired bootstrap.

Embeds the same scored STS-B pairs with each artifact (and the original Hugging Face model), then
resamples the pairs with replacement and recomputes every Spearman on each resample: the spread of the
differences is the noise of the eval set, the scale for `tune --tolerance`.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/metric_noise.py A.onnx B.onnx [--split dev --pairs 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_figures import STSB, minilm_folder


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    """Spearman x 100 (average ranks for ties, as scipy's spearmanr and the converter's metric)."""
    from scipy.stats import rankdata

    return 100 * float(np.corrcoef(rankdata(pred), rankdata(gold))[0, 1])


def similarities(artifact: Path, model: Path, a: list[str], b: list[str]) -> np.ndarray:
    from edgesmith.converter.frontends import hf_frontend
    from edgesmith.runtime import load

    session, tokenize = load(artifact, threads=1), hf_frontend.tokenizer_for(model)

    def embed(sentences):
        out = []
        for i in range(0, len(sentences), 16):
            feeds = tokenize(sentences[i : i + 16])
            out.append(next(iter(session.run({x.name: feeds[x.name] for x in session.inputs}).values())))
        e = np.concatenate(out)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    return (embed(a) * embed(b)).sum(1)


def main() -> None:
    from edgesmith.converter.data.stsb import read_sts

    parser = argparse.ArgumentParser()
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--pairs", type=int, default=500, help="spread over the split, as tune_figures.py")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    rows = list(zip(*read_sts(STSB / f"sts-{args.split}.csv"), strict=True))
    rows = rows[:: max(1, len(rows) // args.pairs)][: args.pairs]
    a, b, gold = [r[0] for r in rows], [r[1] for r in rows], np.array([r[2] for r in rows])
    model = minilm_folder()
    sims = {p.name: similarities(p, model, a, b) for p in args.artifacts}
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(gold), (args.resamples, len(gold)))
    scores = {name: np.array([spearman(s[i], gold[i]) for i in picks]) for name, s in sims.items()}
    names = list(sims)
    result = {"split": args.split, "pairs": len(gold), "resamples": args.resamples,
              "spearman": {n: round(spearman(sims[n], gold), 2) for n in names},
              "sd_of_one": {n: round(float(scores[n].std()), 3) for n in names},
              "differences": {f"{x} - {y}": {"observed": round(spearman(sims[x], gold) - spearman(sims[y], gold), 3),
                                             "sd": round(float((scores[x] - scores[y]).std()), 3),
                                             "p95_abs": round(float(np.percentile(np.abs(scores[x] - scores[y]), 95)), 3)}
                              for i, x in enumerate(names) for y in names[i + 1:]}}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
