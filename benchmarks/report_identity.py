"""Reports of a fixed set of analyses, written as one JSON file, so that two versions of torchcost can be compared
byte for byte: a change meant to make a run faster must leave every figure as it was.

    python -m benchmarks.report_identity --out before.json     # on the base commit
    python -m benchmarks.report_identity --out after.json      # with the change
    python -m benchmarks.report_identity --out after.json --against before.json

The cases cover the training step (named optimizers and instances, a warm instance, frozen and tied parameters,
amp, activation checkpointing, a meta model, a simulated FSDP rank), eval runs of the benchmark CNNs and a ViT, and
the module trees the report builder treats apart (tied weights, a parameter held by a module and its child, a buffer
under two names, an empty child slot, one module under several names), a meta llama for a cuda target; about a
minute in all. Every report's ``to_dict()`` is kept, with the torch and torchcost versions left out.
It prints one line per case that differs (with the first differing path) and a summary line; nothing else.
``--repeat 2`` keeps each case's second analysis: the one that runs planned leaf modules past the modes.
``--shuffle SEED`` runs the cases in another order (compare with a run in the usual order: the same reports).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CASES", "main", "reports"]


def _mlp(n: int = 4, width: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(m for _ in range(n) for m in (nn.Linear(width, width), nn.ReLU())))


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.frozen = nn.Linear(32, 32)
        self.frozen.requires_grad_(False)
        self.body = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32), nn.LayerNorm(32))
        self.head = nn.Linear(32, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.frozen(self.embed(ids))))


class _Checkpointed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.utils.checkpoint as cp

        x = torch.relu(self.stem(x))
        x = cp.checkpoint(self.block, x, use_reentrant=False)
        return self.head(x.flatten(1))


class TwoLayerLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class _Shared(nn.Module):
    """What the report builder treats apart: an embedding and a head sharing one weight, a parameter held by a module
    and its child, a buffer under two names, an empty child slot."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(100, 16)
        self.body = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 100, bias=False)
        self.head.weight = self.embed.weight
        self.body.scale = self.body[0].bias  # held by body and by body.0
        self.register_buffer("pos", torch.zeros(16))
        self.body.register_buffer("pos", self.pos)
        self.register_module("gone", None)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(ids) + self.pos))


