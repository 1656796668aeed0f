"""Does a model fit a microcontroller? Tensor arena + model bytes + runtime footprint vs SRAM/flash.

The arena estimate replays the graph in order and keeps every activation alive from the layer
that writes it to the last layer that reads it (shape-only ops alias their input): its peak is what
TFLite Micro's greedy planner needs at least, since it must hold all live tensors at once. The
converter's own TFLM arena planner (converter/exporters/c_array.py) is not used here on purpose:
`targets/` never imports the converter.
"""

from __future__ import annotations

from pathlib import Path

from .graph import Layer, layers
from .spec import Target


def arena_bytes(graph: list[Layer]) -> int:
    """Peak bytes of simultaneously live activations (16-byte aligned, as TFLM aligns buffers)."""
    last_use: dict[str, int] = {}
    for i, layer in enumerate(graph):
        for name in layer.inputs:
            last_use[name] = i
    live: dict[str, int] = {}
    peak = 0
    for i, layer in enumerate(graph):
        for name, size in zip(layer.inputs, layer.in_sizes, strict=False):
            live.setdefault(name, _align(size))
        live[layer.outputs[-1]] = _align(layer.out_bytes)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, len(graph)) <= i]:
            del live[name]
    return peak


def _align(n: int) -> int:
    return (n + 15) // 16 * 16


def fit(model: str | Path, target: Target, graph: list[Layer] | None = None) -> dict:
    """RAM and flash needed on `target` and whether they fit, with the margin either way."""
    graph = graph if graph is not None else layers(model)
    arena = arena_bytes(graph)
    model_bytes = Path(model).stat().st_size
    ram = arena + target.runtime_ram_bytes
    flash = model_bytes + target.runtime_flash_bytes
    dtypes = {layer.dtype for layer in graph if layer.macs}
    out = {
        "arena_bytes": arena,
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


def describe(fit_: dict, target: Target) -> str:
    """'fits: RAM 120 KB of 320 KB (200 KB free), flash ...' or 'does not fit: ...'."""

    def kb(n):
        return f"{n / 1024:.0f} KB"

    ram = f"RAM {kb(fit_['ram_needed_bytes'])} of {kb(fit_['ram_bytes'])}"
    ram += f" ({kb(abs(fit_['ram_margin_bytes']))} {'free' if fit_['fits_ram'] else 'over'})"
    flash = f"flash {kb(fit_['flash_needed_bytes'])}"
    if fit_["flash_bytes"]:
        flash += f" of {kb(fit_['flash_bytes'])} ({kb(abs(fit_['flash_margin_bytes']))} "
        flash += f"{'free' if fit_['fits_flash'] else 'over'})"
    return f"{'fits' if fit_['fits'] else 'does not fit'} on {target.name}: {ram}, {flash}"
