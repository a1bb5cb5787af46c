"""The whole training step's counts (issue 11), each expected number derived by hand beside it, and an independent
oracle: torch.utils.flop_counter.FlopCounterMode run with the real forward and backward inside it."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint as cp
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import torchcost


def _op_macs(report: torchcost.CostReport, phase: str, op: str) -> int:
    return sum(o.macs for o in report.phase(phase).ops if o.op == op)


def test_linear_backward_weight_gradient_only() -> None:
    r = torchcost.analyze(nn.Linear(1000, 1000), input_size=(8, 1000), mode="train", memory=False)
    # forward: addmm (8, 1000) @ (1000, 1000): 8 * 1000 * 1000 = 8,000,000 MACs
    assert r.macs == r.phase("forward").macs == 8_000_000
    # backward: the input does not require grad, so only grad_W = grad_out^T @ x: 1000 * 8 * 1000 = 8,000,000
    assert r.phase("backward").macs == 8_000_000
    assert _op_macs(r, "backward", "aten::mm") == 8_000_000
    # attributed to the Linear (the root here) whose forward made the AddmmBackward node
    assert r.root.backward_macs == r.root.self_backward_macs == 8_000_000
    assert r.root.backward_flops == r.phase("backward").flops
    # step = forward + loss + backward + recompute (0) + optimizer
    assert r.step_flops == sum(p.flops for p in r.phases)
    assert r.phase("recompute").flops == 0
    # AdamW (single-tensor path) over 1,001,000 parameter elements: every op's FLOPs attributed to the module
    assert r.root.optimizer_flops == r.phase("optimizer").flops > 0
    # the split: all of it is the weight gradient
    assert (r.phase("backward").input_grad_macs, r.phase("backward").weight_grad_macs) == (0, 8_000_000)
    assert (r.root.input_grad_macs, r.root.weight_grad_macs) == (0, 8_000_000)


def test_linear_backward_with_input_gradient() -> None:
    x = torch.randn(8, 1000, requires_grad=True)
    r = torchcost.analyze(nn.Linear(1000, 1000), x, mode="train", memory=False)
    # grad_W 8,000,000 + grad_x = grad_out (8, 1000) @ W (1000, 1000): 8 * 1000 * 1000 = 8,000,000
    assert r.phase("backward").macs == 16_000_000
    assert (r.phase("backward").input_grad_macs, r.phase("backward").weight_grad_macs) == (8_000_000, 8_000_000)


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(100, 200), nn.Linear(200, 300), nn.Linear(300, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_mlp_with_frozen_middle_layer() -> None:
    model = _Mlp()
    model.b.requires_grad_(False)
    r = torchcost.analyze(model, input_size=(4, 100), mode="train", memory=False)
    # c: grad_W 10*4*300 = 12,000 and grad_x 4*10*300 = 12,000
    assert r.module("c").backward_macs == 24_000
    # b frozen: no weight gradient, but its input gradient flows to a: 4*300*200 = 240,000
    assert r.module("b").backward_macs == 240_000
    # a: the first layer, input without grad: grad_W only, 200*4*100 = 80,000
    assert r.module("a").backward_macs == 80_000
    assert r.phase("backward").macs == 24_000 + 240_000 + 80_000
    # per-module backward sums to the phase total exactly
    assert r.root.backward_flops == r.phase("backward").flops
    assert r.module("b").optimizer_flops == 0


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class _Net(nn.Module):
    def __init__(self, checkpoint: bool) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 8, 3, padding=1), _Block(), nn.Linear(8 * 16 * 16, 10)
        self.checkpoint = checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = cp.checkpoint(self.block, x, use_reentrant=False) if self.checkpoint else self.block(x)
        return self.head(x.flatten(1))


def test_checkpointed_block_recomputes_its_forward() -> None:
    r = torchcost.analyze(_Net(True), input_size=(2, 3, 16, 16), mode="train", memory=False)
    block = r.module("block")
    # the block's conv: 2*8*16*16 output positions x 8*3*3 weights = 4096 * 72 = 294,912 MACs, run again
    assert block.macs == 294_912
    assert r.phase("recompute").macs == block.recompute_macs == 294_912
    assert r.phase("recompute").flops == block.recompute_flops == block.flops
    plain = torchcost.analyze(_Net(False), input_size=(2, 3, 16, 16), mode="train", memory=False)
    assert plain.phase("recompute").flops == 0
    assert plain.phase("backward").flops == r.phase("backward").flops
    # conv backward: stem weight grad only (input needs no grad) 2*8*16*16 * 3*9 = 110,592; block conv input and
    # weight grads 2 x 294,912; head grad_W 10*2*2048 = 40,960 and grad_x 2*10*2048 = 40,960
    assert r.phase("backward").macs == 110_592 + 2 * 294_912 + 2 * 40_960


def _oracle(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's forward + backward FLOPs (mm/addmm/bmm/convolution/convolution_backward: 2 x MACs)."""
    with FlopCounterMode(display=False) as counter:
        model(x).float().pow(2).mean().backward()
    return int(counter.get_total_flops())


