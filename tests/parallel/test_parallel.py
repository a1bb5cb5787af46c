"""Simulated distributed training (parallel=): one rank of FSDP2 / DDP / TP worlds on a fake process group.

Every expected number is derived by hand beside it. Sizes: fp32 (4 B an element); target "cpu" (no 512-B
rounding) unless said otherwise.
"""

from __future__ import annotations

import os
import tempfile
import types
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from torchcost import CostReport, InputError, Parallel

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)


def mlp(n: int = 3, d: int = 64) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Linear(d, d))
        if i < n - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def by_kind(report: CostReport, kind: str, phase: str | None = None) -> tuple[int, int]:
    found = [c for c in report.collectives if c.kind == kind and (phase is None or c.phase == phase)]
    return sum(c.calls for c in found), sum(c.bytes for c in found)


X = torch.randn(8, 64)
# one Linear(64, 64): weight 64 x 64 + bias 64 = 4160 elements = 16640 B
LINEAR_BYTES = (64 * 64 + 64) * 4


@pytest.mark.parametrize("ranks", [2, 4])
def test_fsdp_shards_and_collectives(ranks: int) -> None:
    r = torchcost.analyze(mlp(), X, mode="train", target="cpu", parallel=Parallel(fsdp=ranks, rank=ranks - 1))
    # each rank holds ceil(64 / ranks) rows of every weight and bias: 64/ranks * (64 + 1) elements per Linear
    shard = (64 // ranks) * 64 * 4 + (64 // ranks) * 4
    assert r.param_bytes == 3 * shard
    assert r.memory is not None and r.memory.at_peak.parameters == 3 * shard
    # all-gather: one per unit (each Linear; the root holds no parameter of its own) in the forward, and again in
    # the backward (resharded after forward); payload = the gathered size = the unit's full parameters
    assert by_kind(r, "all_gather", "forward") == (3, 3 * LINEAR_BYTES)
    assert by_kind(r, "all_gather", "backward") == (3, 3 * LINEAR_BYTES)
    # reduce-scatter: one per unit, input = the unit's full (unsharded) gradients
    assert by_kind(r, "reduce_scatter") == (3, 3 * LINEAR_BYTES)
    assert all(c.group_size == ranks for c in r.collectives)
    assert r.parallel is not None and r.parallel.world == ranks and r.parallel.rank == ranks - 1
    assert r.parallel.fsdp_units == ("0", "2", "4", "")
    # FLOPs are the local batch's, as on one device: 3 products of 8 x 64 x 64 MACs in the forward
    assert r.macs == 3 * 8 * 64 * 64
    single = torchcost.analyze(mlp(), X, mode="train", target="cpu")
    assert r.step_macs == single.step_macs
    assert r.phase("backward").macs == single.phase("backward").macs
    assert sum(c.calls for c in r.collectives) == 9
    # per module: every collective lands in some module of the tree; the root's rolled-up bytes are the total
    assert r.root.comm_bytes == sum(c.bytes for c in r.collectives)


def test_fsdp_no_reshard_gathers_once() -> None:
    r = torchcost.analyze(mlp(), X, mode="train", target="cpu",
                          parallel=Parallel(fsdp=2, reshard_after_forward=False, rank=0))
    # parameters stay unsharded from the forward to the backward: no second all-gather
    assert by_kind(r, "all_gather", "forward") == (3, 3 * LINEAR_BYTES)
    assert by_kind(r, "all_gather", "backward") == (0, 0)
    assert by_kind(r, "reduce_scatter") == (3, 3 * LINEAR_BYTES)


def test_collectives_hold_the_backends_buffers() -> None:
    # gloo (target "cpu") holds a buffer inside each collective: a reduce-scatter all-reduces a clone of its whole
    # input (one unit's flat gradients, LINEAR_BYTES), an all-gather fills a buffer of the gathered size
    # (LINEAR_BYTES) first; counted at the op only. NCCL (target "cuda") holds nothing of the step's.
    kinds = ("c10d::_allgather_base_", "c10d::_reduce_scatter_base_")
    for target, held in (("cpu", LINEAR_BYTES), ("cuda", 0)):
        r = torchcost.analyze(mlp(), X, mode="train", target=target, parallel=Parallel(fsdp=2, rank=0))
        assert r.memory is not None
        t = r.memory.timeline
        at = [i for i, op in enumerate(t.ops) if op in kinds]
        assert len(at) == 9  # 3 units: all-gather in the forward and the backward, reduce-scatter in the backward
        assert [t.bytes[i] - t.bytes[i - 1] for i in at] == [held] * 9


def test_fsdp_eval_forward_only() -> None:
    r = torchcost.analyze(mlp(), X, target="cpu", parallel=Parallel(fsdp=2, rank=1))
    assert by_kind(r, "all_gather") == (3, 3 * LINEAR_BYTES)
    assert by_kind(r, "reduce_scatter") == (0, 0)


def test_uneven_shard_is_padded_on_the_last_rank() -> None:
    model = nn.Sequential(nn.Linear(64, 37), nn.ReLU(), nn.Linear(37, 64))
    r = torchcost.analyze(model, X, mode="train", target="cpu", parallel=Parallel(fsdp=4, rank=3))
    # Linear(64, 37): 37 rows on 4 ranks -> chunks of ceil(37/4) = 10 rows: 10, 10, 10, 7. Rank 3 holds 7 rows of
    # the weight and 7 of the bias, in storages padded to 10 rows: 10*64*4 = 2560 B and 10*4 = 40 B.
    # Linear(37, 64): 64 rows -> 16 a rank: 16*37*4 = 2368 B and 16*4 = 64 B.
    assert r.memory is not None and r.memory.at_peak.parameters == 2560 + 40 + 2368 + 64
    # the local (unpadded) bytes: 7*64*4 + 7*4 + 2368 + 64
    assert r.param_bytes == 7 * 64 * 4 + 7 * 4 + 2368 + 64
    # the all-gather moves the padded shards: 4 ranks x (10*64 + 10 + 16*37 + 16) elements... per unit
    assert by_kind(r, "all_gather", "forward") == (2, 4 * (10 * 64 + 10) * 4 + 4 * (16 * 37 + 16) * 4)


def test_worst_rank_is_found_when_shards_differ() -> None:
    model = nn.Sequential(nn.Linear(64, 37), nn.ReLU(), nn.Linear(37, 64))
    r = torchcost.analyze(model, X, mode="train", target="cpu", parallel=Parallel(fsdp=4))
    assert r.parallel is not None
    # ranks 0-2 hold 10 rows, rank 3 holds 7: two layouts, so rank 0 and the last rank are analysed
    assert r.parallel.ranks_analyzed == (0, 3)
    assert r.parallel.ranks_differ
    # rank 3's optimizer state is smaller (7-row moments): rank 0 is the worst
    assert r.parallel.rank == 0
    assert r.peak_memory == max(r.parallel.rank_peaks)


def test_even_shards_analyse_one_rank_for_all() -> None:
    # every Linear(64, 64) weight and bias splits into 4 equal chunks: every rank holds the same shard sizes
    r = torchcost.analyze(mlp(), X, mode="train", target="cpu", parallel=Parallel(fsdp=4))
    assert r.parallel is not None and r.parallel.ranks_analyzed == (0,) and not r.parallel.ranks_differ


def test_tensor_parallel_halves_the_products() -> None:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    plan = {"0": ColwiseParallel(), "2": RowwiseParallel()}
    r = torchcost.analyze(model, X, mode="train", target="cpu", parallel=Parallel(tp=2, tp_plan=plan, rank=1))
    # colwise: 8 x 64 x (128/2) MACs; rowwise: 8 x (128/2) x 64: half of the 2 x 8 x 64 x 128 on one device
    assert r.macs == 8 * 64 * 64 + 8 * 64 * 64
    # the rowwise layer's partial sums are all-reduced once in the forward: its output, 8 x 64 fp32 = 2048 B;
    # the input does not require grad, so the colwise layer's input gradient needs no all-reduce in the backward
    assert by_kind(r, "all_reduce", "forward") == (1, 8 * 64 * 4)
    assert by_kind(r, "all_reduce") == (1, 8 * 64 * 4)
    # the local parameters: colwise 64 rows of 64 + 64 bias; rowwise 64 x 64 columns + the full bias (replicated)
    assert r.param_bytes == (64 * 64 + 64 + 64 * 64 + 64) * 4


def test_ddp_buckets_and_all_reduce() -> None:
    cap = 20971 / 2**20  # 20971 B
    r = torchcost.analyze(mlp(), X, mode="train", target="cpu", parallel=Parallel(ddp=2, bucket_cap_mb=cap))
    # gradients become ready in reverse order: b2 256 B, w2 16384 B, b1 256 B (16896 < cap), w1 -> 33280 >= cap:
    # the first bucket closes with 33280 B; then b0 + w0 = 16640 B
    assert r.parallel is not None and r.parallel.buckets == (33280, 16640)
    # one all-reduce per bucket; together every gradient's bytes: 3 x 16640
    assert by_kind(r, "all_reduce") == (2, 3 * LINEAR_BYTES)
    assert r.parallel.ranks_analyzed == (0,) and not r.parallel.ranks_differ  # replicas: all alike
    # DDP keeps its bucket buffers through the step, beside the gradients
    assert r.memory is not None and r.memory.at_peak.comm_buffers == 3 * LINEAR_BYTES
    assert r.memory.at_peak.parameters == 3 * LINEAR_BYTES
    default = torchcost.analyze(mlp(), X, mode="train", target="cpu", parallel=Parallel(ddp=2, rank=0))
    assert default.parallel is not None and default.parallel.buckets == (3 * LINEAR_BYTES,)  # all under 25 MB


def test_json_round_trip_and_footer() -> None:
    r = torchcost.analyze(mlp(), X, mode="train", parallel=Parallel(fsdp=2))
    back = CostReport.from_json(r.to_json())
    assert back.parallel == r.parallel
    assert back.collectives == r.collectives
    assert back.memory == r.memory
    assert back.to_dict() == r.to_dict()
    text = r.table()
    assert "Parallel: FSDP2 x 2 (reshard after forward), TP 1; rank 0 of 2" in text
    assert "Collectives per step (rank 0): all_gather 6 x" in text
    single = torchcost.analyze(mlp(), X, mode="train").to_dict()
    assert "parallel" not in single and "collectives" not in single


def test_model_rng_and_process_group_untouched() -> None:
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tmp = tempfile.NamedTemporaryFile(delete=False)
    tmp.close()
    store = dist.FileStore(tmp.name, 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        group = dist.group.WORLD
        rng = torch.get_rng_state()
        r = torchcost.analyze(model, X, mode="train", parallel=Parallel(fsdp=2, rank=1))
        assert r.parallel is not None and r.parallel.rank == 1
        assert torch.equal(torch.get_rng_state(), rng)
        assert dist.is_initialized() and dist.group.WORLD is group
        assert dist.get_world_size() == 1 and dist.get_backend() == "gloo"
        t = torch.ones(3)
        dist.all_reduce(t)
        assert torch.equal(t, torch.ones(3))
        import torch.distributed._functional_collectives as fc

        assert torch.equal(fc.all_reduce(torch.ones(2), "sum", group), torch.ones(2))  # names still resolve
    finally:
        dist.destroy_process_group()
        os.unlink(tmp.name)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert not dist.is_initialized()


def test_world_is_torn_down_when_the_forward_raises() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(torchcost.ModelError):
        torchcost.analyze(Bad(), X, mode="train", parallel=Parallel(fsdp=2))
    assert not dist.is_initialized()


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"fsdp": 2, "ddp": 2}, "cannot be combined"),
    ({}, "world of 1"),
    ({"fsdp": 0}, "positive integer"),
    ({"fsdp": 2, "rank": 2}, "0..1"),
    ({"ddp": 2, "bucket_cap_mb": 0}, "bucket_cap_mb"),
    ({"tp": 2}, "no built-in tensor-parallel plan"),
])
def test_bad_input_is_one_line(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(InputError) as info:
        torchcost.analyze(mlp(), X, mode="train", parallel=Parallel(**kwargs))  # type: ignore[arg-type]
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not dist.is_initialized()


def test_bad_models_are_refused() -> None:
    with pytest.raises(InputError, match="no parameters"):
        torchcost.analyze(nn.ReLU(), X, mode="train", parallel=Parallel(fsdp=2))
    heads = mlp()
    heads.config = types.SimpleNamespace(num_attention_heads=6)  # type: ignore[assignment]
    with pytest.raises(InputError, match="does not divide"):
        torchcost.analyze(heads, X, mode="train", parallel=Parallel(tp=4))
    with pytest.raises(InputError, match=r"torchcost\.Parallel"):
        torchcost.analyze(mlp(), X, mode="train", parallel={"fsdp": 2})  # type: ignore[arg-type]


def test_json_matches_the_schema() -> None:
    import json
    from importlib import resources

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("torchcost") / "schema" / "report.schema.json").read_text())
    data = torchcost.analyze(mlp(), X, mode="train", parallel=Parallel(fsdp=2)).to_dict()
    jsonschema.Draft202012Validator(schema).validate(data)
    defs = schema["$defs"]
    assert set(data) <= set(schema["properties"])
    assert all(set(m) <= set(defs["module"]["properties"]) for m in data["modules"])
    assert set(data["memory"]["at_peak"]) <= set(defs["memoryBreakdown"]["properties"])
    assert {"unsharded_params", "comm_buffers"} <= set(data["memory"]["at_peak"])
    assert set(data["parallel"]) <= set(defs["parallel"]["properties"])
    assert all(set(c) <= set(defs["collective"]["properties"]) for c in data["collectives"])


