"""The benchmark harness runs: the quick accuracy on two analytic models, with every tool that is installed.

With only `.[dev]` installed (no peers) the peers are reported as missing, never crash the run, and their own tests
skip; with `.[bench]` each installed peer is run too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from benchmarks import accuracy, report
from benchmarks.analytic import analytic_cases
from benchmarks.docs import replace_sections
from benchmarks.models import Built
from benchmarks.peers import PEERS, TOOLS, Measured, Tool, import_tool, run_tool
from torch import nn

import torchcost

CASES = [c for c in analytic_cases() if c.name in ("analytic:conv2d", "analytic:linear_3d")]


@contextlib.contextmanager
def _threads_kept() -> Iterator[None]:
    """While inside, torch's thread count may be pinned (the benchmarks pin one); it is put back on the way out."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _expected_status(tool: Tool, built: Built) -> str:
    """What the harness must report for ``tool`` here: "missing" if it is not installed, "unsupported" if it says it
    cannot take this input, else "ok" (the two cases are plain layers: no installed tool may crash on them)."""
    if tool.missing():
        return "missing"
    return "unsupported" if tool.supports(built) else "ok"


def test_two_analytic_cases_are_exact_for_torchcost_and_peers_never_crash() -> None:
    assert len(CASES) == 2
    results = accuracy.run_accuracy(CASES, TOOLS, log=lambda _text: None)
    builds = {c.name: c.build() for c in CASES}
    for case in results:
        tc = case.row("torchcost")
        assert tc is not None and tc.status == "ok"
        # the analytic values: Conv2d(3,4,3,p=1) on 1x3x64x64: 64*64*4*27 = 442,368 MACs, 108 params;
        # Linear(128,256) on 4x32x128: 4*32*128*256 = 4,194,304 MACs, 33,024 params
        assert (tc.params, tc.macs) == (case.ref_params, case.ref_macs)
        assert tc.macs_diff == 0 and tc.side_effects == []
        assert [row.tool for row in case.rows] == [t.name for t in TOOLS]  # every tool has its row
        for tool, row in zip(TOOLS, case.rows):
            assert row.status == _expected_status(tool, builds[case.case]), (tool.name, row.error)
            if row.status == "missing":
                assert f"pip install {tool.dist}" in row.error
    # FlopCounterMode ships with torch: it always runs, and counts these two exactly (2 FLOPs per MAC, halved)
    for case in results:
        fcm = case.row("FlopCounterMode")
        assert fcm is not None and fcm.status == "ok" and fcm.macs == case.ref_macs


def test_markdown_and_headline_render_from_the_results() -> None:
    acc = accuracy.run_accuracy(CASES[:1], [t for t in TOOLS if t.name in ("torchcost", "FlopCounterMode")],
                                log=lambda _text: None)
    results = {
        "date": "2026-11-23", "command": "pytest", "environment": report.environment(1), "seconds": 0,
        "tools": [{"name": t.name, "dist": t.dist, "unit": t.unit, "missing": t.missing()}
                  for t in TOOLS if t.name in ("torchcost", "FlopCounterMode")],
        "accuracy": [r.to_dict() for r in acc],
    }
    text = report.markdown(results)
    assert "## Accuracy" in text and "analytic:conv2d" in text and "FlopCounterMode" in text
    assert "uncounted ops over 1 models: none" in report.headline(results)


def test_the_peer_run_rewrites_only_its_own_sections_of_the_document(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Old title\n\nold preamble\n\n## Headline\n\nold headline\n\n## Speed: the overhead ladder\n\n"
                   "ladder rounds\n\n## Speed\n\nold speed\n\n## Method\n\nold method\n")
    replace_sections(doc, "# New title\n\nnew preamble\n\n## Headline\n\nnew headline\n\n## Speed\n\nnew speed\n\n"
                          "## Meta device: llama-3 configs\n\nnew meta\n\n## Method\n\nnew method\n")
    # the ladder (another benchmark's section) is kept in its place; the new "Meta device" section goes before
    # Method, where replace_section puts a section the file lacks
    assert doc.read_text() == ("# New title\n\nnew preamble\n\n## Headline\n\nnew headline\n\n"
                               "## Speed: the overhead ladder\n\nladder rounds\n\n## Speed\n\nnew speed\n\n"
                               "## Meta device: llama-3 configs\n\nnew meta\n\n## Method\n\nnew method\n")


