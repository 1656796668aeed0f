"""Peak memory of static-INT8 calibration (ONNX Runtime engine) on ResNet-50, before and after
converter/calibration.py, for minmax / percentile / entropy at 128 and 512 samples.

    .venv/bin/python benchmarks/calibration_memory.py [--samples 128 512] [--methods minmax percentile entropy]

No ResNet-50 weights are shipped here and memory does not depend on them: the architecture is built in
plain torch (torchvision's ResNet-50 layout: bottlenecks [3, 4, 6, 3], 25.6 M parameters) with seeded
weights, exported to ONNX (dynamic batch). Calibration: real photos from skimage.data (astronaut,
chelsea, coffee, ...), random crops and flips resized to 224x224, ImageNet-normalised.

Each case runs in a child process that applies the pipeline's quantize step (steps/quantize.py;
calibration.batch_size 16) and reports its peak RSS (VmHWM). "before" is ONNX Runtime's own calibration
as the step fed it until now (batches in strides of up to 4 with CalibStridedMinMax): the child replaces
`calibration.write_cache` with a no-op so quantize_static calibrates by itself. The parent then compares
the quantized models' scales and zero points, before vs after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, table_header, table_row

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def resnet50():
    """ResNet-50 (torchvision's layout, no torchvision) with seeded weights, in eval mode."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.skip(x))

    torch.manual_seed(0)
    layers, cin = (
        [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)],
        64,
    )
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():  # running statistics of a trained net's scale, so activations do not explode
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(1.0), m.weight.uniform_(0.2, 0.6)
    return model


def export(path: Path) -> Path:
    import torch

    model = resnet50()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})  # fmt: skip
    return path


def photos(count: int, seed: int = 0) -> np.ndarray:
    """`count` 224x224 crops of skimage.data's colour photos, ImageNet-normalised, float32 NCHW."""
    import skimage.data
    from skimage.transform import resize

    images = []
    for name in (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "cat",
        "immunohistochemistry",
        "hubble_deep_field",
    ):
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # not bundled with this skimage (a download): skipped
            continue
        if image.ndim == 3 and image.shape[2] == 3:
            images.append(image.astype(np.float32) / 255)
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, 224, 224), np.float32)
    for i in range(count):
        image = images[i % len(images)]
        h, w = image.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = resize(image[y : y + side, x : x + side], (224, 224), anti_aliasing=True)
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out[i] = ((crop - MEAN) / STD).transpose(2, 0, 1)
    return out


CHILD = """
import json, sys, time
from pathlib import Path
from edgesmith import runtime
from edgesmith.converter import calibration
from edgesmith.converter.data.arrays import ArraySource
from edgesmith.converter.handle import ModelHandle
from edgesmith.converter.recipe import CalibrationConfig
from edgesmith.converter.steps import HANDLERS, StepContext
from edgesmith.converter.steps.quantize import QuantizeConfig

model, data, work, method, samples, when = sys.argv[1:7]
if when == "before":
    calibration.write_cache = lambda *args, **kwargs: None  # quantize_static calibrates by itself
config = CalibrationConfig(path=data, method=method, max_samples=int(samples), batch_size=16)
source = ArraySource(data, runtime.load(Path(model)).inputs, "calibration", int(samples), 16, None)
ctx = StepContext(Path(work), lambda: source, config, quiet=True)
t0 = time.time()
result = HANDLERS[QuantizeConfig](QuantizeConfig(target="x86-vnni"), ModelHandle(Path(model)), ctx)
seconds = time.time() - t0
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak_gb": round(peak / 2**20, 2), "seconds": round(seconds), "model": str(result.model.path)}))
"""


def measure(model: Path, data: Path, work: Path, method: str, samples: int, when: str) -> dict:
    folder = work / f"{when}-{method}-{samples}"
    folder.mkdir()
    args = [sys.executable, "-c", CHILD, str(model), str(data), str(folder), method, str(samples), when]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        lines = done.stderr.strip().splitlines()  # empty: killed by a signal (the OOM killer)
        return {"error": lines[-1] if lines else f"killed (exit {done.returncode})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def qparams(path: str) -> dict[str, np.ndarray]:
    """Every scale and zero point of the (Q/DQ) model, by initializer name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    names = {
        i
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
        for i in n.input[1:]
    }
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}


def compare(before: str, after: str) -> str:
    a, b = qparams(before), qparams(after)
    if a.keys() != b.keys():
        return "different tensors"
    same = sum(np.array_equal(a[k], b[k]) for k in a)
    scales = [k for k in a if a[k].dtype == np.float32]
    worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]) / np.maximum(np.abs(a[k]), 1e-12)))
                for k in scales)  # fmt: skip
    return f"{same}/{len(a)} identical, worst scale diff {worst:.2%}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--methods", nargs="+", default=["minmax", "percentile", "entropy"])
    ap.add_argument("--when", nargs="+", default=["before", "after"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = export(tmp / "resnet50.onnx")
        np.save(tmp / "photos.npy", photos(max(args.samples)))
        rows = []
        for samples in args.samples:
            for method in args.methods:
                runs = {
                    when: measure(model, tmp / "photos.npy", tmp, method, samples, when) for when in args.when
                }
                for when, r in runs.items():
                    log(f"{method} {samples} {when}: {r}")
                same = compare(runs["before"]["model"], runs["after"]["model"]) if len(runs) == 2 and all(
                    "model" in r for r in runs.values()) else "-"  # fmt: skip
                rows.append((method, samples, *(runs[w].get("peak_gb", runs[w].get("error")) for w in args.when),
                             *(runs[w].get("seconds", "-") for w in args.when), same))  # fmt: skip
        print(table_header("method", "samples", *(f"peak GB {w}" for w in args.when),
                           *(f"s {w}" for w in args.when), "scales before vs after"))  # fmt: skip
        for row in rows:
            print(table_row(*row))


if __name__ == "__main__":
    main()
