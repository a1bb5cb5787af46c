"""The memory part of the report: invariants, round trips, the model left alone, meta models, bad options."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import torchcost
from tests.memory.models import TinyGPT, small_cnn
from torchcost.report import MemoryReport


def test_invariants_inference_and_step() -> None:
    model, x = small_cnn(), torch.randn(4, 3, 16, 16)
    for mode in ("eval", "train"):
        r = torchcost.analyze(model, x, mode=mode)
        m = r.memory
        assert m is not None
        assert m.at_peak.total == r.peak_memory == max(m.timeline.bytes)
        assert r.root.peak_memory == r.peak_memory  # the model itself spans every op
        for node in r.modules:
            for child in node.children:
                assert child.peak_memory <= node.peak_memory
        assert len(m.timeline) == len(m.timeline.ops) == len(m.timeline.modules) == len(m.timeline.phases)
        assert m.timeline.bytes[m.peak_index] == r.peak_memory
        assert m.timeline.modules[m.peak_index] == m.peak_module
        assert r.module("0").param_bytes == (16 * 3 * 9 + 16) * 4
        assert r.module("1").buffer_bytes == (16 + 16) * 4 + 8  # running mean, var; int64 num_batches_tracked
    phases = set(m.timeline.phases)
    assert phases == {"forward", "loss", "backward", "optimizer"}
    # backward ops are attributed to the modules whose forward made them
    backward_modules = {mod for mod, ph in zip(m.timeline.modules, m.timeline.phases) if ph == "backward"}
    assert {"0", "1", "4", "9"} <= backward_modules


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_round_trip(mode: str) -> None:
    r = torchcost.analyze(TinyGPT(), torch.randint(0, 512, (2, 16)), mode=mode)
    again = torchcost.CostReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r
    assert again.memory == r.memory and isinstance(again.memory, MemoryReport)
    assert again.peak_memory == r.peak_memory
    assert again.module("blocks.0").peak_memory == r.module("blocks.0").peak_memory
    assert again.module("blocks.0.fc1").activation_bytes == r.module("blocks.0.fc1").activation_bytes
    assert torchcost.CostReport.from_json(r.to_json()) == r


def test_memory_off() -> None:
    r = torchcost.analyze(small_cnn(), torch.randn(1, 3, 8, 8), memory=False)
    assert r.memory is None and r.peak_memory == 0 and r.root.peak_memory == 0
    assert torchcost.CostReport.from_dict(r.to_dict()) == r


def test_training_step_leaves_model_and_optimizer_alone() -> None:
    model = small_cnn()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    r = torchcost.analyze(model, torch.randn(4, 3, 16, 16), mode="train", optimizer=opt)
    assert r.memory is not None and r.memory.method == "fake"
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not opt.state
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_counts_unchanged_by_the_step() -> None:
    model, x = small_cnn(), torch.randn(2, 3, 16, 16)
    forward_only = torchcost.analyze(model, x, mode="train", memory=False)
    step = torchcost.analyze(model, x, mode="train")
    assert (step.macs, step.flops, step.params) == (forward_only.macs, forward_only.flops, forward_only.params)
    assert step.ops == forward_only.ops  # the loss, backward and optimizer ops are not counted


def test_frozen_parameters_get_no_gradient_or_state() -> None:
    model = small_cnn()
    for p in model[0].parameters():
        p.requires_grad_(False)
    r = torchcost.analyze(model, torch.randn(2, 3, 16, 16), mode="train", optimizer="adamw")
    trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    assert r.memory is not None and r.memory.gradient_bytes == trainable
    assert r.memory.optimizer_state_bytes == 2 * trainable + 4 * sum(1 for p in model.parameters() if p.requires_grad)


def test_data_dependent_model_falls_back_to_a_real_copy() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            return y * 2 if y.sum() > 0 else y

    model = DataDependent()
    r = torchcost.analyze(model, torch.randn(4, 8), mode="train")
    assert r.memory is not None and r.memory.method == "copy"
    assert all(p.grad is None for p in model.parameters())


def test_an_optimizer_whose_step_reads_values_runs_on_a_real_copy() -> None:
    # ASGD's step reads its eta and mu tensors' values (``.item()``), which fake tensors do not hold: its warm-up
    # raised the fake mode's DataDependentOutputException out of analyze(); the step now runs on a real copy
    torch.manual_seed(0)
    model, x = nn.Linear(4, 3), torch.randn(2, 4)
    opt = torch.optim.ASGD(model.parameters())
    r = torchcost.analyze(model, x, mode="train", optimizer=opt)
    assert r.memory is not None and r.memory.method == "copy"
    # gradients: 4*3 + 3 = 15 float32 = 60 B; state per parameter: step, eta and mu (0-d float32, 12 B) and ax,
    # the parameter's average (48 B and 12 B): 60 + 24 = 84 B
    assert (r.memory.gradient_bytes, r.memory.optimizer_state_bytes) == (60, 84)
    assert not opt.state and all(p.grad is None for p in model.parameters())  # (the user's not stepped)


def test_meta_model_step_allocates_nothing_llama_shapes() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    # two layers of the llama-3-70b shapes, bf16, AdamW, batch 1, sequence 2048: the full 80 layers are in
    # benchmarks/memory_accuracy.py
    config = LlamaConfig(hidden_size=8192, num_hidden_layers=2, num_attention_heads=64, num_key_value_heads=8,
                         intermediate_size=28672, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    ids = torch.zeros(1, 2048, dtype=torch.long, device="meta")
    # how long this takes is measured by benchmarks/memory_accuracy.py --llama (all 80 layers), not asserted here
    r = torchcost.analyze(model, ids, mode="train", optimizer="adamw")
    m = r.memory
    assert m is not None and m.method == "meta" and m.target == "cuda"
    # per layer: q,o 8192*8192*2 + k,v 8192*1024*2 + gate,up,down 3*8192*28672 + 2 norms 2*8192
    layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    params = 2 * layer + 2 * 128256 * 8192 + 8192  # embeddings, lm_head, final norm
    assert r.params == params
    p_bytes = 2 * params  # bfloat16
    assert m.gradient_bytes == p_bytes
    assert m.optimizer_state_bytes == 2 * p_bytes  # exp_avg + exp_avg_sq in bf16 (step counters on the CPU)
    assert (m.peak_phase, m.peak_op) == ("optimizer", "aten::_foreach_sqrt")
    assert (m.at_peak.parameters, m.at_peak.gradients, m.at_peak.optimizer_state) == (p_bytes, p_bytes, 2 * p_bytes)
    # the foreach sqrt(exp_avg_sq) of every parameter, plus the logits kept alive: 1*2048*128256*2 bytes
    assert m.at_peak.temporaries >= p_bytes + 2048 * 128256 * 2
    inference = torchcost.analyze(model, ids)
    assert inference.memory is not None
    assert p_bytes < inference.peak_memory < r.peak_memory


def test_bad_options() -> None:
    model, x = small_cnn(), torch.randn(1, 3, 8, 8)
    with pytest.raises(torchcost.InputError, match="optimizer must be one of"):
        torchcost.analyze(model, x, mode="train", optimizer="lion")
    with pytest.raises(torchcost.InputError, match="mode='train'"):
        torchcost.analyze(model, x, optimizer="adamw")
    with pytest.raises(torchcost.InputError, match="amp must be"):
        torchcost.analyze(model, x, amp="fp8")
    with pytest.raises(torchcost.InputError, match="target must be"):
        torchcost.analyze(model, x, target="tpu")


def test_meta_run_with_cpu_target_matches_the_real_run() -> None:
    model, ids = TinyGPT(), torch.randint(0, 512, (4, 64))
    with torch.device("meta"):
        meta_model = TinyGPT()
    real = torchcost.analyze(model, ids)
    meta = torchcost.analyze(meta_model, ids.to("meta"), target="cpu")
    assert meta.peak_memory == real.peak_memory  # the CPU flash kernel is chosen on meta as on the CPU
    real_step = torchcost.analyze(model, ids, mode="train")
    meta_step = torchcost.analyze(meta_model, ids.to("meta"), mode="train", target="cpu")
    # the only difference: AdamW's float32 step counters live on the CPU, not counted beside a meta run
    params = len(list(model.parameters()))
    assert real_step.peak_memory - meta_step.peak_memory == 4 * params


@pytest.mark.parametrize(("dtype", "kernel"), [(torch.float32, "aten::_scaled_dot_product_efficient_attention"),
                                               (torch.bfloat16, "aten::_scaled_dot_product_flash_attention")])
def test_cuda_target_attention_kernels(dtype: torch.dtype, kernel: str) -> None:
    with torch.device("meta"):
        model = TinyGPT().to(dtype)
    r = torchcost.analyze(model, torch.zeros(2, 64, dtype=torch.long, device="meta"), mode="train")
    assert r.memory is not None
    ops = set(r.memory.timeline.ops)
    assert kernel in ops and kernel + "_backward" in ops
    assert "aten::_safe_softmax" not in ops  # no L x L attention matrix


def test_unregistered_module_inside_forward_keeps_the_outer_frames() -> None:
    # a module kept in a plain list is not in named_modules(): its call must not unwind the model's own frame
    class Outer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.hidden = [torch.nn.ReLU()]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.hidden[0](self.lin(x))

    r = torchcost.analyze(Outer(), torch.randn(2, 4))
    # alive when the model returns: its output, 2*4 float32 = 32 B (the Linear's output died inside forward)
    assert r.module("").activation_bytes == 2 * 4 * 4 == 32
    assert r.module("lin").activation_bytes == 2 * 4 * 4 == 32
