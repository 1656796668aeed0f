"""OpenVINO INT8 that misses the verification gate: keep the most sensitive operations in float
until it passes, with NNCF's own accuracy control (issue 10).

`convert` quantizes as configured first (steps/nncf_quantize.py). An artifact that passes the gate
(`ExportContext.gate`: checks.check_gate's bar, on the run's verification samples) is kept as it is,
byte for byte what it always was. One that misses it is made again by
`nncf.quantize_with_accuracy_control` with the same settings: NNCF quantizes, ranks the groups of
quantizers by what returning each to float buys on the validation samples, and reverts the worst
groups (activations and weights) one at a time until the metric holds.

- The metric is the gate's statistic: for each output, the cosine of the artifact's outputs to the
  float model's over all samples; the worst output (an output within `NOISE_FLOOR` everywhere counts
  as equal). The float model is the converted `openvino.Model` run in f32, so NNCF's starting
  metric is exactly 1 and `max_drop` is `1 - target`.
- NNCF validates on the calibration samples: the gate's own samples are held out of calibration
  and judge the result. So the target is the bar plus `MARGIN`, and a result that passes NNCF's
  check but not the gate (with the same margin) is made again with the target raised by the gap
  seen between the two (`ATTEMPTS` in all). The first candidate that passes with the margin is
  kept, else the one the gate liked best (which the pipeline then stops at exit 1, as before).
- The report's `kept_float`: the operations that stayed float (their OpenVINO names, in graph
  order), the first attempt's failure, every candidate the gate measured, the seconds it took.

Deterministic: the same model, data and settings give the same ranking and reverts (NNCF ranks with
one worker here; OpenVINO's f32 CPU kernels give the same outputs on the same machine).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from ...targets.records import NOISE_FLOOR
from ..precision import INT8
from .base import ExportContext, Gate

MARGIN = 0.005  # over the gate's bar while choosing: 4 held-out samples are few
ATTEMPTS = 2  # accuracy-control runs at most (each quantizes again)
MOST_REVERTED = 16  # groups of quantizers NNCF returns to float at most (each one is a validation)
VALIDATE_ON = 64  # calibration samples NNCF validates candidates on, at most
NAMES_SHOWN = 40  # operations named in the report at most (the count is always whole)


def keep_float_until_passing(
    fp32: Any, first: Any, calibration: Any, kwargs: dict, ctx: ExportContext
) -> tuple[Any, dict | None]:
    """(the model to write, the report's `kept_float` or None). `first` is the configured
    quantization of `fp32` (an `openvino.Model`): nncf.quantize on the `calibration` nncf.Dataset
    with `kwargs`. It is returned unchanged, with None, when it passes the gate or there is no
    cosine bar to meet."""
    bar = ctx.gate.min_cosine(INT8) if ctx.gate is not None else None
    if ctx.gate is None or bar is None:
        return first, None
    work = ctx.step.workdir / "nncf-accuracy"
    work.mkdir(exist_ok=True)
    gate = dataclasses.replace(ctx.gate, measure=_memo(ctx.gate.measure))
    path = _save(first, work / "first.xml")
    because = gate.failure(path, INT8)
    if because is None:
        return first, None
    started = time.perf_counter()
    baseline = _quantized_ops(first)
    tried = [_judged(gate, path, 0)]
    check = Validation(fp32, ctx.step.calibration())
    # NNCF validates on the calibration samples, where INT8 looks better than on the gate's: aim
    # higher by the gap the first attempt shows between the two
    target, candidates = _raised(bar + MARGIN, check.cosine_min(_compiled(first)), tried[0]), []
    for attempt in range(ATTEMPTS):
        model = _accuracy_control(fp32, calibration, kwargs, check, 1.0 - target, ctx.step.quiet)
        kept = [name for name in baseline if name not in set(_quantized_ops(model))]
        path = _save(model, work / f"candidate-{attempt}.xml")
        tried.append(_judged(gate, path, len(kept)))
        candidates.append((model, kept, tried[-1]))
        if tried[-1]["passes"] or attempt + 1 == ATTEMPTS:
            break
        target = _raised(target + MARGIN, check.cosine_min(_compiled(model)), tried[-1])
    model, kept, _ = next((c for c in candidates if c[2]["passes"]),
                          max(candidates, key=lambda c: c[2]["cosine_min"]))  # fmt: skip
    report = {
        "layers": kept[:NAMES_SHOWN],
        "count": len(kept),
        "of": len(baseline),
        "because": because,
        "tried": tried,
        "seconds": round(time.perf_counter() - started, 1),
        "method": "nncf.quantize_with_accuracy_control, validated on the calibration samples",
        "target_cosine": round(target, 4),
        "margin": MARGIN,
    }
    return model, report


def _raised(target: float, validated: float, judged: dict) -> float:
    """`target` plus how much better a candidate looked on NNCF's validation samples (`validated`)
    than to the gate (`judged`), at most 1."""
    return min(1.0, target + max(0.0, validated - judged["cosine_min"]))


class Validation:
    """NNCF's validation data and function: the calibration samples, scored by the worst output's
    cosine (over the samples given) to the float model's outputs, computed once in f32."""

    def __init__(self, fp32: Any, calibration):
        self.feeds = list(itertools.islice(calibration.samples(), VALIDATE_ON))
        compiled = _compiled(fp32)
        self.reference = [_run(compiled, feed) for feed in self.feeds]

    def dataset(self):
        """The validation `nncf.Dataset`: items are sample indices, fed as the samples they name."""
        import nncf

        return nncf.Dataset(list(range(len(self.feeds))), lambda i: self.feeds[i])

    def __call__(self, compiled: Any, items) -> tuple[float, None]:
        """nncf's `validation_fn`: the metric over `items` (per item too: NNCF calls it on single ones)."""
        return self.cosine_min(compiled, list(items)), None

    def cosine_min(self, compiled: Any, items: list[int] | None = None) -> float:
        items = list(range(len(self.feeds))) if items is None else items
        got = [_run(compiled, self.feeds[i]) for i in items]
        want = [self.reference[i] for i in items]
        return min(_cosine([g[k] for g in got], [w[k] for w in want]) for k in range(len(want[0])))


def _cosine(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """One output's cosine over all samples (their values as one vector), as verify.py computes the
    gate's; 1 when it is within NOISE_FLOOR of the float model's everywhere."""
    g = np.concatenate([np.ravel(x) for x in got]).astype(np.float64)
    w = np.concatenate([np.ravel(x) for x in want]).astype(np.float64)
    if not g.size or np.abs(g - w).max() <= NOISE_FLOOR:
        return 1.0
    norms = np.linalg.norm(g) * np.linalg.norm(w)
    return float(np.clip(g @ w / norms, -1.0, 1.0)) if norms > 0 else 0.0


def _accuracy_control(fp32: Any, calibration: Any, kwargs: dict, check: Validation, max_drop: float,
                      quiet: bool) -> Any:  # fmt: skip
    """nncf.quantize_with_accuracy_control with the first attempt's settings."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from ..progress import bar

    settings = dict(kwargs)
    settings["advanced_quantization_parameters"] = settings.pop("advanced_parameters")
    with bar(1, f"keeping layers float (nncf, cosine >= {1 - max_drop:.4f})", "run", quiet) as progress, \
            redirect_stdout(io.StringIO()):  # fmt: skip
        model = nncf.quantize_with_accuracy_control(
            fp32,
            calibration,
            check.dataset(),
            check,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                num_ranking_workers=1, max_num_iterations=MOST_REVERTED
            ),
            **settings,
        )
        progress.update(1)
    return model


def _judged(gate: Gate, path: Path, float_layers: int) -> dict:
    """A candidate as the report lists it: how many operations it keeps float, the gate's worst
    output cosine, and whether it passes with the margin."""
    result = gate.measure(path)
    return {"float_layers": float_layers, "cosine_min": round(result.cosine_min, 6),
            "passes": gate.failure(path, INT8, MARGIN) is None}  # fmt: skip


def _memo(measure):
    """`measure`, once per path (the gate is asked for a candidate's figures and for its verdict)."""
    seen: dict[Path, Any] = {}

    def once(path: Path):
        if path not in seen:
            seen[path] = measure(path)
        return seen[path]

    return once


def _save(model: Any, path: Path) -> Path:
    import openvino as ov

    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def _compiled(model: Any) -> Any:
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _run(compiled: Any, feed: dict) -> list[np.ndarray]:
    outputs = compiled(feed)
    return [np.asarray(outputs[port]) for port in compiled.outputs]


# -- which operations are quantized -----------------------------------------------------------------

_WEIGHT_PATH = {"Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze"}
_INT_TYPES = {"i8", "u8", "i4", "u4"}


def _quantized_ops(model: Any) -> list[str]:
    """The operations (names, graph order) that read an INT8 input: a FakeQuantize's output, or
    weights stored in int8 (a constant subgraph from an i8/u8 Constant, NNCF's compressed weights)."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in {"FakeQuantize", "Constant", "Parameter", "Result"} or _constant(op):
            continue
        if any(_int8(i.get_source_output().get_node()) for i in op.inputs()):
            names.append(op.get_friendly_name())
    return names


def _int8(node: Any) -> bool:
    return node.get_type_name() == "FakeQuantize" or (_constant(node) and _int_constant(node))


def _constant(node: Any, depth: int = 0) -> bool:
    """Whether `node` is computed from constants only, through the ops weight decompression uses."""
    kind = node.get_type_name()
    if kind == "Constant":
        return True
    if kind not in _WEIGHT_PATH or depth > 6:
        return False
    return all(_constant(i.get_source_output().get_node(), depth + 1) for i in node.inputs())


def _int_constant(node: Any, depth: int = 0) -> bool:
    """Whether a constant subgraph starts from an integer Constant (INT8 weights, decompressed)."""
    if node.get_type_name() == "Constant":
        return node.get_element_type().get_type_name() in _INT_TYPES
    return depth <= 6 and any(
        _int_constant(i.get_source_output().get_node(), depth + 1) for i in node.inputs()
    )
