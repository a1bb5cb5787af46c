"""Recurrent layers (formulas/rnn.py): every gate, layer, direction and time step.

Per token, layer and direction, with G gates (LSTM 4, GRU 3, RNN 1), hidden H, layer input I and recurrent input R
(H, or proj_size P): MACs = G*H*I + G*H*R (+ P*H projection). Other FLOPs per token: LSTM 22H, GRU 17H, RNN 2H, plus
with biases LSTM 8H, GRU 6H, RNN 2H; dropout between layers in training 2 per element of each non-final layer output.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from tests.formulas._check import analyze_both


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")
def test_lstm_two_layers_bidirectional_batch_first_proj() -> None:
    model = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, proj_size=2)
    r = analyze_both(model, torch.randn(2, 5, 3))  # 2*5 = 10 tokens
    # layer 0, per direction: 4*4*3 + 4*4*2 (recurrent input is P=2) + 2*4 (projection) = 48 + 32 + 8 = 88
    # layer 1, per direction: input 2 directions * P = 4: 4*4*4 + 32 + 8 = 104
    assert r.macs == 10 * 2 * (88 + 104) == 3_840
    # (22 + 8) * H = 120 per token for each of 2 layers x 2 directions
    assert r.flops == 2 * 3_840 + 10 * 4 * 120 == 12_480
    assert r.uncounted == ()


def test_gru_two_layers_dropout_in_train_mode() -> None:
    r = analyze_both(nn.GRU(3, 4, num_layers=2, dropout=0.5), torch.randn(5, 2, 3), mode="train")  # 10 tokens
    # layer 0: 3*4*3 + 3*4*4 = 84; layer 1: 3*4*4 + 3*4*4 = 96
    assert r.macs == 10 * (84 + 96) == 1_800
    # (17 + 6) * 4 = 92 per token and layer; dropout on layer 0's output: 2 * 10 tokens * 4
    assert r.flops == 2 * 1_800 + 10 * 2 * 92 + 2 * 10 * 4 == 5_520


def test_gru_dropout_not_counted_in_eval() -> None:
    r = analyze_both(nn.GRU(3, 4, num_layers=2, dropout=0.5), torch.randn(5, 2, 3))
    assert r.flops == 2 * 1_800 + 10 * 2 * 92 == 5_440


def test_gru_bidirectional_batch_first() -> None:
    r = analyze_both(nn.GRU(3, 4, bidirectional=True, batch_first=True), torch.randn(2, 5, 3))
    assert r.macs == 10 * 2 * (3 * 4 * 3 + 3 * 4 * 4) == 1_680
    assert r.flops == 2 * 1_680 + 10 * 2 * (17 + 6) * 4 == 5_200


def test_rnn_relu_without_bias() -> None:
    r = analyze_both(nn.RNN(3, 4, nonlinearity="relu", bias=False), torch.randn(5, 2, 3))
    assert r.macs == 10 * (4 * 3 + 4 * 4) == 280
    assert r.flops == 2 * 280 + 10 * 2 * 4 == 640  # add the two products, relu: 2H


def test_rnn_tanh_two_layers_batch_first() -> None:
    r = analyze_both(nn.RNN(3, 4, num_layers=2, batch_first=True), torch.randn(2, 5, 3))
    # layer 0: 4*3 + 4*4 = 28; layer 1: 4*4 + 4*4 = 32
    assert r.macs == 10 * (28 + 32) == 600
    assert r.flops == 2 * 600 + 10 * 2 * (2 + 2) * 4 == 1_520  # 2H + 2H of biases per layer


class Packed(nn.Module):
    """An LSTM over a packed batch of sequences of lengths 5 and 3: only the 8 real tokens are computed."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
        return self.lstm(packed)[0].data


def test_lstm_on_packed_sequence() -> None:
    r = analyze_both(Packed(), torch.randn(2, 5, 3))
    assert r.macs == (5 + 3) * (4 * 4 * 3 + 4 * 4 * 4) == 896  # 8 tokens, not 2*5 = 10
    assert r.flops == 2 * 896 + 8 * (22 + 8) * 4 == 2_752
    assert r.uncounted == ()  # packing moves data: free


def test_lstm_cell() -> None:
    r = analyze_both(nn.LSTMCell(3, 4), torch.randn(2, 3))
    assert r.macs == 2 * (16 * 3 + 16 * 4) == 224
    assert r.flops == 2 * 224 + 2 * (22 + 8) * 4 == 688


def test_gru_cell_without_bias() -> None:
    r = analyze_both(nn.GRUCell(3, 4, bias=False), torch.randn(2, 3))
    assert r.macs == 2 * (12 * 3 + 12 * 4) == 168
    assert r.flops == 2 * 168 + 2 * 17 * 4 == 472


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_unbatched(nonlinearity: str) -> None:
    r = analyze_both(nn.RNNCell(3, 4, nonlinearity=nonlinearity), torch.randn(3))  # one token
    assert r.macs == 4 * 3 + 4 * 4 == 28
    assert r.flops == 2 * 28 + (2 + 2) * 4 == 72
    assert r.uncounted == ()
