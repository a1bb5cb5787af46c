"""Bad usage and bad input: exit code 2 and one line on stderr naming what was wrong (and what exists nearby);
an internal error: exit code 1, one line, the traceback only with --debug.

The common paths run as a user types them (a subprocess); the rest call ``torchcost.cli.main`` in this process,
which is what the console script and ``python -m torchcost`` call, to keep the suite fast.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch

import torchcost.inputs
from tests.cli.conftest import python
from tests.cli.conftest import torchcost as run
from torchcost import cli


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- through a subprocess --------------------------------------------------------------------------------------------

def test_unknown_example_names_the_closest() -> None:
    r = run("example:simple_cn")
    assert (r.rc, r.out) == (2, ""), r.err
    assert _one_line(r.err) == "torchcost: example has no example named 'simple_cn'; closest: example:simple_cnn"


def test_unknown_source_suggests_one() -> None:
    r = run("tochvision:resnet50")
    assert r.rc == 2, r.err
    assert "did you mean torchvision:resnet50?" in _one_line(r.err)


def test_wrong_channel_count_names_the_layer() -> None:
    r = run("example:standard_conv", "--input-size", "1,5,64,64")
    assert (r.rc, r.out) == (2, ""), r.err
    line = _one_line(r.err)
    assert line.startswith("torchcost: layer 'conv' (Conv2d) failed on input [1, 5, 64, 64]: ")
    assert "3 channels" in line  # Conv2d(3, 4, 3) takes 3 channels, got 5


def test_missing_package_names_the_extra() -> None:
    r = python("import sys; sys.modules['timm'] = None\n"
               "from torchcost.cli import main\n"
               "raise SystemExit(main(['timm:resnet18']))")
    assert r.rc == 2, r.err
    line = _one_line(r.err)
    assert "needs timm, which is not installed" in line
    assert line.endswith("install it with: pip install 'torchcost[zoo]'")


# -- in this process -------------------------------------------------------------------------------------------------

def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(("argv", "expected"), [
    (["--input-size", "1,3,x"], "argument --input-size: not a shape: '1,3,x'"),
    (["--input-size", "1,0,4"], "argument --input-size: not a shape: '1,0,4'"),
    (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
    (["--dtype", "float8"], "argument --dtype: unknown dtype 'float8'"),
    (["--top", "0"], "argument --top: not a positive int: '0'"),
    (["--config", "n_layer"], "argument --config: not key=value: 'n_layer'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["compare", "example:standard_conv"], "compare needs at least two models"),
    (["compare", "a", "b", "--names", "x"], "--names gives 1 names for 2 models"),
    # refused before the spec is even resolved (it was refused only once the analysis had run: 49 s for a
    # one-layer llama-3-8b on this machine)
    (["nosuch:model", "--sort", "step"], "--sort step goes with --train"),
    (["--sort", "backward", "--amp", "bf16"], "--sort backward goes with --train"),
])
def test_bad_usage(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    rc, out, err = _main(capsys, *argv)
    assert (rc, out) == (2, "")
    line = _one_line(err)
    assert expected in line
    assert line.endswith("--help)")


@pytest.mark.parametrize(("argv", "expected"), [
    ([""], "empty model spec"),
    (["example:"], "names no model after 'example:'; see: torchcost list example"),
    (["foo:bar"], "'foo' is neither a source nor an importable module"),
    (["hf:gpt"], "hf has no shipped config named 'gpt'; closest: hf:gpt2"),
    (["torchvision:resnet5"], "torchvision has no model named 'resnet5'; closest: torchvision:resnet50, "),
    (["example:simple_cnn", "--meta", "--input-size", "1,3,8,8"],  # 8x8 -> two 2x2 pools -> 128*2*2 = 512 features
     "layer 'classifier' (Linear) failed on input [1, 512]"),
    (["hf:gpt2", "--config", "n_layr=2"], "the config has no field 'n_layr'; closest: n_layer"),
    (["hf:gpt2", "--config", "n_layer=two"], "n_layer is an int (now 12); 'two' is not one"),
    (["math:pi"], "math:pi is a float, not an nn.Module class or factory"),
    (["collections:OrderedDict"], "collections:OrderedDict returned an OrderedDict, not an nn.Module"),
    (["hf:gpt2", "--seq-len", "2048"], "takes at most 1024 positions; a sequence of 2048 is longer"),
    (["hf:no/such/config.json"], "hf:no/such/config.json: no such file"),
    (["example:standard_conv", "--config", "a=1"], "--config applies to hf: specs only"),
    (["example:standard_conv", "--seq-len", "9"], "--seq-len applies to text models"),
    (["example:standard_conv", "--meta", "--device", "cpu"], "cannot be combined with device='cpu'"),
    (["example:standard_conv", "--kwargs", "width=3"], "does not take the arguments width=3"),
    (["torchvision:fasterrcnn_resnet50_fpn", "--meta"], "cannot run on the meta device"),
    (["torchvision:resnet18", "--kwargs", "weights=DEFAULT"], "never downloads weights"),
    (["list", "tochvision"], "no source named 'tochvision' (did you mean torchvision?)"),
])
def test_bad_input(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    rc, out, err = _main(capsys, *argv)
    assert (rc, out) == (2, "")
    line = _one_line(err)
    assert line.startswith("torchcost: ")
    assert expected in line


def test_file_spec_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "two.py"
    path.write_text("from torch import nn\n\nclass A(nn.Linear):\n    pass\n\nclass B(nn.Linear):\n    pass\n")
    for argv, expected in [
        ([str(tmp_path / "missing.py") + ":Net"], "missing.py: no such file"),
        ([f"{path}:C"], "has no 'C'; it defines: A, B"),
        ([str(path)], "defines 2 nn.Module classes (A, B); name one"),
        ([f"{path}:A", "--kwargs", "in_features=2", "--kwargs", "out_features=3"], "has no default input"),
    ]:
        rc, out, err = _main(capsys, *argv)
        assert (rc, out) == (2, ""), argv
        assert expected in _one_line(err), argv
    rc, out, err = _main(capsys, f"{path}:A", "--kwargs", "in_features=2", "--kwargs", "out_features=3",
                         "--input-size", "5,2", "--format", "csv", "--depth", "0")
    assert (rc, err) == (0, "")
    (row,) = csv.DictReader(io.StringIO(out))
    # Linear(2, 3) on 5x2: 2*3 + 3 = 9 params; 5*2*3 = 30 MACs
    assert (row["output_shape"], row["params"], row["macs"]) == ("[5, 3]", str(2 * 3 + 3), str(5 * 2 * 3))


def test_huge_model_without_meta_is_refused(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # whatever this machine has, say 16 GiB
    monkeypatch.setattr(torchcost.inputs, "available_memory", lambda device: 16 * 2**30)
    rc, out, err = _main(capsys, "hf:llama-3-70b")
    assert (rc, out) == (2, "")
    # 70,553,706,496 params * 2 bytes (bfloat16, the config's dtype) = 131.4 GiB
    assert f"needs {70_553_706_496 * 2 / 2**30:.1f} GiB for its parameters in bfloat16" in _one_line(err)
    assert "add --meta" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _main(capsys, "example:standard_conv", "--device", "cuda")
    assert rc == 2
    assert "CUDA is not available" in _one_line(err)


def test_unwritable_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = _main(capsys, "example:standard_conv", "-o", str(tmp_path / "no" / "such" / "dir.txt"))
    assert (rc, out) == (2, "")
    assert _one_line(err).startswith("torchcost: cannot write ")


def test_internal_error_is_exit_1_and_one_line(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("renderer exploded\nsecond line")

    monkeypatch.setattr(cli, "render_report", broken)
    rc, out, err = _main(capsys, "example:standard_conv")
    assert (rc, out) == (1, "")
    assert _one_line(err) == ("torchcost: internal error: RuntimeError: renderer exploded second line "
                              "(rerun with --debug for the traceback)")
    rc, _, err = _main(capsys, "example:standard_conv", "--debug")
    assert rc == 1
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("torchcost: internal error: RuntimeError")
