"""`quantize`: the recipe's `[quantize]` settings, and ONNX Runtime's quantizer (INT8 static, INT8
dynamic or FP16 of an ONNX model), the quantizer `converter/plan.py` picks for ONNX exports by default.
Other formats and engines have their own quantizer modules (`QUANTIZERS` in steps/__init__.py).

Static INT8 is QDQ with per-channel weights. The activation/weight types follow the CPU that will run
the model (see int8_types.py) and the report says which were chosen and why.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import re
import shutil
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from ...errors import require
from ..accuracy import exact
from ..handle import ModelHandle
from ..precision import FP16, INT8, INT8_DYNAMIC, of_mode
from ..validate import spec
from . import int8_types, onnx_branches, onnx_graphs, qdq_tidy
from .base import StepConfig, StepContext, StepResult, engine_names, register

METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


@dataclass(frozen=True)
class QuantizeConfig(StepConfig):
    kind: ClassVar[str] = "quantize"
    mode: Literal["static", "dynamic", "fp16", "weight-only"] = "static"
    per_channel: bool = True
    format: Literal["qdq", "qoperator"] = "qdq"
    activations: Literal["auto", "int8", "uint8"] = "auto"  # auto: from the target's CPU
    weights: Literal["int8", "uint8"] = "int8"
    target: str = spec("host", choices=int8_types.TARGETS)  # host | x86-vnni | x86 | arm
    op_types: list[str] | None = spec(None, nonempty=True)  # None: ONNX Runtime's default set
    exclude: list[str] = spec(default_factory=list, regex=True)  # regexes on node names to keep in float
    preprocess: bool = True  # ONNX Runtime's quant_pre_process (shape inference + graph fusions)
    # auto: ONNX Runtime for ONNX, NNCF for OpenVINO, the AI Edge Quantizer (TensorFlow's converter for
    # Keras) for TFLite, and after a `qat` step the ranges it learned for ONNX ("qat"; steps/qat_export.py);
    # converter/plan.py picks the quantizer from QUANTIZERS, whose engine names are the valid values
    engine: str = spec("auto", choices=engine_names)
    # rescue: quantize as configured; only if that misses the verification gate, keep the most sensitive
    # layers float until the artifact passes (ONNX Runtime's static, dynamic and fp16: steps/ort_rescue.py;
    # OpenVINO INT8: steps/nncf_accuracy.py; TFLite INT8: steps/aeq_rescue.py).
    # auto: with a [verify] budget (max_drop / min_cosine), search before exporting for the fewest
    # sensitive layers float that meet it (converter/budget.py). off: quantize as configured; the gate
    # only checks
    search: Literal["rescue", "auto", "off"] = "rescue"
    # weight-only: the weights' width and how many input channels share a scale (steps/weight_only.py)
    bits: Literal[4, 8] = 8
    block_size: Literal[16, 32, 64, 128, 256] = 128
    # PTQ recovery (NNCF; steps/recovery.py). None: the engine's default
    bias_correction: Literal["fast", "full", "off"] | None = None
    smooth_quant: float | None = spec(None, ge=0, le=1)  # SmoothQuant's alpha on MatMuls; 0: off
    # cross-layer equalization of the float model before any engine quantizes it (AIMET; steps/equalize.py)
    equalize: bool = False


def _qtype(q, name: str):
    return {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}[name]


def excluded_nodes(model_path, patterns: list[str]) -> list[str]:
    if not patterns:
        return []
    onnx = require("onnx", "convert")
    names = [n.name for n in onnx_graphs.nodes(onnx.load(str(model_path), load_external_data=False).graph)]
    regexes = [re.compile(p) for p in patterns]
    return [n for n in names if any(r.search(n) for r in regexes)]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over our batches, read a range at a time.

    ONNX Runtime collects ranges chunk by chunk when the reader has `__len__` and `set_range`
    (its `CalibStridedMinMax` option), so only a few batches of activations are held at once.
    """

    def __init__(self, source, progress):
        self._source, self._progress = source, progress
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return self._source.num_batches()

    def set_range(self, start_index: int, end_index: int) -> None:
        self._indices = iter(range(start_index, end_index))

    def get_next(self):
        index = next(self._indices, None)
        if index is None:
            return None
        batch = self._source.batch(index)
        self._progress.update(self._source.feed_size(batch))
        return batch

    def rewind(self):
        self.set_range(0, len(self))


def _stride(batches: int, most: int = 4) -> int:
    """The largest divisor of `batches` up to `most` (ONNX Runtime needs an exact division)."""
    return max(d for d in range(1, min(most, batches) + 1) if batches % d == 0)