def test_gpt2_built_in_plan_shards_conv1d_and_keeps_the_tie() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=101, n_positions=32, use_cache=False)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 101, (2, 16))
    full = sum(p.numel() for p in model.parameters())  # wte and lm_head tied: counted once
    r = torchcost.analyze(model, kwargs={"input_ids": ids}, mode="train", parallel=Parallel(tp=2, rank=0))
    assert r.params == full
    # c_attn colwise: rank 0 computes 3*64/2 = 96 of the 192 output columns: 2*16 tokens * 64 * 96 = 196,608 MACs
    assert r.module("transformer.h.0.attn.c_attn").macs == 2 * 16 * 64 * 96
    # c_proj rowwise: 32 of the 64 input rows: 2*16 * 32 * 64 = 65,536 MACs
    assert r.module("transformer.h.0.attn.c_proj").macs == 2 * 16 * 32 * 64
    by = {(c.kind, c.phase): c for c in r.collectives}
    # forward all-reduces: two rowwise c_proj per block * 2 blocks + the rowwise wte = 5, each 2*16*64*4 = 8,192 B
    assert (by["all_reduce", "forward"].calls, by["all_reduce", "forward"].bytes) == (5, 5 * 8192)
    # backward all-reduces: the input gradients of the colwise c_attn and c_fc (2 blocks) and lm_head = 5
    assert (by["all_reduce", "backward"].calls, by["all_reduce", "backward"].bytes) == (5, 5 * 8192)
    # the logits gathered from vocabulary shards of ceil(101/2) = 51 rows, padded: 2*16 * 102 * 4 = 13,056 B
    assert (by["all_gather", "forward"].calls, by["all_gather", "forward"].bytes) == (1, 13056)
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert model.transformer.h[0].attn.split_size == 64 and model.lm_head.weight is model.transformer.wte.weight


