"""Real models against independent oracles: MACs summed by hand over the module list (output sizes from the
convolution formula, never from torchcost), torchvision's weights metadata (``_ops``: dense conv + linear + attention
multiply-accumulates in G, 3 decimals; ``num_params``; both readable without downloading weights), transformers' GPT-2
by hand, and timm. Built on the meta device where the check allows, so nothing big is allocated."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model, get_model_weights
from transformers import GPT2Config, GPT2LMHeadModel

import torchcost

pytestmark = pytest.mark.slow

# every op that carries MACs: convolution, the matrix products, attention
MAC_OPS = {"aten::convolution", "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm",
           "aten::scaled_dot_product_attention"}


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1, for convolutions and pools."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_by_hand(conv: nn.Conv2d, h: int, w: int) -> tuple[int, int, int]:
    """(MACs, H_out, W_out): C_out * H_out * W_out outputs, each (C_in / groups) * kh * kw MACs."""
    assert isinstance(conv.padding, tuple)
    kh, kw = conv.kernel_size
    ho = out_size(h, kh, conv.stride[0], conv.padding[0], conv.dilation[0])
    wo = out_size(w, kw, conv.stride[1], conv.padding[1], conv.dilation[1])
    return conv.out_channels * ho * wo * (conv.in_channels // conv.groups) * kh * kw, ho, wo


def resnet_by_hand(model: nn.Module, size: int) -> dict[str, int]:
    """MACs of every Conv2d and the Linear of a torchvision/timm ResNet, walking its structure: stem conv, max pool,
    then per block conv1 -> conv2 (-> conv3) on the block's input, and the downsample conv on the same input."""
    macs: dict[str, int] = {}
    macs["conv1"], h, w = conv_by_hand(model.conv1, size, size)
    pool = model.maxpool
    h = out_size(h, pool.kernel_size, pool.stride, pool.padding)
    w = out_size(w, pool.kernel_size, pool.stride, pool.padding)
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, layer)):
            h_in, w_in = h, w
            for conv in ("conv1", "conv2", "conv3"):
                if hasattr(block, conv):
                    macs[f"{layer}.{i}.{conv}"], h, w = conv_by_hand(getattr(block, conv), h, w)
            if block.downsample is not None:
                macs[f"{layer}.{i}.downsample.0"], _, _ = conv_by_hand(block.downsample[0], h_in, w_in)
    macs["fc"] = model.fc.in_features * model.fc.out_features
    return macs


def chain_by_hand(model: nn.Module, size: int) -> dict[str, int]:
    """MACs of every Conv2d and Linear of a network whose convolutions form one chain in module order (MobileNetV2:
    residual additions keep the shape, nothing branches into a convolution)."""
    macs: dict[str, int] = {}
    h = w = size
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            macs[name], h, w = conv_by_hand(m, h, w)
        elif isinstance(m, nn.Linear):
            macs[name] = m.in_features * m.out_features
    return macs


