"""Versions of the tools involved, for reports, manifests and `edgesmith doctor`."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = (
    "edgesmith",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "torch",
    "openvino",
    "ai-edge-litert",
    "tensorflow",
    "nncf",
)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(deterministic: bool = False) -> dict:
    """Installed versions; `deterministic` leaves out the machine so artifacts match across hosts."""
    found = {name: v for name in PACKAGES if (v := package_version(name))}
    if not deterministic:
        found |= {"python": platform.python_version(), "machine": platform.machine()}
    return found
