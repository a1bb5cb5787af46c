"""The torchcost command as a user types it (``python -m torchcost ...`` in a subprocess): models from every source,
every output format parsed back, compare, list, --version.

Expected numbers are derived by hand beside each assertion, or read from an independent oracle: torchvision's
weights metadata (``num_params``; ``_ops``, dense multiply-accumulates in G to 3 decimals), read without downloading.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import torchcost
from tests.cli.conftest import Run, validate
from tests.cli.conftest import torchcost as run
from torchcost import cli
from torchcost.examples import build


def _tv_meta(name: str) -> dict[str, Any]:
    models = pytest.importorskip("torchvision.models")
    return dict(models.get_model_weights(name).DEFAULT.meta)


def _markdown_table(text: str) -> list[list[str]]:
    """The cells of the first GitHub table in ``text``; checks its shape on the way."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, text
    header, align, *body = lines
    width = header.count(" | ") + 1
    assert align.count("|") == width + 1 and set(align) <= set("|:-"), align
    cells = []
    for line in [header, *body]:
        assert line.endswith(" |"), line
        parts = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(parts) == width, line
        cells.append(parts)
    return cells


# -- analysis, one source at a time ----------------------------------------------------------------------------------

def test_default_is_the_simple_cnn_example() -> None:
    r = run()
    assert r.rc == 0, r.err
    assert r.err == ""  # no progress line, no warnings: stderr is not a terminal
    lines = r.out.splitlines()
    assert lines[0].startswith("example:simple_cnn")
    # conv1 3*64*9 + 64 = 1,792; conv2 64*128*9 + 128 = 73,856; Linear 128*56*56*1000 + 1000 = 401,409,000
    assert f"Total params: {1_792 + 73_856 + 401_409_000:,} (401.48 M)" in lines
    # MACs: 3*9*64 * 224*224 = 86,704,128; 64*9*128 * 112*112 = 924,844,032; 401,408 * 1000 = 401,408,000
    assert f"MACs: {86_704_128 + 924_844_032 + 401_408_000:,} (1.41 G)" in lines
    assert any(line.lstrip().startswith("classifier (Linear)") for line in lines)