@register(QuantizeConfig)
def quantize(config: QuantizeConfig, model: ModelHandle, ctx: StepContext) -> StepResult:
    if config.mode == "fp16":
        return _fp16(config, model, ctx)
    q = require("onnxruntime.quantization", "convert", "INT8 quantization uses ONNX Runtime's tools")
    from .recovery import check_onnxruntime

    check_onnxruntime(config)
    report: dict = {"mode": config.mode, "per_channel": config.per_channel, "engine": "onnxruntime"}
    source_path = prepared(model.path, ctx.workdir, config.preprocess)
    excluded = excluded_nodes(source_path, config.exclude)
    out = ctx.workdir / f"{model.path.stem}.{config.mode}-int8.onnx"
    if config.mode == "dynamic":
        q.quantize_dynamic(
            str(source_path),
            str(out),
            per_channel=config.per_channel,
            weight_type=_qtype(q, config.weights),
            op_types_to_quantize=config.op_types,
            nodes_to_exclude=excluded,
        )
        report.update(weights=config.weights, activations="uint8 (computed at run time)")
        _share_branch_weights(out)
        check_loads(out)
        return StepResult(ModelHandle(out, INT8_DYNAMIC), report | {"excluded_nodes": excluded})

    onnx = require("onnx", "convert")
    op_types, why = _static_op_types(source_path, config.op_types)
    if why:
        report["op_types"] = {"quantized": op_types, "reason": why}
    types = int8_types.choose(config.target, config.activations, config.weights, ctx.devices)
    cal = ctx.calibration()
    calib = ctx.calibration_config
    from ..progress import bar

    options = {
        "ActivationSymmetric": types.symmetric_activations,
        # The ranges come from calibration.write_cache (bounded memory, same ranges); this stride only
        # applies if ONNX Runtime calibrates by itself. (Not CalibMaxIntermediateOutputs: ONNX
        # Runtime 1.31 drops data with it.)
        "CalibStridedMinMax": _stride(cal.num_batches()),
        "CalibPercentile": calib.percentile,
    }
    settings = dict(
        quant_format=q.QuantFormat.QDQ if config.format == "qdq" else q.QuantFormat.QOperator,
        op_types_to_quantize=op_types,
        per_channel=config.per_channel,
        activation_type=_qtype(q, types.activations),
        weight_type=_qtype(q, types.weights),
        nodes_to_exclude=excluded,
        reduce_range=types.reduce_range,
        calibrate_method=getattr(q.CalibrationMethod, METHODS[calib.method]),
        extra_options=options,
    )
    # ONNX Runtime prints its own chatter to stdout, which belongs to `--json` output: keep it out.
    with bar(len(cal), "calibrating", "sample", ctx.quiet) as progress, redirect_stdout(io.StringIO()):
        from ..calibration import pieces, write_cache

        def calibrated(path: Path) -> Path:
            """ONNX Runtime's calibration cache of `path`: the same ranges as its own, in bounded memory."""
            cache = _calibration_cache(ctx.workdir, path, op_types, calib, len(cal))
            if not cache.is_file():
                write_cache(path, op_types, METHODS[calib.method], options, cal, cache, progress)
            return cache

        if onnx_branches.control_flow(onnx.load(str(source_path), load_external_data=False)):
            report["branches"] = onnx_branches.quantize_static(
                source_path, out, lambda: pieces(cal), calibrated,
                lambda path, written, cache: q.quantize_static(str(path), str(written), calibration_cache_path=cache, **settings),
                ctx.workdir,
            )  # fmt: skip
        else:
            q.quantize_static(str(source_path), str(out), _Reader(cal, progress),
                              calibration_cache_path=calibrated(source_path), **settings)  # fmt: skip
    model_proto = onnx.load(str(out))
    tidied = qdq_tidy.tidy(model_proto, isa="x86" if types.target.startswith("x86") else "arm")
    onnx.save(model_proto, str(out))
    check_loads(out)
    report.update(
        tidied,
        format=config.format,
        calibration={"method": calib.method, "samples": len(cal), "path": str(cal.path)},
        types=types.to_json(),
        excluded_nodes=excluded,
        preprocessed=config.preprocess,
    )
    return StepResult(ModelHandle(out, INT8), report)


def _share_branch_weights(path: Path) -> None:
    """The weights quant_pre_process copied into several branches of an `If`, kept once
    (onnx_graphs.share_weights; silero-vad's LSTM: dynamic INT8 was 1.43 of the original's size)."""
    onnx = require("onnx", "convert")
    model = onnx.load(str(path))
    if onnx_branches.control_flow(model) and onnx_graphs.share_weights(model):
        onnx.save(model, str(path))