def _mac_ops(report: torchcost.CostReport) -> int:
    """The same ops in torchcost's forward and backward: 2 x the MACs (the MAC-based ops are exactly those)."""
    return 2 * (report.phase("forward").macs + report.phase("backward").macs)


def test_oracle_mlp() -> None:
    torch.manual_seed(0)
    model, x = _Mlp(), torch.randn(4, 100)
    r = torchcost.analyze(model, x, mode="train", memory=False)
    assert _mac_ops(r) == _oracle(model, x)


def test_oracle_conv_net() -> None:
    torch.manual_seed(0)
    model, x = _Net(False), torch.randn(2, 3, 16, 16)
    r = torchcost.analyze(model, x, mode="train", memory=False)
    assert _mac_ops(r) == _oracle(model, x)


def test_eval_has_no_phases() -> None:
    r = torchcost.analyze(_Mlp(), input_size=(4, 100))
    assert r.phases == () and r.step_flops == r.flops and r.root.backward_flops == 0


def test_json_round_trip_keeps_phases() -> None:
    r = torchcost.analyze(_Net(True), input_size=(2, 3, 16, 16), mode="train", memory=False)
    back = torchcost.CostReport.from_json(r.to_json())
    assert back.phases == r.phases and back.step_flops == r.step_flops
    assert back.module("block").recompute_flops == r.module("block").recompute_flops


def test_conv_net_input_and_weight_gradients() -> None:
    r = torchcost.analyze(_Net(False), input_size=(2, 3, 16, 16), mode="train", memory=False)
    back = r.phase("backward")
    # stem (the first conv): weight gradient only, 2*8*16*16 * 3*9 = 110,592; no input gradient (the input needs none)
    assert (r.module("stem").input_grad_macs, r.module("stem").weight_grad_macs) == (0, 110_592)
    # block conv: both, 294,912 each; head: grad_W 10*2*2048 = 40,960 and grad_x 2*10*2048 = 40,960
    assert (r.module("block").input_grad_macs, r.module("block").weight_grad_macs) == (294_912, 294_912)
    assert (r.module("head").input_grad_macs, r.module("head").weight_grad_macs) == (40_960, 40_960)
    assert back.input_grad_macs == 294_912 + 40_960
    assert back.weight_grad_macs == 110_592 + 294_912 + 40_960
    # every backward MAC here is a conv's or a matrix product's: the split covers them all
    assert back.input_grad_macs + back.weight_grad_macs == back.macs
    assert r.root.input_grad_macs == back.input_grad_macs and r.root.weight_grad_macs == back.weight_grad_macs


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(50, 16), nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids))


def test_tied_embedding_and_lm_head_accumulate() -> None:
    r = torchcost.analyze(_Tied(), torch.zeros(2, 5, dtype=torch.long), mode="train", memory=False)
    # N = 10 tokens, E = 16, V = 50. Forward: the head's mm 10*16*50 = 8,000 MACs (the lookup is free)
    assert r.macs == 8_000
    head = r.module("head")
    # head backward: grad_W = grad^T @ h, 50*10*16 = 8,000 (weight); grad_h = grad @ W, 10*50*16 = 8,000 (input:
    # the embedding's output needs a gradient because the shared weight trains)
    assert (head.input_grad_macs, head.weight_grad_macs) == (8_000, 8_000) == (head.backward_macs // 2,) * 2
    # the embedding's own gradient: embedding_dense_backward adds 10*16 = 160 elements into its rows; the two
    # gradients of the one weight then accumulate: 50*16 = 800 additions
    assert _op_flops(r, "backward", "aten::embedding_dense_backward") == 160
    assert _op_flops(r, "backward", "aten::add") == 800
    assert r.module("emb").backward_macs == 0 and r.module("emb").backward_flops == 160 + 800
    assert r.params == 50 * 16  # the tied weight once


def _op_flops(report: torchcost.CostReport, phase: str, op: str) -> int:
    return sum(o.flops for o in report.phase(phase).ops if o.op == op)


def test_oracle_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    for attention in ("eager", "sdpa"):
        config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16,
                                         bos_token_id=0, eos_token_id=0, attn_implementation=attention)
        model, ids = transformers.GPT2LMHeadModel(config), torch.randint(0, 100, (2, 8))
        with sdpa_kernel(SDPBackend.MATH):
            r = torchcost.analyze(model, ids, mode="train", memory=False)
            with FlopCounterMode(display=False) as counter:
                model(ids).logits.float().pow(2).mean().backward()
        assert _mac_ops(r) == counter.get_total_flops(), attention
        back = r.phase("backward")
        # N = 16 tokens, E = 32: weight gradients of c_attn 16*32*96, c_proj 16*32*32, c_fc and mlp.c_proj
        # 16*32*128 each, and the tied lm_head/wte 16*32*100
        assert back.weight_grad_macs == 16 * 32 * (96 + 32 + 128 + 128 + 100) == 247_808
        # input gradients: the same products but the first (c_attn's input is wte + wpe, so it needs one too),
        # plus the attention's two bmm per forward bmm: 2 x 2 x (2*2 heads * 8*8*16 = 4,096)
        assert back.input_grad_macs == 247_808 + 4 * 4_096 == 264_192
        assert back.input_grad_macs + back.weight_grad_macs == back.macs


