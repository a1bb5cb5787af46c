"""The serving API and command line: shipped configs at their published sizes, bad input as one readable error,
the report's round trip, the budget searches, the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import transformers
from torch import nn

import torchcost
from tests.serve.models import build
from torchcost import cli


def test_new_configs_are_listed() -> None:
    # their published sizes are checked, with the derivation, in tests/resolve/test_resolve.py
    from torchcost.resolve.hf import names

    listed = dict(names())
    assert "sliding" not in listed["gemma-2-9b"]  # a one-line description: class, layers, hidden
    assert {"gemma-2-9b", "gemma-3-1b", "deepseek-v2-lite", "qwen3-30b-a3b"} <= set(listed)


def test_bad_input_is_one_input_error() -> None:
    model = build("llama")
    with pytest.raises(torchcost.InputError, match="prompt_len must be a whole number >= 1"):
        torchcost.analyze_generation(model, prompt_len=0)
    with pytest.raises(torchcost.InputError, match="not a transformers model"):
        torchcost.analyze_generation(nn.Linear(2, 2), prompt_len=4)
    bert = transformers.BertForMaskedLM(transformers.BertConfig(num_hidden_layers=1, hidden_size=32,
                                                                num_attention_heads=2, intermediate_size=64))
    with pytest.raises(torchcost.InputError, match="cannot generate text"):
        torchcost.analyze_generation(bert, prompt_len=4)
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(num_layers=1, d_model=32, d_kv=8, d_ff=64,
                                                                       num_heads=2, vocab_size=64))
    with pytest.raises(torchcost.InputError, match="encoder-decoder"):
        torchcost.analyze_generation(t5, prompt_len=4)


def test_report_round_trip_and_views() -> None:
    report = torchcost.analyze_generation(build("gemma2"), prompt_len=12, new_tokens=3, batch_size=2, target="cpu")
    back = torchcost.GenerationReport.from_json(report.to_json())
    assert back == report
    assert back.prefill_report is not None and back.prefill_report.flops == report.prefill.flops
    assert back.decode_report is not None and back.decode_report.macs == report.decode_last.macs  # type: ignore[union-attr]
    # the peak's parts sum to it
    assert report.peak_weights_bytes + report.peak_cache_bytes + report.peak_activation_bytes == report.peak_bytes
    text = report.table()
    assert "sliding attention 8 x 1" in text and "KV cache at the end" in text
    assert report.markdown().startswith("| | |")


def test_budget_searches_find_the_boundary() -> None:
    model = build("llama")
    at = torchcost.analyze_generation(model, prompt_len=40, new_tokens=2, batch_size=2, target="cpu", reports=False)
    fit = torchcost.max_context(model, budget=at.peak_bytes, new_tokens=2, batch_size=2, target="cpu")
    # the peak grows with the prompt: 40 fits exactly, so the answer is 40 or a little more, and one more does not
    assert fit.prompt_len >= 40 and fit.context == fit.prompt_len + 2
    assert fit.peak_bytes <= at.peak_bytes
    more = torchcost.analyze_generation(model, prompt_len=fit.prompt_len + 1, new_tokens=2, batch_size=2,
                                        target="cpu", reports=False)
    assert more.peak_bytes > at.peak_bytes
    batch = torchcost.max_serving_batch(model, budget=at.peak_bytes, prompt_len=40, new_tokens=2, target="cpu")
    assert batch.batch_size == 2  # batch 3 needs more: a third sequence adds its activations and its cache
    nothing = torchcost.max_serving_batch(model, budget=1000, prompt_len=40, target="cpu")
    assert nothing.batch_size == 0 and "not even batch 1" in nothing.text()


def test_cli_generation_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["hf:llama-3-8b", "--meta", "--config", "num_hidden_layers=1", "--prompt-len", "16",
                   "--new-tokens", "4", "--batch-size", "2", "--format", "json", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)["generation"]
    # llama-3-8b's attention, one layer: 2 (K, V) x 1 layer x 8 kv heads x 128 x (16 + 4 - 1) tokens x 2 x 2 bytes
    assert data["kv_cache_bytes"] == 2 * 1 * 8 * 128 * 19 * 2 * 2 == 155_648
    assert data["kv_bytes_per_token"] == 2 * 8 * 128 * 2  # one more token of one sequence
    assert data["target"] == "cuda"


@pytest.mark.parametrize(("argv", "message"), [
    (["--prompt-len", "0"], "argument --prompt-len: not a positive int"),
    (["--prompt-len", "8", "--max-batch"], "--max-context and --max-batch need --memory-budget SIZE"),
    (["--prompt-len", "8", "--fsdp", "2"], "--fsdp does not go with a serving analysis"),
    (["--prompt-len", "8", "--format", "csv"], "a serving analysis prints --format table, markdown or json"),
])
def test_cli_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["hf:llama-3-8b", "--meta", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err


def test_cli_non_causal_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["hf:bert-base-uncased", "--meta", "--config", "num_hidden_layers=1", "--prompt-len", "8",
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == ["torchcost: BertForMaskedLM cannot generate text (not a causal language "
                                        "model, or no generation head); give its ...ForCausalLM class"]


def test_meta_model_is_left_alone() -> None:
    model = build("llama").to("meta")
    before = [(n, p.dtype, p.device.type) for n, p in model.named_parameters()]
    torchcost.analyze_generation(model, prompt_len=4, new_tokens=2, dtype=torch.bfloat16, reports=False)
    assert [(n, p.dtype, p.device.type) for n, p in model.named_parameters()] == before


def test_tensor_parallel_rank() -> None:
    model = build("llama")
    report = torchcost.analyze_generation(model, prompt_len=12, new_tokens=6, batch_size=2, tp=2, reports=False)
    assert report.tp == 2 and report.target == "cuda"
    # each of the 2 ranks holds 1 of the 2 KV heads: 2 (K, V) x 2 layers x 1 x 16 x 17 tokens x 2 sequences x 4 bytes
    assert report.kv_cache_bytes == 2 * 2 * 1 * 16 * 17 * 2 * 4 == 8704
    # one decode step at context 12, per sequence (as in test_truth.py's hand count): q, o 64 x 64, k, v 64 x 32, the
    # MLP 3 x 64 x 128, attention 2 x 4 heads x 13 keys x 16, the head 64 x 128; the built-in plan splits every
    # product in two (columns of q, k, v, gate, up and the head, rows of o and down, so the heads too)
    per_sequence = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 4 * 13 * 16) + 64 * 128
    assert report.decode_first is not None and report.decode_first.macs == 2 * per_sequence // 2 == 85_248


def test_cli_generation_of_a_cpu_model_builds_it_on_meta(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Every step of a generation runs on a meta twin, so the CLI builds a CPU model on meta (no weights allocated
    or filled: llama-3-8b took 351 s and 16.7 GB of RAM for a --max-batch search, 185 s and 1.1 GB now) and keeps
    the CPU's memory target: the report is the one a model built on the CPU gets."""
    asked: list[bool] = []
    resolve = cli.resolve
    monkeypatch.setattr(cli, "resolve", lambda spec, **kw: asked.append(kw["meta"]) or resolve(spec, **kw))
    rc = cli.main(["hf:gpt2", "--config", "n_layer=1", "--prompt-len", "16", "--new-tokens", "3", "--format", "json",
                   "--no-progress"])
    assert rc == 0 and asked == [True]
    data = json.loads(capsys.readouterr().out)["generation"]
    real = resolve("hf:gpt2", config={"n_layer": 1}).model  # (weights on the CPU)
    assert next(real.parameters()).device.type == "cpu"
    expected = torchcost.analyze_generation(real, prompt_len=16, new_tokens=3)
    assert data == json.loads(json.dumps(expected.to_dict())) and data["target"] == "cpu"



