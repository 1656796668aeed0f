"""Does a model fit a microcontroller? Tensor arena + model bytes + runtime footprint vs SRAM/flash.

The arena comes from the one TFLM planner in `arena.py`: for a `.tflite`, TFLM's own lifetimes and
greedy placement plus its persistent structs (what the c-array exporter reports too); for ONNX, the
same greedy placement over the cost model's kernels (shape-only ops alias their input).

Where the `tflite-micro` wheel is installed, a `.tflite` is run once on TFLM's interpreter and its
measured head (planned tensors plus the reference kernels' scratch buffers) replaces the planned
part. The persistent part stays the 32-bit estimate: the wheel runs on this 64-bit host, whose
structs are larger than an MCU's (the measured 64-bit total is reported beside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import arena as planner
from .graph import layers
from .layer import Layer
from .spec import Target


def arena_bytes(graph: list[Layer]) -> int:
    """TFLM's greedy plan over the kernels' activations (16-byte aligned)."""
    planned: int = planner.from_layers(graph)["planned_bytes"]
    return planned


def plan(model: str | Path, graph: list[Layer]) -> dict[str, Any]:
    """The arena of `model`: TFLM's flatbuffer rules for `.tflite` (when a TFLite schema is
    installed), measured on TFLM where it is installed, else the kernels of `graph`. `arena_bytes` is
    what the fit counts."""
    from ..errors import EdgesmithError

    if Path(model).suffix.lower() == ".tflite":
        try:
            out = planner.estimate(Path(model).read_bytes())
        except EdgesmithError:  # no LiteRT/TensorFlow schema: fall back to the kernels
            pass
        else:
            out |= {"arena_bytes": out["total_bytes_estimate"],
                    "method": "TFLM greedy planner on the flatbuffer + persistent structs"}  # fmt: skip
            return out | _measured(model, out)
    out = planner.from_layers(graph)
    return out | {"arena_bytes": out["planned_bytes"]}


def _measured(model: str | Path, estimate: dict[str, Any]) -> dict[str, Any]:
    """TFLM's own arena for a `.tflite` (the tflite-micro wheel), or {} where it is not installed;
    a model TFLM cannot run keeps the estimate and says why."""
    from ..errors import InputError
    from . import tflm

    if not tflm.available():
        return {}
    try:
        measured = tflm.measured_arena(model)
    except InputError as exc:
        return {"tflm_error": str(exc)}
    arena_bytes = planner.align(measured.head + estimate["persistent_bytes_estimate"])
    return {
        "arena_bytes": arena_bytes,
        "planned_bytes": measured.head,
        "tflm_measured": measured.to_json(),
        "method": "TFLite Micro's interpreter (tflite-micro wheel): measured planned tensors + kernel "
        "scratch; persistent structs estimated for a 32-bit MCU",
    }


def fit(model: str | Path, target: Target, graph: list[Layer] | None = None) -> dict[str, Any]:
    """RAM and flash needed on `target` and whether they fit, with the margin either way."""
    graph = graph if graph is not None else layers(model)
    arena = plan(model, graph)
    model_bytes = Path(model).stat().st_size
    ram = arena["arena_bytes"] + target.runtime_ram_bytes
    flash = model_bytes + target.runtime_flash_bytes
    dtypes = {layer.dtype for layer in graph if layer.macs}
    out: dict[str, Any] = {
        "arena_bytes": arena["arena_bytes"],
        "arena_planned_bytes": arena["planned_bytes"],
        "arena_method": arena["method"],
        **{k: arena[k] for k in ("tflm_measured", "tflm_error") if k in arena},
        "model_bytes": model_bytes,
        "ram_needed_bytes": ram,
        "ram_bytes": target.ram_bytes,
        "fits_ram": ram <= target.ram_bytes,
        "ram_margin_bytes": target.ram_bytes - ram,
        "flash_needed_bytes": flash,
        "flash_bytes": target.flash_bytes,
        "fits_flash": target.flash_bytes is None or flash <= target.flash_bytes,
        "flash_margin_bytes": None if target.flash_bytes is None else target.flash_bytes - flash,
    }
    out["fits"] = out["fits_ram"] and out["fits_flash"]
    if "fp32" in dtypes:
        out["note"] = "float32 layers: quantize to int8 (--preset int8) to cut arena and flash about 4x"
    return out


def describe(fit_: dict[str, Any], target: Target) -> str:
    """'fits: RAM 120 KB of 320 KB (200 KB free), flash ...' or 'does not fit: ...'."""

    def kb(n: float) -> str:
        return f"{n / 1024:.0f} KB"

    ram = f"RAM {kb(fit_['ram_needed_bytes'])} of {kb(fit_['ram_bytes'])}"
    ram += f" ({kb(abs(fit_['ram_margin_bytes']))} {'free' if fit_['fits_ram'] else 'over'})"
    flash = f"flash {kb(fit_['flash_needed_bytes'])}"
    if fit_["flash_bytes"]:
        flash += f" of {kb(fit_['flash_bytes'])} ({kb(abs(fit_['flash_margin_bytes']))} "
        flash += f"{'free' if fit_['fits_flash'] else 'over'})"
    verdict = f"{'fits' if fit_['fits'] else 'does not fit'} on {target.name}: {ram}, {flash}"
    return verdict + (f"; but {fit_['tflm_error']}" if "tflm_error" in fit_ else "")