def test_cpu_offload_moves_shards_gradients_and_optimizer_state_to_the_host() -> None:
    model = mlp(3, 64)
    on_device = torchcost.analyze(model, X, mode="train", parallel=Parallel(fsdp=2, rank=0))
    offloaded = torchcost.analyze(model, X, mode="train", parallel=Parallel(fsdp=2, rank=0, offload=True))
    assert on_device.memory is not None and offloaded.memory is not None
    at = offloaded.memory.at_peak
    assert (at.parameters, at.gradients, at.optimizer_state) == (0, 0, 0)
    assert offloaded.parallel is not None and offloaded.parallel.offload
    # rank 0's shard of each (64, 64) weight is 32 rows and of each bias 32 values, in 512-byte blocks (target
    # cuda): 3 * (32*64*4 = 8,192 + 512) = 26,112 B; on the host: the shard, its gradient and AdamW's two moments
    shard = 3 * (32 * 64 * 4 + 512)
    assert offloaded.memory.host_bytes >= 4 * shard
    assert offloaded.peak_memory < on_device.peak_memory and on_device.memory.host_bytes == 0
    back = CostReport.from_json(offloaded.to_json())
    assert back.memory is not None and back.memory.host_bytes == offloaded.memory.host_bytes
    assert "host_bytes" not in on_device.to_dict()["memory"]
    with pytest.raises(InputError, match="fsdp"):
        torchcost.analyze(model, X, mode="train", parallel=Parallel(ddp=2, offload=True))


