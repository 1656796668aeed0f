"""OpenVINO INT8 that misses the verification gate: keep the most sensitive operations in float
until it passes (issue 10).

`convert` quantizes as configured first (steps/nncf_quantize.py). An artifact that passes the gate
(`ExportContext.gate`: checks.check_gate's bar, on the run's verification samples) is kept as it is,
byte for byte what it always was. One that misses it is rescued:

1. Rank NNCF's activation quantizers (the FakeQuantize ops) by the error each adds on the
   calibration samples: the quantized model runs once with every FakeQuantize's input and output
   exposed, and a quantizer's score is its noise-to-signal ratio (||FQ(x) - x||^2 / ||x||^2),
   worst first.
2. A candidate with the first k quantizers removed (their input goes straight through: the ops that
   read them compute in float from float activations; the weights stay INT8) is cheap: no new
   calibration, one edit of the quantized graph.
3. Bisect on k, each candidate judged by the gate itself on its held-out samples, with `MARGIN`
   over the bar (the gate's samples are few; the chosen artifact should also hold on others): the
   smallest k that passes, checked first with every quantizer removed. If even that fails, the
   best candidate is kept and the pipeline stops at exit 1, as before.

NNCF's own `quantize_with_accuracy_control` was tried first (steps: quantize, rank the quantizer
groups by reverting each, revert the worst until the metric holds on the validation data). A
quantizer has no way to validate on the gate's held-out samples, only on the calibration samples:
on PP-OCR's direction classifier it reverted two operations that raised the cosine on the
calibration samples (0.9845 -> 0.9916) and lowered it on the held-out ones (0.9784 -> 0.9699), in
2.5-7 minutes on this shared machine (docs/conformance.md). Judging every candidate by the gate is
both faster and honest about unseen inputs.

The report's `kept_float`: the operations that read a quantizer returned to float (their OpenVINO
names, in graph order), the first attempt's failure, every candidate the gate measured (how many
operations float, the worst output's cosine, whether it passes with the margin), the seconds.
Deterministic: the ranking and the bisection depend only on the model, the data and OpenVINO's f32
CPU kernels.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...targets.records import NOISE_FLOOR
from ..precision import INT8
from .base import ExportContext, Gate

MARGIN = 0.005  # over the gate's bar while choosing: the gate's samples are few (16 of a small set)
RANK_ON = 16  # calibration samples the quantizers are ranked on, at most
NAMES_SHOWN = 40  # operations named in the report at most (the count is always whole)


def keep_float_until_passing(first: Any, fp32: Any, ctx: ExportContext) -> tuple[Any, dict | None]:
    """(the model to write, the report's `kept_float` or None). `first` is the configured INT8
    `openvino.Model` made of `fp32`; it is returned unchanged, with None, when it passes the gate or
    there is no cosine bar to meet."""
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
    ranked = ranked_units(first, fp32, ctx.step.calibration())
    seen = SeenSamples(fp32, ctx.step.calibration())
    tried: list[dict] = [_judged(gate, path, [])]
    made = itertools.count()

    def attempt(count: int) -> tuple[Any, list[str], dict]:
        model, kept = without(first, fp32, ranked[:count])
        judged = _judged(gate, _save(model, work / f"candidate-{next(made)}.xml"), kept, seen(model))
        tried.append(judged)
        return model, kept, judged

    chosen = _bisect(len(ranked), attempt)
    model, kept, _ = chosen
    report = {
        "layers": kept[:NAMES_SHOWN],
        "count": len(kept),
        "units": len(ranked),
        "because": because,
        "tried": [{k: v for k, v in t.items() if k != "names"} for t in tried],
        "seconds": round(time.perf_counter() - started, 1),
        "method": "activation quantizers and weights ranked by their rounding noise, bisected on the gate",
        "margin": MARGIN,
    }
    return model, report


def _bisect(count: int, attempt) -> tuple[Any, list[str], dict]:
    """The candidate of the fewest first quantizers removed that passes (more removed assumed never
    to hurt), else the one with every quantizer removed if it did better than nothing."""
    low, high = 0, count
    best = attempt(high)
    if not best[2]["passes"]:
        return best
    while high - low > 1:
        middle = (low + high) // 2
        candidate = attempt(middle)
        if candidate[2]["passes"]:
            high, best = middle, candidate
        else:
            low = middle
    return best


def ranked_units(model: Any, fp32: Any, calibration) -> list[tuple[str, str]]:
    """What can return to float, worst first: ("activation", FakeQuantize name) and ("weights",
    operation name), each scored by the noise its rounding adds relative to the tensor's power."""
    scored = [(score, ("activation", name)) for name, score in activation_noise(model, calibration)]
    scored += [(score, ("weights", name)) for name, score in weight_noise(model, fp32)]
    return [unit for _, unit in sorted(scored, key=lambda pair: -pair[0])]  # stable: graph order on ties


def weight_noise(model: Any, fp32: Any) -> list[tuple[str, float]]:
    """(operation, noise ratio) for each operation of `model` reading INT8 weights: per output
    channel, symmetric INT8 rounds with a step of max|w| / 127 (noise step^2 / 12 per element),
    estimated from the float weights of the same operation in `fp32`."""
    originals = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}
    found = []
    for op, port in _int8_weights(model):
        weight = _float_weight(op, port, originals)
        if weight is None or weight.ndim < 2:
            continue
        rows = weight.reshape(weight.shape[0], -1).astype(np.float64)
        step = np.abs(rows).max(1) / 127.0
        noise = float((step**2 / 12.0 * rows.shape[1]).sum())
        found.append((op.get_friendly_name(), noise / max(float((rows**2).sum()), 1e-30)))
    return found


