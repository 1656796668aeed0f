"""Search ONNX Runtime static INT8 settings for the best INT8/FP32 latency ratio on this CPU.

    .venv/bin/python benchmarks/ort_int8_search.py [--runs 200] [--models mobilenet_v2,resnet50]

For MobileNetV2 and ResNet-50 from ``zoo.py`` (random weights, BN with data-derived running stats)
every configuration below is quantized with ``quantize_static`` (16 random-normal calibration
inputs) and timed side by side against the FP32 model, batch 1, 224x224, one intra-op and one
inter-op thread.

How latency is measured (the machine is small and shared):

- All sessions of a model are loaded at once and timed in interleaved blocks: each round runs every
  session for ``--block`` consecutive runs (after one untimed run), the session order reverses every
  round, and rounds repeat until each session has ``--runs`` timed runs. Drift and other tenants'
  load hit every configuration alike; within a block the session's weights are warm in cache, as in
  a deployed loop.
- The default clock is the calling thread's CPU time (``--clock cpu``). With one intra-op thread
  ONNX Runtime computes on the calling thread, so this is the inference's own time, and it does not
  count the time the thread waits while other processes hold the core; wall-clock p50 is printed
  for the FP32 baseline as a check (``--clock wall`` times with it instead).
- Ratio = p50(INT8) / p50(FP32 with ORT_ENABLE_ALL).

Accuracy proxy (weak with random weights): over 64 random-normal inputs, top-1 agreement with FP32,
the largest absolute logit error and the relative L2 error of the logits.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import zoo
from common import log, table_header, table_row
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgesmith.converter.steps.qdq_tidy import pad_stem_channels

U8, S8 = QuantType.QUInt8, QuantType.QInt8
U8S8_PC = {"activation_type": U8, "weight_type": S8, "per_channel": True}
MODEL_LABELS = {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet-50"}


@dataclass
class Config:
    name: str
    note: str
    quant: dict | None = field(default_factory=dict)  # quantize_static kwargs; None: the FP32 model
    source: str = "pp"  # fp32 file: raw | pp (quant_pre_process) | dynamo (pre-processed) | dynamo-raw
    exclude: str = ""  # nodes kept in float: "stem" (first Conv) | "head" (Gemm) | "adds"
    pad_stem: bool = False  # our post-quantization pass, see pad_stem_channels()
    level: str = "all"  # graph_optimization_level: all | extended
    session_config: dict = field(default_factory=dict)
    free_batch: bool = False  # add_free_dimension_override_by_name("batch", 1)
    preoptimized: bool = False  # save the optimized model once, then load it with ORT_DISABLE_ALL
    slow: bool = False  # far slower than FP32: timed with --slow-runs


CONFIGS = [
    Config("fp32", "FP32, ORT_ENABLE_ALL: the baseline", None, source="raw"),
    Config("fp32 extended", "FP32, ORT_ENABLE_EXTENDED (no NCHWc layout)", None, source="raw", level="extended"),
    Config("fp32 dynamo", "FP32 from the dynamo exporter", None, source="dynamo-raw"),
    # ONNX Runtime's own settings
    Config("ort default", "quantize_static defaults: QDQ, S8S8, per-tensor", {}, source="raw"),
    Config("s8s8 pc", "S8S8 per-channel (the x86 reference)", {"per_channel": True}, source="raw"),
    Config("pp s8s8 pc", "quant_pre_process + S8S8 per-channel", {"per_channel": True}),
    Config("pp s8s8 pc act-sym", "+ ActivationSymmetric (ARM-style S8S8)", {"per_channel": True, "extra_options": {"ActivationSymmetric": True}}),
    Config("pp s8s8 pc int8-kernels", "+ session.qdqisint8allowed=1: fused S8S8 kernels", {"per_channel": True}, session_config={"session.qdqisint8allowed": "1"}, slow=True),
    Config("pp s8s8 pc qoperator", "S8S8 per-channel, QOperator format", {"per_channel": True, "quant_format": QuantFormat.QOperator}, slow=True),
    Config("u8s8 pc", "U8S8 per-channel, no quant_pre_process", U8S8_PC, source="raw"),
    Config("pp u8s8 pc", "ORT best plain: quant_pre_process + U8S8 per-channel QDQ", U8S8_PC),
    # data types
    Config("pp u8s8 pt", "U8S8 per-tensor", {**U8S8_PC, "per_channel": False}),
    Config("pp u8s8 pc reduce_range", "+ reduce_range (7-bit weights)", {**U8S8_PC, "reduce_range": True}),
    Config("pp u8u8 pc", "U8U8 per-channel", {**U8S8_PC, "weight_type": U8}),
    # extra_options
    *(
        Config(f"pp u8s8 pc {key}={value}", f"+ extra_options {key}={value}", {**U8S8_PC, "extra_options": {key: value}})
        for key, value in (
            ("ActivationSymmetric", True),
            ("ActivationRestrictedAsymmetric", True),
            ("QDQKeepRemovableActivations", True),
            ("QuantizeBias", False),
            ("DedicatedQDQPair", True),
            ("ForceQuantizeNoInputCheck", True),
        )
    ),
    Config("pp u8s8 pt WeightSymmetric=False", "per-tensor, asymmetric weights (per-channel ones are always symmetric)", {**U8S8_PC, "per_channel": False, "extra_options": {"WeightSymmetric": False}}),
    Config("pp u8s8 pc qoperator", "U8S8 per-channel, QOperator format", {**U8S8_PC, "quant_format": QuantFormat.QOperator}),
    # what is quantized
    Config("pp u8s8 pc conv-only", "op_types_to_quantize=['Conv']", {**U8S8_PC, "op_types_to_quantize": ["Conv"]}),
    Config("pp u8s8 pc float stem", "first Conv kept in float", U8S8_PC, exclude="stem"),
    Config("pp u8s8 pc float head", "last Gemm kept in float", U8S8_PC, exclude="head"),
    Config("pp u8s8 pc float adds", "residual Adds excluded", U8S8_PC, exclude="adds"),
    # session options
    Config("pp u8s8 pc extended", "INT8 with ORT_ENABLE_EXTENDED", U8S8_PC, level="extended"),
    Config("pp u8s8 pc denormal-as-zero", "session.set_denormal_as_zero=1", U8S8_PC, session_config={"session.set_denormal_as_zero": "1"}),
    Config("pp u8s8 pc batch=1", "free dimension 'batch' overridden to 1", U8S8_PC, free_batch=True),
    Config("pp u8s8 pc pre-optimized", "optimized_model_filepath, reloaded with ORT_DISABLE_ALL", U8S8_PC, preoptimized=True),
    # ours
    Config("ours: pp u8s8 pc + pad stem", "ORT best plain + stem input channels padded 3->4", U8S8_PC, pad_stem=True),
    Config("ours, per-tensor", "same, per-tensor weights", {**U8S8_PC, "per_channel": False}, pad_stem=True),
    Config("ours, dynamo export", "ours on the dynamo exporter's graph", U8S8_PC, source="dynamo", pad_stem=True),
]  # fmt: skip


class RandomReader(CalibrationDataReader):
    """Seeded random-normal calibration inputs."""

    def __init__(self, count: int, seed: int = 1, name: str = "input") -> None:
        rng = np.random.default_rng(seed)
        self.data = [{name: rng.standard_normal((1, 3, 224, 224), dtype=np.float32)} for _ in range(count)]
        self.rewind()

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.data)


def excluded_nodes(path: Path, what: str) -> list[str]:
    nodes = onnx.load(str(path)).graph.node
    if what == "stem":
        return [next(n.name for n in nodes if n.op_type == "Conv")]
    if what == "head":
        return [n.name for n in nodes if n.op_type == "Gemm"]
    if what == "adds":
        return [n.name for n in nodes if n.op_type == "Add"]
    return []


def prepare_sources(name: str, work: Path) -> dict[str, Path]:
    model = zoo.build(name)
    raw = zoo.export_onnx(model, work / f"{name}.onnx")
    dynamo = zoo.export_onnx(model, work / f"{name}.dynamo.onnx", dynamo=True)
    sources = {
        "raw": raw,
        "pp": work / f"{name}.pp.onnx",
        "dynamo-raw": dynamo,
        "dynamo": work / f"{name}.dynamo.pp.onnx",
    }
    quant_pre_process(str(raw), str(sources["pp"]))
    quant_pre_process(str(dynamo), str(sources["dynamo"]))
    return sources


def build_model(cfg: Config, sources: dict[str, Path], work: Path, calib: int) -> Path:
    src = sources[cfg.source]
    if cfg.quant is None:
        return src
    out = work / f"{src.stem}.{cfg.name.replace(' ', '_').replace(':', '').replace(',', '')}.onnx"
    kwargs = {"quant_format": QuantFormat.QDQ, **cfg.quant}
    quantize_static(
        str(src),
        str(out),
        RandomReader(calib),
        nodes_to_exclude=excluded_nodes(src, cfg.exclude),
        calibration_cache_path=str(src.with_suffix(".calib.json")),  # calibrate once per source
        **kwargs,
    )
    if cfg.pad_stem:
        proto = onnx.load(str(out))
        if not pad_stem_channels(proto):
            raise RuntimeError(f"{cfg.name}: no stem Conv to pad in {out}")
        onnx.save(proto, str(out))
    return out


def make_session(path: Path, cfg: Config) -> ort.InferenceSession:
    def options(level: ort.GraphOptimizationLevel) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.graph_optimization_level = level
        for key, value in cfg.session_config.items():
            so.add_session_config_entry(key, value)
        if cfg.free_batch:
            so.add_free_dimension_override_by_name("batch", 1)
        return so

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    so = options(levels[cfg.level])
    if cfg.preoptimized:
        optimized = path.with_suffix(".optimized.onnx")
        so.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        path, so = optimized, options(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_sessions(sessions: dict, runs: dict[str, int], block: int, clock) -> dict[str, dict[str, float]]:
    """Interleaved blocks; returns p50 (ms) per session, by the chosen clock and by wall clock."""
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in sessions}
    keys, rnd = list(sessions), 0
    while any(len(times[k]) < runs[k] for k in keys):
        for k in keys if rnd % 2 == 0 else keys[::-1]:
            if len(times[k]) >= runs[k]:
                continue
            sessions[k].run(None, feeds[k])  # untimed: brings this session's weights back into cache
            for _ in range(min(block, runs[k] - len(times[k]))):
                c0, w0 = clock(), time.perf_counter()
                sessions[k].run(None, feeds[k])
                times[k].append((clock() - c0, time.perf_counter() - w0))
        rnd += 1
    return {k: {"p50": 1e3 * float(np.median([t[0] for t in v])), "wall": 1e3 * float(np.median([t[1] for t in v]))} for k, v in times.items()}  # fmt: skip


def accuracy(reference: list[np.ndarray], session: ort.InferenceSession, inputs: list[np.ndarray]) -> dict:
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: x})[0] for x in inputs]
    ref, got = np.concatenate(reference), np.concatenate(out)
    return {
        "top1": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "max_abs": float(np.abs(ref - got).max()),
        "rel_l2": float(np.linalg.norm(ref - got) / np.linalg.norm(ref)),
    }


def run_model(name: str, args: argparse.Namespace, work: Path) -> dict:
    log(f"[{name}] building, exporting, pre-processing")
    sources = prepare_sources(name, work)
    sessions, t0 = {}, time.time()
    for cfg in CONFIGS:
        log(f"[{name}] {cfg.name}")
        sessions[cfg.name] = make_session(build_model(cfg, sources, work, args.calib), cfg)
    log(f"[{name}] {len(sessions)} sessions ready in {time.time() - t0:.0f} s; timing")
    runs = {c.name: args.slow_runs if c.slow else args.runs for c in CONFIGS}
    for k, s in sessions.items():  # warm-up
        for _ in range(2 if runs[k] == args.slow_runs else args.warmup):
            s.run(None, {s.get_inputs()[0].name: np.zeros((1, 3, 224, 224), np.float32)})
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    timing = time_sessions(sessions, runs, args.block, clock)
    log(f"[{name}] accuracy")
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((1, 3, 224, 224), dtype=np.float32) for _ in range(args.accuracy_inputs)]
    ref = [sessions["fp32"].run(None, {"input": x})[0] for x in inputs]
    base = timing["fp32"]["p50"]
    return {
        k: {**timing[k], "ratio": timing[k]["p50"] / base, **accuracy(ref, sessions[k], inputs)}
        for k in sessions
    }


def cpu() -> str:
    """CPU model name and whether it has VNNI (Linux; elsewhere just the machine type)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), ""
    )
    return f"{model or platform.machine()}, VNNI: {'avx512_vnni' in info or 'avx_vnni' in info}"