@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module")  # torch's warning on the twin (unpadded logits: a view)
def test_fsdp_x_tp_with_uneven_shards_runs_every_layout_in_one_call() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101)
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 101, (2, 8))
    r = torchcost.analyze(model, kwargs={"input_ids": ids}, mode="train", parallel=Parallel(fsdp=2, tp=2))
    assert r.parallel is not None and len(r.parallel.ranks_analyzed) > 1  # vocab 101 and 172/2 = 86 rows split unevenly
    for rank, peak in zip(r.parallel.ranks_analyzed, r.parallel.rank_peaks):
        alone = torchcost.analyze(model, kwargs={"input_ids": ids}, mode="train",
                                  parallel=Parallel(fsdp=2, tp=2, rank=rank))
        assert alone.peak_memory == peak  # one world after another gives each rank what it gives alone


@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module")
def test_fsdp_x_tp_foreach_ops_on_local_shards_give_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """FSDP2 beside tensor parallelism: the parameters TP shards are FSDP2's strided shards (_StridedShard), the
    others plain Shard(0); AdamW's multi-tensor ops over them run on the local shards, and the report is the one
    DTensor's own calls give."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101)
    model = transformers.LlamaForCausalLM(cfg)
    options: dict[str, object] = {"kwargs": {"input_ids": torch.randint(0, 101, (2, 8))}, "mode": "train",
                                  "target": "cuda", "parallel": Parallel(fsdp=2, tp=2, rank=3)}
    asked = _counting_local_foreach(monkeypatch)
    short = torchcost.analyze(model, **options).to_dict()
    # the same 8 multi-tensor calls a step as in the test above, in the warm-up and in the measured step (CUDA's
    # default: multi-tensor kernels), each over all the parameters in one list
    assert sum(asked) == 16
    _without_local_foreach(monkeypatch)
    assert torchcost.analyze(model, **options).to_dict() == short


def test_a_user_plan_with_sequence_parallel() -> None:
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.fc1, self.fc2 = nn.LayerNorm(64), nn.Linear(64, 256), nn.Linear(256, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc2(torch.relu(self.fc1(self.norm(x))))

    plan: dict[str, object] = {}
    for i in range(2):
        plan |= {f"{i}.norm": SequenceParallel(), f"{i}.fc1": ColwiseParallel(input_layouts=Shard(1)),
                 f"{i}.fc2": RowwiseParallel(output_layouts=Shard(1))}
    x = torch.randn(2, 16, 64)  # the rank's sequence shard: 16 of 32 positions
    r = torchcost.analyze(nn.Sequential(Block(), Block()), x, mode="train", parallel=Parallel(tp=2, tp_plan=plan))
    # per block, fc1's input gathered to the whole sequence and fc2's partial output reduce-scattered back:
    # each 2 * 32 * 64 * 4 = 16,384 B, 2 blocks
    assert by_kind(r, "all_gather", "forward") == (2, 2 * 16384)
    assert by_kind(r, "reduce_scatter", "forward") == (2, 2 * 16384)
    assert by_kind(r, "all_gather", "backward") == (2, 2 * 16384)
    assert by_kind(r, "reduce_scatter", "backward") == (2, 2 * 16384)
    # fc1 on the whole sequence, its 128 local columns: 2 * 32 * 64 * 128 = 524,288 MACs
    assert r.module("0.fc1").macs == 2 * 32 * 64 * 128


def _counting_local_foreach(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """From now on in the test, collect/sharded.py's on_locals counted: returns the list it appends to, one entry
    per call asked, True where it gave the local call."""
    from torchcost.collect import sharded

    asked: list[bool] = []
    real = sharded.on_locals

    def counted(func: object, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        found = real(func, args, kwargs)
        asked.append(found is not None)
        return found

    monkeypatch.setattr(sharded, "on_locals", counted)
    return asked


def _without_local_foreach(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on in the test, every foreach op over DTensors left to DTensor (collect/sharded.py switched off)."""
    from torchcost.collect import sharded

    monkeypatch.setattr(sharded, "on_locals", lambda *a: None)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_an_optimizers_foreach_ops_on_local_shards_give_the_same_report(target: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp()
    options: dict[str, object] = {"mode": "train", "target": target, "parallel": Parallel(fsdp=2, rank=1)}
    asked = _counting_local_foreach(monkeypatch)
    short = torchcost.analyze(model, X, **options).to_dict()
    # AdamW's multi-tensor step over the 6 sharded parameters (3 Linear weights and biases, each one DTensor list):
    # lerp_, mul_, addcmul_, div_, add_, addcdiv_ in place, weight decay's mul_, and sqrt making the denominators: 8
    # calls taken in the warm-up, and 8 more in the measured step where it uses the multi-tensor kernels too (torch's
    # default on CUDA)
    assert sum(asked) == (16 if target == "cuda" else 8)
    _without_local_foreach(monkeypatch)
    assert torchcost.analyze(model, X, **options).to_dict() == short


def test_only_element_wise_foreach_ops_over_one_layout_run_on_local_shards() -> None:
    from torch.distributed.tensor import Partial, Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard

    from torchcost.collect.sharded import on_locals, wrapped
    from torchcost.parallel.world import make_mesh, simulated_world

    aten = torch.ops.aten
    with simulated_world(0, 2):
        mesh = make_mesh((2,), ("dp",))
        a, b, c = (distribute_tensor(torch.zeros(8, 4), mesh, [Shard(0)]) for _ in range(3))
        v = distribute_tensor(torch.zeros(6), mesh, [Shard(0)])
        whole = distribute_tensor(torch.zeros(8, 4), mesh, [Replicate()])
        # rank 0 of 2 holds rows 0-3 of each 8 x 4 tensor and elements 0-2 of the 6
        got = on_locals(aten._foreach_mul_.Scalar, ([a, v], 0.5), {})
        assert got is not None and got[1] == {}
        assert [t.shape for t in got[0][0]] == [(4, 4), (3,)] and got[0][1] == 0.5
        assert got[0][0][0] is a._local_tensor
        got = on_locals(aten._foreach_addcmul_.Scalar, ([a, v], [b, v], [c, v]), {"value": 0.1})
        assert got is not None and [t.shape for t in got[0][2]] == [(4, 4), (3,)] and got[1] == {"value": 0.1}
        assert on_locals(aten._foreach_add_.List, ([whole], [whole]), {}) is not None  # replicated alike
        # new tensors: each local output wrapped as DTensor wraps it (compared with DTensor's own call, no mode on)
        got = on_locals(aten._foreach_sqrt.default, ([a, v],), {})
        assert got is not None
        made = wrapped(aten._foreach_sqrt.default, ([a, v],), aten._foreach_sqrt.default(*got[0]))
        theirs = torch._foreach_sqrt([a, v])
        for mine, their in zip(made, theirs, strict=True):
            assert type(mine) is type(their) and mine._spec == their._spec
            assert (mine.shape, mine.stride(), mine.dtype) == (their.shape, their.stride(), their.dtype)
            assert mine._local_tensor.shape == their._local_tensor.shape  # (4, 4) and (3,) on rank 0
        assert wrapped(aten._foreach_mul_.Scalar, ([a], 2.0), None) is None  # in place: nothing returned
        refused = [
            (aten._foreach_add_.List, ([a], [whole])),  # another placement at the same place
            (aten._foreach_add_.List, ([a, v], [v, a])),  # another global shape at the same place
            (aten._foreach_sqrt.default, ([a.t()],)),  # new tensors of a transposed DTensor: strides not contiguous
            (aten._foreach_mul_.Tensor, ([a, b], torch.tensor(2.0))),  # a tensor as the scalar
            (aten._foreach_mul_.Scalar, ([a._local_tensor], 2.0)),  # no DTensor at all
            (aten.mul_.Scalar, (a, 2.0)),  # not a foreach op
        ]
        for func, args in refused:
            assert on_locals(func, args, {}) is None, func
        # FSDP2 beside tensor parallelism: strided shards, taken where every list's element has the same split
        strided, other = (distribute_tensor(torch.zeros(8, 4), mesh, [_StridedShard(0, split_factor=2)])
                          for _ in range(2))
        assert on_locals(aten._foreach_add_.List, ([strided], [other]), {}) is not None
        assert on_locals(aten._foreach_add_.List, ([strided], [a]), {}) is None  # a plain Shard(0) beside it
        apart = distribute_tensor(torch.zeros(8, 4), mesh, [_StridedShard(0, split_factor=4)])
        assert on_locals(aten._foreach_add_.List, ([strided], [apart]), {}) is None  # another split
        got = on_locals(aten._foreach_sqrt.default, ([strided],), {})
        assert got is not None
        made = wrapped(aten._foreach_sqrt.default, ([strided],), aten._foreach_sqrt.default(*got[0]))
        theirs = torch._foreach_sqrt([strided])
        assert made[0]._spec == theirs[0]._spec and made[0].stride() == theirs[0].stride() == (4, 1)
        partial = a.redistribute(mesh, [Replicate()]).to_local()
        pending = type(a).from_local(partial, mesh, [Partial()], run_check=False)
        assert on_locals(aten._foreach_mul_.Scalar, ([pending], 2.0), {}) is None  # a sum not yet taken


def _sequence_parallel_case() -> tuple[nn.Module, torch.Tensor, dict[str, object]]:
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
                            for _ in range(2)))
    plan: dict[str, object] = {}
    for i in range(2):
        plan |= {f"{i}.0": SequenceParallel(), f"{i}.1": ColwiseParallel(input_layouts=Shard(1)),
                 f"{i}.3": RowwiseParallel(output_layouts=Shard(1))}
    return model, torch.randn(2, 16, 64), {"mode": "train", "parallel": Parallel(tp=2, tp_plan=plan)}


