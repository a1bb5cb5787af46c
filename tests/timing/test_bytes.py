"""Bytes moved (docs/conventions.md, "Time"): each counted call's tensor inputs and fresh outputs at their size, views
and aliases of the same call once, an in-place target read and written once. Every figure derived by hand beside it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import torchcost
from torchcost.collect.ops import call_bytes, io_plan


def _op_bytes(report: torchcost.CostReport) -> dict[str, int]:
    return {o.op: o.bytes for o in report.ops}


def test_linear_reads_input_weight_bias_and_writes_its_output() -> None:
    r = torchcost.analyze(nn.Linear(16, 8), torch.randn(4, 16))
    # addmm(bias, x, W^T): (4*16 + 16*8 + 8) * 4 bytes read + 4*8*4 written = 800 + 128
    assert _op_bytes(r) == {"aten::addmm": 928}
    assert r.root.bytes == r.root.self_bytes == 928
    # 4*16*8 = 512 MACs, + 32 bias adds: 1,056 FLOPs over 928 bytes
    assert r.root.intensity == 1056 / 928


def test_convolution() -> None:
    r = torchcost.analyze(nn.Conv2d(3, 4, 3, bias=False), torch.randn(1, 3, 8, 8))
    # input 3*8*8*4 = 768 + weight 4*3*3*3*4 = 432 read; output 1*4*6*6*4 = 576 written
    assert _op_bytes(r) == {"aten::convolution": 768 + 432 + 576}


class _Elementwise(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = x + y  # 2*3*4 = 24 bytes each: read x, y (48), write z (24): 72
        w = x * x  # x read once (24), w written (24): 48
        torch.add(x, y, out=z)  # the out= tensor is written, never read: 48 + 24 = 72
        return torch.relu_(w)  # in place: w read (24) and written once (24): 48


def test_elementwise_views_counted_once_and_in_place_targets_written_once() -> None:
    r = torchcost.analyze(_Elementwise(), torch.randn(2, 3), torch.randn(2, 3))
    assert _op_bytes(r) == {"aten::add": 72 + 72, "aten::mul": 48, "aten::relu_": 48}


class _Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


def test_composites_are_priced_whole() -> None:
    q = torch.randn(1, 2, 4, 8)
    r = torchcost.analyze(_Attention(), q, q.clone(), q.clone())
    # q, k, v read (3 * 1*2*4*8*4 = 768), the output written (256); the kernel's insides are not seen
    assert _op_bytes(r) == {"aten::scaled_dot_product_attention": 1024}
    lstm = torchcost.analyze(nn.LSTM(4, 8), torch.randn(5, 1, 4))
    # read: input 5*1*4*4 = 80; weights (32*4 + 32*8 + 32 + 32) * 4 = 1,792; the zero h0, c0 2 * 8 * 4 = 64
    # written: output 5*1*8*4 = 160, h_n and c_n 2 * 32 = 64
    assert _op_bytes(lstm) == {"aten::lstm": 80 + 1792 + 64 + 160 + 64}


def test_call_bytes_of_a_multi_output_op_and_its_schema() -> None:
    x = torch.randn(2, 3)
    func = torch.ops.aten.max.dim
    values, indices = func(x, 1)
    # read x (24); written: values 2 floats (8) and indices 2 int64 (16)
    assert call_bytes((x, 1), {}, (values, indices), io_plan(func._schema)) == (24 + 8 + 16, torch.float32)
    func = torch.ops.aten.add_.Tensor
    out = func(x, x)
    # x += x: x read once (24) and written once (24); the returned alias is not a second write
    assert call_bytes((x, x), {}, out, io_plan(func._schema)) == (48, torch.float32)


def test_modules_add_up_and_phases_carry_bytes() -> None:
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    r = torchcost.analyze(model, torch.randn(4, 16), mode="train", optimizer="sgd", memory=False)
    for m in r.modules:
        assert m.bytes == m.self_bytes + sum(c.bytes for c in m.children)
    assert r.root.bytes == sum(o.bytes for o in r.ops) == r.phase("forward").bytes
    # forward: addmm 928 (above); relu 2 * 4*8*4 = 256; addmm (4*8 + 8*4 + 4) * 4 read + 4*4*4 written = 336
    assert r.phase("forward").bytes == 928 + 256 + 336
    for p in r.phases:
        assert p.bytes == sum(o.bytes for o in p.ops)
    assert r.phase("backward").bytes > 0 and r.phase("optimizer").bytes > 0


def test_a_version_2_document_reads_back_with_zero_bytes() -> None:
    r = torchcost.analyze(nn.Linear(4, 2), torch.randn(3, 4))
    data = r.to_dict()
    data["schema_version"] = 2
    for entry in [*data["ops"], *(o for m in data["modules"] for o in m["ops"])]:
        del entry["bytes"]
    for m in data["modules"]:
        del m["bytes"], m["self_bytes"]
    back = torchcost.CostReport.from_dict(data)
    assert back.root.bytes == 0 and back.ops[0].bytes == 0 and back.predicted_time is None
    assert back.macs == r.macs and back.schema_version == 3
