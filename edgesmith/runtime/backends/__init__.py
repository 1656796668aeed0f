"""Backend registry: which modules can open which files, in order of preference.

A backend module defines `NAME`, `SUFFIXES`, `EXTRA` (the pip extra that installs it), `available()`
(checked with importlib.util.find_spec, never an import) and `open(path, threads, **options)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# In order of preference for `backend="auto"`.
BACKENDS = {
    "ort": "edgesmith.runtime.backends.ort_backend",
    "litert": "edgesmith.runtime.backends.litert_backend",
    "openvino": "edgesmith.runtime.backends.openvino_backend",
    "numpy": "edgesmith.runtime.backends.numpy_reference",
}


def get(name: str) -> ModuleType:
    return importlib.import_module(BACKENDS[name])


def for_suffix(suffix: str) -> list[str]:
    """Names of the backends that read files with this suffix, preferred first."""
    return [name for name in BACKENDS if suffix in get(name).SUFFIXES]
