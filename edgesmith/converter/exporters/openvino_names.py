"""Node names in an OpenVINO IR that do not depend on what ran before in the process.

OpenVINO names the nodes it creates after a process-wide counter (`Constant_31151`), so a second export
in one process would give different bytes. Both OpenVINO exporters (`openvino_export.py` and the binary
one, `binary_openvino.py`) renumber those names here, in graph order, just before saving.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import require


def stable_names(ov_model, onnx_path: Path) -> None:
    """Rename nodes OpenVINO named `<Type>_<counter>` (also when folded into a Const) to
    `<Type>_<position in graph order>`; names that come from the ONNX (or TFLite) file are kept."""
    if onnx_path.suffix == ".tflite":
        from ..tflite_fb import read

        kept = {t.name.decode() for g in read(onnx_path.read_bytes()).subgraphs for t in g.tensors}
    else:
        onnx = require("onnx", "convert")
        kept = {node.name for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    for position, op in enumerate(ov_model.get_ordered_ops()):
        name = op.get_friendly_name()
        match = re.fullmatch(r"([A-Z][A-Za-z0-9]*)_\d+", name)
        if match and name not in kept:
            op.set_friendly_name(f"{match.group(1)}_{position}")
