"""After the export: what the pipeline checks and measures on each artifact. ARM emulation, host
latency and device estimates, the stage table (what every step bought), and the gate that turns
a failed verification into exit 1 (`check_gate`). `pipeline.run` calls these in that order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import VerificationFailed
from ..targets.records import Latency, Report, Stage, Verification
from .precision import BINARY, FP16
from .recipe import Recipe


def emulate_on_arm(report: Report, recipe: Recipe, data) -> Report:
    """A recipe with ARM targets (Raspberry Pis, phones): each ONNX/TFLite artifact also runs on ARM
    kernels, under qemu-user (targets/emulate.py), on the first verification batch (at most
    EMULATED_SAMPLES of it), and is compared with its own run here. Skipped, with the reason in the
    report, where qemu is not installed."""
    from ..targets import spec

    cpus: dict[str, str] = {}  # emulated CPU: the first target with it
    for name in recipe.profile.targets:
        target = spec.get(name)
        if target.isa_family == "arm" and not target.is_mcu:
            from ..targets import emulate

            cpus.setdefault(emulate.cpu_for(target), name)
    if not cpus:
        return report
    from ..errors import EdgesmithError
    from ..runtime import load as load_session
    from ..targets import emulate

    try:
        emulate.check_tools()
    except EdgesmithError as exc:
        return dataclasses.replace(report, emulation={"skipped": str(exc)})
    batch = next(iter(data.batches()))
    artifacts = []
    for entry in report.artifacts:
        path = Path(entry.path)
        if path.suffix in (".onnx", ".tflite"):
            session = load_session(path, exact=True)
            feeds, host = _few_samples(session, batch)
            samples = len(next(iter(feeds.values())))
            emulated = {name: emulate.verify(path, feeds, host, entry.precision, cpu=cpu) | {"samples": samples}
                        for cpu, name in cpus.items()}  # fmt: skip
            entry = dataclasses.replace(entry, emulated=emulated)
        artifacts.append(entry)
    return dataclasses.replace(report, artifacts=tuple(artifacts))


EMULATED_SAMPLES = 8  # enough to compare kernels; qemu runs a transformer's 64 sentences for ~6 min


def _few_samples(session, batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """The first EMULATED_SAMPLES samples of the batch and the host's outputs for them; the whole
    batch where the model does not take fewer (an input whose leading dimension is fixed)."""
    batched = all(not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in session.inputs if s.shape)
    sizes = {len(v) for v in batch.values() if np.ndim(v)}
    if batched and len(sizes) == 1 and sizes.pop() > EMULATED_SAMPLES:
        batch = {k: v[:EMULATED_SAMPLES] if np.ndim(v) else v for k, v in batch.items()}
    return batch, session.run(batch)


def stages(source, report: Report, ref, evaluation, recipe: Recipe, quiet: bool) -> tuple[Stage, ...]:
    """MACs, parameters, size, metric and host latency of the model before and after each step: the
    original, each step's ONNX result, and the quantized first artifact. Metric and latency come
    from the same code as the artifacts' (verify against the original; the recipe's [profile])."""
    from . import verify
    from .profile_step import profile

    def measure(
        name: str, path: Path, checked: Verification | None = None, latency: Latency | None = None
    ) -> Stage:
        result = checked or Verification.from_json(verify.verify(path, ref, evaluation, quiet))
        p50 = None
        if recipe.profile.enabled and not raised(result):  # raised on a sample: not timed
            p50 = (latency or Latency.from_json(profile(path, recipe.profile, source.inputs))).p50_ms
        return Stage(after=name, **graph_stats(path, source.inputs), size_bytes=path.stat().st_size,
                     metric=result.metric, score=result.artifact, agreement=result.agreement,
                     cosine=result.cosine, cosine_min=result.cosine_min, p50_ms=p50)  # fmt: skip

    first = report.artifacts[0]
    embeddings = first.verify is not None and first.verify.cosine is not None  # the original against itself
    original = Stage(after="original", **graph_stats(source.onnx.path, source.inputs),
                     size_bytes=source.onnx.path.stat().st_size, metric=ref.metric, score=ref.score,
                     cosine=1.0 if embeddings else None, cosine_min=1.0,
                     p50_ms=report.original_latency.p50_ms if report.original_latency else None)  # fmt: skip
    rows = [original]
    rows += [measure(step.kind, step.stage_onnx) for step in report.steps if step.stage_onnx is not None]
    if report.steps[-1].kind == "quantize":
        rows.append(measure("quantize", Path(first.path), first.verify, first.latency))
    elif first.precision == BINARY:  # the exporter packs the +-1 weights into bits
        packed = measure("export (1-bit)", Path(first.path), first.verify, first.latency)
        rows.append(dataclasses.replace(packed, params=rows[-1].params))  # the same weights, 8 to a byte
    for i in range(1, len(rows)):  # a TFLite artifact: the counts do not change
        before, row = rows[i - 1], rows[i]
        rows[i] = dataclasses.replace(
            row, macs=either(row.macs, before.macs), params=either(row.params, before.params)
        )
    return tuple(rows)


def either(value, fallback):
    return fallback if value is None else value


def graph_stats(path: Path, inputs=()) -> dict:
    """MACs (the cost model's count) and parameters (weights + biases, in elements) of an ONNX file."""
    if path.suffix != ".onnx":
        return {}
    from ..targets.graph import layers

    graph = layers(path, shapes={s.name: s.shape for s in inputs})
    return {"macs": sum(layer.macs for layer in graph), "params": param_count(path)}


def param_count(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(
        int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims) >= 1 and int(np.prod(t.dims)) > 1
    )


def one_sample(data) -> dict | None:
    """One real sample of the verification data (None for random inputs), for profiling to time."""
    samples = getattr(data, "samples", None)
    return next(iter(samples()), None) if samples else None


def raised(checked: Verification | None) -> bool:
    """Whether the artifact raised on a sample the original runs (it failed verification: not timed)."""
    return checked is not None and any(o.error for o in checked.outputs)


def profile_all(source, report: Report, recipe: Recipe, feeds: dict | None = None) -> Report:
    """The report with host latency of the original and each artifact (on `feeds`, one real sample,
    when there is one), and with `[profile] targets` the cost model's estimate on each."""
    from .profile_step import per_target, profile

    def latency(path: Path) -> Latency:
        return Latency.from_json(profile(path, recipe.profile, source.inputs, feeds))

    original = latency(original_file(source))
    artifacts = tuple(
        a if raised(a.verify) else dataclasses.replace(a, latency=latency(Path(a.path)))
        for a in report.artifacts
    )
    original_targets = None
    if recipe.profile.targets:
        original_targets = per_target(original_file(source), recipe.profile, source.inputs)
        artifacts = tuple(
            dataclasses.replace(a, targets=per_target(Path(a.path), recipe.profile, source.inputs))
            for a in artifacts
        )
    return dataclasses.replace(
        report, original_latency=original, artifacts=artifacts, original_targets=original_targets
    )


def original_file(source) -> Path:
    """What the original runs as here: the user's own .tflite under LiteRT (not the ONNX that tf2onnx
    made of it for the steps), else the fp32 ONNX (the same graph as a .pt2, .keras or .onnx)."""
    if source.kind == "tflite" and source.native is not None:
        return source.native.path
    return source.onnx.path


def cosine_bar(recipe: Recipe, precision: str) -> float | None:
    """The min cosine an artifact of `precision` is held to: [verify] min_cosine, else the default by
    precision (verify.DEFAULT_MIN_COSINE) for runs whose steps only quantize or export; pruning,
    distillation and binarization change the function on purpose, so they get no default bar."""
    from .verify import DEFAULT_MIN_COSINE

    if recipe.verify.min_cosine is not None:
        return recipe.verify.min_cosine
    if any(step.kind != "quantize" for step in recipe.steps):
        return None
    return DEFAULT_MIN_COSINE.get(precision)


# steps that change the model's function on purpose: a drop after them is theirs to win back
RESHAPING = ("prune", "prune_transformer", "binarize", "lowrank", "sparsify")


def _drop_hint(recipe: Recipe) -> str:
    """What to try when the metric dropped: compress less or train longer after a reshaping step,
    else a quantizer's remedies."""
    reshaping = [step.kind for step in recipe.steps if step.kind in RESHAPING]
    if reshaping:
        return (f"compress less or train longer after {', '.join(reshaping)} (a smaller ratio, more "
                "distill steps or epochs, more layers kept float)")  # fmt: skip
    return "try calibration.method = 'percentile' or exclude sensitive layers"


def check_gate(report: Report, recipe: Recipe) -> None:
    """Exit 1 (VerificationFailed) when an artifact's metric dropped more than `max_drop`, or one of
    its outputs is further from the original's than `min_cosine` (default: by precision, for runs
    that only quantize or export; see verify.DEFAULT_MIN_COSINE)."""
    limit = recipe.verify.max_drop
    for entry in report.artifacts:
        result, name = entry.verify, entry.name
        if result is None:  # every artifact is verified before this check
            raise RuntimeError(f"internal error: {name} was not verified")
        if limit is not None and result.drop is not None and result.drop > limit:
            raise VerificationFailed(
                f"{name}: {result.metric} dropped {result.drop:.2f} points, more than [verify] "
                f"max_drop = {limit}; {_drop_hint(recipe)}"
            )
        min_cosine = cosine_bar(recipe, entry.precision or "")
        for target, emulated in (entry.emulated or {}).items():
            if not emulated["ok"]:
                raise VerificationFailed(
                    f"{name}: on emulated ARM ({target}, {emulated['device'].get('cpu', 'aarch64')}) its outputs "
                    f"differ from this host's beyond the {entry.precision} tolerance; see report.json "
                    "artifacts[].emulated"
                )
        worst = _worst_below(result, min_cosine)
        if worst is not None and worst.error:
            raise VerificationFailed(f"{name}: output '{worst.name}': {worst.error}")
        if worst is not None:
            raise VerificationFailed(
                f"{name}: output '{worst.name}' has cosine {worst.cosine:.4f} to the original's "
                f"(on {result.samples} samples of {result.data}), below [verify] min_cosine = "
                f"{min_cosine}; {_what_to_try(entry)}"
            )


def _worst_below(result: Verification, min_cosine: float | None):
    """The output the gate names: one that raised on a sample, else the least similar of those below
    the bar (the one to fix first; a NaN cosine is the least), else None."""
    if min_cosine is None:
        return None
    below = [o for o in result.outputs if dataclasses.replace(result, outputs=(o,)).below(min_cosine)]
    raised = [o for o in below if o.error]
    return (
        raised[0]
        if raised
        else min(below, key=lambda o: -2.0 if o.cosine != o.cosine else o.cosine, default=None)
    )


def _what_to_try(entry) -> str:
    """The fix a failed gate suggests: what a user can change, or, after the quantizer's rescue kept
    layers float and still missed the bar (`kept_float`), how far it got."""
    kept = (entry.quantization or {}).get("kept_float")
    fix = (
        "fp16 arithmetic itself loses it: export fp32 (--preset fp32), or set [verify] min_cosine if this "
        "is expected"
        if entry.precision == FP16
        else "try another calibration.method or more calibration data, or set [verify] min_cosine if "
        "this is expected"
    )
    if kept:
        most = max(t["float_layers"] for t in kept["tried"])
        best = max(t["cosine_min"] or -1.0 for t in kept["tried"])
        return (
            f"the rescue tried {len(kept['tried'])} candidates with up to {most} of its most sensitive "
            f"layers in float and none met the bar (the best of them: cosine {best:.4f}); {fix}"
        )
    if entry.precision == FP16:
        return f"keep sensitive layers in float32 (quantize.exclude), or {fix.split(': ', 1)[1]}"
    return (
        "keep sensitive layers in float (quantize.exclude), try another calibration.method, or set "
        "[verify] min_cosine if this is expected"
    )