def activation_noise(model: Any, calibration) -> list[tuple[str, float]]:
    """(FakeQuantize, noise ratio) for each activation quantizer of `model`: the noise it adds to
    its input on the first `RANK_ON` calibration samples, relative to the input's power."""
    fqs = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    fqs = [op for op in fqs if not _constant(op.input_value(0).get_node())]
    if not fqs:
        return []
    probe = model.clone()
    by_name = {op.get_friendly_name(): op for op in probe.get_ordered_ops()}
    ports = [
        (by_name[f.get_friendly_name()].input_value(0), by_name[f.get_friendly_name()].output(0)) for f in fqs
    ]
    probe.add_outputs([p for pair in ports for p in pair])  # a port already an output is not added twice
    where = {_key(r.input_value(0)): i for i, r in enumerate(probe.get_results())}
    compiled = _compiled(probe)
    noise, power = np.zeros(len(fqs)), np.zeros(len(fqs))
    for feed in itertools.islice(calibration.samples(), RANK_ON):
        values = compiled(feed)
        for i, (before, after) in enumerate(ports):
            x = np.asarray(values[where[_key(before)]], np.float64)
            q = np.asarray(values[where[_key(after)]], np.float64)
            noise[i] += float(((q - x) ** 2).sum())
            power[i] += float((x**2).sum())
    score = noise / np.maximum(power, 1e-30)
    return [(f.get_friendly_name(), float(score[i])) for i, f in enumerate(fqs)]


def _key(port: Any) -> tuple[str, int]:
    return port.get_node().get_friendly_name(), port.get_index()


def without(first: Any, fp32: Any, units: list[tuple[str, str]]) -> tuple[Any, list[str]]:
    """A copy of `first` with `units` back in float: an activation quantizer removed (its input read
    directly), an operation's weights and bias taken back from `fp32`; and the operations that now
    read float (graph order)."""
    model = first.clone()
    gone = {name for kind, name in units if kind == "activation"}
    weights = {name for kind, name in units if kind == "weights"}
    readers = set(weights)
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and op.get_friendly_name() in gone:
            readers.update(t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs())
            op.output(0).replace(op.input_value(0))
    originals = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}
    for op, port in _int8_weights(model):
        if op.get_friendly_name() in weights:
            _restore(op, port, originals)
    model.validate_nodes_and_infer_types()
    ops = list(model.get_ordered_ops())
    kept = [_written_name(op, i) for i, op in enumerate(ops) if op.get_friendly_name() in readers]
    return model, kept


def _restore(op: Any, port: int, originals: dict) -> None:
    """`op`'s weights at `port`, and the constant of the bias Add after it (NNCF's bias correction
    moves it), as the float model has them."""
    import openvino as ov

    weight = _float_weight(op, port, originals)
    if weight is None:
        return
    op.input(port).replace_source_output(ov.op.Constant(weight).output(0))
    for target in op.output(0).get_target_inputs():
        add = target.get_node()
        original = originals.get(add.get_friendly_name())
        if add.get_type_name() != "Add" or original is None:
            continue
        for i in range(2):
            value = _constant_value(original.input_value(i).get_node())
            if value is not None and add.input_value(i).get_node().get_type_name() == "Constant":
                add.input(i).replace_source_output(ov.op.Constant(value).output(0))


def _float_weight(op: Any, port: int, originals: dict) -> np.ndarray | None:
    """The float model's weights for `op`'s INT8 weights at `port`, when they are the same tensor: a
    Constant of the same shape whose values go with the INT8 ones (correlation > 0.9; a square
    matrix stored transposed, or a weight NNCF reshaped, is left INT8)."""
    if _smoothed(op):
        return None
    source = originals.get(op.get_friendly_name())
    weight = _constant_value(source.input_value(port).get_node()) if source is not None else None
    root = _int_root(op.input_value(port).get_node())
    if weight is None or root is None or weight.shape != root.shape or weight.size < 2:
        return None
    a, b = weight.astype(np.float64).ravel(), root.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return weight if norms > 0 and a @ b / norms > 0.9 else None


