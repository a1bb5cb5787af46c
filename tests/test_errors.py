"""Bad input: torchcost errors that name the failing layer, its type, the input it got, the reason in one sentence and
the layers that ran before it, with the original exception chained."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import torchcost
from tests.fixtures.models import Raising, ReadsValues, TiedLM
from torchcost.examples import build


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text == text.strip(), text
    assert len(text) < 600, text
    return text


_SIMPLE_CNN: dict[str, nn.Module] = {}


def simple_cnn(device: str) -> nn.Module:
    if device not in _SIMPLE_CNN:  # the real one has a 1.6 GB Linear: build it once for this file
        _SIMPLE_CNN[device] = build("simple_cnn", device=device)[0]
    return _SIMPLE_CNN[device]


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_simple_cnn_input_too_small(device: str) -> None:
    with pytest.raises(torchcost.ShapeError) as info:
        torchcost.analyze(simple_cnn(device), torch.randn(1, 3, 8, 8))
    e = info.value
    # 8x8 -> pool -> 4x4 -> pool -> 2x2: the Linear gets 128 * 2 * 2 = 512 features, not 128 * 56 * 56
    assert (e.layer, e.layer_type, e.input_shapes) == ("classifier", "Linear", "[1, 512]")
    # the kernels word it differently: CPU "mat1 and mat2 shapes cannot be multiplied (1x512 and 401408x1000)",
    # meta "a and b must have same reduction dim, but got [1, 512] X [401408, 1000]"
    assert "401408" in e.reason
    assert e.ran_before[:6] == tuple(f"features.{i}" for i in range(6))
    text = one_line(e)
    assert "'classifier' (Linear)" in text and "[1, 512]" in text and e.reason in text
    assert "features.0" in text and "features.5" in text
    assert isinstance(e.__cause__, RuntimeError) and "401408" in str(e.__cause__)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_wrong_channel_count(device: str) -> None:
    with pytest.raises(torchcost.ShapeError) as info:
        torchcost.analyze(simple_cnn(device), torch.randn(1, 1, 16, 16))
    e = info.value
    assert (e.layer, e.layer_type, e.input_shapes) == ("features.0", "Conv2d", "[1, 1, 16, 16]")
    assert e.ran_before == ()
    text = one_line(e)
    assert "'features.0' (Conv2d)" in text and "channel" in text and "ran before it: none" in text
    assert isinstance(e.__cause__, RuntimeError)


def test_float_into_embedding() -> None:
    with pytest.raises(torchcost.DtypeError) as info:
        torchcost.analyze(TiedLM(), torch.randn(2, 5))
    e = info.value
    assert (e.layer, e.layer_type, e.input_shapes) == ("embed", "Embedding", "[2, 5]")
    assert "Long" in e.reason
    assert "'embed' (Embedding)" in one_line(e)
    assert isinstance(e.__cause__, RuntimeError)


def test_model_that_is_the_failing_layer() -> None:
    with pytest.raises(torchcost.DtypeError) as info:
        torchcost.analyze(nn.Embedding(10, 4), torch.randn(2, 3))
    assert info.value.layer == "" and info.value.layer_type == "Embedding"
    assert "Embedding" in one_line(info.value)


def test_error_in_the_models_own_forward() -> None:
    with pytest.raises(torchcost.ModelError) as info:
        torchcost.analyze(Raising(), torch.randn(2, 3, 8, 8))
    e = info.value
    assert type(e) is torchcost.ModelError  # neither a shape nor a dtype problem
    assert e.layer == "" and e.layer_type == "Raising"
    assert e.ran_before == ("conv", "bn", "drop")
    assert "fails on purpose" in one_line(e)
    assert isinstance(e.__cause__, RuntimeError)


@pytest.mark.parametrize("size", ["abc", (1, 0, 3), [[1, 2], "x"], (), (2, -1), (1.5, 3), (True, 3), [[]]])
def test_input_size_not_a_shape(size: Any) -> None:
    model, _ = build("standard_conv")
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(model, input_size=size)
    assert "input_size" in one_line(info.value)


def test_other_bad_arguments() -> None:
    model, (x,) = build("standard_conv")
    with pytest.raises(torchcost.InputError, match=r"nn\.Module"):
        torchcost.analyze(lambda t: t, x)  # type: ignore[arg-type]
    with pytest.raises(torchcost.InputError, match=r"nn\.Module"):
        torchcost.analyze("resnet18", x)  # type: ignore[arg-type]
    with pytest.raises(torchcost.InputError, match="mode"):
        torchcost.analyze(model, x, mode="bogus")
    with pytest.raises(torchcost.InputError):
        torchcost.analyze(model)  # no inputs at all
    with pytest.raises(torchcost.InputError):
        torchcost.analyze(model, x, input_size=(1, 3, 8, 8))  # both
    with pytest.raises(torchcost.InputError, match="dtype"):
        torchcost.analyze(model, input_size=(1, 3, 8, 8), dtype="float32")  # type: ignore[arg-type]
    with pytest.raises(torchcost.InputError):
        torchcost.analyze(model, input_size=[(1, 3, 8, 8)], dtype=[torch.float32, torch.float32])
    with pytest.raises(torchcost.InputError, match="kwargs"):
        torchcost.analyze(model, kwargs=[("x", x)])  # type: ignore[arg-type]
    # InputError is also a ValueError, so generic handlers catch it
    with pytest.raises(ValueError):
        torchcost.analyze(model, x, mode="bogus")


def test_resnet18_one_channel() -> None:
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(torchcost.ShapeError) as info:
        torchcost.analyze(model, torch.randn(1, 1, 32, 32))
    e = info.value
    assert (e.layer, e.layer_type, e.input_shapes) == ("conv1", "Conv2d", "[1, 1, 32, 32]")
    assert e.ran_before == ()
    one_line(e)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_resnet18_16x16_in_train_mode(device: str) -> None:
    with torch.device(device):
        model = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 16, 16, device=device)
    # 16 -> conv1 (stride 2) 8 -> maxpool (stride 2) 4 -> layer1 4 -> layer2 (stride 2) 2 -> layer3.0.conv1 (stride 2)
    # 1x1: layer3.0.bn1 gets [1, 256, 1, 1], one value per channel, and batch statistics need more than one
    with pytest.raises(torchcost.ShapeError) as info:
        torchcost.analyze(model, x, mode="train")
    e = info.value
    assert (e.layer, e.layer_type, e.input_shapes) == ("layer3.0.bn1", "BatchNorm2d", "[1, 256, 1, 1]")
    assert "more than 1 value per channel" in e.reason
    assert e.ran_before[-1] == "layer3.0.conv1"
    assert "layer2.1.bn2" in e.ran_before
    text = one_line(e)
    assert "'layer3.0.bn1' (BatchNorm2d)" in text and "[1, 256, 1, 1]" in text
    assert "give a batch of 2 or more, CLI --batch-size 2, or a larger input" in text  # (what to change)
    assert isinstance(e.__cause__, ValueError)
    # in eval mode BatchNorm uses its running statistics and the same input runs through (1x1 at layer4, avgpool)
    r = torchcost.analyze(model, x)
    assert r.module("fc").output_shape is not None
    assert r.module("layer4.1.bn2").output_shape.shape == (1, 512, 1, 1)  # type: ignore[union-attr]


def test_a_training_steps_shape_error_prints_no_torch_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    # was: the fake tensor mode logged "failed while attempting to run meta for aten.mm.default" with torch's own
    # traceback on stderr (about 20 lines), before torchcost's one error
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(5, 2))  # 4 features into a Linear that takes 5
    with pytest.raises(torchcost.ShapeError) as info:
        torchcost.analyze(model, torch.randn(2, 8), mode="train")
    e = info.value
    assert (e.layer, e.layer_type, e.input_shapes) == ("2", "Linear", "[2, 4]")
    one_line(e)
    err = capfd.readouterr().err
    assert "failed while attempting to run meta" not in err and "Traceback" not in err, err


def test_a_detection_model_trained_without_targets_is_told_what_to_pass() -> None:
    # round 33's torchvision sweep: the 12 detection models' training steps need targets; the hint's own call runs
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    images = [torch.rand(3, 320, 320)]
    with pytest.raises(torchcost.ModelError) as info:
        torchcost.analyze(model, images, mode="train")
    text = one_line(info.value)
    assert "targets should not be none when in training mode" in text
    assert 'analyze(model, images, targets, mode="train")' in text and "resolve(spec, train=True)" in text
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 150.0]]), "labels": torch.tensor([1])} for _ in images]
    report = torchcost.analyze(model, images, targets, mode="train")
    assert report.phase("backward").macs > report.phase("forward").macs > 0
    # the default loss sums the 4 losses (3 adds), as the lambda the hint gave before did (0 + 4 losses: 4 adds)
    assert report.phase("loss").flops == 3 and report.memory is not None and report.memory.loss == "sum(out.values())"


def test_a_meta_model_that_reads_values_is_told_to_run_on_the_cpu() -> None:
    # round 34's sweep: EnCodec, Mimi and DETR-like models fail on meta with torch's "Tensor.item() cannot be called
    # on meta tensors"; the error now says what to change
    with torch.device("meta"):
        model = ReadsValues()
    with pytest.raises(torchcost.ModelError) as info:
        torchcost.analyze(model, torch.randn(2, 4, device="meta"))
    text = one_line(info.value)
    assert "cannot be called on meta tensors" in text
    assert "analyse the model built on the cpu for the cpu, CLI without --meta and --target" in text
    assert torchcost.analyze(ReadsValues(), torch.randn(2, 4)).macs == 2 * 4 * 4  # (on the cpu it runs: 32 MACs)


class _TakesPositions(nn.Module):
    """A forward with an optional input it needs after all (as Siglip2's embeddings need their spatial shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(x) + positions.to(x.dtype)  # type: ignore[union-attr]


def test_a_forward_that_needs_an_input_it_was_not_given_is_told_to_pass_it() -> None:
    # round 35's sweep: Siglip2, X-CLIP, TVP, CLAP, BridgeTower and others failed with a bare "'NoneType' object has
    # no attribute ..." where the forward needs an input torchcost does not make
    with pytest.raises(torchcost.ModelError) as info:
        torchcost.analyze(_TakesPositions(), torch.randn(2, 4))
    text = one_line(info.value)
    assert "'NoneType' object has no attribute 'to'" in text
    assert "pass every input, analyze(model, kwargs={...})" in text


class _RepeatsByValues(nn.Module):
    """A forward that repeats rows by counts held in a tensor (as Qwen3-VL's vision tower its grid's rows)."""

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(x, counts, dim=0)


def test_a_meta_repeat_by_values_is_told_to_run_on_the_cpu() -> None:
    with pytest.raises(torchcost.ModelError) as info:
        torchcost.analyze(_RepeatsByValues(), torch.empty(3, 4, device="meta"),
                          torch.empty(3, dtype=torch.int64, device="meta"))
    text = one_line(info.value)
    assert "cannot repeat_interleave a meta tensor without output_size" in text
    assert "analyse the model built on the cpu for the cpu, CLI without --meta and --target" in text