@pytest.mark.parametrize("case", ["sequence_parallel", "llama_tp"])
def test_functional_collectives_answered_from_metadata_give_the_same_report(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DTensor's redistributions call torch's functional collectives (all_reduce, all_gather_into_tensor,
    reduce_scatter_tensor, wait_tensor) on the rank's fake tensors; a call of a key seen before is answered from
    the first one's output metadata (collect/fakeops.py), and the report is the one the fake mode's own kernels
    give."""
    from torchcost.collect import fakeops

    if case == "llama_tp":
        transformers = pytest.importorskip("transformers")
        cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
        torch.manual_seed(0)
        model: nn.Module = transformers.LlamaForCausalLM(cfg)
        args: tuple[object, ...] = ()
        options: dict[str, object] = {"kwargs": {"input_ids": torch.randint(0, 100, (2, 8))}, "mode": "train",
                                      "target": "cuda", "parallel": Parallel(tp=2)}
    else:
        model, x, options = _sequence_parallel_case()
        args = (x,)
    answered: list[bool] = []
    real, names = fakeops.FakeShortcuts._fresh, fakeops._COLLECTIVES

    def counted(self: object, func: Any, a: tuple[object, ...], kw: dict[str, object]) -> object:
        got = real(self, func, a, kw)  # type: ignore[arg-type]
        if func._schema.name in names:
            answered.append(got is not fakeops.MISS)
        return got

    monkeypatch.setattr(fakeops.FakeShortcuts, "_fresh", counted)
    short = torchcost.analyze(model, *args, **options).to_dict()
    assert any(answered) and not all(answered)  # the first call of each key runs in the fake mode and is learned
    monkeypatch.setattr(fakeops, "_COLLECTIVES", frozenset())
    monkeypatch.setattr(fakeops, "_KINDS", {})  # (each op's kind is kept for the process: asked again)
    answered.clear()
    assert torchcost.analyze(model, *args, **options).to_dict() == short
    assert answered == []  # (no collective reached the shortcuts: each went to the fake mode)
