"""A training step's exact FLOPs (torchcost, mode="train": forward, loss, backward, recompute, AdamW step) against the
rules of thumb that other tools and papers use instead of counting:

- **3 x forward** (calflops: backward = 2 x forward);
- **6ND** (6 x trainable parameters x tokens; token models only);
- **DeepSpeed** (its flops profiler's estimate: forward x 3, plus one more forward when activation checkpointing is
  on).

Each rule's error is relative to the exact step total (every phase, the optimizer included). Run it with
``python -m benchmarks.training_step`` (``--quick``: the small cases only; ``--no-docs``: print, leave
docs/benchmarks.md alone). Large models run on the meta device (shapes only).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import torchcost
from benchmarks.docs import replace_section
from torchcost.report import CostReport
from torchcost.resolve import resolve
from torchcost.resolve.common import Resolved
from torchcost.units import format_count

__all__ = ["CASES", "HEADING", "Checkpointed", "LoRAStack", "Result", "TrainCase", "markdown_section", "measure",
           "table", "write_docs"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADING = "## Training step: exact FLOPs vs rules of thumb"


# -- the two hand-built models -------------------------------------------------------------------------------------

class LoRALinear(nn.Module):
    """A frozen ``Linear(d, d)`` plus a trainable rank-``r`` adapter: ``base(x) + up(down(x))``."""

    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        self.base = nn.Linear(d, d)
        self.base.requires_grad_(False)
        self.down = nn.Linear(d, r, bias=False)
        self.up = nn.Linear(r, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + self.up(self.down(x))
        return out


class LoRAStack(nn.Module):
    """A token model whose base is frozen (embedding, ``layers`` Linear+GELU, head), LoRA adapters the only trainable
    parameters: the backward computes input gradients through every frozen layer, weight gradients for none."""

    def __init__(self, vocab: int = 8000, d: int = 1024, layers: int = 8, r: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(LoRALinear(d, r) for _ in range(layers))
        self.head = nn.Linear(d, vocab, bias=False)
        self.embed.requires_grad_(False)
        self.head.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = nn.functional.gelu(block(x))
        out: torch.Tensor = self.head(x)
        return out


class Block(nn.Module):
    """A pre-norm MLP block with a residual: ``x + fc2(gelu(fc1(norm(x))))``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))
        return out


class Checkpointed(nn.Module):
    """A token model whose every block runs under ``torch.utils.checkpoint`` (non-reentrant): the backward runs each
    block's forward again."""

    def __init__(self, vocab: int = 8000, d: int = 512, layers: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        out: torch.Tensor = self.head(x)
        return out


def _local(model: Callable[[], nn.Module], name: str, batch: int = 4, seq: int = 128) -> Callable[[], Resolved]:
    def build() -> Resolved:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = model()
            ids = torch.randint(0, 8000, (batch, seq))
        return Resolved(net, (ids,), {}, f"{name}, input_ids {batch}x{seq}", f"local:{name}", name)

    return build


def _spec(spec: str, **options: object) -> Callable[[], Resolved]:
    return lambda: resolve(spec, **options)  # type: ignore[arg-type]


# -- the cases -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainCase:
    name: str
    input: str
    build: Callable[[], Resolved]
    checkpointed: bool = False
    quick: bool = False


CASES: tuple[TrainCase, ...] = (
    TrainCase("resnet50", "1x3x224x224, meta", _spec("torchvision:resnet50", meta=True)),
    TrainCase("vit_b_16", "1x3x224x224, meta", _spec("torchvision:vit_b_16", meta=True)),
    TrainCase("gpt2", "input_ids 1x128, meta", _spec("hf:gpt2", meta=True, seq_len=128)),
    TrainCase("llama-3-8b", "input_ids 1x128, meta", _spec("hf:llama-3-8b", meta=True, seq_len=128)),
    TrainCase("llama-3-8b", "input_ids 1x2048, meta", _spec("hf:llama-3-8b", meta=True, seq_len=2048)),
    TrainCase("lora-stack", "input_ids 4x128; 8 frozen Linear(1024) + rank-8 adapters",
              _local(LoRAStack, "lora-stack"), quick=True),
    TrainCase("checkpointed-mlp", "input_ids 4x128; 8 MLP blocks (512), each checkpointed",
              _local(Checkpointed, "checkpointed-mlp"), checkpointed=True, quick=True),
)


@dataclass(frozen=True)
class Result:
    """One case: the exact phases and what each rule says."""

    name: str
    input: str
    trainable: int
    tokens: int
    forward: int  # FLOPs
    backward: int
    recompute: int
    optimizer: int
    step: int  # every phase: forward, loss, backward, recompute, optimizer
    seconds: float
    checkpointed: bool

    @property
    def rule_3x(self) -> int:
        return 3 * self.forward

    @property
    def rule_6nd(self) -> int | None:
        return 6 * self.trainable * self.tokens if self.tokens else None

    @property
    def rule_deepspeed(self) -> int:
        return (4 if self.checkpointed else 3) * self.forward

    def off(self, rule: int | None) -> str:
        """How far ``rule`` is from the exact step, in % of it (negative: the rule says less)."""
        return "—" if rule is None else f"{100 * (rule - self.step) / self.step:+.1f}%"


def measure(case: TrainCase) -> Result:
    """Build ``case`` and analyse one training step (AdamW, the default loss)."""
    built = case.build()
    start = time.perf_counter()
    r: CostReport = torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, mode="train", memory=False)
    seconds = time.perf_counter() - start
    return Result(case.name, case.input, r.trainable_params, r.tokens, r.flops, r.phase("backward").flops,
                  r.phase("recompute").flops, r.phase("optimizer").flops, r.step_flops, seconds, case.checkpointed)


