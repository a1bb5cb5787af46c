"""A meta run that reads values it knows: the inputs torchcost made (token ids, masks, image grids) and what is
computed from them alone (collect/shadows.py). Such a forward now runs on meta and counts what it counts on the cpu;
values that come from the weights are still unknown there, and reading them stops the run as before."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

import torchcost
from torchcost.collect import shadows
from torchcost.collect.shadows import known_input
from torchcost.errors import ModelError
from torchcost.resolve import resolve


class Branchy(nn.Module):
    """Reads values of its inputs as transformers' models do: a mask that is all ones skips work, the longest
    sequence sets a length, a tensor made from a number pads, a list of lengths comes back to Python."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 4)
        self.extra = nn.Linear(4, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        if not bool(mask.all()):  # a padded batch: one more layer
            x = self.extra(x)
        longest = int(mask.sum(1).max())  # the tokens of the longest row
        pad = torch.tensor(3, device=ids.device) // 2
        x = nn.functional.pad(x[:, :longest], (0, 0, 0, int(pad.item())))  # + 1 row of zeros
        rows = mask.sum(1).tolist()
        return self.fc(x).sum() + rows[0]


def _ids(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randint(0, 10, shape, generator=torch.Generator().manual_seed(0))


def _both(mask: torch.Tensor) -> tuple[torchcost.CostReport, torchcost.CostReport]:
    torch.manual_seed(0)
    model = Branchy()
    cpu = torchcost.analyze(model, _ids((1, 5)), mask)
    meta = torchcost.analyze(model.to("meta"), known_input(_ids((1, 5)), "meta"), known_input(mask, "meta"))
    return cpu, meta


def test_meta_reads_known_values_and_counts_as_the_cpu() -> None:
    cpu, meta = _both(torch.ones(1, 5, dtype=torch.int64))
    # all ones: no extra layer; 5 rows + 1 padded row through fc: 6 * 4 * 4 = 96 MACs
    assert meta.macs == cpu.macs == 6 * 4 * 4 == 96
    assert meta.flops == cpu.flops
    cpu, meta = _both(torch.tensor([[1, 1, 1, 0, 0]]))
    # padded: extra on 5 rows (5 * 16 = 80), then the 3 longest rows + 1 padded row through fc (4 * 16 = 64)
    assert meta.macs == cpu.macs == 5 * 16 + 4 * 16 == 144
    assert meta.flops == cpu.flops
    assert [m.name for m in meta.modules if m.macs] == [m.name for m in cpu.modules if m.macs]


def test_meta_training_step_reads_known_values() -> None:
    torch.manual_seed(0)
    model = Branchy()
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    cpu = torchcost.analyze(model, _ids((1, 5)), mask, mode="train", target="cpu")
    meta = torchcost.analyze(model.to("meta"), known_input(_ids((1, 5)), "meta"), known_input(mask, "meta"),
                             mode="train", target="cpu")
    assert meta.macs == cpu.macs == 144  # as above
    assert meta.step_macs == cpu.step_macs


class ReadsWeights(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.clone()
        mask.masked_fill_(self.fc(x)[:, :5] > 0, 0)  # the mask's values now come from the weights
        return self.fc(x) * int(mask.sum())


def test_values_from_weights_stay_unknown() -> None:
    model = ReadsWeights().to("meta")
    x = torch.empty(5, 4, device="meta")
    mask = known_input(torch.ones(5, 4, dtype=torch.int64), "meta")
    with pytest.raises(ModelError, match="reads a tensor's values"):
        torchcost.analyze(model, x, mask)


def test_no_values_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shadows, "LIMIT", 4)  # (5 ids are past it: made without values)
    model = Branchy().to("meta")
    with pytest.raises(ModelError, match="reads a tensor's values"):
        torchcost.analyze(model, known_input(_ids((1, 5)), "meta"), known_input(torch.ones(1, 5, dtype=torch.int64),
                                                                                "meta"))


class Grid(nn.Module):
    """A vision tower's reading of its image grid (Qwen2-VL): counts to repeat by, and rows from nonzero."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        grid = grid[:, [0, 2, 1]]  # (a list index: torch makes its index tensor on meta, past the dispatcher)
        sizes = grid.prod(-1)  # patches an image: 1*2*3 = 6, 1*2*2 = 4
        owner = torch.repeat_interleave(torch.arange(len(grid), device=x.device), sizes)  # 10 entries
        wide = torch.nonzero(sizes > 5)  # the images of more than 5 patches: 1
        return self.fc(x[: owner.numel()]).sum() + wide.numel()


def test_data_dependent_shapes_from_known_values() -> None:
    grid = torch.tensor([[1, 2, 3], [1, 2, 2]])
    model = Grid()
    cpu = torchcost.analyze(model, torch.randn(12, 4), grid)
    meta = torchcost.analyze(model.to("meta"), torch.empty(12, 4, device="meta"), known_input(grid, "meta"))
    assert meta.macs == cpu.macs == 10 * 4 * 4 == 160  # the 10 patches of the 2 images through fc


def test_known_inputs_are_left_as_they_were() -> None:
    mask = known_input(torch.ones(1, 5, dtype=torch.int64), "meta")
    ids = known_input(_ids((1, 5)), "meta")

    class Writes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            full = bool(mask.all())
            mask.zero_()  # (in place, on the run's own copy of the values)
            return self.emb(ids).sum() * (2 if full else 3)

    model = Writes().to("meta")
    first = torchcost.analyze(model, ids, mask)
    second = torchcost.analyze(model, ids, mask)  # the mask still holds ones: the same branch, the same report
    assert first.flops == second.flops


def test_transformers_model_on_meta_counts_as_on_the_cpu() -> None:
    pytest.importorskip("transformers")
    from transformers import FlaubertConfig

    config = FlaubertConfig(vocab_size=100, emb_dim=32, n_layers=1, n_heads=2, max_position_embeddings=64)
    # FlaubertModel reads lengths.max().item() of its ids: on meta it stopped there
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "flaubert.json"
        path.write_text(json.dumps({**config.to_dict(), "architectures": ["FlaubertModel"]}))
        spec = f"hf:{path}"
        cpu = resolve(spec, seq_len=16)
        meta = resolve(spec, seq_len=16, meta=True)
        on_cpu = torchcost.analyze(cpu.model, *cpu.args, kwargs=cpu.kwargs)
        on_meta = torchcost.analyze(meta.model, *meta.args, kwargs=meta.kwargs)
    # one layer on 16 tokens: q, k, v, out (4 x 32 x 32) and the feed-forward (32 x 128 and 128 x 32), and the
    # attention's two products, 2 heads of 16 x 16 scores over 16 dimensions each: 2 * 2 * 16 * 16 * 16
    layer = 16 * (4 * 32 * 32 + 2 * 32 * 128) + 2 * 2 * 16 * 16 * 16
    assert on_meta.macs == on_cpu.macs == layer == 212_992
    assert on_meta.flops == on_cpu.flops


def test_batch_search_keeps_the_known_values() -> None:
    """A batch search analyses each batch on a meta copy with its inputs rebatched: the ids and the mask keep their
    values there (rows repeated in turn), so a model that reads them is searched, on meta and from the cpu alike (it
    stopped with "reads tensor values there" before)."""
    torch.manual_seed(0)
    model = Branchy()
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    on_cpu = torchcost.max_batch_size(model, _ids((1, 5)), mask, budget=20_000, target="cpu")
    on_meta = torchcost.max_batch_size(model.to("meta"), known_input(_ids((1, 5)), "meta"), known_input(mask, "meta"),
                                       budget=20_000, target="cpu")
    assert on_meta.batch_size == on_cpu.batch_size > 1 and on_meta.probes == on_cpu.probes
    peaks = dict(on_cpu.probes)
    assert peaks[on_cpu.batch_size] <= 20_000 < peaks[on_cpu.batch_size + 1]


def test_a_write_outside_a_run_makes_the_values_unknown() -> None:
    """Values written into a known meta tensor by the caller's own code (no run follows them) are not the ones kept:
    the tensor's version counter says it was written, and its values are unknown from then on, never stale."""
    model = Branchy().to("meta")
    ids = known_input(_ids((1, 5)), "meta")
    mask = known_input(torch.ones(1, 5, dtype=torch.int64), "meta")
    assert torchcost.analyze(model, ids, mask).macs == 96  # as in the first test
    mask[0, 3:] = 0  # (on meta: nothing is written, and nothing knows what was)
    with pytest.raises(ModelError, match="reads a tensor's values"):
        torchcost.analyze(model, ids, mask)


# A training step of a cpu model runs on a fake twin (fake tensors: no values, as on meta). The twin's integer inputs
# (ids, masks, grids, lengths) get the caller's values and are followed the same way, so a forward that reads them
# trains on the twin instead of a real copy of the model, and transformers skips a mask of ones there as the real
# step does.


def test_a_fake_twin_follows_its_integer_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchcost.run import execute

    monkeypatch.setattr(execute, "retry_on_copy", lambda *a: False)  # (no real copy to fall back on)
    torch.manual_seed(0)
    model = Branchy()
    ones = torchcost.analyze(model, _ids((1, 5)), torch.ones(1, 5, dtype=torch.int64), mode="train", target="cpu")
    padded = torchcost.analyze(model, _ids((1, 5)), torch.tensor([[1, 1, 1, 0, 0]]), mode="train", target="cpu")
    assert ones.macs == 96 and padded.macs == 144  # as in the first test
    # the step's backward: each Linear that ran, its weight's gradient and its input's (the embedding's weight
    # needs one through it), as many MACs each as its forward: 3 x the forward
    assert ones.step_macs == 3 * 96 and padded.step_macs == 3 * 144


def _tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.BertModel(config)


def test_a_fake_twins_training_step_skips_a_mask_of_ones_as_the_real_step() -> None:
    from transformers.utils import import_utils

    model = _tiny_bert()
    original = import_utils.is_fake_tensor
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))

    def step(mask: torch.Tensor | None) -> torchcost.CostReport:
        return torchcost.analyze(model, kwargs={"input_ids": ids, "attention_mask": mask}, mode="train")

    held = set(shadows._KNOWN)
    ones, none = step(torch.ones(2, 16, dtype=torch.int64)), step(None)
    assert set(shadows._KNOWN) <= held  # (the twin's values went with the twin: nothing new is held after the run)
    padded = step(torch.tensor([[1] * 16, [1] * 13 + [0] * 3]))
    # a mask of ones is no mask: transformers skips it (SDPA's is_causal path) in a real step, so the twin does too
    assert ones.step_flops == none.step_flops and ones.flops == none.flops
    # a padded mask is added to every attention score: 2 layers x 2 sequences x 4 heads x 16 x 16 scores
    assert padded.flops - ones.flops == padded.step_flops - ones.step_flops == 2 * 2 * 4 * 16 * 16 == 4_096
    assert import_utils.is_fake_tensor is original  # (transformers is left as it was)