def test_torchvision_resnet50_json_on_meta(tmp_path: Path) -> None:
    out = tmp_path / "resnet50.json"
    r = run("torchvision:resnet50", "--meta", "--format", "json", "--output", str(out))
    assert r.rc == 0, r.err
    assert r.out == ""  # --output: nothing on stdout
    data = json.loads(out.read_text())
    validate(data, "report.schema.json")
    meta = _tv_meta("resnet50")
    assert data["params"] == meta["num_params"] == 25_557_032
    assert round(data["macs"] / 1e9, 3) == meta["_ops"] == 4.089  # conv + linear: every MAC of a resnet
    assert data["input_shape"] == [{"shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert data["device"] == "meta"
    assert torchcost.CostReport.from_dict(data).to_dict() == data


def test_torchvision_mobilenet_v2_csv_one_row_per_module() -> None:
    r = run("torchvision:mobilenet_v2", "--meta", "--format", "csv")
    assert r.rc == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    models = pytest.importorskip("torchvision.models")
    import torch

    with torch.device("meta"):
        model = models.mobilenet_v2()
    assert [row["name"] for row in rows] == ["(model)"] + [n for n, _ in model.named_modules() if n]
    by_name = {row["name"]: row for row in rows}
    meta = _tv_meta("mobilenet_v2")
    assert int(by_name["(model)"]["params"]) == meta["num_params"] == 3_504_872
    assert round(int(by_name["(model)"]["macs"]) / 1e9, 3) == meta["_ops"] == 0.301
    # features.0.0: Conv2d(3, 32, 3, stride 2, no bias) on 224x224 -> 32x112x112; 3*32*9 = 864 params;
    # 864 MACs per output position * 112*112 = 10,838,016
    first = by_name["features.0.0"]
    assert (first["type"], first["output_shape"]) == ("Conv2d", "[1, 32, 112, 112]")
    assert (int(first["params"]), int(first["macs"])) == (3 * 32 * 9, 3 * 32 * 9 * 112 * 112) == (864, 10_838_016)
    leaves = [row for row in rows[1:] if not any(o["name"].startswith(row["name"] + ".") for o in rows)]
    assert sum(int(row["macs"]) for row in leaves) == int(by_name["(model)"]["macs"])  # leaves sum to the total


def test_torchvision_detection_training_step_runs_with_its_targets() -> None:
    # a detection model trains on images and targets and returns its losses: the CLI makes the targets, and the
    # default loss is the losses' sum (4 losses: 3 adds), so every head is in the backward
    pytest.importorskip("torchvision")
    r = run("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "--train")
    assert r.rc == 0, r.err
    assert "training targets: 8 boxes an image" in r.out
    assert "loss: sum(out.values())" in r.out
    assert "Training step FLOPs: forward" in r.out and ", loss 3, " in r.out
    assert "Uncounted ops: none" in r.out and "Uncounted in the step" not in r.out  # _roi_align_backward priced


def test_torchvision_r3d_18_gets_a_video_clip() -> None:
    r = run("torchvision:r3d_18", "--meta", "--format", "json")
    assert r.rc == 0, r.err
    data = json.loads(r.out)
    assert data["input_shape"] == [{"shape": [1, 3, 16, 112, 112], "dtype": "float32"}]  # 16 frames of 112x112
    meta = _tv_meta("r3d_18")
    assert data["params"] == meta["num_params"] == 33_371_472
    assert round(data["macs"] / 1e9, 3) == meta["_ops"] == 40.697


def test_timm_resnet18_markdown() -> None:
    r = run("timm:resnet18", "--meta", "--format", "markdown", "--depth", "1")
    assert r.rc == 0, r.err
    cells = _markdown_table(r.out)
    assert cells[0] == ["Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "% FLOPs"]
    names = [c[0].strip("`") for c in cells[1:]]
    assert names == ["(model)", "conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4",
                     "global_pool", "fc"]

    def block(cin: int, cout: int) -> int:  # BasicBlock: two 3x3 convs + two BNs (+ 1x1 conv and BN when widening)
        return cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout + (cin * cout + 2 * cout if cin != cout else 0)

    stem = 3 * 64 * 7 * 7 + 2 * 64  # 9,408 + 128
    stages = sum(block(cin, cout) + block(cout, cout) for cin, cout in ((64, 64), (64, 128), (128, 256), (256, 512)))
    fc = 512 * 1000 + 1000
    assert stem + stages + fc == 11_689_512
    assert f"- Total params: {stem + stages + fc:,} (11.69 M)" in r.out.splitlines()


def test_hf_gpt2_two_layers_from_the_shipped_config() -> None:
    r = run("hf:gpt2", "--config", "n_layer=2", "--meta", "--format", "json")  # cpu == meta: test_resolve.py
    assert r.rc == 0, r.err
    data = json.loads(r.out)
    validate(data, "report.schema.json")
    vocab, pos, d, seq, heads = 50257, 1024, 768, 128, 12
    block = (2 * d  # ln_1
             + d * 3 * d + 3 * d  # c_attn
             + d * d + d  # attn c_proj
             + 2 * d  # ln_2
             + d * 4 * d + 4 * d  # mlp c_fc
             + 4 * d * d + d)  # mlp c_proj
    params = vocab * d + pos * d + 2 * block + 2 * d  # lm_head is tied to wte: counted once
    assert data["params"] == params == 53_561_088
    per_layer = (seq * d * 3 * d  # c_attn
                 + 2 * heads * seq * seq * (d // heads)  # Q K^T and P V, every score (causal counted dense)
                 + seq * d * d  # c_proj
                 + 2 * seq * d * 4 * d)  # c_fc and mlp c_proj
    macs = 2 * per_layer + seq * d * vocab  # + lm_head
    assert data["macs"] == macs == 6_802_735_104
    # on meta the cpu's 2-d mask of ones, its values known (collect/shadows.py): transformers skips it, as on the cpu
    assert data["input_shape"] == [{"shape": [1, 128], "dtype": "int64"}, {"shape": [1, 128], "dtype": "int64"}]


def test_hf_llama_3_70b_on_meta() -> None:
    r = run("hf:llama-3-70b", "--meta", "--format", "csv", "--depth", "0")
    assert r.rc == 0, r.err
    (row,) = list(csv.DictReader(io.StringIO(r.out)))
    d, ff, layers, heads, kv, vocab, seq = 8192, 28672, 80, 64, 8, 128256, 128
    head = d // heads  # 128
    per_layer = (d * d + 2 * d * kv * head + d * d  # q, k, v (8 kv heads), o; no biases
                 + 3 * d * ff  # gate, up, down
                 + 2 * d)  # two RMSNorms
    params = 2 * vocab * d + layers * per_layer + d  # untied embeddings and lm_head, final norm
    assert int(row["params"]) == params == 70_553_706_496  # published: 70.6B
    token_macs = d * d + 2 * d * kv * head + d * d + 3 * d * ff
    attention = 2 * heads * seq * seq * head  # Q K^T and P V for every query head (grouped-query shares K, V)
    macs = layers * (seq * token_macs + attention) + seq * d * vocab
    assert int(row["macs"]) == macs == 8_917_694_283_776


def test_file_spec_with_kwargs_and_its_own_input_size(tmp_path: Path) -> None:
    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    input_size = (4, 10)\n\n"
        "    def __init__(self, hidden: int = 3) -> None:\n"
        "        super().__init__()\n"
        "        self.fc1 = nn.Linear(10, hidden)\n"
        "        self.act = nn.ReLU()\n"
        "        self.fc2 = nn.Linear(hidden, 2)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc2(self.act(self.fc1(x)))\n")
    r = run("mynet.py:Net", "--kwargs", "hidden=7", "--format", "json", cwd=tmp_path)
    assert r.rc == 0, r.err
    data = json.loads(r.out)
    assert data["params"] == (10 * 7 + 7) + (7 * 2 + 2) == 93
    assert data["macs"] == 4 * 10 * 7 + 4 * 7 * 2 == 336  # batch 4 from Net.input_size
    assert data["input_shape"] == [{"shape": [4, 10], "dtype": "float32"}]


def test_sort_top_csv_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "top.csv"
    r = run("example:conv1d_series", "--sort", "params", "--top", "2", "--format", "csv", "-o", str(out))
    assert (r.rc, r.out, r.err) == (0, "", "")
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    # input 1x1x36: conv1 Conv1d(1, 32, 5, padding 2) -> 32x36, pool -> 18; conv2 Conv1d(32, 64, 3) -> 64x16,
    # pool -> 8; fc Linear(64*8, 1). Params: conv1 1*32*5 + 32 = 192, conv2 32*64*3 + 64 = 6,208, fc 512 + 1 = 513
    assert [(x["name"], int(x["params"]), int(x["macs"])) for x in rows] == [
        ("conv2", 32 * 64 * 3 + 64, 32 * 3 * 64 * 16),  # 6,208 params, 98,304 MACs
        ("fc", 64 * 8 + 1, 64 * 8),  # 513 params, 512 MACs
    ]


# -- compare ---------------------------------------------------------------------------------------------------------

# standard: Conv2d(3, 4, 3, padding 1, no bias) on 64x64: 3*4*9 = 108 params, 108 * 64*64 = 442,368 MACs
# depthwise-separable: depthwise 3*9 = 27 and pointwise 3*4 = 12 -> 39 params; (27 + 12) * 64*64 = 159,744 MACs
STANDARD = (3 * 4 * 9, 3 * 4 * 9 * 64 * 64)
SEPARABLE = (3 * 9 + 3 * 4, (3 * 9 + 3 * 4) * 64 * 64)


def test_compare_json() -> None:
    r = run("compare", "example:standard_conv", "example:depthwise_separable", "--format", "json")
    assert r.rc == 0, r.err
    data = json.loads(r.out)
    validate(data, "compare.schema.json")
    assert [m["name"] for m in data["models"]] == ["standard_conv", "depthwise_separable"]
    rows = {row["metric"]: row for row in data["rows"]}
    assert rows["params"]["values"] == [STANDARD[0], SEPARABLE[0]] == [108, 39]
    assert rows["macs"]["values"] == [STANDARD[1], SEPARABLE[1]] == [442_368, 159_744]
    assert rows["macs"]["ratios"] == [1.0, 159_744 / 442_368]  # 0.361: 2.77x fewer, not the 8-9x of k*k
    assert rows["input_bytes"]["values"] == [1 * 3 * 64 * 64 * 4] * 2  # float32


def test_compare_training_steps(capsys: pytest.CaptureFixture[str]) -> None:
    # compare --train: each model's training step, and the whole step's counts beside the forward's. The input does
    # not require grad. standard: the forward 442,368 + grad W 442,368 = 884,736 MACs. separable: the forward
    # 159,744; backward: pointwise grad W 12 * 4,096 = 49,152 and grad input 49,152 (the depthwise output needs
    # one), depthwise grad W 27 * 4,096 = 110,592: 208,896; 368,640 in all
    assert cli.main(["compare", "standard_conv", "depthwise_separable", "--train", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    validate(data, "compare.schema.json")
    rows = {row["metric"]: row for row in data["rows"]}
    assert [m["mode"] for m in data["models"]] == ["train", "train"]
    assert rows["macs"]["values"] == [STANDARD[1], SEPARABLE[1]]
    assert rows["step_macs"]["values"] == [2 * STANDARD[1], SEPARABLE[1] + 12 * 4096 * 2 + 27 * 4096]
    assert rows["step_macs"]["values"] == [884_736, 368_640]
    built = [build(name) for name in ("standard_conv", "depthwise_separable")]
    # (the FLOPs, the step's every phase: each model's own training-step analysis, as the table takes it)
    assert rows["step_flops"]["values"] == [torchcost.analyze(m, *a, mode="train").step_flops for m, a in built]
    assert [row["metric"] for row in data["rows"]][:5] == ["params", "macs", "flops", "step_macs", "step_flops"]
    # without --train: no step rows
    assert cli.main(["compare", "standard_conv", "depthwise_separable", "--format", "json"]) == 0
    assert "step_macs" not in {row["metric"] for row in json.loads(capsys.readouterr().out)["rows"]}


def test_compare_table_with_bare_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", "standard_conv", "depthwise_separable"]) == 0  # in this process: saves a start-up
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Metric", "standard_conv", "depthwise_separable", "depthwise_separable", "/",
                                "standard_conv"]
    macs = next(line for line in lines if line.startswith("MACs"))
    assert macs.split() == ["MACs", "442.37", "K", "159.74", "K", "0.361x"]
    params = next(line for line in lines if line.startswith("Params "))
    assert params.split() == ["Params", "108", "39", "0.361x"]  # 39 / 108 = 0.361 too: the same ratio, by chance


def test_compare_in_python_is_the_same_table() -> None:
    c = torchcost.compare("example:standard_conv", "example:depthwise_separable")
    assert c.names == ("standard_conv", "depthwise_separable")
    assert c.row("params").values == (108, 39)
    assert c.row("macs").values == (442_368, 159_744)
    assert c.row("macs").ratios == (1.0, 159_744 / 442_368)
    validate(c.to_dict(), "compare.schema.json")


# -- housekeeping ----------------------------------------------------------------------------------------------------

def test_version_from_the_console_script() -> None:
    script = Path(sys.executable).with_name("torchcost")
    if script.exists():  # the installed command, as users type it
        done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
        r = Run(done.returncode, done.stdout, done.stderr)
    else:
        r = run("--version")
    assert (r.rc, r.out, r.err) == (0, f"torchcost {torchcost.__version__}\n", "")


def test_only_the_commands_own_process_freezes_what_lives_until_it_exits() -> None:
    # the command (console) moves what lives until it exits out of the cyclic collector's view after its imports and
    # after each analysis (gc.freeze: cli._lasting); main() called from a caller's process leaves the collector as
    # it was
    import gc

    before = gc.get_freeze_count()
    assert cli.main(["example:standard_conv", "--format", "json", "--no-progress"]) == 0
    assert gc.get_freeze_count() == before
    from tests.cli.conftest import python

    done = python("import gc, sys\nfrom torchcost import cli\nsys.argv = ['torchcost', 'example:standard_conv', "
                  "'--format', 'json', '--no-progress']\nassert cli.console() == 0\n"
                  "print(gc.get_freeze_count() > 0, file=sys.stderr)")
    assert done.rc == 0 and done.err.strip().splitlines()[-1] == "True", done.err
    assert json.loads(done.out)["macs"] == 442_368  # (the example's count, as above)


def test_list_hf_shows_every_shipped_config() -> None:
    r = run("list", "hf")
    assert r.rc == 0, r.err
    specs = [line.split()[0] for line in r.out.splitlines()]
    assert specs == [f"hf:{n}" for n in sorted(["bert-base-uncased", "gpt2", "gpt2-xl", "llama-3-70b", "llama-3-8b",
                                                  "mistral-7b", "mixtral-8x7b", "qwen2-7b", "t5-base",
                                                  "vit-base-patch16-224", "gemma-2-9b", "gemma-3-1b",
                                                  "deepseek-v2-lite", "qwen3-30b-a3b", "whisper-small"])]


def test_help_and_list_overview(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: torchcost [SPEC] [options]") and "torchcost compare SPEC SPEC" in out
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "example:simple_cnn" in out and "hf:llama-3-70b" in out and "torchvision " in out


def test_fold_and_depth(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    # four identical GPT-2 blocks: h.0 shown in full, h.1 ... h.3 folded into one row
    assert cli.main(["hf:gpt2", "--config", "n_layer=4", "--meta", "--depth", "3", "--format", "markdown"]) == 0
    folded = [c[0] for c in _markdown_table(capsys.readouterr().out)[1:]]
    assert "`transformer.h.1 ... transformer.h.3`" in folded and "`transformer.h.2`" not in folded
    assert cli.main(["hf:gpt2", "--config", "n_layer=4", "--meta", "--depth", "3", "--format", "markdown",
                     "--no-fold"]) == 0
    unfolded = [c[0] for c in _markdown_table(capsys.readouterr().out)[1:]]
    assert [f"`transformer.h.{i}`" for i in range(4)] == [n for n in unfolded if n.startswith("`transformer.h.")]


def test_progress_line_only_when_asked() -> None:
    stream = io.StringIO()
    with cli.Progress(True, stream) as progress:
        progress.update("building example:simple_cnn")
        import time

        time.sleep(0.35)
    text = stream.getvalue()
    assert "building example:simple_cnn" in text and text.endswith("\r\033[K")  # the line is cleared at the end
    quiet = io.StringIO()
    with cli.Progress(False, quiet):
        pass
    assert quiet.getvalue() == ""


def test_progress_line_shows_the_running_analysis() -> None:
    state = [3, ""]
    progress = cli.Progress(False, io.StringIO(), status=lambda: (state[0], state[1]))
    progress.update("analysing example:simple_cnn (one forward pass)")
    assert progress.line() == "analysing example:simple_cnn (one forward pass)"  # nothing runs yet
    state[:] = [4, "forward, 12 ops"]
    assert progress.line() == "analysing example:simple_cnn (one forward pass): forward, 12 ops"
    progress.update("searching the largest batch within 8.00 GiB")
    state[:] = [6, "backward, 1,234 ops"]  # the second analysis since the search started
    assert progress.line() == "searching the largest batch within 8.00 GiB: run 2, backward, 1,234 ops"
    state[1] = "measuring kernel memory, 3 of 22 calls"
    assert progress.line().endswith(": run 2, measuring kernel memory, 3 of 22 calls")