# -- output --------------------------------------------------------------------------------------------------------

_HEADER = ("model", "input", "trainable params", "forward", "backward", "recompute", "optimizer", "exact step",
           "3 x forward", "6ND", "DeepSpeed")


def _cells(r: Result) -> list[str]:
    n6 = r.rule_6nd
    return [r.name, r.input, format_count(r.trainable), format_count(r.forward), format_count(r.backward),
            format_count(r.recompute), format_count(r.optimizer), format_count(r.step),
            f"{format_count(r.rule_3x)} ({r.off(r.rule_3x)})",
            "—" if n6 is None else f"{format_count(n6)} ({r.off(n6)})",
            f"{format_count(r.rule_deepspeed)} ({r.off(r.rule_deepspeed)})"]


def table(results: Sequence[Result]) -> str:
    """A Markdown table (it reads as plain text too): one row per case, every figure in FLOPs."""
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join(":--" if i < 2 else "--:" for i in range(len(_HEADER)))
             + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"


def markdown_section(results: Sequence[Result], seconds: float, extra: str = "") -> str:
    """The docs section: how it was made, the table, and ``extra`` (e.g. the llama-3-70b timing) after it."""
    out = [
        HEADING, "",
        f"Generated on {time.strftime('%Y-%m-%d')} by `python -m benchmarks.training_step` ({seconds:.0f} s; torch "
        f"{torch.__version__}, 1 thread). Exact: `torchcost.analyze(..., mode=\"train\")`, one step with AdamW and "
        "the default loss (`out.float().pow(2).mean()`); **exact step** is every phase (forward, loss, backward, "
        "recompute, optimizer). Each rule is shown with its error in % of the exact step (negative: the rule says "
        "less). **3 x forward**: calflops' training estimate (backward = 2 x forward). **6ND**: 6 x trainable "
        "parameters x tokens (token models; the tokens are input_ids' elements). **DeepSpeed**: its flops "
        "profiler's estimate, forward x 3, plus one more forward with activation checkpointing on. All FLOPs.",
        "",
        table(results).rstrip("\n"),
        "",
        "What the rules miss: the backward of the first layer computes no input gradient (its input needs none); "
        "frozen parameters compute no weight gradient (the LoRA stack's backward is about 1 x forward, not 2 x, "
        "and 6ND with N = the adapters' parameters is off by two orders of magnitude); elementwise ops' backward "
        "is not 2 x their forward; the optimizer (AdamW: about a dozen FLOPs a parameter) is in none of them. "
        "Checkpointing re-runs less than a whole forward: the embedding and head are not checkpointed, and "
        "PyTorch's non-reentrant checkpoint stops re-running a block once it has re-made the tensors the backward "
        "needs (here fc2, whose output nothing saves, is not re-run), so the recompute is about half the blocks' "
        "forward and DeepSpeed's extra forward overshoots. 6ND counts the embedding's parameters as if they did "
        "matmul work and leaves out attention's score and value products, which grow with the sequence (compare "
        "llama-3-8b at 128 and 2048 tokens).",
    ]
    if extra:
        out += ["", extra]
    return "\n".join(out) + "\n"


def write_docs(section: str, path: Path = DOCS) -> None:
    """Replace this benchmark's section of ``path`` (docs/benchmarks.md) with ``section``."""
    replace_section(path, HEADING, section)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the two small hand-built cases only")
    p.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    p.add_argument("--extra", default="", help="a paragraph to put after the table (e.g. a timing)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    results = []
    for case in CASES:
        if args.quick and not case.quick:
            continue
        results.append(measure(case))
        print(f"{case.name}: {results[-1].seconds:.1f} s", flush=True)
    seconds = time.perf_counter() - start
    print(table(results))
    if not args.no_docs and not args.quick:
        write_docs(markdown_section(results, seconds, args.extra))
        print(f"wrote {DOCS.name}: {HEADING}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