def test_a_peak_that_changes_op_is_summed_from_four_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the op at a decode step's peak changes with the context, the peak has a kink (the highest of affine
    lines): no halving is needed, since its highest on a piece is at an end. The report is the one every step run
    gives."""
    from torchcost.resolve import resolve
    from torchcost.serve import generation
    from torchcost.serve.report import DecodePiece

    model = resolve("hf:llama-3-8b", meta=True, config={"num_hidden_layers": 2}).model
    ask = {"prompt_len": 100, "new_tokens": 33, "batch_size": 2, "target": "cpu", "reports": False}
    sampled = torchcost.analyze_generation(model, **ask)

    def every_step(self: Any, lo: int, hi: int) -> list[DecodePiece]:
        for c in range(lo, hi + 1):
            self.decode_at(c)
        return [DecodePiece(c, c, -1) for c in range(lo, hi + 1)]

    monkeypatch.setattr(generation._Generation, "_affine", every_step)
    every = torchcost.analyze_generation(model, **ask)
    # decode steps at contexts 100 .. 131 (33 new tokens, the first from the prefill): 4 run, against all 32
    assert [s.context for s in sampled.samples] == [100, 101, 116, 131]
    assert [s.context for s in every.samples] == list(range(100, 132))
    assert len({s.peak_op for s in every.samples}) == 2  # (the kink: the lm_head's product, then a concatenation)
    a, b = sampled.to_dict(), every.to_dict()
    for data in (a, b):
        del data["samples"], data["pieces"]
    assert a == b


def test_cli_tensor_parallel_serving_without_a_target_builds_the_model_as_asked(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With --tp and no --target, analyze_generation takes "cuda" for any model while the searches take the model's
    device ("cpu" here): no one target says both for a meta build, so the CPU model is built as asked; a --target
    lets it go to meta."""
    asked: list[bool] = []
    resolve = cli.resolve
    monkeypatch.setattr(cli, "resolve", lambda spec, **kw: asked.append(kw["meta"]) or resolve(spec, **kw))
    argv = ["hf:gpt2", "--config", "n_layer=1", "--new-tokens", "2", "--memory-budget", "2GiB", "--max-context",
            "--tp", "2", "--format", "json", "--no-progress"]
    assert cli.main(argv) == 0
    assert asked == [False] and json.loads(capsys.readouterr().out)["max_context"]["target"] == "cpu"
    assert cli.main([*argv, "--target", "cpu"]) == 0
    assert asked == [False, True] and json.loads(capsys.readouterr().out)["max_context"]["target"] == "cpu"