def check_loads(path) -> None:
    """Fail here, with ONNX Runtime's whole reason, when its quantizer wrote a graph ONNX Runtime refuses:
    that is a quantizer bug, not a broken input, and later the artifact's load error would read as one."""
    ort = require("onnxruntime", "convert")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        cause = " ".join(str(exc).split()).replace(str(path), path.name)
        raise RuntimeError(
            f"ONNX Runtime's quantizer wrote a model that ONNX Runtime cannot load ({cause}); try "
            "quantize.engine = 'nncf', or keep the node it names in float with quantize.exclude"
        ) from exc


def prepared(path, workdir, preprocess: bool = True):
    """The float model static INT8 quantizes: ONNX Runtime's quant_pre_process (if `preprocess`), then
    plain tensor names (written to `workdir`). Sensitivity compares the INT8 model with this one."""
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepped = workdir / f"{path.stem}.prep.onnx"
        try:
            quant_pre_process(str(path), str(prepped), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference fails on some exporter outputs; ONNX's is enough
            quant_pre_process(str(path), str(prepped), skip_symbolic_shape=True)
        path = prepped
    return _plain_names(path, workdir / f"{path.stem.removesuffix('.prep')}.named.onnx")


def _calibration_cache(workdir, model_path, op_types, calib, samples: int):
    """Where ONNX Runtime keeps the ranges of one calibration (model, ops, method, samples) in this run's
    work folder: quantizing the same model again with other `exclude`s (the accuracy search) reuses
    them instead of running the calibration data again."""
    import hashlib

    key = [hashlib.sha256(model_path.read_bytes()).hexdigest(), sorted(op_types or []), calib.method,
           calib.percentile, samples]  # fmt: skip
    return workdir / f"calibration-{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}.json"


def _plain_names(path, out):
    """`path` with its internal tensors renamed `t<i>_` (written to `out`; `path` itself if the graph has
    subgraphs, which see outer names).

    ONNX Runtime's quantizer names what it adds by appending to existing names (a bias `A;A` becomes
    `A;A2_quantized`), and with tf2onnx's names, where `.../conv1d_25` and `.../conv1d_252` sit side by
    side, two derived names can collide: basic-pitch's model came out as an invalid graph ("Invalid
    attribute perm ... input shape = {36}"). No suffix turns a `t<i>_` name into another one. Inputs,
    outputs and node names (what profiles and `exclude` match) are kept.
    """
    onnx = require("onnx", "convert")
    model = onnx.load(str(path))
    graph = model.graph
    if any(n.op_type in ("If", "Loop", "Scan") for n in graph.node):
        return path
    keep = {v.name for v in [*graph.input, *graph.output]} | {""}
    names: dict[str, str] = {}

    def plain(name: str) -> str:
        return name if name in keep else names.setdefault(name, f"t{len(names)}_")

    for tensor in graph.initializer:
        tensor.name = plain(tensor.name)
    for node in graph.node:
        node.input[:] = [plain(i) for i in node.input]
        node.output[:] = [plain(o) for o in node.output]
    for value in graph.value_info:
        value.name = plain(value.name)
    onnx.save(model, str(out))
    return out


TRANSFORMER_OPS = ["MatMul", "Gemm"]


def _static_op_types(path, op_types: list[str] | None) -> tuple[list[str] | None, str | None]:
    """Which ops static INT8 quantizes: the recipe's `op_types`, else ONNX Runtime's default set,
    except for transformers (a MatMul of two activations, i.e. attention, next to a LayerNormalization):
    there only MatMul/Gemm. Quantizing everything puts Softmax, LayerNorm, GELU and the residual adds
    on 8 bits and ruins the model (pruned all-MiniLM-L6-v2: STS-B 77.57 fp32, 36.17 all ops, 76.14
    MatMul/Gemm only; docs/pruning.md)."""
    if op_types is not None:
        return op_types, None
    onnx = require("onnx", "convert")
    if is_transformer(onnx.load(str(path), load_external_data=False)):
        return TRANSFORMER_OPS, (
            "transformer (attention MatMuls and LayerNorm): only MatMul/Gemm quantized; Softmax, "
            "LayerNorm, GELU and residual adds stay float (set quantize.op_types to override)"
        )
    return None, None


def is_transformer(model) -> bool:
    """Attention (a MatMul of two activations) next to a layer norm, in an ONNX or OpenVINO model:
    the models whose Softmax/LayerNorm/GELU must stay float under static INT8."""
    if hasattr(model, "get_ordered_ops"):  # openvino.Model: LayerNorm is MVN there
        ops = model.get_ordered_ops()

        def activation(output) -> bool:
            return output.get_node().get_type_name() not in ("Constant", "Convert")

        attention = any(
            op.get_type_name() == "MatMul" and all(activation(i.get_source_output()) for i in op.inputs())
            for op in ops
        )
        return attention and any(op.get_type_name() in ("MVN", "LayerNorm") for op in ops)
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    attention = any(n.op_type == "MatMul" and not constants & set(n.input) for n in graph.node)
    return attention and any(n.op_type == "LayerNormalization" for n in graph.node)


def folded_path(path, workdir) -> Path:
    """Where `_folded_for_fp16` writes the folded fp32 model: the graph whose node names fp16's
    `exclude` matches."""
    return workdir / f"{path.stem}.folded.onnx"


def _folded_for_fp16(path, workdir):
    """`path` with ONNX Runtime's basic graph optimizations (constant folding, BatchNormalization folded
    into the Conv before it): a BatchNormalization after a Conv subtracts two large, nearly equal
    numbers, which in fp16 cancel to noise (PP-OCR's text detector: variance 1e8, cosine 0.72 to the
    original); folded, the Conv's weights carry the scale and fp16 keeps cosine 0.99999."""
    ort = require("onnxruntime", "convert")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded_path(path, workdir))
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    folded = require("onnx", "convert").load(options.optimized_model_filepath)
    del folded.graph.value_info[:]  # ONNX Runtime's fp32 annotations; the fp16 converter re-infers them
    return folded