def _smoothed(op: Any) -> bool:
    """Whether NNCF's SmoothQuant scaled `op`'s input (a `.../nncf_smooth_quant` Multiply before it, or
    before its FakeQuantize): its INT8 weights carry the inverse scale, so the float model's weights
    would not fit (MiniLM: cosine 0.97 -> 0.92 with them restored)."""
    for port in op.inputs():
        node = port.get_source_output().get_node()
        if node.get_type_name() == "FakeQuantize":
            node = node.input_value(0).get_node()
        if node.get_friendly_name().endswith("nncf_smooth_quant"):
            return True
    return False


def _int_root(node: Any, depth: int = 0) -> np.ndarray | None:
    """The integer Constant a weight decompression chain starts from."""
    if node.get_type_name() == "Constant":
        value = np.array(node.get_data())
        return value if node.get_element_type().get_type_name() in _INT_TYPES else None
    for port in node.inputs() if depth <= 6 else ():
        found = _int_root(port.get_source_output().get_node(), depth + 1)
        if found is not None:
            return found
    return None


def _int8_weights(model: Any) -> list[tuple[Any, int]]:
    """(operation, input port) of every operation reading weights stored in INT8."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in {"FakeQuantize", "Constant", "Parameter", "Result"} or _constant(op):
            continue
        for i, port in enumerate(op.inputs()):
            node = port.get_source_output().get_node()
            if node.get_type_name() != "Constant" and _constant(node) and _int_constant(node):
                found.append((op, i))
    return found


def _constant_value(node: Any) -> np.ndarray | None:
    return np.array(node.get_data()) if node.get_type_name() == "Constant" else None


def _written_name(op: Any, position: int) -> str:
    """The name the IR will give `op`: OpenVINO's counter names (`Multiply_31151`) are renumbered by
    graph position when written (exporters/openvino_names.stable_names), so say those as written."""
    name = op.get_friendly_name()
    match = re.fullmatch(r"([A-Z][A-Za-z0-9]*)_\d+", name)
    return f"{match.group(1)}_{position}" if match else name


def _judged(gate: Gate, path: Path, kept: list[str], seen: float | None = None) -> dict:
    """A candidate as the report lists it: how many operations it keeps float, the gate's worst
    output cosine (and on the calibration samples: `seen`), and whether it passes: the gate with the
    margin, and the calibration samples at the same bar."""
    result = gate.measure(path)
    bar = gate.min_cosine(INT8) or 0.0  # a bar is set whenever a rescue runs
    passes = gate.failure(path, INT8, MARGIN) is None and (seen is None or seen >= min(1.0, bar + MARGIN))
    found = {"float_layers": len(kept), "cosine_min": round(result.cosine_min, 6)}
    if seen is not None:
        found["cosine_min_calibration"] = round(seen, 6)
    return {**found, "passes": passes}


class SeenSamples:
    """A candidate's worst output cosine to the float model on the calibration samples (at most
    `RANK_ON`), each output's values over all samples as one vector, as the gate computes it. It was
    added when the gate saw only the held-out samples (4 of 16: PP-OCR det passed at 0.996 on them,
    0.975 on 8 others); the gate now also measures the calibrated-on samples, so with small sets this
    repeats it (kept: with large sets the gate's 64 held-out samples are not these)."""

    def __init__(self, fp32: Any, calibration):
        self.feeds = list(itertools.islice(calibration.samples(), RANK_ON))
        self.reference = _outputs(_compiled(fp32), self.feeds)

    def __call__(self, model: Any) -> float:
        got = _outputs(_compiled(model), self.feeds)
        return min(_cosine(g, w) for g, w in zip(got, self.reference, strict=True))


def _outputs(compiled: Any, feeds: list[dict]) -> list[np.ndarray]:
    """Each output of `compiled` over `feeds`, flattened and concatenated."""
    runs = [compiled(feed) for feed in feeds]
    return [np.concatenate([np.ravel(r[port]) for r in runs]).astype(np.float64) for port in compiled.outputs]


def _cosine(got: np.ndarray, want: np.ndarray) -> float:
    """As the gate: 1 when within NOISE_FLOOR everywhere (verify.py, records.NOISE_FLOOR)."""
    if not got.size or np.abs(got - want).max() <= NOISE_FLOOR:
        return 1.0
    norms = np.linalg.norm(got) * np.linalg.norm(want)
    return float(np.clip(got @ want / norms, -1.0, 1.0)) if norms > 0 else 0.0


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


# -- which operations are quantized -----------------------------------------------------------------

_WEIGHT_PATH = {"Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze"}
_INT_TYPES = {"i8", "u8", "i4", "u4"}


def quantized_ops(model: Any) -> list[str]:
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