@pytest.mark.parametrize("tool", PEERS, ids=lambda t: t.name)
def test_each_installed_peer_runs_on_the_two_cases(tool: Tool) -> None:
    if tool.missing():
        pytest.skip(tool.missing() or "")
    import_tool(tool)
    for case in CASES:
        outcome = run_tool(tool, case.build())
        assert outcome.status in ("ok", "unsupported"), outcome.error
        if outcome.status == "ok" and outcome.measured is not None and tool.counts_params:
            assert outcome.measured.params == case.params


def test_exact_match_names_the_missing_op() -> None:
    ops = [("aten::convolution", 1000, 10), ("aten::scaled_dot_product_attention", 300, 50), ("aten::addmm", 70, 7)]
    assert accuracy.exact_match(-300, ops).startswith("misses aten::scaled_dot_product_attention")
    assert "non-MAC FLOPs of aten::addmm" in accuracy.exact_match(7, ops)
    assert accuracy.exact_match(12345, ops) == ""


def test_side_effects_are_seen_and_global_patches_undone() -> None:
    class Leaves(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    original = torch.nn.functional.relu

    def sloppy(model: nn.Module, built: Built) -> Measured:
        model.register_forward_hook(lambda *a: None)
        model.extra_thing = 1
        torch.nn.functional.relu = lambda x, inplace=False: x  # type: ignore[assignment]
        model.train()
        raise RuntimeError("boom")

    tool = Tool("sloppy", "", "torch", "MACs", run=sloppy)
    built = Built(Leaves().eval(), (torch.zeros(2),))
    outcome = run_tool(tool, built)
    assert outcome.status == "crashed" and "boom" in outcome.error
    effects = " ".join(outcome.side_effects)
    assert "hooks left" in effects and "extra_thing" in effects and "train" in effects
    assert "torch functions left patched" in effects
    assert torch.nn.functional.relu is original  # put back
    assert built.model.training is False and not built.model._forward_hooks  # the tool had its own copy


def test_memory_harness_one_small_case_and_its_docs_section(tmp_path: Path) -> None:
    """The memory truth harness runs one small case in this process (an MLP's SGD step, about a second), and its
    markdown section replaces an earlier one, keeping the rest of the file."""
    from benchmarks import memory_accuracy as ma
    from benchmarks.memory_cases import CASES as MEMORY_CASES

    with _threads_kept():
        torch.set_num_threads(1)
        row = ma.measure_case(MEMORY_CASES["mlp-sgd-foreach-off"])
    assert row.truth > 0 and not row.error and abs(row.error_pct) <= ma.TOLERANCE, row
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\n{ma.HEADING}\n\nold table\n\n## Method\n\nkept\n")
    ma.write_docs(ma.markdown_section([row], 1, 1.0, "torchcost test"), doc)
    text = doc.read_text()
    assert text.count(ma.HEADING) == 1 and "old table" not in text and "| mlp-sgd-foreach-off |" in text
    assert text.startswith("# Title\n") and text.endswith("## Method\n\nkept\n")


def test_training_step_benchmark_one_small_case_and_its_docs_section(tmp_path: Path) -> None:
    """The training-step benchmark on its LoRA-style case (under a second): the frozen base computes no weight
    gradient, so the backward is less than the forward and 3 x forward overshoots; its section replaces an earlier
    one and keeps the rest of the file."""
    from benchmarks import training_step as ts

    case = next(c for c in ts.CASES if c.name == "lora-stack")
    with _threads_kept():
        torch.set_num_threads(1)
        r = ts.measure(case)
    # adapters only: 8 x (1024 x 8 + 8 x 1024) = 131,072 trainable; input_ids 4 x 128 = 512 tokens
    assert (r.trainable, r.tokens, r.recompute) == (131_072, 512, 0)
    assert 0 < r.backward < r.forward and r.step > r.forward + r.backward
    assert r.rule_3x > r.step and r.rule_6nd == 6 * 131_072 * 512 and r.rule_deepspeed == r.rule_3x
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\n{ts.HEADING}\n\nold table\n\n## Method\n\nkept\n")
    ts.write_docs(ts.markdown_section([r], 1.0), doc)
    text = doc.read_text()
    assert text.count(ts.HEADING) == 1 and "old table" not in text and "| lora-stack |" in text
    assert text.startswith("# Title\n") and text.endswith("## Method\n\nkept\n")


def test_speed_linearity_rows_count_the_ops_each_run_dispatches() -> None:
    from benchmarks import speed

    rows = speed.run_linearity([3], 1, [3], log=lambda _text: None)
    ops = rows[0]["ops"]
    # eval: per Linear(64, 64) + ReLU block on a 1x64 input, aten::t (the weight's transpose), aten::addmm,
    # aten::relu: 3 * 3 = 9 ops
    assert ops["analyze()"] == 9
    # a training step adds the loss, backward and the optimizer's per-parameter loop on top of those 9
    assert ops["train step"] > 9 * 10
    assert rows[0]["real step"] > 0  # the program itself, for the ratio beside the analyses'
    assert rows[0]["idle step"] > 0  # the same analysis with the collectors idle
    assert rows[0]["fake step"] > 0 and rows[0]["meta step"] > 0  # torch's fake mode alone, meta kernels alone
    body = speed.ladder_section("smoke", [], rows)
    assert "| 3 | 1 |" in body and "9 / " in body
    assert body.count("x, ") == 2  # the analysis's train / eval beside the idle step's and the program's


def test_the_idle_step_leaves_the_collectors_as_they_were() -> None:
    from benchmarks import speed

    from torchcost.collect.memory import MemoryTracker
    from torchcost.collect.ops import OpCollector
    from torchcost.run import execute

    before = OpCollector.on_aten, OpCollector._price, MemoryTracker.on_op, execute._optimizer_step
    built = speed.ladder_model("blocks2")
    speed._idle_step(built.model, built)
    with pytest.raises(RuntimeError), speed.switched_off(list(speed.SWITCHES)):
        raise RuntimeError("put back on the way out of an error too")
    assert (OpCollector.on_aten, OpCollector._price, MemoryTracker.on_op, execute._optimizer_step) == before
    # and an analysis after it counts: 2 blocks of a 1x64 by 64x64 product, 64 * 64 = 4,096 MACs each
    assert torchcost.analyze(built.model, *built.args).macs == 2 * 64 * 64 == 8_192


def test_speed_removal_rows_time_the_analysis_with_each_piece_off() -> None:
    from benchmarks import speed

    rows = speed.run_removal(speed.ladder_model("blocks2"), "train", 1)
    assert set(rows) == {"analyze()", "pricing off", "on_aten off", "on_op off", "optimizer step off",
                         "on_aten and on_op off", "on_aten, on_op and optimizer step off"}
    assert rows["analyze()"][:3] == (1.0, 1.0, 1.0)  # (the ratio of the whole analysis to itself)
    assert all(mid > 0 and to_eval is not None and to_eval > 0 for mid, _, _, to_eval in rows.values())
    # in eval there is no optimizer step to switch off, nor an eval analysis to compare with
    rows = speed.run_removal(speed.ladder_model("blocks2"), "eval", 1)
    assert "optimizer step off" not in rows and all(to_eval is None for *_, to_eval in rows.values())


def test_speed_attention_shows_what_the_fused_fast_path_hides_from_flop_counter_mode() -> None:
    import torchvision
    from benchmarks import speed
    from benchmarks.models import Built

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8,
                                               mlp_dim=16, num_classes=3).eval()
    row = speed.run_attention(Built(vit, (torch.randn(1, 3, 32, 32),)), 1)
    assert set(row["ratio"]) == {"forward, fast path off", "FlopCounterMode, fast path on",
                                 "FlopCounterMode, fast path off", "analyze()"}
    flops = row["flops"]
    # with the fast path on, the one attention layer is aten::_native_multi_head_attention, which FlopCounterMode
    # counts 0; with it off it counts the projections: (2*2 + 1) patches + the class token = 5 tokens, in_proj
    # 2 * 5*8*24 = 1,920, out_proj 2 * 5*8*8 = 640 (and the CPU attention kernel between them as 0 either way)
    assert flops["FlopCounterMode, fast path off"] - flops["FlopCounterMode, fast path on"] == 1_920 + 640
    # torchcost counts the attention's two products too: 2 heads x (5*5*4 for QK^T + 5*5*4 for AV) MACs = 400,
    # 800 FLOPs, beside what the layer norms, softmax and activations add
    assert flops["analyze()"] - flops["FlopCounterMode, fast path off"] >= 800
    assert torch.backends.mha.get_fastpath_enabled()


