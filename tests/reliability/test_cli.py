"""The command line under bad input (issue 9): whatever the user types, torchcost exits 2 with one line on stderr
that names the spec or the option: never exit 1 ("internal error"), never exit 0 with no output, never a
traceback. And the two gaps the issue found in the options: integer inputs (``--input-dtype``, or int64 ids for a
model whose first layer is an Embedding) and the ``--meta``/``--device`` rule.

Everything runs through :func:`torchcost.cli.main`, which the console script and ``python -m torchcost`` call, in
this process (tests/cli/test_commands.py covers the subprocess path).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
import torch

import torchcost
import torchcost.inputs
from tests.reliability.configs import hf_config
from torchcost import cli

TOKENS = """\
from torch import nn


class Tokens(nn.Module):  # the first layer is an Embedding: it takes token ids
    def __init__(self, vocab=100):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids):
        return self.head(self.emb(ids))


class Masked(nn.Module):  # two inputs: ids and a bool mask
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)

    def forward(self, ids, mask):
        return self.emb(ids) * mask.unsqueeze(-1)


class LateEmbedding(nn.Module):  # an Embedding, but not the first layer it holds
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.emb = nn.Embedding(7, 4)

    def forward(self, ids):
        return self.norm(self.emb(ids))


class PerSample(nn.Module):  # fvcore's convention: a per-sample input_size, without the batch dimension
    input_size = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


class Batched(PerSample):  # torchcost's reading: the whole shape
    input_size = (1, 3, 8, 8)
"""


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr (returned) that is torchcost's own."""
    rc, out, err = _main(capsys, *argv)
    assert (rc, out) == (2, ""), err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("torchcost: ") and "internal error" not in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def tokens(tmp_path: Path) -> str:
    path = tmp_path / "tokens.py"
    path.write_text(TOKENS)
    return str(path)


def _csv_root(out: str) -> dict[str, str]:
    return next(csv.DictReader(io.StringIO(out)))


# -- specs, files and forwards that call sys.exit -------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["builtins:exit", "sys:exit"])
def test_a_spec_naming_exit(capsys: pytest.CaptureFixture[str], spec: str) -> None:
    # was: exit 0 with no output (SystemExit went through main as if --help had ended it)
    line = _refused(capsys, spec)
    assert spec in line and "sys.exit()" in line


