"""`edgesmith run`: run an artifact on inputs from an .npz file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="run an artifact on inputs from an .npz",
        description="Runs ARTIFACT on the arrays in IN.npz (named after the model "
        "inputs; a single array feeds a single-input model) and saves or prints the "
        "outputs. Example: edgesmith run out/mnist_cnn.int8.onnx --input batch.npz "
        "--output logits.npz",
    )
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--input", required=True, metavar="IN.npz")
    p.add_argument("--output", metavar="OUT.npz", help="save outputs here (written atomically)")
    p.add_argument("--backend", default="auto", help="ort, numpy or auto (default)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print output names, shapes and values as JSON")
    return p


def read_inputs(path: Path, session) -> dict[str, np.ndarray]:
    from .._io import read_arrays
    from ..errors import InputError
    from ..runtime import check_feeds

    if path.is_dir():
        raise InputError(f"--input {path} is a folder; give an .npz with one array per model input")
    if not path.is_file():
        raise InputError(f"--input {path}: no such file; check the path")
    arrays = read_arrays(path, "--input")
    arrays.pop("labels", None)
    names = [s.name for s in session.inputs]
    if len(names) == 1 and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    feeds = {
        k: np.ascontiguousarray(v, dtype=next((s.dtype for s in session.inputs if s.name == k), None))
        for k, v in arrays.items()
    }
    check_feeds(session, feeds)
    return feeds


def check_output(path: Path) -> None:
    """Refuse an --output that cannot become a file, before the model runs (nothing is created)."""
    from ..errors import InputError

    if path.is_dir():
        raise InputError(f"--output {path} is a folder; give a file name, e.g. {path / 'outputs.npz'}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"--output {path}: {parent} is a file, not a folder; choose another --output")
    if not parent.is_dir():
        raise InputError(
            f"--output {path}: the folder {parent} does not exist; create it or choose another --output"
        )


def main(args) -> int:
    from .._io import atomic_path
    from ..errors import InputError
    from ..runtime import load
    from ..runtime.session import check_feedable

    output = Path(args.output) if args.output else None
    if output is not None:
        check_output(output)
    session = load(args.artifact, backend=args.backend, threads=args.threads)
    check_feedable(session.inputs, args.artifact)
    outputs = session.run(read_inputs(Path(args.input), session))
    if output is not None:
        try:
            with atomic_path(output) as tmp, open(tmp, "wb") as f:
                np.savez(f, **outputs)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle
        except OSError as exc:
            raise InputError(
                f"cannot write --output {output} ({exc.strerror}); choose another --output"
            ) from None
    if args.json:
        print(
            json.dumps(
                {
                    k: {"shape": list(v.shape), "dtype": v.dtype.name, "values": v.tolist()}
                    for k, v in outputs.items()
                }
            )
        )
    elif not args.output:
        for name, value in outputs.items():
            print(f"{name}: shape {list(value.shape)} {value.dtype.name}")
            print(np.array2string(value, threshold=20, precision=4))
    return 0
