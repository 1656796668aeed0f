"""What this CPU can do, read from the OS without importing any framework."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Feature flags from /proc/cpuinfo (x86 `flags`, ARM `Features`); empty where unavailable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def isa() -> str:
    """'x86', 'arm' or the raw machine name."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    return machine


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """x86 VNNI (AVX512-VNNI or AVX-VNNI, AMX implies it): u8 x s8 dot products without saturation."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
