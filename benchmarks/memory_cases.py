"""The cases of the memory truth harness (benchmarks/memory_accuracy.py): small models across families, each with
its run (inference or a training step), optimizer, autocast and inputs.

Every case is small enough to run in seconds on one CPU thread. A case's ``why`` is the known reason a prediction
misses on a CPU, shown beside any case whose error is over 2 %; it is not used otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tests.memory.models import TinyGPT, small_cnn, small_mlp
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CASES", "Case"]

Built = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    build: Callable[[], Built]
    mode: str = "eval"  # "eval": inference under no_grad; "train": a steady-state training step
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None
    optimizer_label: str = ""
    amp: torch.dtype | None = None  # autocast dtype (CPU) for the forward and the loss
    why: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def run(self) -> str:
        what = "inference" if self.mode == "eval" else f"{self.optimizer_label} step"
        return f"{what}, bf16 autocast" if self.amp is not None else what


# -- optimizers --------------------------------------------------------------------------------------------------------

def _sgd(foreach: bool) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, foreach=foreach)


def _adam(foreach: bool) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda p: torch.optim.Adam(p, lr=1e-3, foreach=foreach)


def _adamw(foreach: bool) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=foreach)


# -- models ------------------------------------------------------------------------------------------------------------

def _mobilenet_v2(batch: int, size: int) -> Callable[[], Built]:
    def build() -> Built:
        import torchvision

        torch.manual_seed(0)
        return torchvision.models.mobilenet_v2(num_classes=10), (torch.randn(batch, 3, size, size),), {}
    return build


def _resnet18_bf16() -> Built:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(torch.bfloat16)
    return model, (torch.randn(2, 3, 64, 64, dtype=torch.bfloat16),), {}


def _resnet18(batch: int, size: int) -> Callable[[], Built]:
    def build() -> Built:
        import torchvision

        torch.manual_seed(0)
        return torchvision.models.resnet18(), (torch.randn(batch, 3, size, size),), {}
    return build


class GroupedBlock(nn.Module):
    """A ResNeXt-style bottleneck: 1x1 conv, 3x3 conv in 8 groups, 1x1 conv, each with BatchNorm, and a residual."""

    def __init__(self, channels: int = 64, width: int = 128, groups: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def _grouped(batch: int) -> Callable[[], Built]:
    def build() -> Built:
        torch.manual_seed(0)
        return GroupedBlock(), (torch.randn(batch, 64, 32, 32),), {}
    return build


class CheckpointedCNN(nn.Module):
    """Four conv-BN-ReLU blocks, each under torch.utils.checkpoint (non-reentrant) in training."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()) for _ in range(4))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.training else block(x)
        return self.head(x.mean((2, 3)))


def _checkpointed() -> Built:
    torch.manual_seed(0)
    return CheckpointedCNN(), (torch.randn(8, 3, 32, 32),), {}


def _cnn_bn() -> Built:
    return small_cnn(), (torch.randn(8, 3, 32, 32),), {}


def _rnn(kind: type[nn.RNNBase]) -> Callable[[], Built]:
    def build() -> Built:
        torch.manual_seed(0)
        return kind(128, 256), (torch.randn(50, 8, 128),), {}  # T=50, N=8, I=128, H=256, one layer
    return build