def conv_and_linear(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return get_model(name, weights=None)


def test_resnet50_by_hand_and_metadata() -> None:
    model = meta_model("resnet50")
    hand = resnet_by_hand(model, 224)
    assert set(hand) == conv_and_linear(model)  # every Conv2d and the Linear, none missed
    assert sum(hand.values()) == 4_089_184_256
    meta = get_model_weights("resnet50").DEFAULT.meta
    assert round(sum(hand.values()) / 1e9, 3) == meta["_ops"] == 4.089
    r = torchcost.analyze(model, input_size=(1, 3, 224, 224))
    for name, macs in hand.items():
        assert r.module(name).macs == macs, name
    assert r.macs == 4_089_184_256
    assert r.params == meta["num_params"] == 25_557_032 == sum(p.numel() for p in model.parameters())
    assert r.uncounted == ()
    assert r.module("layer4.2.conv3").output_shape.shape == (1, 2048, 7, 7)  # type: ignore[union-attr]


def flop_counter_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """torch.utils.flop_counter's count of conv and matmul ops (2 FLOPs per MAC), a third independent oracle."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(*inputs)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2


def test_resnet50_against_flop_counter() -> None:
    model = meta_model("resnet50")
    x = torch.empty(1, 3, 224, 224, device="meta")
    assert flop_counter_macs(model, x) == torchcost.analyze(model, x).macs == 4_089_184_256


def test_mobilenet_v2_by_hand_and_metadata() -> None:
    model = meta_model("mobilenet_v2")
    hand = chain_by_hand(model, 224)
    assert set(hand) == conv_and_linear(model)
    meta = get_model_weights("mobilenet_v2").DEFAULT.meta
    # 300,774,272 -> 0.301 G
    assert round(sum(hand.values()) / 1e9, 3) == meta["_ops"] == 0.301
    r = torchcost.analyze(model, input_size=(1, 3, 224, 224))
    for name, macs in hand.items():
        assert r.module(name).macs == macs, name
    assert r.macs == sum(hand.values())
    assert r.params == meta["num_params"] == 3_504_872
    assert r.uncounted == ()


@pytest.mark.parametrize(("name", "shape"), [
    ("resnet18", (1, 3, 224, 224)),
    ("efficientnet_b0", (1, 3, 224, 224)),  # squeeze-excitation convs run on 1x1: counted, tiny
    ("vit_b_16", (1, 3, 224, 224)),  # patch conv + linears + attention products (QK^T, PV)
    ("swin_t", (1, 3, 224, 224)),  # linears + window attention (bmm) + relative position bias (none: an index)
    ("r3d_18", (1, 3, 16, 112, 112)),  # torchvision's _ops for video models are at 16 frames of 112x112
])
def test_torchvision_metadata(name: str, shape: tuple[int, ...]) -> None:
    model = meta_model(name)
    meta = get_model_weights(name).DEFAULT.meta
    r = torchcost.analyze(model, input_size=shape)
    mac_ops = {o.op for o in r.ops if o.macs}
    assert mac_ops <= MAC_OPS, mac_ops  # only conv / matmul / attention carry MACs, as in torchvision's _ops
    assert round(r.macs / 1e9, 3) == meta["_ops"]
    assert r.params == meta["num_params"]
    assert r.uncounted == (), r.uncounted


def test_timm_resnet18_by_hand() -> None:
    with torch.device("meta"):
        model = timm.create_model("resnet18", pretrained=False)
    hand = resnet_by_hand(model, 224)
    assert set(hand) == conv_and_linear(model)
    r = torchcost.analyze(model, input_size=(1, 3, 224, 224))
    for name, macs in hand.items():
        assert r.module(name).macs == macs, name
    # the same architecture as torchvision's resnet18: 1.814 G MACs, 11,689,512 params
    assert r.macs == sum(hand.values()) == 1_814_073_344
    assert round(r.macs / 1e9, 3) == get_model_weights("resnet18").DEFAULT.meta["_ops"]
    assert r.params == 11_689_512
    assert r.uncounted == ()


# -- GPT-2 ----------------------------------------------------------------------------------------------------------

D, HEADS, FF, VOCAB, POSITIONS, T, LAYERS = 768, 12, 3072, 50257, 1024, 128, 2

GPT2_PARAMS = (
    VOCAB * D + POSITIONS * D  # wte (tied with lm_head: counted once) and wpe
    + LAYERS * (2 * D  # ln_1
                + D * 3 * D + 3 * D  # c_attn (Conv1D: q, k, v)
                + D * D + D  # attn.c_proj
                + 2 * D  # ln_2
                + D * FF + FF  # mlp.c_fc
                + FF * D + D)  # mlp.c_proj
    + 2 * D  # ln_f
)
PER_LAYER_MACS = (
    T * D * 3 * D  # QKV projection: 128 x 768 x 2304
    + 2 * (HEADS * T * T * (D // HEADS))  # Q K^T and P V: 12 heads x 128 x 128 x 64 each (causal counted in full)
    + T * D * D  # output projection
    + 2 * T * D * FF  # MLP up and down
)
GPT2_MACS = LAYERS * PER_LAYER_MACS + T * D * VOCAB  # + lm_head


def gpt2(attn: str | None, device: str) -> nn.Module:
    config = GPT2Config(n_layer=LAYERS) if attn is None else GPT2Config(n_layer=LAYERS, attn_implementation=attn)
    with torch.device(device):
        return GPT2LMHeadModel(config)


def check_gpt2(r: torchcost.CostReport) -> None:
    assert r.params == GPT2_PARAMS == 53_561_088
    assert r.module("lm_head").shared_params == VOCAB * D
    assert r.module("transformer.wte").shared_params == VOCAB * D
    assert r.macs == GPT2_MACS == 6_802_735_104
    assert r.module("lm_head").macs == T * D * VOCAB
    assert r.module("transformer.h.0").macs == PER_LAYER_MACS
    assert r.uncounted == ()
    assert r.formula_errors == ()


def test_gpt2_default_attention_is_counted() -> None:
    # a config that names no attention gets whichever kernel transformers picks when the model is built ("sdpa"
    # today): the user's default case, counted the same whatever that choice is
    model = gpt2(None, "meta")
    check_gpt2(torchcost.analyze(model, torch.zeros(1, T, dtype=torch.long, device="meta")))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gpt2_two_layers_on_meta(attn: str) -> None:
    model = gpt2(attn, "meta")
    assert model.config._attn_implementation == attn
    r = torchcost.analyze(model, torch.zeros(1, T, dtype=torch.long, device="meta"))
    check_gpt2(r)
    attention = {o.op: o for o in r.ops}["aten::bmm" if attn == "eager" else "aten::scaled_dot_product_attention"]
    assert attention.macs == LAYERS * 2 * (HEADS * T * T * (D // HEADS))
    assert r.module("").output_shape["logits"].shape == (1, T, VOCAB)  # type: ignore[index]


def test_gpt2_eager_against_flop_counter() -> None:
    # eager attention is plain bmm, which FlopCounterMode counts (it misses CPU sdpa, not this)
    model = gpt2("eager", "meta")
    ids = torch.zeros(1, T, dtype=torch.long, device="meta")
    assert flop_counter_macs(model, ids) == torchcost.analyze(model, ids).macs == GPT2_MACS


def test_gpt2_real_cpu_sdpa() -> None:
    # the real CPU run: F.scaled_dot_product_attention on CPU is counted (FlopCounterMode counts it as 0)
    torch.manual_seed(0)
    model = gpt2("sdpa", "cpu")
    r = torchcost.analyze(model, torch.zeros(1, T, dtype=torch.long))
    check_gpt2(r)
