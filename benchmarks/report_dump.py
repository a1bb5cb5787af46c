"""Every report of a set of cases as one JSON document, to diff two versions of torchcost: a change that should
leave reports as they were (a faster way to build them) leaves this file byte-identical.

    python -m benchmarks.report_dump OUT.json [CASE ...]

Cases cover the shapes of module tree the report builder treats apart: plain trees (torchvision CNNs, a ViT, GPT-2),
tied weights, one module under several names, a parameter held by a module and its child, an empty child slot, an
LSTM, eval and training steps, memory off, a meta model and a simulated distributed rank.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import torchcost
from torchcost.report import CostReport
from torchcost.resolve import resolve

__all__ = ["CASES", "dump"]


def _torchvision(name: str, size: int = 224, **options: Any) -> Callable[[], CostReport]:
    def case() -> CostReport:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None).eval()
        return torchcost.analyze(model, torch.randn(1, 3, size, size), **options)

    return case


def _hf(spec: str, seq_len: int, **options: Any) -> Callable[[], CostReport]:
    def case() -> CostReport:
        built = resolve(spec, seq_len=seq_len)
        return torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, **options)

    return case


class _Tied(nn.Module):
    """An embedding and an output head sharing one weight, and a parameter held by a module and its child."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.body = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 100, bias=False)
        self.head.weight = self.embed.weight
        self.body.scale = self.body[0].bias  # held by body and by body.0
        self.register_buffer("pos", torch.zeros(16))
        self.body.register_buffer("pos", self.pos)  # a buffer held under two names
        self.register_module("gone", None)  # a child slot left empty

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(ids) + self.pos))


def _tied(mode: str) -> Callable[[], CostReport]:
    def case() -> CostReport:
        return torchcost.analyze(_Tied(), torch.randint(0, 100, (2, 5)), mode=mode)  # type: ignore[arg-type]

    return case


def _twice(mode: str) -> CostReport:
    block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    model = nn.Sequential(nn.Linear(8, 8), *[block] * 3, nn.Sequential(block, nn.Linear(8, 4)))
    return torchcost.analyze(model, torch.randn(2, 8), mode=mode)  # type: ignore[arg-type]


class _LSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


def _lstm() -> CostReport:
    return torchcost.analyze(_LSTM(), torch.randn(2, 7, 16), mode="train")


def _llama() -> CostReport:
    built = resolve("hf:llama-3-8b", meta=True, seq_len=16, config={"num_hidden_layers": 2})
    return torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, target="cuda")


def _parallel() -> CostReport:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    return torchcost.analyze(model, torch.randn(4, 32), mode="train", parallel=torchcost.Parallel(fsdp=2, rank=0))


CASES: dict[str, Callable[[], CostReport]] = {
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    "mobilenet_v2-no-memory": _torchvision("mobilenet_v2", memory=False),
    "resnet18": _torchvision("resnet18"),
    "resnet18-train-sgd": _torchvision("resnet18", 64, mode="train", optimizer="sgd"),
    "efficientnet_b0": _torchvision("efficientnet_b0"),
    "vit_b_16": _torchvision("vit_b_16"),
    "gpt2": _hf("hf:gpt2", 32),
    "gpt2-train": _hf("hf:gpt2", 32, mode="train"),
    "tied": _tied("eval"),
    "tied-train": _tied("train"),
    "tied-no-memory": lambda: torchcost.analyze(_Tied(), torch.randint(0, 100, (2, 5)), memory=False),
    "twice": lambda: _twice("eval"),
    "twice-train": lambda: _twice("train"),
    "lstm-train": _lstm,
    "llama-meta": _llama,
    "parallel-fsdp2": _parallel,
}


def dump(names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        torch.manual_seed(0)
        start = time.perf_counter()
        out[name] = CASES[name]().to_dict()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return out


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m benchmarks.report_dump OUT.json [CASE ...]")
    names = argv[1:] or list(CASES)
    with open(argv[0], "w") as f:
        json.dump(dump(names), f, indent=1, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
