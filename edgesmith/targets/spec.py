"""Device specs as data: one TOML file per target in `specs/`, read into a frozen `Target`.

Adding a board is adding a file (see docs/adding_a_target.md). Every figure in a spec cites its
source in a comment; the cost-model section (`[model]`) says which numbers were fitted and to what,
so an estimate can always be traced back to a datasheet or a published measurement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import tomllib

from ..errors import InputError, closest

SPECS = Path(__file__).with_name("specs")
KINDS = ("host", "linux", "android", "mcu")
OP_CLASSES = ("conv", "stem", "pointwise", "dwconv", "gemm", "pool", "elementwise", "other")
CONV_KINDS = (
    "conv",
    "stem",
    "pointwise",
)  # a calibrated table's refinements of conv (costmodel.kernel_class)


@dataclass(frozen=True)
class Target:
    """What the cost model, the profilers and the report need to know about one device."""

    name: str
    title: str
    kind: str  # host, linux (SSH), android (adb) or mcu (estimate + fit only)
    core: str
    isa: str
    cores: int
    clock_ghz: float
    features: tuple[str, ...]
    macs_per_cycle: dict[str, float]  # peak multiply-accumulates per cycle per core, by dtype
    bandwidth_gbs: float  # sustained DRAM (or SRAM/flash on MCUs) bandwidth
    ram_bytes: int
    flash_bytes: int | None
    idle_w: float
    active_w: float  # whole-board power with the cores busy
    formats: tuple[str, ...]
    runtimes: tuple[str, ...]
    stack: str  # the runtime/kernel library the efficiencies describe
    efficiency: dict[str, dict[str, float]]  # dtype -> op class -> fraction of peak
    op_overhead_us: float  # fixed cost per executed operator (dispatch, requantize, sync)
    parallel_fraction: float  # Amdahl p for intra-op threads
    # fixed cost per inference, whatever the model (the runtime's entry, binding inputs and outputs):
    # measured by the host calibration, where it is most of a small model's time; 0 elsewhere
    run_overhead_us: float = 0.0
    runtime_ram_bytes: int = 0  # MCU: interpreter + stack; 0 elsewhere
    runtime_flash_bytes: int = 0
    fitted: str = ""  # which measurements the efficiencies were fitted to
    # decode/issue width (instructions per cycle); with the stack's `macs_per_instruction` (MACs per
    # instruction of its inner loops) it bounds the MAC rate a kernel can sustain: a 2-wide core
    # cannot feed its FMA pipes when a third of the loop is loads. 0 = no bound.
    issue_width: int = 0
    macs_per_instruction: dict[str, float] = field(default_factory=dict)  # op class -> MACs/instr
    # other kernel stacks this device is measured with (e.g. a 32-bit OS build): name -> the
    # [model] keys they replace (efficiency, macs_per_instruction, parallel_fraction, ...)
    stacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # dtype -> K0: a convolution or matmul whose inner loop runs K MACs per output reaches
    # K / (K + K0) of its class's efficiency (the fixed cost of loading and storing an output tile is
    # paid every K MACs). "dtype.stem" -> the stems' own K0 (ORT's x86 INT8 stem pays ~4x the
    # per-output cost of its other convolutions). Fitted on the host; 0 or absent = no depth effect.
    depth_half: dict[str, float] = field(default_factory=dict)
    # a kernel whose bytes fit in this much of the core's private cache (the calibrated host's L2)
    # is not held to the DRAM bandwidth: its class efficiency, fitted on such kernels, is its time
    # (three max-pools of the demo CNN, 62 KB each, were estimated 3x their time on the DRAM roof).
    # 0 = every kernel has the DRAM roof (every device spec).
    cache_kb: int = 0
    path: Path | None = field(default=None, compare=False)

    @property
    def is_mcu(self) -> bool:
        return self.kind == "mcu"

    @property
    def isa_family(self) -> str:
        """'arm' (armv7e-m, armv8-a, armv8.2-a ...), 'x86' (x86-64) or the ISA as written (xtensa)."""
        if self.isa.startswith(("arm", "aarch64")):
            return "arm"
        if self.isa.startswith(("x86", "amd64")):
            return "x86"
        return self.isa

    def memory_s(self, nbytes: int) -> float:
        """Seconds to move `nbytes` on the memory roof: 0 for a working set within `cache_kb`."""
        return 0.0 if nbytes <= self.cache_kb * 1024 else nbytes / (self.bandwidth_gbs * 1e9)

    def peak_macs_per_s(self, dtype: str, threads: int = 1, op_class: str | None = None) -> float:
        """Peak MACs/s of `dtype`; with `op_class`, capped by what the stack's inner loop can issue."""
        return self.macs_per_cycle_for(dtype, op_class) * self.clock_ghz * 1e9 * self.speedup(threads)

    def macs_per_cycle_for(self, dtype: str, op_class: str | None = None) -> float:
        per_cycle = self.macs_per_cycle.get(dtype) or self.macs_per_cycle["fp32"]
        density = self.macs_per_instruction.get("conv" if op_class in CONV_KINDS else op_class or "", 0.0)
        if self.issue_width and density:
            per_cycle = min(per_cycle, self.issue_width * density)
        return per_cycle

    def with_stack(self, name: str) -> Target:
        """This device running another kernel stack (one of `stacks`, or its own)."""
        if name == self.stack:
            return self
        if name not in self.stacks:
            known = [self.stack, *self.stacks]
            raise InputError(
                f"target {self.name} has no '{name}' stack{closest(name, known)}; known: {known}"
            )
        table = self.stacks[name]
        return replace(
            self,
            stack=name,
            efficiency={d: dict(t) for d, t in table.get("efficiency", self.efficiency).items()},
            macs_per_instruction=dict(table.get("macs_per_instruction", self.macs_per_instruction)),
            parallel_fraction=float(table.get("parallel_fraction", self.parallel_fraction)),
            op_overhead_us=float(table.get("op_overhead_us", self.op_overhead_us)),
            fitted=table.get("fitted", self.fitted),
            depth_half=dict(table.get("depth_half", self.depth_half)),
        )

    def speedup(self, threads: int) -> float:
        """Amdahl's law over the cores actually used."""
        n = max(1, min(threads, self.cores))
        p = self.parallel_fraction
        return 1.0 / ((1.0 - p) + p / n)

    def eff(self, dtype: str, op_class: str) -> float:
        table = self.efficiency.get(dtype) or self.efficiency["fp32"]
        if op_class in CONV_KINDS and op_class not in table:
            op_class = "conv"  # only a calibrated table knows stems and 1x1 kernels apart
        return table.get(op_class, table.get("other", 0.1))

    def depth_factor(self, dtype: str, op_class: str, depth: int) -> float:
        """The share of the class's efficiency a kernel with `depth` MACs per output reaches."""
        k0 = self.depth_half.get(f"{dtype}.{op_class}", self.depth_half.get(dtype, 0.0))
        if not k0 or not depth or op_class not in (*CONV_KINDS, "gemm"):
            return 1.0
        return depth / (depth + k0)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "path"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _parse(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"target spec {path} is not valid TOML: {exc}") from exc
    try:
        cpu, mem, power, rt, model = (data[k] for k in ("cpu", "memory", "power", "runtime", "model"))
        target = Target(
            name=data["name"],
            title=data["title"],
            kind=data["kind"],
            core=cpu["core"],
            isa=cpu["isa"],
            cores=int(cpu["cores"]),
            clock_ghz=float(cpu["clock_ghz"]),
            features=tuple(cpu.get("features", ())),
            macs_per_cycle={k: float(v) for k, v in cpu["macs_per_cycle"].items()},
            bandwidth_gbs=float(mem["bandwidth_gbs"]),
            ram_bytes=int(mem["ram_kb"] * 1024),
            flash_bytes=int(mem["flash_kb"] * 1024) if "flash_kb" in mem else None,
            idle_w=float(power["idle_w"]),
            active_w=float(power["active_w"]),
            formats=tuple(rt["formats"]),
            runtimes=tuple(rt["runtimes"]),
            stack=model["stack"],
            efficiency={d: dict(t) for d, t in model["efficiency"].items()},
            op_overhead_us=float(model["op_overhead_us"]),
            parallel_fraction=float(model.get("parallel_fraction", 0.9)),
            run_overhead_us=float(model.get("run_overhead_us", 0.0)),
            runtime_ram_bytes=int(rt.get("runtime_ram_kb", 0) * 1024),
            runtime_flash_bytes=int(rt.get("runtime_flash_kb", 0) * 1024),
            fitted=model.get("fitted", ""),
            issue_width=int(cpu.get("issue_width", 0)),
            macs_per_instruction={k: float(v) for k, v in model.get("macs_per_instruction", {}).items()},
            stacks={k: dict(v) for k, v in model.get("stacks", {}).items()},
            depth_half={k: float(v) for k, v in model.get("depth_half", {}).items()},
            path=path,
        )
    except KeyError as exc:
        raise InputError(f"target spec {path} lacks {exc}; see docs/adding_a_target.md") from exc
    if target.kind not in KINDS:
        raise InputError(f"target spec {path}: kind '{target.kind}' is not one of {list(KINDS)}")
    if target.name != path.stem:
        raise InputError(f"target spec {path}: name '{target.name}' must match the file name")
    return target


@lru_cache(maxsize=1)
def registry() -> dict[str, Target]:
    """Every shipped target by name (the `specs/*.toml` files)."""
    return {p.stem: _parse(p) for p in sorted(SPECS.glob("*.toml"))}


def get(name: str) -> Target:
    """The target called `name` (the host's figures are read from this machine)."""
    targets = registry()
    if name not in targets:
        raise InputError(
            f"unknown target '{name}'{closest(name, targets)}; run `edgesmith targets` for the list"
        )
    target = targets[name]
    return _detect_host(target) if target.kind == "host" else target


def _detect_host(target: Target) -> Target:
    """Fill the host spec's core count and clock from this machine (the file holds fallbacks)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    clock = target.clock_ghz
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                clock = float(line.split(":")[1]) / 1000
                break
    except (OSError, ValueError):
        pass
    return replace(target, cores=cores or target.cores, clock_ghz=clock)
