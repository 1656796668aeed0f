"""`edgesmith verify ARTIFACT --emulate aarch64 | --tflm`: run an artifact on device kernels, compare.

`--emulate aarch64`: the artifact runs through `edgesmith.runtime` twice on the same inputs: here,
and under qemu-user on an arm64 Debian userland with the aarch64 wheels of its runtime
(`targets/emulate.py`). `--tflm`: a .tflite or c-array artifact runs on TensorFlow Lite Micro's
interpreter and on LiteRT, and TFLM's arena is compared with the planner's (`targets/tflm.py`).
Exit 0 when the outputs agree within the artifact's precision's tolerance, 1 when they do not, 2 on
bad input (or when qemu-user-static / mmdebstrap / tflite-micro are missing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..targets.emulate import ARCHES, CPUS


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "verify",
        help="run an artifact on emulated ARM or on TensorFlow Lite Micro and compare the outputs",
        description="--emulate aarch64: runs ARTIFACT with edgesmith's device runtime here and on an "
        "emulated ARM core (qemu-user, an arm64 Debian userland and the aarch64 wheels of ONNX Runtime "
        "/ LiteRT, built once into ~/.cache/edgesmith; needs the Debian packages qemu-user-static and "
        "mmdebstrap). --tflm: runs a .tflite or c-array artifact on TensorFlow Lite Micro's interpreter "
        "and on LiteRT, and compares TFLM's arena with the planner's (needs edgesmith[tflm]). Compares "
        "the outputs (max abs error, cosine, arg-max agreement) and exits 1 when they disagree beyond "
        "the tolerance of the artifact's precision. Example: edgesmith verify out/mnist_cnn.int8.onnx "
        "--emulate aarch64 --input batch.npz",
    )
    p.add_argument("artifact", metavar="ARTIFACT")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--emulate", choices=ARCHES, help="run it on this architecture under qemu-user")
    how.add_argument(
        "--tflm", action="store_true", help="run it on TensorFlow Lite Micro (.tflite, c-array .cc)"
    )
    p.add_argument("--cpu", default="cortex-a72", choices=sorted(CPUS), help="emulated core (default: cortex-a72, a Raspberry Pi 4's)")  # fmt: skip
    p.add_argument("--input", metavar="IN.npz", help="inputs named after the model's (default: 8 seeded random samples)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return p


def random_feeds(session, batch: int = 8) -> dict[str, np.ndarray]:
    """Seeded inputs of the model's shapes: standard normal floats, small non-negative integers."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.inputs:
        shape, dtype = spec.concrete_shape(batch), np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


def precision_of(artifact: Path) -> str:
    """The precision the exporter wrote in the manifest beside the artifact, or 'unknown'."""
    if artifact.suffix in (".cc", ".c"):  # a c-array's manifest sits beside the .tflite it spells out
        artifact = artifact.with_suffix(".tflite")
    manifest = artifact.with_name(artifact.name + ".json")
    try:
        return str(json.loads(manifest.read_text())["precision"])
    except (OSError, ValueError, KeyError, TypeError):
        return _precision_from_graph(artifact)


def _precision_from_graph(artifact: Path) -> str:
    """Without a manifest: 'int8' when the graph holds 8-bit tensors or quantize ops, 'fp16' when it
    holds float16 ones, else 'fp32'; 'unknown' (the loosest tolerance) when it cannot be read."""
    try:
        if artifact.suffix == ".onnx":
            import onnx

            graph = onnx.load(str(artifact), load_external_data=False).graph
            ops = {n.op_type for n in graph.node}
            types = {t.data_type for t in graph.initializer}
            int8 = bool(ops & {"DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"})
            fp16 = onnx.TensorProto.FLOAT16 in types
        else:
            from ..targets import arena, tflm

            schema = arena.schema().TensorType
            types = {t.type for t in arena.read(tflm.model_bytes(artifact)).subgraphs[0].tensors}
            int8, fp16 = bool(types & {schema.INT8, schema.UINT8}), schema.FLOAT16 in types
    except Exception:  # an unreadable graph: the runtime will say what is wrong with it
        return "unknown"
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def main(args) -> int:
    if args.tflm:
        return _tflm(args)
    from ..runtime import load
    from ..targets import emulate
    from .run import read_inputs

    emulate.check_tools()
    artifact = Path(args.artifact)
    session = load(artifact, exact=True)
    feeds = read_inputs(Path(args.input), session) if args.input else random_feeds(session)
    reference = session.run(feeds)
    result = emulate.verify(artifact, feeds, reference, precision_of(artifact), cpu=args.cpu)
    result |= {"artifact": artifact.name, "host_backend": session.backend}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0 if result["ok"] else 1


def _print(result: dict) -> None:
    info = result["device"]
    print(
        f"{result['artifact']} ({result['precision']}) on emulated {info['machine']} {info['cpu']} "
        f"({info['backend']} {info['backend_version']}) vs this host ({result['host_backend']}):"
    )
    _print_outputs(result)
    tol = result["tolerance"]
    print(
        f"tolerance for {result['precision']}: cosine >= {tol['cosine']}, agreement >= {tol['agreement']:.0%}, "
        f"max abs error <= {tol['max_abs_rel']:g} x the largest output"
    )


def _tflm(args) -> int:
    import tempfile

    from ..errors import MissingExtra
    from ..runtime import load
    from ..targets import tflm
    from .run import read_inputs

    if not tflm.available():
        raise MissingExtra(tflm.EXTRA, "tflite_micro", "--tflm runs the model on TensorFlow Lite Micro")
    artifact = Path(args.artifact)
    with tempfile.TemporaryDirectory(prefix="edgesmith-verify-") as tmp:
        copy = Path(tmp) / "model.tflite"  # LiteRT's view of the inputs, also for a c-array's bytes
        copy.write_bytes(tflm.model_bytes(artifact))
        session = load(copy, backend="litert")
        feeds = read_inputs(Path(args.input), session) if args.input else random_feeds(session)
    result = tflm.compare_with_litert(artifact, feeds, precision_of(artifact)) | {"artifact": artifact.name}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_tflm(result)
    return 0 if result["ok"] else 1


def _print_tflm(result: dict) -> None:
    print(f"{result['artifact']} ({result['precision']}) on TensorFlow Lite Micro vs LiteRT:")
    _print_outputs(result)
    arena = result["arena"]
    print(
        f"arena: TFLM {arena['tflm']['total_bytes']} B ({arena['tflm']['head_bytes']} planned + "
        f"{arena['tflm']['tail_bytes']} persistent, 64-bit host), planner {arena['estimate']['total_bytes_estimate']} B "
        f"({arena['error_pct']:+.2f}%)"
    )


def _print_outputs(result: dict) -> None:
    for name, row in result["outputs"].items():
        agreement = f", arg-max agreement {row['agreement']:.2%}" if "agreement" in row else ""
        verdict = "ok" if row["ok"] else "DIFFERS"
        print(
            f"  {name}: max abs error {row['max_abs_error']:.3g}, cosine {row['cosine']:.6f}{agreement}: {verdict}"
        )