def test_foreach_optimizer_temporaries_stay_with_their_parameters() -> None:
    # AdamW's foreach path makes temporaries (the denominator sqrt(v) + eps, one per parameter, in a list); their
    # work belongs to the parameter's module, not to the module of the list's last parameter
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
    r = torchcost.analyze(model, torch.randn(4, 100), mode="train", optimizer="adamw", target="cuda")
    first, last = r.module("0"), r.module("2")
    assert (first.params, last.params) == (100 * 200 + 200, 200 * 10 + 10)  # 20,200 and 2,010
    per_param = first.optimizer_flops / first.params
    assert abs(last.optimizer_flops / last.params - per_param) < 0.01  # the same work per parameter in both
    assert first.optimizer_flops + last.optimizer_flops == r.phase("optimizer").flops


class _Losses(nn.Module):
    """Returns a dict of scalar losses, as a torchvision detection model does in training."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 1, bias=False), nn.Linear(10, 1, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"first": self.a(x).sum(), "second": self.b(x).sum(), "third": self.b(x).mean()}


def test_a_dict_of_losses_is_summed_by_the_default_loss() -> None:
    r = torchcost.analyze(_Losses(), input_size=(4, 10), mode="train")
    # the loss phase: first + second + third, 2 adds (no mean square of the first: each value is already a loss)
    assert (r.phase("loss").macs, r.phase("loss").flops) == (0, 2)
    assert r.memory is not None and r.memory.loss == "sum(out.values())"
    # every loss reaches its layer: grad_W of a = x^T @ grad: 1 * 4 * 10 = 40 MACs; b is used twice (its own output
    # twice: second and third), each 40: 120 backward MACs in all; b alone would be missed by the first loss alone
    assert r.phase("backward").weight_grad_macs == 3 * 40 == 120
    assert r.phase("backward").macs == 120


def test_a_dict_with_a_tensor_that_is_not_a_loss_keeps_the_first_floating_rule() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(10, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            y = self.a(x)
            return {"loss": y.sum(), "logits": y}

    r = torchcost.analyze(Mixed(), input_size=(4, 10), mode="train")
    # the first floating tensor, a scalar, is the loss as it is: no loss op at all
    assert (r.phase("loss").macs, r.phase("loss").flops) == (0, 0)
    assert r.memory is not None and r.memory.loss == "the output's scalar, as it is"


class _Refined(nn.Module):
    """Returns a list of predictions of one shape, each refining the last (as RAFT's flow after each update)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.update = nn.Linear(10, 2, bias=False), nn.Linear(2, 2, bias=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.first(x)
        out = [y]
        for _ in range(2):
            y = y + self.update(y)
            out.append(y)
        return out


def test_a_list_of_predictions_is_summed_by_the_default_loss() -> None:
    # 3 predictions of (4, 2): each's mean square, pow 8 + mean 8 (7 adds, 1 divide) = 16, and 2 adds: 50
    r = torchcost.analyze(_Refined(), input_size=(4, 10), mode="train")
    assert r.phase("loss").flops == 3 * (8 + 8) + 2 == 50
    assert r.memory is not None and r.memory.loss == "sum(o.float().pow(2).mean() for o in out)"
    # every refinement is in the backward: the first Linear's weight gradient (4 x 10 x 2 = 80 MACs), the update's
    # (2 calls, 4 x 2 x 2 = 16 each) and its input gradients (16 each); the first prediction alone would reach only
    # the first Linear (80)
    assert r.phase("backward").weight_grad_macs == 80 + 2 * 16
    assert r.phase("backward").input_grad_macs == 2 * 16


def test_a_tuple_of_different_shapes_keeps_the_first_tensor_rule() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(10, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.a(x)
            return y, y.sum(-1)

    r = torchcost.analyze(Pair(), input_size=(4, 10), mode="train")
    # the first, (4, 2): pow 8 + mean 8 = 16
    assert r.phase("loss").flops == 16 and r.memory is not None and r.memory.loss == "out.float().pow(2).mean()"


def test_a_foreach_adamw_step_on_meta_is_counted_alike_in_every_analysis() -> None:
    # A meta model's step runs AdamW's foreach path (the default for its CUDA target); each list is priced per
    # tensor, and a part's price is worked out once for its key, then only tallied (collect/ops.py): the first
    # analysis works them out, the later ones hit them. Per element of a parameter: weight decay mul 1, lerp of the
    # first moment 3, mul of the second 1, addcmul 3, sqrt 1, div by the bias correction 1, add of eps 1, addcdiv
    # 3 = 14 FLOPs; per parameter tensor its step counter's increment, 1. Linear(8, 8): 64 + 8 = 72 elements in 2
    # tensors: 14 * 72 + 2 = 1,010 FLOPs a layer.
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    x = torch.randn(4, 8, device="meta")
    for _ in range(3):
        r = torchcost.analyze(model, x, mode="train")
        assert (r.module("0").optimizer_flops, r.module("2").optimizer_flops) == (1_010, 1_010)
        assert r.phase("optimizer").flops == 2 * 1_010
