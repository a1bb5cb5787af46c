"""The configurations of the distributed truth (benchmarks/distributed_truth.py, issue 12): the same model, inputs,
wrapping and optimizer for the real gloo run and for torchcost's simulated rank.

Everything here is plain data plus builder functions, so that the truth harness and the predictor build the very same
thing:

    case = CASES["mlp_fsdp_w2"]
    model = build_model(case)                      # seeded: every rank builds the same full model
    mesh = make_mesh(case)                         # needs an initialised process group (gloo or fake)
    model = apply_strategy(model, case, mesh)      # TP plan -> activation checkpointing -> FSDP2 / DDP
    args, kwargs = make_inputs(case, dp_rank(case, mesh))
    opt = make_optimizer(case, model.parameters())
    loss = loss_fn(model(*args, **kwargs))

Strategies: "fsdp" (FSDP2 ``fully_shard`` per block, then the root; ``reshard_after_forward=True``), "fsdp_noreshard"
(``False``), "fsdp_bf16" (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``), "ddp"
(``DistributedDataParallel(bucket_cap_mb=...)``), "tp" (tensor parallel over the whole world with a torchtitan-style
Colwise/Rowwise plan) and "fsdp_tp" (a (world/2, 2) mesh named ("dp", "tp"): TP on "tp", FSDP2 on "dp").
Activation checkpointing per block: "fn" (the block's forward runs under ``torch.utils.checkpoint.checkpoint(...,
use_reentrant=False)``, the module tree unchanged) or "wrapper" (``checkpoint_wrapper(block, NO_REENTRANT)`` replaces
the block in its ModuleList, which adds ``_checkpoint_wrapped_module`` to the parameter names).

Known constraints (from the feasibility study): TP-only with a foreach AdamW fails (the norms stay plain tensors
beside DTensors), so the tp cases use ``foreach=False``; HF Llama needs ``num_key_value_heads % tp == 0``; sequence
parallel would need explicit ``position_ids`` (the Llama inputs always pass them).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tests.memory.truth import first_float
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CASES", "DistCase", "apply_strategy", "blocks_of", "build_model", "dp_rank", "loss_fn",
           "make_inputs", "make_mesh", "make_optimizer"]

STRATEGIES = ("fsdp", "fsdp_noreshard", "fsdp_bf16", "ddp", "tp", "fsdp_tp")


@dataclass(frozen=True)
class DistCase:
    name: str
    model: str  # "mlp" | "cnn" | "gpt2" | "llama"
    strategy: str  # one of STRATEGIES
    world: int  # processes (ranks)
    batch: int  # per data-parallel rank
    seq: int = 0  # tokens (mlp, gpt2, llama); the image side for "cnn"
    ckpt: str | None = None  # None | "fn" | "wrapper": activation checkpointing per block
    bucket_cap_mb: float = 1.0  # ddp only
    foreach: bool = True  # AdamW's foreach (False for tp: mixed Tensor/DTensor parameters)
    tp: int = 1  # tensor-parallel degree
    note: str = ""

    @property
    def dtype(self) -> str:
        """The compute dtype of the parameters in the step ("fp32", or "bf16/fp32" for bf16 params, fp32 reduce)."""
        return "bf16/fp32" if self.strategy == "fsdp_bf16" else "fp32"

    @property
    def fsdp(self) -> bool:
        return self.strategy.startswith("fsdp")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dtype": self.dtype}


_C = DistCase
CASES: dict[str, DistCase] = {c.name: c for c in (
    # -- MLP: 4 residual blocks Linear(512, 2048) / GELU / Linear(2048, 512), 8.4 M parameters
    _C("mlp_fsdp_w2", "mlp", "fsdp", 2, batch=4, seq=32, note="the fast check"),
    _C("mlp_fsdp_noreshard_w2", "mlp", "fsdp_noreshard", 2, batch=4, seq=32),
    _C("mlp_fsdp_ckpt_w2", "mlp", "fsdp", 2, batch=4, seq=32, ckpt="fn"),
    _C("mlp_fsdp_bf16_w2", "mlp", "fsdp_bf16", 2, batch=4, seq=32),
    _C("mlp_fsdp_w4", "mlp", "fsdp", 4, batch=4, seq=32),
    _C("mlp_ddp_w2", "mlp", "ddp", 2, batch=4, seq=32, bucket_cap_mb=1.0),
    _C("mlp_tp_w2", "mlp", "tp", 2, batch=4, seq=32, tp=2, foreach=False),
    _C("mlp_tp_ckpt_w2", "mlp", "tp", 2, batch=4, seq=32, tp=2, foreach=False, ckpt="wrapper"),
    # -- CNN with BatchNorm; 30/60/120 channels: uneven FSDP shards at 4 ranks (8, 8, 8, 6 rows of 30)
    _C("cnn_fsdp_w4", "cnn", "fsdp", 4, batch=8, seq=32, note="uneven shards"),
    _C("cnn_ddp_w2", "cnn", "ddp", 2, batch=8, seq=32, bucket_cap_mb=1.0, note="BatchNorm: DDP broadcasts buffers"),
    # -- GPT-2, 2 layers, n_embd 128, vocab 1003 (uneven wte shards), tied lm_head
    _C("gpt2_fsdp_w2", "gpt2", "fsdp", 2, batch=4, seq=64),
    _C("gpt2_fsdp_bf16_ckpt_w2", "gpt2", "fsdp_bf16", 2, batch=4, seq=64, ckpt="wrapper"),
    _C("gpt2_ddp_ckpt_w2", "gpt2", "ddp", 2, batch=4, seq=64, ckpt="fn", bucket_cap_mb=1.0),
    _C("gpt2_tp_w2", "gpt2", "tp", 2, batch=4, seq=64, tp=2, foreach=False, note="torchcost's built-in Conv1D plan"),
    # -- Llama, 2 layers, hidden 256, 8 heads, 2 kv heads (GQA), sdpa
    _C("llama_fsdp_bf16_w4", "llama", "fsdp_bf16", 4, batch=2, seq=64),
    _C("llama_fsdp_noreshard_w2", "llama", "fsdp_noreshard", 2, batch=2, seq=64),
    _C("llama_tp_w2", "llama", "tp", 2, batch=2, seq=64, tp=2, foreach=False),
    _C("llama_fsdp_tp_w4", "llama", "fsdp_tp", 4, batch=2, seq=64, tp=2),
    _C("llama_fsdp_tp_ckpt_w4", "llama", "fsdp_tp", 4, batch=2, seq=64, tp=2, ckpt="fn"),
)}


# -- models --------------------------------------------------------------------------------------------------------

class MLPBlock(nn.Module):
    def __init__(self, d: int = 512, h: int = 2048) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(h, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class MLP(nn.Module):
    def __init__(self, d: int = 512, h: int = 2048, n: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MLPBlock(d, h) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class CNN(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (30, 60, 120), classes: int = 10) -> None:
        super().__init__()
        chans = (3, *channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                          nn.BatchNorm2d(cout), nn.ReLU())
            for i, (cin, cout) in enumerate(itertools.pairwise(chans)))
        self.head = nn.Linear(chans[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean((2, 3)))


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=1003, n_positions=128, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = "eager"
    return GPT2LMHeadModel(cfg)


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=1000, max_position_embeddings=256, tie_word_embeddings=False,
                      use_cache=False)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


_BUILDERS = {"mlp": MLP, "cnn": CNN, "gpt2": _gpt2, "llama": _llama}


def build_model(case: DistCase, seed: int = 0) -> nn.Module:
    """The full (unwrapped) model, seeded: every rank builds identical weights. Training mode."""
    torch.manual_seed(seed)
    return _BUILDERS[case.model]().train()


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The per-block ModuleList (the FSDP2 units and the checkpointed regions)."""
    if isinstance(model, (MLP, CNN)):
        return model.blocks
    if hasattr(model, "transformer"):  # GPT-2
        return model.transformer.h
    return model.model.layers  # Llama


