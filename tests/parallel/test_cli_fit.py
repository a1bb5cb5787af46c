"""The distributed flags of the command line (--fsdp, --tp, --ddp, --world, ...), "will it fit" per rank
(max_batch_size(parallel=), --memory-budget with --fsdp) and the FSDP sweep (fsdp_sweep, --fsdp-sweep).

The tests call ``torchcost.cli.main`` in this process (what the console script and ``python -m torchcost`` call)
to stay fast; tests/cli runs the command itself in subprocesses. Sizes: fp32 (4 B an element), target "cpu" (no
rounding, no allowance) unless said otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from torch import nn

import torchcost
from tests.cli.conftest import validate
from torchcost import InputError, Parallel, cli
from torchcost.fit import fsdp_sweep

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

class Net(nn.Sequential):
    """The model of the CLI runs (spec ``tests.parallel.test_cli_fit:Net``) and of the library calls beside them."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(64, 37), nn.ReLU(), nn.Linear(37, 64), nn.ReLU(), nn.Linear(64, 64))


def net() -> nn.Sequential:
    return Net()


# the weights (rows, cols) of net(), each with a bias of ``rows``
WEIGHTS = ((37, 64), (64, 37), (64, 64))


def shard_bytes(ranks: int) -> int:
    """FSDP2's padded local shards: ceil(rows / N) rows of every weight and bias, 4 B an element."""
    return sum(math.ceil(rows / ranks) * (cols + 1) * 4 for rows, cols in WEIGHTS)


@pytest.fixture
def spec() -> str:
    return "tests.parallel.test_cli_fit:Net"