def test_versus_loads_a_commits_torchcost_beside_this_one(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from benchmarks import versus
    from benchmarks.speed import ladder_model

    if shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=versus.ROOT,
                                                     capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    old = versus.load_commit("HEAD", tmp_path)
    assert old.__name__.startswith("torchcost_") and old is not torchcost
    assert old.analyze.__module__ == f"{old.__name__}.api"  # its own modules, not this checkout's
    built = ladder_model("blocks3")
    row = versus.versus(old, torchcost, built, "eval", 2)
    assert row["same"] and row["old_ms"] > 0 and row["new_ms"] > 0
    # 3 blocks of Linear(64, 64) on a 1x64 input: 3 * 64*64 = 12,288 MACs, in either package
    assert old.analyze(built.model, *built.args).macs == torchcost.analyze(built.model, *built.args).macs == 12_288


def test_speed_parts_times_each_piece_inside_an_eval_analysis() -> None:
    from benchmarks import speed

    rows = {r["piece"]: r for r in speed.run_parts("mobilenet_v2", 1, log=lambda _text: None, warm=1)}
    assert len(rows) == len(speed._PARTS)
    # mobilenet_v2's ops: 52 convolutions, 52 batch norms of 2 ops each (the empty reserve and native_batch_norm),
    # 35 in-place ReLU6 (hardtanh_), 10 residual adds, then mean, view, t and addmm: 52 + 104 + 35 + 10 + 4 = 205
    assert rows["MemoryTracker.on_op"]["calls"] == 205
    # past the modes (planned): the convolutions, the batch norms' 104, the ReLU6s, and the classifier's t and addmm:
    # 52 + 104 + 35 + 2 = 193; under them: the adds, mean and view, 12. The op collector takes the planned ones
    # through on_planned, which hands the 53 free ones on to on_aten (52 reserves and the t): 12 + 53 = 65
    assert rows["OpCollector.on_planned"]["calls"] == 193
    assert rows["OpCollector.on_aten"]["calls"] == 65
    # kernel memory is asked for the 52 convolutions and the classifier's addmm: 53
    assert rows["MemoryTracker._kernel_memory"]["calls"] == 53
    # module calls, each module once: the model 1, features 1, features.0 (conv, bn, ReLU6 in a Sequential) 4,
    # features.1 (block, its Sequential, a 4-module depthwise stage, conv, bn) 8, features.2-17 16 x 12 (two
    # 4-module stages) = 192, features.18 4, classifier (Dropout, Linear) 3: 213
    assert rows["DirectLeaves.begin"]["calls"] == rows["ScopeTracker._record"]["calls"] == 213
    assert all(r["ms_per_analysis"] > 0 for r in rows.values())


def test_switch_identity_one_model_is_the_same_with_the_speed_paths_off() -> None:
    from benchmarks import switch_identity

    made = switch_identity.MODELS["tv:squeezenet1_1"]()
    found = switch_identity.compare(made)
    assert found["eval"] == found["train"] == "identical"
    assert found["taped"] == "identical (replayed)"  # (the optimizer's step from the tapes the first step wrote)
    # the third eval analysis skipped kernels and reported the same (squeezenet1_1 in a fresh process: its 26
    # convolutions, 26 ReLUs and the average pooling, 26 + 26 + 1 = 53; its max poolings with ceil_mode are not
    # planned leaves and eval dropout has no kernel to skip; fewer where an earlier test learnt a kind as not worth it)
    assert found["skipped"].startswith("identical (") and not found["skipped"].startswith("identical (0 ")


def test_speed_twin_eval_runs_an_eval_analysis_on_twins_and_diffs_the_reports() -> None:
    from benchmarks import speed

    built = speed.ladder_model("blocks3")
    row = speed.run_twin_eval(built, 1)
    # the stack's report on a fake twin and on a meta twin is the real run's (memory/method aside)
    assert row["differences"] == {"fake twin": [], "meta twin": []}
    assert set(row["ratio"]) == {"analyze()", "fake twin", "meta twin"} and all(row["ratio"].values())
    # the benchmark's choice is put back: an eval analysis of a CPU model runs the model itself again
    r = torchcost.analyze(built.model, *built.args)
    assert r.memory is not None and r.memory.method == "real"
    assert r.macs == 3 * 64 * 64 == 12_288


def test_speed_tree_copy_times_both_ways_of_copying_a_twins_tree() -> None:
    from benchmarks import speed

    (row,) = speed.run_tree_copy(["blocks3"], 1)
    # the model, its Sequential, and 3 x (Linear, ReLU): 1 + 1 + 6 = 8 modules
    assert row["model"] == "blocks3" and row["modules"] == 8
    assert row["before"] > 0 and row["_tree_copy"] > 0


def test_the_first_analysis_benchmark_prints_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import first_analysis

    assert first_analysis.main(["squeezenet1_1", "1"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("squeezenet1_1 batch 1: forward ") and "analyze()" in line


def test_the_first_analysis_benchmark_takes_a_stack_and_a_training_step(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import first_analysis

    assert first_analysis.main(["blocks3", "--mode", "train", "--optimizer", "sgd", "--preimport", "json,csv"]) == 0
    line, imports = capsys.readouterr().out.splitlines()
    assert line.startswith("blocks3 batch 1: forward ") and "analyze(mode=train, optimizer=sgd)" in line
    assert "torch._dynamo imported: " in line
    assert imports.startswith("imported by the analysis: ") and " modules" in imports


def test_the_growth_benchmark_prints_a_row_per_size(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import speed

    with _threads_kept():  # (the benchmark pins one thread)
        assert speed.main(["growth", "--sizes", "2,3", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| N | rounds | analyze(): us a block") and len(lines) == 4
    assert lines[2].startswith("| 2 | 1 | ") and lines[2].endswith("x | - |")  # (no size before the first)
    assert lines[3].startswith("| 3 | 1 | ") and lines[3].endswith(" |") and lines[3].count("|") == 7


def test_the_phases_benchmark_splits_a_training_step_and_puts_its_functions_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from benchmarks import speed

    before = {label: getattr(importlib.import_module(m), n) for label, (m, n) in speed.PHASES.items()}
    with _threads_kept():  # (the benchmark pins one thread)
        times = speed.run_phases(speed.ladder_model("blocks2"), 2)
        assert speed.main(["phases", "--models", "blocks2", "--rounds", "1"]) == 0
    assert {label: getattr(importlib.import_module(m), n) for label, (m, n) in speed.PHASES.items()} == before
    assert all(len(values) == 2 for values in times.values())
    # each part was timed once a round, and the parts with what is left make up the step (the rest may be a hair
    # below 0 from the clock's granularity)
    for i in range(2):
        parts = sum(times[label][i] for label in (*speed.PHASES, "rest"))
        assert parts == pytest.approx(times["training step"][i], rel=1e-9)
        assert all(times[label][i] > 0 for label in speed.PHASES)
    # the caption and a blank line, the table's head and rule, then 7 parts + "rest" + the step + eval: 2 + 2 + 10
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| part | blocks2 |" and lines[-1].startswith("| eval | ") and len(lines) == 2 + 2 + 10


@pytest.mark.parametrize("twin", ["meta", "copy"])
def test_the_phases_benchmark_runs_the_step_on_the_twin_asked_and_puts_the_choice_back(twin: str) -> None:
    from benchmarks import speed

    from torchcost.run import execute

    choose = execute.choose_method
    methods: list[str] = []
    original = execute.execute

    def spy(*args: Any, **kwargs: Any) -> Any:
        ran = original(*args, **kwargs)
        methods.append(ran.method)
        return ran

    execute.execute = spy
    try:
        with _threads_kept():
            times = speed.run_phases(speed.ladder_model("blocks2"), 1, twin)
    finally:
        execute.execute = original
    assert execute.choose_method is choose
    # 3 untimed pairs and 1 timed pair of (training step, eval analysis): the steps on the twin asked, eval as always
    assert methods == [twin, "real"] * 4
    assert times["training step"][0] > 0


def test_where_lists_equal_differences_by_name() -> None:
    model = nn.Sequential()
    model.add_module("z", nn.ReLU())
    model.add_module("a", nn.Linear(2, 2))
    # ReLU +10 and Linear -10 over a reference of 1,000: equal sizes, so by name, whatever order a set gives
    assert accuracy.where(model, {"z": 10, "a": 0}, {"z": 0, "a": 10}, 1000) == "Linear -10 (1), ReLU +10 (1)"


def test_the_dynamo_identity_benchmark_compares_a_case(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import dynamo_identity

    assert dynamo_identity.main(["--cases", "standard_conv meta"]) == 0
    out = capsys.readouterr().out
    assert "| standard_conv meta | identical |" in out and "1 of 1 identical" in out


def test_the_cli_wall_benchmark_times_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import cli_wall

    assert cli_wall.main(["--rounds", "1", "--", "--version"]) == 0  # ("--": a command that starts with a dash)
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.startswith("| `torchcost --version`")]
    assert len(row) == 1 and "FAILED" not in row[0]


def test_the_ops_benchmark_times_each_op_part_by_part_and_puts_its_functions_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from benchmarks import speed

    def current() -> dict[str, object]:
        return {label: getattr(getattr(importlib.import_module(m), c), n) for label, (m, c, n) in
                speed.OP_PARTS.items()}

    before, backward = current(), torch.autograd.backward
    with _threads_kept():  # (the benchmark pins one thread)
        spent = speed.run_op_costs(speed.ladder_model("blocks2"), 2)
        assert speed.main(["ops", "--model", "blocks2", "--rounds", "1", "--top", "3"]) == 0
    assert current() == before and torch.autograd.backward is backward
    # the stack of 2 blocks: its backward's two products (each Linear's weight gradient; the first layer's input
    # needs none, so 1 + 2 = 3), twice (2 rounds), each whole handling no shorter than the answer inside it
    calls, whole = spent[("backward", "aten.mm.default")]["whole"]
    assert calls == 3 * 2 and whole >= spent[("backward", "aten.mm.default")]["answer"][1] > 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| phase | op | calls | ms a step | whole |") and len(lines) == 2 + 2 + 3


def test_the_against_benchmark_loads_another_tree_that_shares_no_module(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from benchmarks import against, speed

    src = Path(torchcost.__file__).parent.parent  # (this checkout's own tree stands for the other version)
    old = against.load_old(src, tmp_path)
    try:
        assert old is not torchcost and old.analyze is not torchcost.analyze
        built = speed.ladder_model("blocks2")
        times = against.run_against(old, torchcost, built, 2, "train")
        assert [len(times["old"]), len(times["new"])] == [2, 2]
        mine = {name for name in sys.modules if name.startswith(against.OLD_NAME)}
        assert f"{against.OLD_NAME}.collect.ops" in mine
        # every module the copy loaded is the copy's own: none of its files imports this checkout's modules
        files = [m.__file__ for name, m in sys.modules.items() if name in mine and getattr(m, "__file__", None)]
        assert files and all(str(tmp_path) in f for f in files)
        assert old.analyze(built.model, *built.args, mode="train").to_dict() == \
            torchcost.analyze(built.model, *built.args, mode="train").to_dict()
        # --phases: each version's parts timed in its own analyses, a value per timed round, every part seen
        import torch.autograd

        backward = torch.autograd.backward
        times, parts = against.run_against_phases(old, torchcost, built, 2, "train")
        assert [len(times["old"]), len(times["new"])] == [2, 2]
        assert set(parts) == {"old", "new"} and set(parts["old"]) == set(speed.PHASES)
        for version in ("old", "new"):
            for label, values in parts[version].items():
                assert len(values) == 2 and all(v > 0 for v in values), (version, label)
                if label != "backward":  # (autograd's, the same function for both)
                    assert all(v < t for v, t in zip(values, times[version])), (version, label)
        assert torch.autograd.backward is backward  # (every part put back)
        assert sys.modules[f"{against.OLD_NAME}.run.execute"]._forward.__module__.startswith(against.OLD_NAME)
        # --answers: each version's own shortcuts, per call of each op, a value a round
        answers = against.run_answers(old, torchcost, 2, calls=20)
        assert set(answers) == set(against.ANSWERED)
        assert all(len(by[v]) == 2 and all(t > 0 for t in by[v]) for by in answers.values() for v in ("old", "new"))
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith(against.OLD_NAME)]:
            del sys.modules[name]


def test_report_identity_gives_the_same_reports_in_a_shuffled_order(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import report_identity

    cases = "mlp-eval,shared-train,twice-eval,mlp-train-sgd"
    with _threads_kept():  # (the benchmark pins one thread)
        assert report_identity.main(["--out", str(tmp_path / "a.json"), "--cases", cases]) == 0
        assert report_identity.main(["--out", str(tmp_path / "b.json"), "--cases", cases, "--shuffle", "5",
                                     "--against", str(tmp_path / "a.json")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"4 reports, 4 identical to {tmp_path / 'a.json'}, 0 differ (0 ended in an error)"


def test_the_zoo_sweep_runs_a_model_in_a_child_and_sorts_the_outcomes() -> None:
    from benchmarks import sweep

    records = sweep.run("torchvision", only=["mobilenet_v3_small"], log=lambda _line: None)
    assert len(records) == 1 and "error" not in records[0], records
    record = records[0]
    assert record["meta_same"] and record["clean cpu"] and record["clean meta"] and record["uncounted"] == []
    assert sweep.outcome(record) == "ok"
    # the classes of the summary, from the errors the round 33 sweeps met
    assert sweep.outcome({"error": "train (cpu): ShapeError: ... Expected more than 1 value per channel ..."}) == \
        "batch 1"
    assert sweep.outcome({"error": "eval (meta): ModelError: ... Tensor.item() cannot be called on meta tensors"}) \
        == "values"
    assert sweep.outcome({"error": "resolve (meta): SpecError: hf:x.json: transformers rejects this config: ..."}) \
        == "config"
    assert sweep.outcome({"error": "eval (cpu): ModelError: ... missing 1 required positional argument: 'grid'"}) \
        == "inputs"
    assert sweep.outcome({"uncounted": ["aten::_fft_c2c"]}) == "other"
    assert sweep.outcome({"uncounted": [], "meta_same": False}) == "meta differs"
    assert sweep.outcome({"error": "eval (cpu): ModelError: ... 'NoneType' object has no attribute 'to' (the forward "
                                   "used something it was given as None: often an input it needs beside those "
                                   "given; ...)"}) == "inputs"
    # a hybrid's per-layer kinds cut to two keep a full attention layer (transformers' cache wants one); other
    # kinds are cut as they come
    assert sweep._two_kinds(["linear_attention"] * 3 + ["full_attention"]) == ["linear_attention", "full_attention"]
    assert sweep._two_kinds(["linear_attention", "full_attention", "moe"]) == ["linear_attention", "full_attention"]
    assert sweep._two_kinds(["linear_attention"] * 2 + ["hybrid"]) == ["linear_attention"] * 2
    assert sweep.summary("torchvision", records).startswith("torchvision: 1 models; ok 1, meta differs 0, config 0")


def test_the_backward_floors_benchmark_prints_a_row_per_kind_of_tensors(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import speed

    with _threads_kept():  # (the benchmark pins one thread)
        assert speed.main(["backward-floors", "--blocks", "2", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| tensors")]
    assert [row.split(" | ")[0][2:] for row in rows] == list(speed.BACKWARD_FLOORS)
    assert rows[0].endswith(" | 1.0x |")