# -- inputs, optimizer, loss ---------------------------------------------------------------------------------------

def dp_rank(case: DistCase, mesh: Any) -> int:
    """The data-parallel coordinate of this rank (ranks of one TP group must see the same batch)."""
    import torch.distributed as dist

    if case.strategy == "tp":
        return 0
    if case.strategy == "fsdp_tp":
        return int(mesh["dp"].get_local_rank())
    return dist.get_rank()


def make_inputs(case: DistCase, dp: int = 0) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of the forward for data-parallel rank ``dp`` (seeded by it)."""
    g = torch.Generator().manual_seed(1000 + dp)
    if case.model == "mlp":
        return (torch.randn(case.batch, case.seq, 512, generator=g),), {}
    if case.model == "cnn":
        return (torch.randn(case.batch, 3, case.seq, case.seq, generator=g),), {}
    vocab = 1003 if case.model == "gpt2" else 1000
    ids = torch.randint(0, vocab, (case.batch, case.seq), generator=g)
    kwargs: dict[str, Any] = {"input_ids": ids}
    if case.model == "llama":
        kwargs["position_ids"] = torch.arange(case.seq)[None]  # needed under sequence parallel; harmless otherwise
    return (), kwargs


def make_optimizer(case: DistCase, params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, foreach=case.foreach)


def loss_fn(out: Any) -> torch.Tensor:
    """torchcost's default loss: the first floating output (HF: the logits) as float32, squared, mean."""
    t = first_float(out)
    assert t is not None, "the output holds no floating tensor"
    return t.float().pow(2).mean()