def test_transformers_is_left_as_it_was_when_the_step_raises() -> None:
    from transformers.utils import import_utils

    model = _tiny_bert()
    original = import_utils.is_fake_tensor

    patched = []

    def fails(module: nn.Module, args: tuple[object, ...]) -> None:
        patched.append(import_utils.is_fake_tensor is not original)
        raise RuntimeError("the second layer fails")

    model.encoder.layer[1].register_forward_pre_hook(fails)  # (after the mask's check, in the twin's forward)
    with pytest.raises(torchcost.TorchcostError, match="the second layer fails"):
        torchcost.analyze(model, kwargs={"input_ids": torch.ones(1, 8, dtype=torch.int64),
                                         "attention_mask": torch.ones(1, 8, dtype=torch.int64)}, mode="train")
    assert patched == [True] and import_utils.is_fake_tensor is original


def test_a_cpu_transformers_model_for_a_cuda_target() -> None:
    """A cpu model analysed for a GPU runs on a meta twin (the target's kernels emulated there). GPT-2's mask code
    reads whether the mask is all ones, so ``torchcost hf:gpt2 --target cuda`` stopped ("Tensor.item() cannot be
    called on meta tensors") although the model and its inputs were real. The twin's integer inputs now keep the
    caller's values, and it counts as on the cpu."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=64)
    torch.manual_seed(0)
    model = transformers.GPT2Model(config)
    inputs = {"input_ids": torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(0)),
              "attention_mask": torch.ones(1, 16, dtype=torch.int64)}
    for mode in ("eval", "train"):
        on_cpu = torchcost.analyze(model, kwargs=inputs, mode=mode)
        for_cuda = torchcost.analyze(model, kwargs=inputs, mode=mode, target="cuda")
        # 16 tokens: c_attn 32 x 96, Q K^T and P V (4 heads of 16 x 16 scores over 8 dimensions, twice), c_proj
        # 32 x 32, the MLP 32 x 128 and 128 x 32
        assert for_cuda.macs == on_cpu.macs == 16 * 32 * 96 + 2 * 4 * 16 * 16 * 8 + 16 * 32 * 32 \
            + 2 * 16 * 32 * 128 == 212_992


class Chunks(nn.Module):
    """Makes a tensor from a list of its input's elements, as Qwen3-ASR cuts its audio into windows: on a fake twin
    ``torch.tensor`` reads the 0-d fake tensors' data directly, which they have not."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        bounds = torch.tensor([0] + [n // 2 for n in lengths]).cumsum(0)  # lengths 4 and 6: [0, 2, 5]
        return self.fc(x[: int(bounds[-1])]).sum()


