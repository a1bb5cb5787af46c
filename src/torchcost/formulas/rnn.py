"""Recurrent layers: RNN (tanh/ReLU), LSTM, GRU and their cells, every layer, direction and time step.

Per token (one time step of one sequence) and per layer and direction, with hidden size H, layer input size I,
recurrent input size R (H, or the projection size P of an LSTM with proj_size) and G gates (LSTM 4, GRU 3, RNN 1):
  MACs = G*H*I + G*H*R (+ P*H for the LSTM projection)
  other FLOPs (sigmoid 4, tanh 1, see pointwise):
    LSTM: 4H add the two products, 12H three sigmoids, H tanh(g), 3H c' = f*c + i*g, 2H h' = o*tanh(c')  = 22H
    GRU:  2H add products of r and z, 8H two sigmoids, 3H n = tanh(x_n + r*h_n), 4H h' = (1-z)*n + z*h   = 17H
    RNN:  H add the two products, H tanh or ReLU                                                         =  2H
  plus one FLOP per bias element and token when the layer has biases (LSTM 8H, GRU 6H, RNN 2H).
Dropout between layers in training: 2 FLOPs per element of each non-final layer's output.
The whole call (``torch.lstm`` and friends) is caught before it is lowered, so the oneDNN kernel on CPU, cuDNN on CUDA
and the decomposed meta path count identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchcost.formulas.backward import GRAD_SPLITS
from torchcost.formulas.registry import Cost, Formula, OpCall, register_many

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_ELEMENTWISE = {"lstm": 22, "gru": 17, "rnn_tanh": 2, "rnn_relu": 2}
_BIAS_ADDS = {"lstm": 8, "gru": 6, "rnn_tanh": 2, "rnn_relu": 2}
DROPOUT = 2


def _layer_cost(kind: str, w_ih: torch.Tensor, w_hh: torch.Tensor, w_hr: torch.Tensor | None, biases: bool) -> Cost:
    gates = _GATES[kind]
    hidden = int(w_ih.shape[0]) // gates
    macs = int(w_ih.numel()) + int(w_hh.numel()) + (int(w_hr.numel()) if w_hr is not None else 0)
    other = _ELEMENTWISE[kind] * hidden + (_BIAS_ADDS[kind] * hidden if biases else 0)
    return Cost(macs=macs, other_flops=other)


def _full_cost(kind: str, call: OpCall) -> Cost:
    args = call.args
    packed = isinstance(args[1], torch.Tensor) and not args[1].is_floating_point()
    if packed:  # (data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional)
        data, params, has_biases, num_layers, dropout, train, bidirectional = (
            args[0], args[3], args[4], args[5], args[6], args[7], args[8])
        tokens = int(data.shape[0])
    else:  # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        data, params, has_biases, num_layers, dropout, train, bidirectional = (
            args[0], args[2], args[3], args[4], args[5], args[6], args[7])
        tokens = int(data.numel()) // int(data.shape[-1])
    dirs = 2 if bidirectional else 1
    groups = _param_groups(list(params), int(num_layers) * dirs, bool(has_biases))
    total = Cost()
    out_width = 0
    for w_ih, w_hh, w_hr in groups:
        layer = _layer_cost(kind, w_ih, w_hh, w_hr, bool(has_biases))
        total = total + Cost(layer.macs * tokens, layer.other_flops * tokens)
        out_width = int(w_hr.shape[0]) if w_hr is not None else int(w_hh.shape[1])
    if train and float(dropout) > 0 and int(num_layers) > 1:
        total = total + Cost(other_flops=DROPOUT * tokens * out_width * dirs * (int(num_layers) - 1))
    return total


def _param_groups(
    params: Sequence[torch.Tensor], groups: int, has_biases: bool
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    per = len(params) // groups
    has_proj = per == 2 + (2 if has_biases else 0) + 1
    result = []
    for g in range(groups):
        chunk = params[g * per:(g + 1) * per]
        result.append((chunk[0], chunk[1], chunk[-1] if has_proj else None))
    return result


def _cell_cost(kind: str, call: OpCall) -> Cost:
    # lstm_cell(input, hx[], w_ih, w_hh, b_ih, b_hh); gru_cell / rnn_*_cell(input, hx, w_ih, w_hh, b_ih, b_hh)
    x: torch.Tensor = call.args[0]
    w_ih, w_hh = call.args[2], call.args[3]
    b_ih = call.args[4] if len(call.args) > 4 else call.kwargs.get("b_ih")
    tokens = int(x.numel()) // int(x.shape[-1])
    layer = _layer_cost(kind, w_ih, w_hh, None, b_ih is not None)
    return Cost(layer.macs * tokens, layer.other_flops * tokens)


def _full(kind: str) -> Formula:
    return lambda call: _full_cost(kind, call)


def _cell(kind: str) -> Formula:
    return lambda call: _cell_cost(kind, call)


for _kind in _GATES:
    register_many([f"aten::{_kind}"], _full(_kind))
    register_many([f"aten::{_kind}_cell"], _cell(_kind))


# -- backward ---------------------------------------------------------------------------------------------------------
# The CPU LSTM's backward runs one oneDNN kernel per layer and direction, aten::mkldnn_rnn_layer_backward; elsewhere
# (meta, GRU and RNN on CPU) the LSTM's backward is that of its decomposition into addmm and element-wise ops, which
# this formula counts op for op (docs/conventions.md, "Training step", derives each term), so both agree exactly.
GATE_BACKWARD = 15  # per hidden element and step: 3 sigmoid_backward x 3 (i, f, o) + 2 tanh_backward x 3 (g, c')
GATE_MULS = 5  # per hidden element and step: dI = dc*g, dG = dc*i, dF = dc*c_prev, dO = dh*tanh(c'), dtanh = dh*o


def _requires_grad(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


def _lstm_layer_backward_parts(call: OpCall) -> tuple[int, int, int]:
    """(input-gradient MACs, weight-gradient MACs, other FLOPs) of one LSTM layer and direction's backward."""
    x, w_ih, w_hh = call.arg("input"), call.arg("weight1"), call.arg("weight2")
    steps, batch, inp = (int(s) for s in x.shape)  # (T, B, I): the kernel takes the sequence first
    gates, hidden = int(w_ih.shape[0]), int(w_hh.shape[1])  # 4H, H
    bh = batch * hidden
    weight = steps * batch * gates * (inp + hidden)  # dW_ih, dW_hh per step
    into = int(_requires_grad(x)) * steps * batch * gates * inp  # dx per step
    into += (steps - 1 + int(_requires_grad(call.arg("hx_")))) * batch * gates * hidden  # dh_prev per step
    out_grad = call.arg("grad_output") is not None
    other = GATE_BACKWARD * steps * bh
    other += (GATE_MULS * steps + steps - 1 + int(_requires_grad(call.arg("cx_tmp")))) * bh  # + dc_prev = dc*f
    other += (steps - 1) * gates * (inp + hidden)  # the weight gradients summed over the steps
    if bool(call.arg("has_biases", True)):  # per step two bias gradients summed over the batch, then over the steps
        other += 2 * steps * (batch - 1) * gates + 2 * (steps - 1) * gates
    # gradients meeting: h_t from the output and the next step (and h_T from hy), c_t from tanh and the next step
    other += ((steps - 1) * int(out_grad) + int(out_grad and call.arg("grad_hy") is not None)) * bh
    other += (steps - 1 + int(call.arg("grad_cy") is not None)) * bh
    return into, weight, other


def lstm_layer_backward_cost(call: OpCall) -> Cost:
    into, weight, other = _lstm_layer_backward_parts(call)
    return Cost(macs=into + weight, other_flops=other)


def lstm_layer_backward_split(call: OpCall) -> tuple[int, int]:
    into, weight, _ = _lstm_layer_backward_parts(call)
    return into, weight


register_many(["aten::mkldnn_rnn_layer_backward"], lstm_layer_backward_cost)
GRAD_SPLITS["aten::mkldnn_rnn_layer_backward"] = lstm_layer_backward_split