class SelfAttention(nn.Module):
    """nn.MultiheadAttention on (x, x, x), batch first: in eval under no_grad it takes the fused fast path
    (aten::_native_multi_head_attention)."""

    def __init__(self, dim: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def _mha() -> Built:
    torch.manual_seed(0)
    return SelfAttention(), (torch.randn(8, 64, 128),), {}


def _gpt(batch: int, dtype: torch.dtype = torch.float32) -> Callable[[], Built]:
    def build() -> Built:
        return TinyGPT().to(dtype), (torch.randint(0, 512, (batch, 64)),), {}
    return build


def _llama(use_cache: bool) -> Callable[[], Built]:
    def build() -> Built:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        config._attn_implementation = "sdpa"
        ids = torch.randint(0, 1000, (2, 64))
        return LlamaForCausalLM(config), (), {"input_ids": ids, "use_cache": use_cache}
    return build


def _mlp() -> Built:
    return small_mlp(), (torch.randn(32, 256),), {}


_BF16_MM_WHY = "oneDNN bf16 matmul: scratchpad inside mm/addmm (an entry covers it on avx512_bf16, one thread)"
_RNN_WHY = ("oneDNN RNN: scratch and reordered weights inside mkldnn_rnn_layer(_backward), not modelled (the uint8 "
            "workspace kept for backward, empty on meta, is counted once torchcost has its workspace entry)")

CASES: dict[str, Case] = {c.name: c for c in [
    # CNNs: depthwise (mobilenet_v2), grouped, BatchNorm, checkpointing, batch 1 and larger
    Case("mobilenet_v2-b1", "CNN, depthwise", _mobilenet_v2(1, 64),
         why="oneDNN depthwise conv: blocked copies inside the kernel (an entry covers the f32 shapes measured)"),
    Case("mobilenet_v2-b8", "CNN, depthwise", _mobilenet_v2(8, 64),
         why="oneDNN depthwise conv: blocked copies inside the kernel (an entry covers the f32 shapes measured)"),
    Case("mobilenet_v2-b4-sgd", "CNN, depthwise", _mobilenet_v2(4, 64), "train", _sgd(False), "SGD",
         why="oneDNN conv backward: blocked copies of src and diff_dst inside the kernel"),
    Case("grouped-b8", "CNN, grouped conv", _grouped(8),
         why="oneDNN grouped conv: blocked copies of input, weight and output inside the kernel (an entry "
             "covers the f32 shapes measured)"),
    Case("grouped-b8-adamw", "CNN, grouped conv", _grouped(8), "train", _adamw(False), "AdamW",
         why="oneDNN conv backward: blocked copies of src and diff_dst inside the kernel"),
    Case("cnn_bn-b8", "CNN, BatchNorm", _cnn_bn),
    Case("cnn_bn-b8-adamw", "CNN, BatchNorm", _cnn_bn, "train", _adamw(False), "AdamW",
         why="oneDNN conv backward: blocked copies of src and diff_dst inside the kernel"),
    Case("checkpoint-b8-adam", "CNN, checkpointing", _checkpointed, "train", _adam(False), "Adam",
         why="oneDNN conv backward: blocked copies of src and diff_dst inside the kernel"),
    Case("resnet18-b1-224", "CNN, oneDNN f32 conv", _resnet18(1, 224),
         why="oneDNN f32 conv (groups = 1): blocked copies inside the kernel (measured by a probe on a cpu target)"),
    Case("resnet18-b2-112-sgd", "CNN, oneDNN f32 conv", _resnet18(2, 112), "train", _sgd(False), "SGD",
         why="oneDNN conv forward and backward: blocked copies inside the kernel (measured by a probe)"),
    Case("resnet18-b2-112-adamw", "CNN, oneDNN f32 conv", _resnet18(2, 112), "train", _adamw(False), "AdamW",
         why="oneDNN conv forward and backward: blocked copies inside the kernel (measured by a probe)"),
    Case("resnet18-bf16-b2", "bf16 model", _resnet18_bf16,
         why="oneDNN bf16 conv: blocked copies of input and weight inside the kernel (an entry covers groups = 1, "
             "channels multiples of 16 or a 3-channel input, kernels not 1x1, on avx512_bf16)"),
    # RNNs
    Case("lstm-eval", "RNN", _rnn(nn.LSTM),
         why="oneDNN LSTM: reordered weight copies and scratch inside the kernel, not modelled"),
    Case("lstm-adam", "RNN", _rnn(nn.LSTM), "train", _adam(False), "Adam", why=_RNN_WHY),
    Case("gru-eval", "RNN", _rnn(nn.GRU), why="oneDNN GRU: reordered weights and scratch inside the kernel"),
    Case("gru-sgd", "RNN", _rnn(nn.GRU), "train", _sgd(False), "SGD", why=_RNN_WHY),
    # attention
    Case("gpt-sdpa-tied-b1", "transformer, SDPA, tied", _gpt(1)),
    Case("gpt-sdpa-tied-b8-adamw", "transformer, SDPA, tied", _gpt(8), "train", _adamw(False), "AdamW"),
    Case("mha-fastpath-eval", "nn.MultiheadAttention", _mha),
    Case("mha-adamw", "nn.MultiheadAttention", _mha, "train", _adamw(False), "AdamW",
         why="x is q, k and v: autograd sums their gradients in place on real tensors (followed since the gradient-sum "
             "rule); the CPU flash-attention backward's own copy of grad_out is probed"),
    Case("llama-kvcache-eval", "Llama (HF), KV cache", _llama(True)),
    Case("llama-adamw", "Llama (HF)", _llama(False), "train", _adamw(False), "AdamW",
         why="over: on fake tensors HF's mask code believes it is being traced and builds an explicit causal mask "
             "and repeats the key/value heads (extra tensors saved for backward); the real run uses is_causal"),
    # reduced precision
    Case("gpt-bf16-model-b4", "bf16 model", _gpt(4, torch.bfloat16),
         why=_BF16_MM_WHY),
    Case("gpt-bf16-model-b4-adamw", "bf16 model", _gpt(4, torch.bfloat16), "train", _adamw(False), "AdamW",
         why=_BF16_MM_WHY),
    Case("gpt-autocast-b4", "bf16 autocast", _gpt(4), amp=torch.bfloat16,
         why=_BF16_MM_WHY),
    Case("mlp-autocast-adamw", "bf16 autocast", _mlp, "train", _adamw(False), "AdamW", amp=torch.bfloat16,
         why=_BF16_MM_WHY),
    # optimizers, foreach on and off
    *(Case(f"mlp-{name.lower()}-foreach-{'on' if fe else 'off'}", "MLP, optimizers", _mlp, "train", make(fe),
           f"{name} (foreach={fe})")
      for name, make in (("SGD", _sgd), ("Adam", _adam), ("AdamW", _adamw)) for fe in (True, False)),
]}