def test_a_tensor_made_from_known_elements_on_a_fake_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchcost.run import execute

    monkeypatch.setattr(execute, "retry_on_copy", lambda *a: False)  # (no real copy to fall back on)
    model, x, lengths = Chunks(), torch.randn(8, 4), torch.tensor([4, 6])
    train = torchcost.analyze(model, x, lengths, mode="train")
    meta = torchcost.analyze(model.to("meta"), torch.empty(8, 4, device="meta"), known_input(lengths, "meta"))
    assert train.macs == meta.macs == 5 * 4 * 4 == 80  # 4 // 2 + 6 // 2 = 5 rows through fc


# LayerDrop and SpecAugment (wav2vec2, HuBERT, WavLM, SEW, UniSpeech, Data2Vec-Audio): in training, each layer is
# skipped where ``torch.rand([]) < p`` (a number drawn on the CPU), and random spans of the sequence are replaced by a
# learned vector through a mask made from numbers (numpy's draws, then ``torch.tensor``). A fake twin drew nothing,
# so the step fell back to a real copy (and a meta model's failed); the backward of ``h[mask] = v`` takes
# ``grad[mask]``, whose size is the mask's count of true elements: a meta kernel cannot tell it.


class Drops(nn.Module):
    """Four Linear(8, 8) layers, each skipped in training where a number drawn on the CPU falls below 0.5, and the
    positions of a fixed mask replaced by a learned vector, as SpecAugment does."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
        self.spec = nn.Parameter(torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[torch.tensor([True, False, True, True, False, False])] = self.spec  # (x is 6 x 8: rows 0, 2, 3)
        for layer in self.layers:
            if self.training and torch.rand([]) < 0.5:
                continue
            x = layer(x)
        return x


def test_a_fake_twin_draws_its_cpu_random_numbers_as_the_real_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchcost.run import execute

    monkeypatch.setattr(execute, "retry_on_copy", lambda *a: False)  # (no real copy to fall back on)
    model, on_meta, x = Drops(), Drops().to("meta"), torch.randn(6, 8)
    for seed in (3, 0, 1, 5):
        torch.manual_seed(seed)
        kept = sum(bool(torch.rand([]) >= 0.5) for _ in range(4))  # the layers the real step runs: 0, 1, 2, 3
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        cpu = torchcost.analyze(model, x, mode="train")
        assert torch.equal(torch.get_rng_state(), state)  # (the generator is put back)
        meta = torchcost.analyze(on_meta, torch.empty(6, 8, device="meta"), mode="train")
        # each layer run: 6 rows x 8 x 8 = 384 MACs
        assert cpu.macs == meta.macs == 384 * kept
        # the backward: each layer run, its input's and weight's gradients (2 x 384 MACs) and its bias's (6 rows
        # summed: 5 x 8 = 40); the default loss's (out.pow(2).mean(), 48 elements: 48 divides, pow(x, 1) and 2
        # products 144); the mask's 3 rows of the gradient summed into ``spec``'s (2 x 8 = 16): 208
        for report in (cpu, meta):
            assert report.phase("backward").flops == (2 * 2 * 384 + 40) * kept + 48 + 144 + 16
            assert report.uncounted == ()


class Picks(nn.Module):
    """Rows picked by a mask made from numbers: ``x[mask]``'s size is the mask's count of true elements."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[torch.tensor([True, False, True, True])])


