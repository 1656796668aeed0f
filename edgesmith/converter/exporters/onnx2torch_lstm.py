"""ONNX `LSTM` for onnx2torch, which has no converter for it (silero-vad's decoder is one LSTM cell).

Registered with onnx2torch's own `add_converter` when `tflite_onnx` imports onnx2torch. The cell is
written out as matrix products and gates, one step per time step of the (static: the TFLite export
folds shapes) sequence, which torch.export traces and litert-torch lowers to TFLite's FULLY_CONNECTED,
LOGISTIC, TANH and MUL/ADD, ops the AI Edge Quantizer quantizes. Only what ONNX's defaults describe is
converted: forward direction, sigmoid/tanh/tanh, no peepholes, no clip, `layout = 0`, no sequence
lengths; anything else is refused naming the attribute.
"""

from __future__ import annotations

import functools

from ...errors import InputError

UNSUPPORTED = {"direction": "forward", "clip": None, "input_forget": 0, "layout": 0}  # ONNX's defaults


@functools.cache
def register() -> None:
    """Add the converter to onnx2torch's registry (once per process: it refuses a second one)."""
    from onnx2torch.node_converters.registry import add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    lstm = _module()

    def convert(node, graph):  # (onnx2torch OnnxNode, OnnxGraph) -> OperationConverterResult
        attributes = node.attributes
        for name, default in UNSUPPORTED.items():
            value = attributes.get(name, default)
            if (value.decode() if isinstance(value, bytes) else value) != default:
                raise InputError(
                    f"an LSTM with {name} = {value!r} has no TFLite conversion path; {default!r} has"
                )
        if "activations" in attributes:
            raise InputError("an LSTM with its own activations has no TFLite conversion path")
        inputs = list(node.input_values) + [""] * (8 - len(node.input_values))
        x, w, r, b, lengths, initial_h, initial_c, peepholes = inputs
        if lengths or peepholes or w not in graph.initializers or r not in graph.initializers:
            raise InputError(
                "an LSTM with sequence lengths, peepholes or computed weights has no TFLite conversion path"
            )
        bias = graph.initializers[b].to_torch() if b else None
        module = lstm(graph.initializers[w].to_torch(), graph.initializers[r].to_torch(), bias)
        mapping = OnnxMapping(inputs=(x, initial_h, initial_c), outputs=node.output_values)
        return OperationConverterResult(torch_module=module, onnx_mapping=mapping)

    for version in (7, 14):
        add_converter(operation_type="LSTM", version=version)(convert)


def _module():
    import torch
    from onnx2torch.utils.common import OnnxToTorchModule

    class OnnxLSTM(torch.nn.Module, OnnxToTorchModule):
        """One forward LSTM layer with ONNX's weights (gates in ONNX's order: input, output, forget, cell)."""

        def __init__(self, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None):
            super().__init__()
            hidden = r.shape[-1]
            self.register_buffer("w", w[0].T.contiguous())  # [input, 4 * hidden]
            self.register_buffer("r", r[0].T.contiguous())  # [hidden, 4 * hidden]
            bias = torch.zeros(4 * hidden) if b is None else b[0, : 4 * hidden] + b[0, 4 * hidden :]
            self.register_buffer("b", bias)
            self.hidden = hidden

        def forward(self, x, initial_h=None, initial_c=None):
            batch = x.shape[1]
            h = x.new_zeros(batch, self.hidden) if initial_h is None else initial_h[0]
            c = x.new_zeros(batch, self.hidden) if initial_c is None else initial_c[0]
            steps = []
            for t in range(x.shape[0]):  # static: the TFLite export folds shapes
                gates = x[t] @ self.w + h @ self.r + self.b
                i, o, f, g = torch.split(gates, self.hidden, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                steps.append(h)
            return torch.stack(steps)[:, None], h[None], c[None]

    return OnnxLSTM
