"""How benchmarks/conformance.py prepares a model's files and compares an artifact with the original:
its own cosine per output, on the held-out inputs, layouts matched (see docs/conformance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conformance_models import MODELS, Prepared

# ---------------------------------------------------------------------------------------------------
# Child processes: prepare one model, compare one artifact
# ---------------------------------------------------------------------------------------------------


def save_feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """Batch-1 feeds as one .npz (keys `s{i}/{j}`) plus their input names (json)."""
    names = list(feeds[0])
    np.savez(
        path, **{f"s{i}/{j}": np.asarray(f[n]) for i, f in enumerate(feeds) for j, n in enumerate(names)}
    )
    path.with_suffix(".json").write_text(json.dumps(names))


def load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    names = json.loads(path.with_suffix(".json").read_text())
    npz = np.load(path, allow_pickle=False)
    count = len({k.split("/")[0] for k in npz.files})
    return [{n: npz[f"s{i}/{j}"] for j, n in enumerate(names)} for i in range(count)]


def calibration_file(path: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Samples first, as the README asks: a batch-1 feed is concatenated on its batch axis; an input
    without one (silero's state (2, 1, 128), its scalar `sr`) is stacked on a new first axis."""
    names = list(feeds[0])

    def samples(name):
        arrays = [np.asarray(f[name]) for f in feeds]
        if arrays[0].ndim and arrays[0].shape[0] == 1:
            return np.concatenate(arrays)
        return np.stack(arrays)

    if len(names) == 1:
        np.save(path.with_suffix(".npy"), samples(names[0]))
        return path.with_suffix(".npy")
    np.savez(path.with_suffix(".npz"), **{n: samples(n) for n in names})
    return path.with_suffix(".npz")


def prepare(name: str, workdir: Path, n_cal: int, n_eval: int) -> None:
    """Child: write the model's calibration file, evaluation feeds and reference outputs."""
    workdir.mkdir(parents=True, exist_ok=True)
    prepared: Prepared = MODELS[name][2](n_cal, n_eval, workdir)
    calibration = prepared.calibration
    if isinstance(calibration, list):
        calibration = calibration_file(workdir / "calibration", calibration)
    save_feeds(workdir / "eval.npz", prepared.evaluation)
    references = [[np.asarray(o) for o in prepared.reference(f)] for f in prepared.evaluation]
    np.savez(workdir / "reference.npz", **{f"s{i}/{j}": o for i, outs in enumerate(references) for j, o in enumerate(outs)})  # fmt: skip
    (workdir / "prepared.json").write_text(json.dumps({
        "model": str(prepared.model), "calibration": str(calibration), "outputs": prepared.output_names,
        "inputs_note": prepared.inputs_note, "eval_samples": len(prepared.evaluation),
    }))  # fmt: skip


def adapt(array: np.ndarray, spec) -> np.ndarray:
    """Fit a feed to an artifact input: same array when it fits, NCHW <-> NHWC when only a layout
    change makes it fit (noted by the caller), and the artifact's dtype."""
    want = tuple(spec.shape)

    def fits(a: np.ndarray) -> bool:
        return a.ndim == len(want) and all(
            not isinstance(w, int) or w <= 0 or w == g for w, g in zip(want, a.shape, strict=True)
        )

    if not fits(array) and array.ndim == 4:
        for perm in ((0, 2, 3, 1), (0, 3, 1, 2)):
            if fits(array.transpose(perm)):
                array = array.transpose(perm)
                break
    return np.asarray(array.astype(spec.dtype, copy=False), order="C")  # a scalar (sr) stays 0-d


def match_outputs(reference: list[np.ndarray], ref_names: list[str], got: dict[str, np.ndarray]):
    """Pair the artifact's outputs with the original's: by name, else by position, else by size."""
    if all(n in got for n in ref_names):
        return [got[n] for n in ref_names], "by name"
    values = list(got.values())
    if len(values) == len(reference) and all(
        v.size == r.size for v, r in zip(values, reference, strict=True)
    ):
        return values, "by position"
    by_size = {}
    for v in values:
        by_size.setdefault(v.size, []).append(v)
    paired = [by_size.get(r.size, [None]).pop(0) if by_size.get(r.size) else None for r in reference]
    return paired, "by size"


def as_reference_layout(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    if out.shape == ref.shape or out.size != ref.size:
        return out
    if out.ndim == 4 and ref.ndim == 4:
        for perm in ((0, 2, 3, 1), (0, 3, 1, 2)):
            if out.transpose(perm).shape == ref.shape:
                return out.transpose(perm)
    return out.reshape(ref.shape)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def compare(artifact: Path, workdir: Path) -> dict:
    """Child: run `artifact` on the evaluation feeds and compare with the reference outputs."""
    from edgesmith.runtime import load

    info = json.loads((workdir / "prepared.json").read_text())
    feeds = load_feeds(workdir / "eval.npz")
    ref_npz = np.load(workdir / "reference.npz", allow_pickle=False)
    ref_names = info["outputs"]
    session = load(artifact, exact=True)
    outs: list[list[np.ndarray]] = [[] for _ in ref_names]
    refs: list[list[np.ndarray]] = [[] for _ in ref_names]
    names = list(feeds[0])
    specs = {s.name: s for s in session.inputs}
    how = None
    for i, feed in enumerate(feeds):
        if set(names) == set(specs):
            mapped = {n: adapt(feed[n], specs[n]) for n in names}
        elif len(names) == len(session.inputs):
            mapped = {s.name: adapt(feed[n], s) for n, s in zip(names, session.inputs, strict=True)}
        else:
            raise RuntimeError(f"the artifact's inputs {list(specs)} do not match the original's {names}")
        got = session.run(mapped)
        reference = [ref_npz[f"s{i}/{j}"] for j in range(len(ref_names))]
        paired, how = match_outputs(reference, ref_names, got)
        for j, (o, r) in enumerate(zip(paired, reference, strict=True)):
            if o is None:
                raise RuntimeError(
                    f"no artifact output matches original output {ref_names[j]} {list(r.shape)}"
                )
            outs[j].append(as_reference_layout(np.asarray(o), r))
            refs[j].append(r)
    cosines = {
        n: cosine(np.concatenate(o), np.concatenate(r)) for n, o, r in zip(ref_names, outs, refs, strict=True)
    }
    max_abs = {n: float(np.max(np.abs(np.concatenate(o).astype(np.float64) - np.concatenate(r))))
               for n, o, r in zip(ref_names, outs, refs, strict=True)}  # fmt: skip
    return {"cosine": cosines, "max_abs": max_abs, "outputs_matched": how, "samples": len(feeds)}