def test_rows_picked_by_a_known_mask_on_meta() -> None:
    cpu = torchcost.analyze(Picks(), torch.randn(4, 8))
    meta = torchcost.analyze(Picks().to("meta"), torch.empty(4, 8, device="meta"))
    assert cpu.macs == meta.macs == 3 * 8 * 8 == 192  # (3 rows through fc)
    assert meta.module("fc").input_shape == cpu.module("fc").input_shape
    assert meta.module("fc").input_shape[0].shape == (3, 8)


class Clamps(nn.Module):
    """DETR's encoder layer in training: activations clamped where some overflowed to infinity or NaN (DETR asks
    ``isfinite``; others ``isinf`` and ``isnan``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.training and (not torch.isfinite(h).all() or h.isnan().any()):
            h = h.clamp(-1e4, 1e4)
        return h


def test_an_overflow_check_of_unknown_values_takes_the_finite_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchcost.run import execute

    monkeypatch.setattr(execute, "retry_on_copy", lambda *a: False)  # (no real copy to fall back on)
    x = torch.randn(4, 8)
    cpu = torchcost.analyze(Clamps(), x, mode="train")
    meta = torchcost.analyze(Clamps().to("meta"), x.to("meta"), mode="train", target="cuda")
    for report in (cpu, meta):
        # fc: 4 x 8 x 8 = 256 MACs and 32 bias adds; isfinite is abs(h) != inf and h == h (3 x 32, the and of
        # booleans free), isnan 32 comparisons, the reductions of booleans free; no clamp (it would add 2 x 32)
        assert report.macs == 256 and report.flops == 2 * 256 + 32 + 3 * 32 + 32
        assert report.uncounted == ()