def test_a_file_that_exits_at_import(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(3)\n")
    line = _refused(capsys, f"{path}:Net")
    assert "exits.py raised SystemExit while loading: it called sys.exit(3)" in line


def test_a_forward_that_exits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "exits_in_forward.py"
    path.write_text("import sys\nfrom torch import nn\n\n\nclass Net(nn.Linear):\n"
                    "    def forward(self, x):\n        sys.exit(0)\n")
    line = _refused(capsys, f"{path}:Net", "--kwargs", "in_features=2", "--kwargs", "out_features=2",
                    "--input-size", "1,2")
    assert "Net" in line and "it called sys.exit(0)" in line


# -- hf configs the user wrote --------------------------------------------------------------------------------------



@pytest.mark.parametrize(("changes", "says"), [
    ({"n_layer": "two"}, "n_layer"),
    ({"n_embd": None}, "n_embd"),
], ids=["wrong_field_type", "null_field"])
def test_hf_config_with_a_bad_field(capsys: pytest.CaptureFixture[str], tmp_path: Path, changes: dict[str, Any],
                                    says: str) -> None:
    # was: internal error, exit 1
    assert says in _refused(capsys, hf_config(tmp_path, **changes), "--meta")


def test_hf_config_whose_architecture_is_not_a_model_class(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    line = _refused(capsys, hf_config(tmp_path, architectures=["GPT2Config"]), "--meta")
    assert "GPT2Config" in line and "not a transformers model class" in line


def test_hf_config_with_a_dtype_that_does_not_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "float17" in _refused(capsys, hf_config(tmp_path, torch_dtype="float17"), "--meta")


def test_hf_config_with_a_mismatched_architecture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _refused(capsys, hf_config(tmp_path, architectures=["LlamaForCausalLM"]), "--meta")
    assert "config.json: transformers cannot build the model from this config" in line


def test_trust_remote_code_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = hf_config(tmp_path, auto_map={"AutoModel": "evil.modeling.Evil"}, _name_or_path="someone/evil")
    assert "trust_remote_code is refused" in _refused(capsys, spec, "--kwargs", "trust_remote_code=True")


# -- inputs and devices ---------------------------------------------------------------------------------------------

def test_input_size_beyond_memory_names_the_bytes_and_meta(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # was: the allocator's RuntimeError, "internal error", exit 1. 8 GiB available whatever this machine has, so the
    # test never tries to allocate: 1 x 3 x 100000 x 100000 float32 = 3e10 x 4 bytes = 1.2e11 bytes = 111.76 GiB
    monkeypatch.setattr(torchcost.inputs, "available_memory", lambda device: 8 * 2**30)
    line = _refused(capsys, "example:simple_cnn", "--input-size", "1,3,100000,100000")
    assert "[1, 3, 100000, 100000] (float32) would need 111.76 GiB on cpu, more than the 8.00 GiB available" in line
    assert "--meta" in line


def test_device_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(capsys, "example:standard_conv", "--device", "banana")
    assert "device='banana' is not a device" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(capsys, "example:standard_conv", "--device", "cuda")
    assert "device='cuda': CUDA is not available" in line and "--meta" in line


def test_meta_is_shorthand_for_device_meta(capsys: pytest.CaptureFixture[str]) -> None:
    # --meta and --device meta say the same thing, so together they are fine; with any other device they contradict
    rc, out, _ = _main(capsys, "example:standard_conv", "--meta", "--device", "meta", "--format", "csv")
    assert rc == 0
    alone_rc, alone, _ = _main(capsys, "example:standard_conv", "--meta", "--format", "csv")
    assert (alone_rc, alone) == (0, out)
    for device in ("cpu", "cuda"):
        line = _refused(capsys, "example:standard_conv", "--meta", "--device", device)
        assert f"is shorthand for device='meta'; it cannot be combined with device='{device}'" in line
    cli.main(["--help"])
    assert "shorthand for --device meta" in " ".join(capsys.readouterr().out.split())


# -- integer inputs -------------------------------------------------------------------------------------------------

def test_embedding_first_gets_token_ids(capsys: pytest.CaptureFixture[str], tokens: str) -> None:
    # was: float inputs, and the Embedding refused them
    rc, out, err = _main(capsys, f"{tokens}:Tokens", "--input-size", "2,8")
    assert (rc, err) == (0, "")
    assert out.splitlines()[0] == f"{tokens}:Tokens (Tokens; int64 token ids in [0, 100): its first layer is an " \
                                  f"Embedding)"
    rc, out, _ = _main(capsys, f"{tokens}:Tokens", "--input-size", "2,8", "--format", "csv")
    root = _csv_root(out)
    # Embedding(100, 16) + Linear(16, 4): 1600 + 16*4 + 4 = 1668 params; 2*8 tokens x 16 x 4 = 1024 MACs
    assert (rc, root["output_shape"], root["params"], root["macs"]) == (0, "[2, 8, 4]", "1668", "1024")


def test_input_dtype_per_input(capsys: pytest.CaptureFixture[str], tokens: str) -> None:
    rc, out, err = _main(capsys, f"{tokens}:Masked", "--input-size", "2,5", "--input-size", "2,5",
                         "--input-dtype", "int64,bool", "--format", "csv")
    assert (rc, err) == (0, "")
    # Embedding(50, 8) = 400 params; [2, 5, 8] x bool mask: 80 multiplications, no MACs
    root = _csv_root(out)
    assert (root["output_shape"], root["params"], root["macs"], root["flops"]) == ("[2, 5, 8]", "400", "0", "80")
    line = _refused(capsys, f"{tokens}:Masked", "--input-size", "2,5", "--input-size", "2,5",
                    "--input-dtype", "int64,bool,int8")
    assert "3 input dtypes for 2 input sizes" in line


def test_float_inputs_into_an_embedding_hint_at_input_dtype(capsys: pytest.CaptureFixture[str], tokens: str) -> None:
    line = _refused(capsys, f"{tokens}:LateEmbedding", "--input-size", "1,4")
    assert "layer 'emb' (Embedding) failed" in line and "--input-dtype int64" in line
    rc, out, _ = _main(capsys, f"{tokens}:LateEmbedding", "--input-size", "1,4", "--input-dtype", "long",
                       "--format", "csv")
    assert (rc, _csv_root(out)["output_shape"]) == (0, "[1, 4, 4]")


def test_input_dtype_needs_a_file_or_module_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--input-dtype applies to file and module specs" in _refused(capsys, "example:standard_conv",
                                                                         "--input-dtype", "int64")
    assert "unknown dtype 'int65'" in _refused(capsys, "example:standard_conv", "--input-dtype", "int64,int65")
    assert "--input-dtype" in _refused(capsys, "example:standard_conv", "--dtype", "int64")


def test_input_size_attribute_is_the_whole_shape(capsys: pytest.CaptureFixture[str], tokens: str) -> None:
    # decided and documented: input_size = (1, 3, 8, 8) includes the batch; --batch-size replaces its first dimension
    rc, out, _ = _main(capsys, f"{tokens}:Batched", "--batch-size", "2", "--format", "csv")
    assert (rc, _csv_root(out)["output_shape"]) == (0, "[2, 4, 6, 6]")
    # a per-sample (3, 8, 8) is read as that whole shape: one unbatched image, which Conv2d takes as such
    rc, out, _ = _main(capsys, f"{tokens}:PerSample", "--format", "csv")
    assert (rc, _csv_root(out)["output_shape"]) == (0, "[4, 6, 6]")
