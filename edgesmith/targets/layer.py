"""One kernel of a model, as the cost model sees it: the common record of the ONNX reader (`graph.py`)
and the TFLite one (`tflite_graph.py`), kept apart from both so that neither imports the other's module
for it. `graph.Layer` is the same class."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Layer:
    """One kernel: what it computes and how many bytes it touches."""

    name: str
    op: str
    op_class: str  # conv, dwconv, gemm, pool, elementwise, other
    dtype: str  # fp32 or int8
    macs: int
    param_bytes: int
    in_bytes: int
    out_bytes: int
    outputs: list[str] = field(default_factory=list)  # tensor names (for matching profiles)
    inputs: list[str] = field(default_factory=list)  # activations read, through shape-only ops
    in_sizes: list[int] = field(default_factory=list)  # bytes of each input
    # MACs per output element (conv: C_in/groups x kh x kw; gemm: K; depthwise: kh x kw): how long
    # the kernel's inner loop runs before it stores, which decides how much of the peak it reaches
    depth: int = 0
    in_channels: int = 0  # per group, convolutions only: < 4 is an image stem (RGB, grayscale)

    @property
    def bytes(self) -> int:
        return self.param_bytes + self.in_bytes + self.out_bytes
