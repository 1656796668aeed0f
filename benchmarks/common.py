"""Pieces the benchmark scripts share: ccexam's MNISTNet, the real MNIST test set, "structured" images,
single-thread ONNX Runtime sessions, interleaved timing and markdown tables.

Heavy frameworks (torch, onnxruntime, ccexam) are imported inside the functions that need them.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "data" / "mnist"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_mnistnet():
    """ccexam's trained MNISTNet (99.05 % top-1 on the MNIST test set) in eval mode, loaded as
    tests/conftest.py's `mnistnet` fixture does: state_dict read with weights_only=True."""
    import importlib.resources

    import torch
    from ccexam.models import MNISTNet

    model = MNISTNet(28)
    weights = importlib.resources.files("ccexam") / "weights" / "mnist.pth"
    model.load_state_dict(torch.load(str(weights), weights_only=True, map_location="cpu"))
    return model.eval()


def mnistnet_pt2(work: Path) -> Path:
    """MNISTNet as a .pt2 with a dynamic batch: a file `tune` can hash, prune and distill."""
    import torch

    path = work / "mnistnet.pt2"
    example = (torch.zeros(2, 1, 28, 28),)
    program = torch.export.export(load_mnistnet(), example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The real MNIST test set (data/mnist), normalized: float32 (10000, 1, 28, 28) and labels."""
    from edgesmith.converter.data.idx import load_mnist, normalize_mnist

    images, labels = load_mnist(MNIST)
    return normalize_mnist(images), labels


def structured_images(count: int, seed: int) -> np.ndarray:
    """Images that are not white noise: a 3x14x14 normal field upsampled to 224x224 plus pixel noise,
    standardised."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(count, 3, 14, 14, generator=gen)
    x = torch.nn.functional.interpolate(low, size=(224, 224), mode="bilinear", align_corners=False)
    x = x + 0.1 * torch.randn(x.shape, generator=gen)
    return ((x - x.mean()) / x.std()).numpy().astype(np.float32)


def ort_session(path: str | Path):
    """An ONNX Runtime CPU session with one intra-op and one inter-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved_p50(
    runners: dict[str, Callable[[], object]], runs: int, block: int, warmup: int = 0
) -> dict[str, float]:
    """p50 in ms of each runner by the calling thread's CPU time (see ort_int8_search.py for why).

    After `warmup` untimed calls each, the runners take turns: one untimed call (its weights back
    into cache), then `block` timed ones, the order reversing every round, until each has `runs`.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    while min(len(v) for v in times.values()) < runs:
        for k in order:
            runners[k]()
            for _ in range(block):
                t0 = time.thread_time()
                runners[k]()
                times[k].append(time.thread_time() - t0)
        order.reverse()
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def overhead_us(
    raw_call: Callable, our_call: Callable, rounds: int, calls: int
) -> tuple[float, float, float]:
    """Wall-clock us/call of a raw call and of its wrapper, timed in alternating rounds of `calls` calls
    so machine noise hits both alike: medians over rounds of raw, wrapped and their difference."""
    for _ in range(500):
        raw_call(), our_call()
    raws, wrapped = [], []
    for _ in range(rounds):
        raws.append(per_call_us(raw_call, calls))
        wrapped.append(per_call_us(our_call, calls))
    diffs = [w - r for w, r in zip(wrapped, raws, strict=True)]
    return statistics.median(raws), statistics.median(wrapped), statistics.median(diffs)


def table_row(*cells: object) -> str:
    """A markdown table row: `| a | b |`."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_header(*columns: str) -> str:
    """A markdown table's header row and its `|---|---|` separator."""
    return table_row(*columns) + "\n" + "|---" * len(columns) + "|"
