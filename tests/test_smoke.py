"""The simplest end-to-end check: the default example, counted by hand."""

import torchcost
from torchcost.examples import build


def test_simple_cnn_totals() -> None:
    model, inputs = build("simple_cnn")
    r = torchcost.analyze(model, *inputs)
    # conv1 3*64*9 + 64 = 1,792; conv2 64*128*9 + 128 = 73,856; Linear 128*56*56*1000 + 1000 = 401,409,000
    assert r.params == 1_792 + 73_856 + 401_409_000 == 401_484_648
    # conv1 3*9*64 * 224*224 = 86,704,128; conv2 64*9*128 * 112*112 = 924,844,032; Linear 401,408*1000 = 401,408,000
    assert r.macs == 86_704_128 + 924_844_032 + 401_408_000 == 1_412_956_160
