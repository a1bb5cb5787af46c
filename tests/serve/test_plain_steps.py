"""The plain forwards of a generation (serve/steps.py StepRunner.plain: they only fill a cache to a context) run
under collect/fakeops.py's TwinAnswers, which answers an op from the metadata of an earlier call of the same key:
the cache they leave must be the one a forward without it leaves, tensor for tensor, and the answers must be taken
(the layers of a model repeat their shapes)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.serve.models import build
from tests.serve.truth import cache_state_tensors
from torchcost.collect import fakeops
from torchcost.formulas import REGISTRY
from torchcost.run.step import StepOptions, make_twin
from torchcost.serve.cache import check_generative
from torchcost.serve.steps import StepRunner


def _layout(cache: Any) -> list[tuple[Any, ...]]:
    """Every tensor of the cache's state: its metadata, its storage's size, and which storage it shares."""
    tensors = cache_state_tensors(cache)
    storages: dict[int, int] = {}
    return [(tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.device.type,
             t.untyped_storage().nbytes(), storages.setdefault(t.untyped_storage()._cdata, len(storages)))
            for t in tensors]


def _runner(family: str) -> StepRunner:
    twin = make_twin(build(family, torch.bfloat16), (), {}, "meta", torch.device("cpu")).model.eval()
    options = StepOptions("eval", None, None, None, "cuda", None)
    return StepRunner(twin, REGISTRY, options, 2, check_generative(twin), True)


def _filled(runner: StepRunner, plain: Any) -> list[tuple[Any, ...]]:
    cache = runner.new_cache()
    plain(runner, 11, cache)  # a prompt longer than the sliding windows (8), then two decode steps
    plain(runner, 1, cache)
    plain(runner, 1, cache)
    return _layout(cache)


def _without_answers(runner: StepRunner, tokens: int, cache: Any) -> None:
    with torch.no_grad():
        runner.model(**runner.inputs(tokens, cache))


def _counting_answers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on in the test, [the calls FakeShortcuts answered]."""
    answered = [0]
    original = fakeops.FakeShortcuts.answer

    def counting(self: Any, func: Any, args: Any, kwargs: Any) -> Any:
        out = original(self, func, args, kwargs)
        answered[0] += out is not fakeops.MISS
        return out

    monkeypatch.setattr(fakeops.FakeShortcuts, "answer", counting)
    return answered


@pytest.mark.parametrize("family", ["llama", "gemma2", "deepseek_v2", "jamba"])
def test_plain_forwards_leave_the_cache_a_forward_without_answers_leaves(family: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _runner(family)
    expected = _filled(runner, _without_answers)
    answered = _counting_answers(monkeypatch)
    assert _filled(runner, StepRunner.plain) == expected
    assert len(expected) > 0
    # every layer after the first repeats the first one's calls: answered from their metadata
    assert answered[0] > 0


def test_a_tensor_parallel_ranks_plain_forwards_leave_the_same_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """One simulated rank of 2-way tensor parallelism (fake CPU tensors, DTensor weights; serve/generation.py's
    _tensor_parallel): the mode sits right above the twin's fake mode, and DTensor's local ops come back to it."""
    from torchcost.parallel import Parallel
    from torchcost.parallel.runner import _fake_twin
    from torchcost.parallel.world import make_mesh, simulated_world

    twin = make_twin(build("llama"), (), {}, "meta", torch.device("cpu")).model.eval()
    plan = Parallel(tp=2, rank=0)
    plan.check(twin, "eval")
    with simulated_world(0, plan.world):
        rank, _ = _fake_twin(twin, (), {}, plan, make_mesh(plan.mesh_shape, plan.mesh_dims))
        rank.model.eval()
        runner = StepRunner(rank.model, REGISTRY, StepOptions("eval", None, None, None, "cuda", "table"), 2,
                            check_generative(twin), True, fake=rank.fake_mode)

        def without(runner: StepRunner, tokens: int, cache: Any) -> None:
            kwargs = runner.inputs(tokens, cache)
            with runner.context(), torch.no_grad():
                runner.model(**kwargs)

        expected = _filled(runner, without)
        answered = _counting_answers(monkeypatch)
        got = _filled(runner, StepRunner.plain)
    # each of the 2 layers' K and V: one of the 2 KV heads on this rank, 2 sequences, 11 + 1 + 1 = 13 tokens, 16 wide
    assert [entry[0] for entry in expected] == [(2, 1, 13, 16)] * 4
    assert got == expected and answered[0] > 0


@pytest.mark.parametrize(("family", "tp"), [("llama", 1), ("gemma2", 1), ("deepseek_v2", 1), ("jamba", 1),
                                            ("llama", 2)])
def test_steps_resume_the_cache_a_step_left(family: str, tp: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve/generation.py's decode steps resume the cache a step left where it holds the length they need: the
    same report as with every cache filled anew, and 4 plain forwards fewer: the prefill of the prompt for the first
    decode step, the prompt's and one step's for the second, and the final length's for the cache's growth."""
    import torchcost
    from torchcost.serve import generation

    plains = [0]
    original = StepRunner.plain

    def counting(self: StepRunner, tokens: int, cache: Any) -> None:
        plains[0] += 1
        original(self, tokens, cache)

    monkeypatch.setattr(StepRunner, "plain", counting)
    model = build(family, torch.bfloat16)  # (deepseek_v2's experts' grouped product on "cuda": bf16 only)
    # a prompt of 11 (past gemma2's window of 8) and 9 new tokens: the first decode step at 11, then 12 .. 19
    resumed = torchcost.analyze_generation(model, prompt_len=11, new_tokens=9, batch_size=2, target="cuda", tp=tp)
    with_resumption = plains[0]
    plains[0] = 0
    monkeypatch.setattr(generation._Generation, "_resume", lambda self, length, cache: None)
    anew = torchcost.analyze_generation(model, prompt_len=11, new_tokens=9, batch_size=2, target="cuda", tp=tp)
    assert resumed == anew
    # anew: 1 (step at 11) + 2 for each other step sampled + 3 for the growth; resumed: 4 fewer
    sampled = len(anew.samples)
    assert plains[0] == 1 + 2 * (sampled - 1) + 3
    assert with_resumption == plains[0] - 4
