"""One real distributed run against the simulated rank (issue 12): a 2-process gloo launch of GPT-2 (2 layers, FSDP2,
uneven vocabulary shards) from benchmarks/distributed_truth.py, and torchcost's prediction of rank 0 on the same
model, wrapping, optimizer, loss and inputs (benchmarks/distributed_accuracy.py builds it).

The real peak is the "clean" one: the steps in which the profiler lost no free of a collective's buffer (gloo frees
them on its worker thread, which the profiler does not watch; such a step reads whole buffers higher until its end).
Leaks only ever add, so every recorded step is at least the clean value. About 30-50 s on 2 cores: marked slow.
"""

from __future__ import annotations

import warnings

import pytest

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("needs torch.distributed with gloo", allow_module_level=True)
pytest.importorskip("transformers")

from benchmarks import distributed_accuracy as accuracy  # noqa: E402
from benchmarks import distributed_truth as truth_mod  # noqa: E402

CASE = "gpt2_fsdp_w2"
TOLERANCE = 0.02  # benchmarks/distributed_accuracy.py: 2 % of the clean truth (achieved here: exact to the byte)


@pytest.mark.slow
def test_rank0_matches_a_real_gloo_run() -> None:
    real = truth_mod.truth(CASE, steps=3)
    assert not real["errors"], real["errors"]
    rank0 = next(m for m in real["ranks"] if m["rank"] == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = accuracy.predict(CASE, 0)

    # collectives: the same calls and bytes of every kind (the real step's dispatch log vs the simulated rank's)
    assert accuracy.by_kind_truth(rank0["collectives"]) == predicted["collectives"]
    # 2 units (blocks) + the root: an all-gather each in the forward and again in the backward, a reduce-scatter each
    assert predicted["collectives"]["all_gather"][0] == 6
    assert predicted["collectives"]["reduce_scatter"][0] == 3

    # memory: within 2 % of the clean real peak; a launch without a clean step still bounds the prediction from
    # above (lost frees only add to a step's recorded peak)
    if rank0["clean_min"] is not None:
        assert abs(predicted["peak"] - rank0["clean_min"]) <= TOLERANCE * rank0["clean_min"], (predicted, rank0)
    else:  # pragma: no cover (9 of 10 steps were clean in the stored runs)
        assert predicted["peak"] <= (1 + TOLERANCE) * rank0["min"], (predicted, rank0)