# -- wrapping ------------------------------------------------------------------------------------------------------

def make_mesh(case: DistCase) -> Any:
    """The DeviceMesh (cpu) of the case; the process group must exist. 2-D ("dp", "tp") for fsdp_tp."""
    from torch.distributed.device_mesh import init_device_mesh

    if case.strategy == "fsdp_tp":
        return init_device_mesh("cpu", (case.world // case.tp, case.tp), mesh_dim_names=("dp", "tp"))
    return init_device_mesh("cpu", (case.world,))


def _tp_plan(model: nn.Module, case: DistCase, tp_mesh: Any) -> None:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    if case.model == "mlp":
        for b in blocks_of(model):
            parallelize_module(b, tp_mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()})
        return
    if case.model == "gpt2":  # torchcost's built-in plan (Conv1D styles, local split_size, tied wte/lm_head)
        import torchcost
        from torchcost.parallel.strategy import apply_strategy as builtin

        builtin(model, torchcost.Parallel(tp=case.tp), tp_mesh)
        return
    if case.model != "llama":
        raise ValueError(f"no TP plan for {case.model}")
    # torchtitan's Llama plan without sequence parallel
    parallelize_module(model, tp_mesh, {
        "model.embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
        "lm_head": ColwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
    })
    for layer in blocks_of(model):
        parallelize_module(layer, tp_mesh, {
            "self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel(),
            "mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel(),
        })


def _checkpointed_forward(forward: Any, *args: Any, **kwargs: Any) -> Any:
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def _apply_ckpt(model: nn.Module, how: str) -> None:
    blocks = blocks_of(model)
    for i, b in enumerate(blocks):
        if how == "fn":
            b.forward = functools.partial(_checkpointed_forward, b.forward)  # type: ignore[method-assign]
        elif how == "wrapper":
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

            blocks[i] = checkpoint_wrapper(b, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        else:
            raise ValueError(f"unknown checkpointing {how!r}")


def apply_strategy(model: nn.Module, case: DistCase, mesh: Any) -> nn.Module:
    """Wrap ``model`` for ``case`` on ``mesh`` (from make_mesh), in torchtitan's order: TP plan, then activation
    checkpointing per block, then FSDP2 (each block, then the root) or DDP. Returns the model to train (the DDP
    wrapper for "ddp", else ``model`` itself)."""
    if case.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {case.strategy!r}")
    if case.strategy in ("tp", "fsdp_tp"):
        _tp_plan(model, case, mesh["tp"] if case.strategy == "fsdp_tp" else mesh)
    if case.ckpt:
        _apply_ckpt(model, case.ckpt)
    if case.fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kw: dict[str, Any] = {"mesh": mesh["dp"] if case.strategy == "fsdp_tp" else mesh,
                              "reshard_after_forward": case.strategy != "fsdp_noreshard"}
        if case.strategy == "fsdp_bf16":
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for b in blocks_of(model):
            fully_shard(b, **kw)
        fully_shard(model, **kw)
        return model
    if case.strategy == "ddp":
        return nn.parallel.DistributedDataParallel(model, bucket_cap_mb=case.bucket_cap_mb)
    return model
