"""edgesmith: get trained models onto phones, Raspberry Pis and microcontrollers.

    import edgesmith
    report = edgesmith.convert("model.onnx", preset="int8", calibration="calib/", out="out/")
    session = edgesmith.load("out/model.int8.onnx")
    outputs = session.run({"input": batch})

Names resolve lazily, so `import edgesmith` stays light on a device.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["convert", "load", "measure"]

_LAZY = {
    "convert": "edgesmith.converter",
    "load": "edgesmith.runtime",
    "measure": "edgesmith.targets.latency",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgesmith' has no attribute '{name}'")