def _fp16(config: QuantizeConfig, model: ModelHandle, ctx: StepContext) -> StepResult:
    """float16 by onnxruntime's converter; the nodes `config.exclude` matches (in the folded graph,
    `folded_path`) stay float32 (its `node_block_list`), with Casts around them."""
    onnx = require("onnx", "convert")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    fp32 = _folded_for_fp16(model.path, ctx.workdir)
    kept = excluded_nodes(folded_path(model.path, ctx.workdir), config.exclude)
    fp16 = convert_float_to_float16(fp32, keep_io_types=True, node_block_list=kept or None)
    # the converter appends the Casts it adds for the float32 inputs at the end of the graph, which ONNX
    # requires in topological order (ONNX Runtime sorts it itself; onnx's checker and others refuse it)
    OnnxModel(fp16).topological_sort(is_deterministic=True)
    out = ctx.workdir / f"{model.path.stem}.fp16.onnx"
    onnx.save(fp16, str(out))
    report = {"mode": "fp16", "engine": "onnxruntime.transformers", "io_types": "float32 (kept)"}
    return StepResult(ModelHandle(out, FP16), report | ({"excluded_nodes": kept} if kept else {}))


def quantize_precision(quantize: QuantizeConfig | None) -> str:
    """The precision name an artifact quantized by `quantize` carries (fp32 without a quantize step)."""
    if quantize is None:
        return of_mode(None)
    return of_mode(quantize.mode, quantize.bits)


class Requantizer:
    """`config` applied again and again to one model with more nodes kept float: the accuracy search's
    and the rescue's candidates. The model is prepared once in `work` (`prepared`: quant_pre_process and
    plain names; fp16: folded) and is the float model candidates are compared with; calling it with
    node names writes a new candidate in `work`. Static INT8 calibrates once: ONNX Runtime's
    calibration cache in `work` serves every later candidate."""

    def __init__(self, config: QuantizeConfig, model_path: Path, ctx: StepContext, work: Path):
        work.mkdir(exist_ok=True)
        if config.mode == "fp16":
            _folded_for_fp16(model_path, work)
            self.float_model = folded_path(model_path, work)
        else:
            self.float_model = prepared(model_path, work, config.preprocess)
        self.config = dataclasses.replace(config, preprocess=False)
        self.ctx, self.work, self.made = (
            dataclasses.replace(ctx, workdir=work, quiet=True),
            work,
            itertools.count(),
        )
        self.reports: dict[Path, dict] = {}  # each candidate's quantization report

    def __call__(self, nodes: list[str]) -> Path:
        config = dataclasses.replace(self.config, exclude=[*self.config.exclude, *exact(nodes)])
        result = quantize(config, ModelHandle(self.float_model), self.ctx)
        path = Path(shutil.move(result.model.path, self.work / f"candidate-{next(self.made)}.onnx"))
        self.reports[path] = result.report
        return path