def _twice() -> nn.Module:
    """One module object under several names (``Sequential(*[block] * 3)``), and inside another parent too."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    return nn.Sequential(nn.Linear(8, 8), *[block] * 3, nn.Sequential(block, nn.Linear(8, 4)))


def _llama_meta() -> dict[str, Any]:
    from torchcost.resolve import resolve

    r = resolve("hf:llama-3-8b", meta=True, seq_len=16, config={"num_hidden_layers": 2})
    return {"model": r.model, "args": r.args, "kwargs": r.kwargs, "target": "cuda"}


def _torchvision(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    model: nn.Module = getattr(torchvision.models, name)(weights=None)
    return model


def _gpt2() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    from torchcost.resolve import resolve

    r = resolve("hf:gpt2", seq_len=32, config={"n_layer": 2})
    return r.model, r.args, r.kwargs


def _warm_adam() -> dict[str, Any]:
    model = _mlp(3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=0.01)
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    return {"model": model, "args": (torch.randn(2, 64),), "mode": "train", "optimizer": opt}


def _case(model: Callable[[], nn.Module], *args: Any, **options: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        torch.manual_seed(0)
        built = model()
        made = tuple(a() if callable(a) else a for a in args)
        extra = {k: (v(built) if k == "optimizer" and callable(v) else v) for k, v in options.items()}
        return {"model": built, "args": made, **extra}
    return make


def _gpt2_case(**options: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        torch.manual_seed(0)
        model, args, kwargs = _gpt2()
        return {"model": model, "args": args, "kwargs": kwargs, **options}
    return make


def _x(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(*shape)


def _parallel_case() -> dict[str, Any]:
    from torchcost.parallel.config import Parallel

    return {"model": _mlp(4, 32), "args": (torch.randn(4, 32),), "mode": "train",
            "parallel": Parallel(fsdp=2, rank=0)}


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "mlp-train-adamw": _case(_mlp, _x(2, 64), mode="train"),
    "mlp-train-sgd": _case(_mlp, _x(2, 64), mode="train", optimizer="sgd"),
    "mlp-train-adam": _case(_mlp, _x(2, 64), mode="train", optimizer="adam"),
    "mlp-train-adam-instance": _case(_mlp, _x(2, 64), mode="train",
                                     optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-4, amsgrad=True)),
    "mlp-train-sgd-instance-foreach": _case(
        _mlp, _x(2, 64), mode="train",
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, foreach=True)),
    "mlp-train-adamw-fused": _case(_mlp, _x(2, 64), mode="train",
                                   optimizer=lambda m: torch.optim.AdamW(m.parameters(), fused=True)),
    "mlp-train-rmsprop-instance": _case(_mlp, _x(2, 64), mode="train",
                                        optimizer=lambda m: torch.optim.RMSprop(m.parameters(), momentum=0.5)),
    "mlp-train-warm-adam-instance": _warm_adam,
    "mlp-train-meta-device": _case(_mlp, _x(2, 64), mode="train", device="meta"),
    "mlp-train-cuda-target": _case(_mlp, _x(2, 64), mode="train", target="cuda"),
    "mlp-train-no-memory": _case(_mlp, _x(2, 64), mode="train", memory=False),
    "mlp-train-bf16": _case(_mlp, _x(2, 64), mode="train", amp="bf16"),
    "tied-frozen-train": _case(_Tied, lambda: torch.randint(0, 50, (2, 8)), mode="train"),
    "checkpointed-train": _case(_Checkpointed, _x(2, 3, 16, 16), mode="train"),
    "lstm-train": _case(TwoLayerLSTM, _x(2, 10, 16), mode="train"),
    "resnet18-train": _case(lambda: _torchvision("resnet18"), _x(1, 3, 64, 64), mode="train"),
    "resnet18-train-bf16": _case(lambda: _torchvision("resnet18"), _x(1, 3, 64, 64), mode="train", amp="bf16"),
    "mobilenet_v2-train": _case(lambda: _torchvision("mobilenet_v2"), _x(1, 3, 64, 64), mode="train"),
    "gpt2-train": _gpt2_case(mode="train"),
    "gpt2-eval": _gpt2_case(),
    "mlp-fsdp2-rank0-train": _parallel_case,
    "mlp-eval": _case(_mlp, _x(2, 64)),
    "resnet18-eval": _case(lambda: _torchvision("resnet18"), _x(1, 3, 64, 64)),
    "resnet18-eval-meta": _case(lambda: _torchvision("resnet18"), _x(1, 3, 64, 64), device="meta"),
    "resnet18-train-sgd": _case(lambda: _torchvision("resnet18"), _x(1, 3, 64, 64), mode="train", optimizer="sgd"),
    "mobilenet_v2-eval-224": _case(lambda: _torchvision("mobilenet_v2"), _x(1, 3, 224, 224)),
    "mobilenet_v2-eval-no-memory": _case(lambda: _torchvision("mobilenet_v2"), _x(1, 3, 224, 224), memory=False),
    "efficientnet_b0-eval-224": _case(lambda: _torchvision("efficientnet_b0"), _x(1, 3, 224, 224)),
    "vit_b_16-eval-224": _case(lambda: _torchvision("vit_b_16"), _x(1, 3, 224, 224)),
    "shared-eval": _case(_Shared, lambda: torch.randint(0, 100, (2, 5))),
    "shared-train": _case(_Shared, lambda: torch.randint(0, 100, (2, 5)), mode="train"),
    "shared-no-memory": _case(_Shared, lambda: torch.randint(0, 100, (2, 5)), memory=False),
    "twice-eval": _case(_twice, _x(2, 8)),
    "twice-train": _case(_twice, _x(2, 8), mode="train"),
    "llama-meta-cuda": _llama_meta,
}

_VOLATILE = ("torch_version", "torchcost_version")


def reports(names: list[str] | None = None, repeat: int = 1, shuffle: int | None = None) -> dict[str, Any]:
    """Each case's report as a dict (or the error it raised, as text); with ``repeat``, the last of that many
    analyses of the case (a leaf module's plan is checked on its first call and used after: collect/leaves.py).
    ``shuffle``: the cases run in an order drawn with this seed, not in :data:`CASES`'s (what the process keeps
    from one analysis for the next, collect/fakeops.py's answers, collect/tape.py's tapes, the planned calls'
    kernel memory, must not depend on which case ran before)."""
    import torchcost

    order = list(CASES)
    if shuffle is not None:
        random.Random(shuffle).shuffle(order)
    out: dict[str, Any] = {}
    for name in order:
        if names and name not in names:
            continue
        make = CASES[name]
        spec = make()
        model, args = spec.pop("model"), spec.pop("args")
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                for _ in range(repeat):
                    report = torchcost.analyze(model, *args, **spec)
            d = report.to_dict()
            for key in _VOLATILE:
                d.pop(key, None)
            out[name] = d
        except Exception as exc:  # an error is an outcome to compare too
            out[name] = f"error: {type(exc).__name__}: {exc}"
    return out


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Where two reports' dicts differ, one line each: a path and what is there on either side (a key on one side
    only, or a list of another length, is one difference)."""
    if type(a) is not type(b):
        yield f"{path or '.'}: {type(a).__name__} vs {type(b).__name__}"
    elif isinstance(a, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                yield f"{path}.{key}: only in {'after' if key not in a else 'before'}"
            else:
                yield from differences(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} items vs {len(b)}"
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {a!r:.80} vs {b!r:.80}"


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    return next(differences(a, b, path), "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the reports (JSON)")
    parser.add_argument("--against", help="a file an earlier run wrote: compare with it")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="analyse each case this many times, keep the last")
    parser.add_argument("--shuffle", type=int, metavar="SEED",
                        help="run the cases in an order drawn with this seed (the file is written sorted as always)")
    ns = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = [n for n in ns.cases.split(",") if n]
    got = reports(names, max(1, ns.repeat), ns.shuffle)
    text = json.dumps(got, indent=1, sort_keys=True)
    Path(ns.out).write_text(text + "\n")
    errors = sum(isinstance(v, str) for v in got.values())
    if not ns.against:
        print(f"{len(got)} reports written to {ns.out} ({errors} ended in an error)")
        return 0
    before = json.loads(Path(ns.against).read_text())
    differ = 0
    for name, report in got.items():
        if name not in before:
            print(f"{name}: not in {ns.against}")
            differ += 1
        elif before[name] != json.loads(json.dumps(report)):
            print(f"{name}: differs at {_first_difference(before[name], json.loads(json.dumps(report)))}")
            differ += 1
    print(f"{len(got)} reports, {len(got) - differ} identical to {ns.against}, {differ} differ"
          f" ({errors} ended in an error)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