def cli_out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def cli_err(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert captured.out == "" and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def args(*argv: str) -> Parallel | None:
    return cli._parallel(cli._analyze_parser().parse_args(list(argv)))


# -- the flags -------------------------------------------------------------------------------------------------------

def test_flags_build_the_parallel() -> None:
    assert args() is None
    assert args("--fsdp", "8") == Parallel(fsdp=8)
    assert args("--world", "8", "--tp", "2") == Parallel(fsdp=4, tp=2)
    assert args("--world", "8") == Parallel(fsdp=8)
    assert args("--world", "2", "--tp", "2") == Parallel(tp=2)
    assert args("--world", "8", "--fsdp", "4", "--tp", "2") == Parallel(fsdp=4, tp=2)
    assert args("--world", "8", "--ddp", "4", "--tp", "2") == Parallel(ddp=4, tp=2)
    assert args("--fsdp", "4", "--no-reshard", "--param-dtype", "bf16", "--reduce-dtype", "fp32", "--rank", "3") == \
        Parallel(fsdp=4, reshard_after_forward=False, param_dtype=torch.bfloat16, reduce_dtype=torch.float32, rank=3)
    assert args("--ddp", "4", "--bucket-cap-mb", "2.5") == Parallel(ddp=4, bucket_cap_mb=2.5)


@pytest.mark.parametrize("flags", [
    ("--fsdp", "4"),
    ("--fsdp", "4", "--rank", "1", "--no-reshard"),
    ("--ddp", "2", "--bucket-cap-mb", "0.02"),
    ("--world", "4"),
])
def test_cli_json_is_the_library_report(capsys: pytest.CaptureFixture[str], spec: str, flags: tuple[str, ...]) -> None:
    out = cli_out(capsys, spec, "--input-size", "8,64", "--train", "--target", "cpu", "--format", "json", *flags)
    data = json.loads(out)
    validate(data, "report.schema.json")
    plan = args(*flags)
    assert plan is not None
    lib = torchcost.analyze(net(), torch.randn(8, 64), mode="train", target="cpu", parallel=plan).to_dict()
    assert data == lib


def test_budget_per_rank_json_and_table(capsys: pytest.CaptureFixture[str], spec: str) -> None:
    common = (spec, "--input-size", "8,64", "--train", "--target", "cpu", "--fsdp", "4", "--memory-budget", "1MiB")
    data = json.loads(cli_out(capsys, *common, "--format", "json"))
    validate(data, "report.schema.json")
    fit = data["max_batch_size"]
    # net() has 37-row shards on 4 ranks: rank 0 (10 rows) is worse than rank 3 (7 rows), and every probe uses it
    assert (fit["rank"], fit["world"]) == (0, 4) == (data["parallel"]["rank"], data["parallel"]["world"])
    lib = torchcost.max_batch_size(net(), torch.randn(8, 64), budget="1MiB", mode="train", target="cpu",
                                   parallel=Parallel(fsdp=4, rank=0))
    assert fit["batch_size"] == lib.batch_size > 0 and fit["peak_bytes"] == lib.peak_bytes
    text = cli_out(capsys, *common)
    assert "Largest batch per rank (rank 0 of 4; each rank's own batch) within 1.00 MiB" in text


@pytest.mark.parametrize(("flags", "words"), [
    (("--world", "6", "--tp", "4"), "--world 6 does not factor as fsdp x tp with --tp 4"),
    (("--world", "8", "--fsdp", "2"), "--world 8 is not fsdp x tp = 2 x 1 = 2"),
    (("--fsdp", "2", "--ddp", "2"), "--fsdp and --ddp cannot be combined"),
    (("--param-dtype", "bf16"), "--param-dtype goes with --fsdp"),
    (("--ddp", "2", "--no-reshard"), "--no-reshard is an FSDP2 option"),
    (("--fsdp", "2", "--bucket-cap-mb", "5"), "--bucket-cap-mb is DDP's"),
    (("--fsdp", "0"), "not a positive int: '0'"),
    (("--fsdp", "4", "--rank", "4"), "Parallel.rank must be in 0..3"),
    (("--fsdp", "1"), "a world of 1 rank is not distributed"),
    (("--tp", "2"), "no built-in tensor-parallel plan for Net"),
    (("--fsdp-sweep", "2,x"), "not a list of positive ints"),
    (("--fsdp-sweep", "2,4", "--fsdp", "2"), "--fsdp-sweep gives the FSDP degrees itself"),
])
def test_bad_flags_are_one_line(capsys: pytest.CaptureFixture[str], spec: str, flags: tuple[str, ...],
                                words: str) -> None:
    line = cli_err(capsys, spec, "--input-size", "8,64", "--train", *flags)
    assert line.startswith("torchcost") and words in line, line


def test_tp_not_dividing_heads(capsys: pytest.CaptureFixture[str]) -> None:
    line = cli_err(capsys, "hf:llama-3-8b", "--meta", "--train", "--config", "num_hidden_layers=1", "--tp", "3",
                   "--seq-len", "8")
    assert line == ("torchcost: Parallel: tp=3 does not divide the model's num_attention_heads=32; tensor "
                    "parallelism splits whole heads")


def test_world_shorthand_with_tp_on_a_llama(capsys: pytest.CaptureFixture[str]) -> None:
    # fsdp 2 x tp 2 with the worst rank looked for: the norms (1-D, replicated) no longer make the TP ranks look
    # different, so one rank answers for all (every dimension of this config divides by 2)
    tiny = ("--config", "num_hidden_layers=1", "--config", "hidden_size=64", "--config", "intermediate_size=128",
            "--config", "num_attention_heads=4", "--config", "num_key_value_heads=2", "--config", "vocab_size=256")
    data = json.loads(cli_out(capsys, "hf:llama-3-8b", "--meta", "--train", "--seq-len", "16", *tiny,
                              "--world", "4", "--tp", "2", "--format", "json"))
    validate(data, "report.schema.json")
    p = data["parallel"]
    assert (p["world"], p["fsdp"], p["tp"], p["mesh_shape"], p["ranks_analyzed"]) == (4, 2, 2, [2, 2], [0])


# -- the sweep -------------------------------------------------------------------------------------------------------

def test_sweep_table_values_by_hand(capsys: pytest.CaptureFixture[str], spec: str) -> None:
    out = cli_out(capsys, spec, "--input-size", "8,64", "--train", "--target", "cpu", "--fsdp-sweep", "2,4,8",
                  "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["world"]) for r in rows] == [2, 4, 8]
    assert [r["mesh"] for r in rows] == ["2 x 1", "4 x 1", "8 x 1"]
    for row in rows:
        n = int(row["world"])
        # parameter shards: ceil(rows / N) * (cols + 1) * 4 B per Linear; e.g. N = 8: 5*65*4 + 8*38*4 + 8*65*4
        assert int(row["param_shards"]) == shard_bytes(n)
        # every collective of one step: all-gather forward + backward (the unit's full parameters, padded to N
        # chunks) and one reduce-scatter (its full padded gradients): 3 x the padded parameters
        padded = sum(math.ceil(r / n) * n * (c + 1) * 4 for r, c in WEIGHTS)
        assert int(row["comm_bytes"]) == 3 * padded
        parts = ("param_shards", "gradients", "optimizer_state", "unsharded_params", "comm_buffers", "activations")
        assert sum(int(row[k]) for k in parts) == int(row["peak"])
    assert "max_batch" not in rows[0]
    # the step's FLOPs per rank: the same local batch, so the same forward and backward; AdamW on smaller shards
    flops = [int(r["step_flops"]) for r in rows]
    assert flops[0] > flops[1] > flops[2]
    text = cli_out(capsys, spec, "--input-size", "8,64", "--train", "--target", "cpu", "--fsdp-sweep", "2,4,8")
    assert "Param shards" in text.splitlines()[1] and "Max batch" not in text


def test_sweep_json_with_budget(capsys: pytest.CaptureFixture[str], spec: str) -> None:
    data = json.loads(cli_out(capsys, spec, "--input-size", "8,64", "--train", "--target", "cpu",
                              "--fsdp-sweep", "2,8", "--memory-budget", "1MiB", "--format", "json"))
    entries = data["sweep"]
    assert [e["world"] for e in entries] == [2, 8]
    for entry in entries:
        validate({**entry["report"], "max_batch_size": entry["max_batch_size"]}, "report.schema.json")
        assert entry["max_batch"] == entry["max_batch_size"]["batch_size"]
        assert entry["global_batch"] == entry["max_batch"] * entry["fsdp"]
        assert entry["peak"] == entry["report"]["memory"]["peak_bytes"]
    assert entries[0]["max_batch"] <= entries[1]["max_batch"]
    out = cli_out(capsys, spec, "--input-size", "8,64", "--train", "--target", "cpu", "--fsdp-sweep", "2,8",
                  "--memory-budget", "1MiB", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["max_batch"]) for r in rows] == [e["max_batch"] for e in entries]


def test_fsdp_sweep_library_matches_analyze() -> None:
    x = torch.randn(8, 64)
    points = fsdp_sweep(net(), x, degrees=(2, 4), target="cpu")
    for point, n in zip(points, (2, 4)):
        assert point.world == n and point.fit is None
        alone = torchcost.analyze(net(), x, mode="train", target="cpu", parallel=Parallel(fsdp=n))
        assert point.report.to_dict() == alone.to_dict()
        assert point.parallel.rank == alone.parallel.rank  # type: ignore[union-attr]
    with pytest.raises(InputError, match="degrees"):
        fsdp_sweep(net(), x, degrees=(0,), target="cpu")
    with pytest.raises(InputError, match="without ddp"):
        fsdp_sweep(net(), x, degrees=(2,), parallel=Parallel(ddp=2), target="cpu")


# -- max_batch_size(parallel=) ---------------------------------------------------------------------------------------

def wide() -> nn.Sequential:
    """Parameters dominate: 4 x Linear(256, 256) = 4 x 65792 elements (257 KiB each in fp32)."""
    return nn.Sequential(*[nn.Linear(256, 256) for _ in range(4)])


def test_max_batch_size_grows_with_the_world() -> None:
    x = torch.randn(4, 256)
    fits = [torchcost.max_batch_size(wide(), x, budget="4MiB", mode="train", target="cpu",
                                     parallel=Parallel(fsdp=n)) for n in (2, 4, 8)]
    sizes = [f.batch_size for f in fits]
    assert 0 < sizes[0] < sizes[1] < sizes[2], sizes
    for fit, n in zip(fits, (2, 4, 8)):
        assert fit.world == n and fit.rank == 0  # every rank holds the same shards: rank 0 for all
        assert fit.needed_bytes <= fit.budget_bytes
        # the next batch does not fit: the answer is the largest one
        over = torchcost.analyze(wide(), torch.randn(fit.batch_size + 1, 256), mode="train", target="cpu",
                                 parallel=Parallel(fsdp=n, rank=0))
        assert over.peak_memory > fit.budget_bytes
    single = torchcost.max_batch_size(wide(), x, budget="4MiB", mode="train", target="cpu")
    assert single.batch_size < sizes[0] and single.rank is None and single.world == 1
    with pytest.raises(InputError, match=r"torchcost\.Parallel"):
        torchcost.max_batch_size(wide(), x, budget="4MiB", parallel={"fsdp": 2})  # type: ignore[arg-type]


def test_help_lists_the_distributed_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--fsdp N", "--tp N", "--ddp N", "--world N", "--no-reshard", "--param-dtype DTYPE",
                 "--reduce-dtype DTYPE", "--bucket-cap-mb MB", "--rank R", "--fsdp-sweep N,N,..."):
        assert flag in text, flag
