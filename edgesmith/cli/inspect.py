"""`edgesmith inspect ARTIFACT --against ORIGINAL --data D`: which layers of a static INT8 model cost
the accuracy (converter/sensitivity.py), ranked."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inspect",
        help="rank the layers of a static INT8 ONNX model by the error their quantization adds",
        description="Compares a static INT8 (QDQ) ONNX artifact with the float model it was quantized "
        "from on samples of D: for every quantized tensor the SQNR of its quantization alone and of "
        "everything up to it; layers ranked worst first. For the first --top layers it also "
        "re-quantizes ORIGINAL (the artifact's recipe, calibrated on D) with that layer alone kept "
        "float and reports the metric change (top-1 when D has `labels`, else agreement or the "
        "cosine to the original's outputs). Example: edgesmith inspect out/mnist_cnn.int8.onnx "
        "--against models/mnist_cnn.onnx --data calibration_data/mnist/holdout.npz",
    )
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--against", required=True, metavar="ORIGINAL", help="the float ONNX model it came from")
    p.add_argument("--data", required=True, metavar="D", help="samples: .npz (with `labels` for top-1), .npy or image folder")  # fmt: skip
    p.add_argument("--top", type=int, default=5, metavar="N", help="layers to re-quantize in float, one at a time (default 5; 0: SQNR only)")  # fmt: skip
    p.add_argument("--samples", type=int, default=128, help="samples of D to use (default 128)")
    p.add_argument("--metric", default="auto", metavar="NAME", help="the metric of the re-quantized models: auto (top-1 with class-id labels, else agreement or cosine), top1, spearman or module:function (as convert --metric)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the ranking as JSON")
    return p


def _check(args) -> tuple[Path, Path]:
    from ..errors import InputError

    artifact, original = Path(args.artifact), Path(args.against)
    for path, what in ((artifact, "ARTIFACT"), (original, "--against")):
        if not path.is_file() or path.suffix != ".onnx":
            raise InputError(f"{what} {path}: not an .onnx file; inspect compares two ONNX models")
    if args.top < 0 or args.samples < 1:
        raise InputError("--top must be >= 0 and --samples >= 1")
    import onnx

    if not any(
        n.op_type == "DequantizeLinear" for n in onnx.load(str(artifact), load_external_data=False).graph.node
    ):
        raise InputError(
            f"{artifact} has no DequantizeLinear: inspect reads static INT8 in QDQ format "
            "(edgesmith convert --preset int8)"
        )
    return artifact, original


def _quantize_config(artifact: Path):
    """The quantize step the artifact's manifest records (its recipe), else the defaults."""
    from ..converter.steps.quantize import QuantizeConfig
    from ..converter.validate import build

    manifest = artifact.with_name(artifact.name + ".json")
    steps = []
    if manifest.is_file():
        steps = json.loads(manifest.read_text()).get("provenance", {}).get("recipe", {}).get("steps", [])
    step = next((s for s in steps if s.get("kind") == "quantize"), None)
    if step is None:
        return QuantizeConfig()
    return build(QuantizeConfig, {k: v for k, v in step.items() if k != "kind"}, "quantize")


def rank(artifact: Path, original: Path, data_path: str, top: int, samples: int, workdir: Path,
         metric: str = "auto") -> dict:  # fmt: skip
    """The ranking and, for the first `top` layers, the metric change of keeping each alone float."""
    from ..converter import budget, frontends, sensitivity, verify
    from ..converter.data.arrays import ArraySource
    from ..converter.recipe import CalibrationConfig
    from ..converter.steps import StepContext
    from ..errors import InputError

    source = frontends.load(str(original), workdir, None)
    data = ArraySource(data_path, source.inputs, "data", samples, 16)
    ctx = StepContext(
        workdir, lambda: data, CalibrationConfig(path=data_path, max_samples=samples), quiet=True
    )
    config = _quantize_config(artifact)
    float_model, quantize_with = budget.step_quantizer(config, source.onnx.path, ctx, everything=False)
    if sensitivity.matches(artifact, float_model) == 0:
        raise InputError(
            f"no quantized tensor of {artifact} matches a node of {original}: pass the float model the "
            "artifact was quantized from"
        )
    ranked = sensitivity.analyse(artifact, float_model, data.batches())
    measured_by = None
    if top:
        reference = verify.reference(source, data, quiet=True, metric=metric)

        def score(path: Path) -> float:
            result = verify.verify(path, reference, data, quiet=True)
            found = (result.get(key) for key in ("artifact", "agreement", "cosine_min"))
            return next(value for value in found if value is not None)

        measured_by = reference.metric or ("agreement" if reference.outputs[0][0].ndim == 2 else "cosine_min")
        sensitivity.metric_changes(ranked, top, quantize_with, score, score(quantize_with([])))
    return {"artifact": str(artifact), "against": str(original), "samples": len(data),
            "metric": measured_by, "layers": sensitivity.to_json(ranked)}  # fmt: skip


def table(result: dict, limit: int = 20) -> list[list[str]]:
    change = f"{result['metric']} change if float" if result["metric"] else "metric change"
    rows = [["rank", "quantized tensor", "kind", "nodes kept float to fix it", "SQNR dB", "per-channel dB", "cumulative dB",
             change]]  # fmt: skip
    for layer in result["layers"][:limit]:
        nodes = ", ".join(f"{n} ({op})" for n, op in zip(layer["nodes"], layer["op_types"], strict=True))
        rows.append([str(layer["rank"]), layer["what"], layer["kind"], _cut(nodes), _num(layer["sqnr_db"]),
                     _num(layer.get("channel_sqnr_db")), _num(layer.get("sqnr_cumulative_db")),
                     _num(layer.get("metric_change"), "{:+.2f}")])  # fmt: skip
    return rows


def _cut(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _num(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def main(args) -> int:
    from .._io import work_folder
    from .summary import print_table

    artifact, original = _check(args)
    with work_folder() as tmp:
        result = rank(artifact, original, args.data, args.top, args.samples, Path(tmp), args.metric)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(table(result))
        print(f"\n{len(result['layers'])} layers, {result['samples']} samples of {args.data}; SQNR: "
              "signal over quantization noise (higher is better, ~6 dB a bit)")  # fmt: skip
    return 0
