"""STS-B (semantic textual similarity): sentence pairs with human scores, and how a sentence encoder
is scored on them (Spearman correlation of embedding cosines with the scores, x 100)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_sts(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """sentence1, sentence2, score from STS-B's tab-separated files (fields 4, 5, 6; extras ignored)."""
    a, b, scores = [], [], []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                scores.append(float(row[4]))
                a.append(row[5])
                b.append(row[6])
    return a, b, np.array(scores)


def spearman(emb_a: np.ndarray, emb_b: np.ndarray, gold: np.ndarray) -> float:
    """Spearman x 100 of the cosine of each pair's embeddings against the gold scores."""
    from scipy.stats import spearmanr

    cos = (emb_a * emb_b).sum(1) / np.linalg.norm(emb_a, axis=1) / np.linalg.norm(emb_b, axis=1)
    return 100 * float(spearmanr(cos, gold).statistic)