def table(results: dict[str, dict], models: list[str]) -> str:
    cols = ("ratio", "top-1", "max abs err", "rel L2 err")
    head = ["config", "what"] + [f"{MODEL_LABELS.get(m, m)} {c}" for m in models for c in cols]
    lines = [table_header(*head)]
    for cfg in CONFIGS:
        cells = [f"`{cfg.name}`", cfg.note]
        for m in models:
            r = results[m][cfg.name]
            cells += [f"{r['ratio']:.3f}", f"{r['top1']:.2f}", f"{r['max_abs']:.3f}", f"{r['rel_l2']:.3f}"]
        lines.append(table_row(*cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mobilenet_v2,resnet50")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per configuration")
    parser.add_argument(
        "--slow-runs", type=int, default=20, help="timed runs for configurations slower than FP32"
    )
    parser.add_argument("--block", type=int, default=10, help="consecutive runs per session per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calib", type=int, default=16, help="random calibration inputs")
    parser.add_argument("--accuracy-inputs", type=int, default=64)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    ort.set_default_logger_severity(3)
    logging.disable(logging.WARNING)  # the quantizer's "please pre-process" and exporter chatter
    warnings.filterwarnings("ignore")
    models = args.models.split(",")
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="ort-int8-search-") as tmp:
        results = {m: run_model(m, args, Path(tmp)) for m in models}

    print(
        f"onnxruntime {ort.__version__}, {cpu()}; "
        f"batch 1, 1 thread, p50 of {args.runs} runs ({args.slow_runs} for slow rows) by {args.clock} clock, "
        f"interleaved blocks of {args.block}; {time.time() - start:.0f} s in all\n"
    )
    for m in models:
        fp = results[m]["fp32"]
        print(
            f"{MODEL_LABELS.get(m, m)} FP32 p50: {fp['p50']:.2f} ms ({args.clock}), {fp['wall']:.2f} ms wall"
        )
    print()
    print(table(results, models))
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
