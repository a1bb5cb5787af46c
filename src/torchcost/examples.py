"""The networks users of this field learn on, each with its default input, as the tutorials write them.

``torchcost.examples.build("simple_cnn")`` returns ``(model, inputs)``; ``EXAMPLES`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from torchcost.errors import SpecError

__all__ = [
    "DEFAULT",
    "EXAMPLES",
    "ActionRecognizer",
    "DepthwiseSeparableConv",
    "Example",
    "SimpleCNN",
    "StandardConv",
    "StockPredictor",
    "build",
]


class SimpleCNN(nn.Module):
    """Two 3x3 conv blocks and one huge Linear: the classic 'where do my parameters go' lesson (input 1x3x224x224)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(128 * 56 * 56, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        out: torch.Tensor = self.classifier(x)
        return out


class StockPredictor(nn.Module):
    """Conv1d on a price series, with functional ReLU and pooling in forward (input 1x1x36)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(32, 64, kernel_size=3)
        self.fc = nn.Linear(64 * 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.max_pool1d(x, 2)
        x = torch.relu(self.conv2(x))
        x = torch.max_pool1d(x, 2)
        x = x.view(x.size(0), -1)
        out: torch.Tensor = self.fc(x)
        return out


class ActionRecognizer(nn.Module):
    """Conv3d on a video clip, as the tutorial writes it (input 1x3x10x112x112: 10 frames of 112x112)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.conv2 = nn.Conv3d(64, 128, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.pool2 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2))
        self.fc = nn.Linear(128 * 5 * 28 * 28, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pool1(x)
        x = torch.relu(self.conv2(x))
        x = self.pool2(x)
        x = x.view(x.size(0), -1)
        out: torch.Tensor = self.fc(x)
        return out


class StandardConv(nn.Module):
    """One 3x3 convolution, 3 -> 4 channels, no bias (input 1x3x64x64)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=1, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class DepthwiseSeparableConv(nn.Module):
    """The same mapping as StandardConv as a depthwise 3x3 then a pointwise 1x1 convolution (input 1x3x64x64)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel_size, padding=kernel_size // 2, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pointwise(self.depthwise(x))
        return out


@dataclass(frozen=True)
class Example:
    name: str
    factory: Callable[[], nn.Module]
    input_size: tuple[int, ...]
    description: str

    def build(self, device: str | torch.device = "cpu") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        dev = torch.device(device)
        with torch.device(dev):
            model = self.factory()
        if dev.type == "meta":
            x = torch.empty(self.input_size, device=dev)
        else:
            x = torch.randn(self.input_size, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
        return model, (x,)


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example("simple_cnn", SimpleCNN, (1, 3, 224, 224), "Conv2d image classifier with one huge Linear"),
        Example("conv1d_series", StockPredictor, (1, 1, 36), "Conv1d time-series regressor"),
        Example("conv3d_action", ActionRecognizer, (1, 3, 10, 112, 112), "Conv3d video action recogniser"),
        Example("standard_conv", StandardConv, (1, 3, 64, 64), "one standard 3x3 convolution, 3 -> 4 channels"),
        Example("depthwise_separable", DepthwiseSeparableConv, (1, 3, 64, 64),
                "the depthwise-separable version of standard_conv"),
    )
}
DEFAULT = "simple_cnn"


def build(name: str, device: str | torch.device = "cpu") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The example ``name`` as ``(model, inputs)``."""
    try:
        example = EXAMPLES[name]
    except KeyError:
        raise SpecError(f"no example named {name!r}; examples: {', '.join(EXAMPLES)}") from None
    return example.build(device)
