"""The model set: public models (torchvision, timm, transformers) built with random weights, and their inputs.

Every model is built from its library's own code (no weights are downloaded: torchvision ``weights=None``, timm
``pretrained=False``, transformers from a config object with few layers), under a fixed seed, so every tool sees the
same weights and the same inputs. The analytic cases, whose exact values are derived by hand, are in ``analytic``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Built", "Case", "all_cases", "meta_llama_cases", "zoo_cases"]


@dataclass
class Built:
    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One model and its input. ``params``/``macs`` are the exact values where derived by hand (analytic cases);
    ``reference`` is torchvision's own published (params, MACs) from its weights metadata, where it has one."""

    name: str
    group: str
    input: str
    build: Callable[[], Built]
    params: int | None = None
    macs: int | None = None
    derivation: str = ""
    reference: tuple[int, int, str] | None = None  # (params, MACs, where from)
    quick: bool = False
    speed: bool = False

    @property
    def analytic(self) -> bool:
        return self.macs is not None


def _seeded(fn: Callable[[], Built]) -> Callable[[], Built]:
    def build() -> Built:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            built = fn()
        built.model.eval()
        return built

    build.__name__ = getattr(fn, "__name__", "build")
    return build


def _image(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(*shape, generator=g)


def _ids(batch: int, seq: int, vocab: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g)


# -- torchvision ----------------------------------------------------------------------------------------------------

def _tv_meta(name: str) -> tuple[int, int, str] | None:
    """torchvision's published num_params and _ops (GMACs, 3 decimals) for the DEFAULT weights: read from the
    weights enum, nothing is downloaded."""
    try:
        from torchvision.models import get_model_weights

        meta = get_model_weights(name).DEFAULT.meta
        return int(meta["num_params"]), round(float(meta["_ops"]) * 1e9), "torchvision weights meta (_ops, 3 decimals)"
    except Exception:
        return None


def _tv(name: str, shape: tuple[int, ...], **kwargs: Any) -> Callable[[], Built]:
    def build() -> Built:
        from torchvision.models import get_model

        return Built(get_model(name, weights=None, **kwargs), (_image(*shape),))

    return _seeded(build)


def _tv_detection(name: str, size: int) -> Callable[[], Built]:
    def build() -> Built:
        from torchvision.models import get_model

        model = get_model(name, weights=None, weights_backbone=None)
        return Built(model, ([_image(3, size, size)],))

    return _seeded(build)


# -- timm -----------------------------------------------------------------------------------------------------------

def _timm(name: str, shape: tuple[int, ...]) -> Callable[[], Built]:
    def build() -> Built:
        import timm

        return Built(timm.create_model(name, pretrained=False), (_image(*shape),))

    return _seeded(build)


# -- transformers ---------------------------------------------------------------------------------------------------

def _hf(kind: str, seq: int = 128) -> Callable[[], Built]:
    def build() -> Built:
        import transformers as tf

        cfg: Any
        if kind == "gpt2":
            cfg = tf.GPT2Config(n_layer=2, use_cache=False)
            model: nn.Module = tf.GPT2LMHeadModel(cfg)
            return Built(model, (), {"input_ids": _ids(1, seq, cfg.vocab_size)})
        if kind == "bert":
            cfg = tf.BertConfig(num_hidden_layers=2)
            model = tf.BertModel(cfg)
            ids = _ids(1, seq, cfg.vocab_size)
            return Built(model, (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        if kind == "t5":
            cfg = tf.T5Config(num_layers=2, num_decoder_layers=2, use_cache=False)
            model = tf.T5Model(cfg)
            ids = _ids(1, seq, cfg.vocab_size)
            dec = _ids(1, seq // 4, cfg.vocab_size, seed=3)
            return Built(model, (), {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                     "decoder_input_ids": dec})
        if kind == "llama":
            cfg = tf.LlamaConfig(hidden_size=512, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                                 intermediate_size=1376, vocab_size=32000, use_cache=False)
            model = tf.LlamaForCausalLM(cfg)
            return Built(model, (), {"input_ids": _ids(1, seq, cfg.vocab_size)})
        if kind == "vit":
            cfg = tf.ViTConfig(num_hidden_layers=2)
            model = tf.ViTModel(cfg)
            return Built(model, (), {"pixel_values": _image(1, 3, 224, 224)})
        raise KeyError(kind)

    return _seeded(build)


def zoo_cases() -> list[Case]:
    img = (1, 3, 224, 224)
    cases: list[Case] = []
    classification = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16",
                      "swin_t", "convnext_tiny", "regnet_y_400mf", "densenet121", "shufflenet_v2_x1_0",
                      "squeezenet1_1", "googlenet", "maxvit_t"]
    quick = {"resnet18"}
    speed = {"resnet18", "resnet50", "mobilenet_v2", "vit_b_16", "efficientnet_b0"}
    for name in classification:
        # googlenet: torchvision's published model (and num_params) has no auxiliary classifiers
        extra: dict[str, Any] = {"init_weights": False, "aux_logits": False} if name == "googlenet" else {}
        cases.append(Case(f"torchvision:{name}", "torchvision", "1x3x224x224", _tv(name, img, **extra),
                          reference=_tv_meta(name), quick=name in quick, speed=name in speed))
    cases.append(Case("torchvision:inception_v3", "torchvision", "1x3x299x299",
                      _tv("inception_v3", (1, 3, 299, 299), init_weights=False), reference=_tv_meta("inception_v3")))
    for name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        cases.append(Case(f"torchvision:{name}", "video", "1x3x16x112x112", _tv(name, (1, 3, 16, 112, 112)),
                          reference=_tv_meta(name)))
    cases.append(Case("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "detection", "[3x320x320]",
                      _tv_detection("fasterrcnn_mobilenet_v3_large_320_fpn", 320)))
    cases.append(Case("torchvision:ssdlite320_mobilenet_v3_large", "detection", "[3x320x320]",
                      _tv_detection("ssdlite320_mobilenet_v3_large", 320)))
    for name in ("resnet18", "efficientnet_b0", "vit_tiny_patch16_224", "convnext_atto", "mobilevit_xxs"):
        shape = (1, 3, 256, 256) if name == "mobilevit_xxs" else img
        cases.append(Case(f"timm:{name}", "timm", "x".join(map(str, shape)), _timm(name, shape),
                          quick=name == "vit_tiny_patch16_224"))
    hf = [("gpt2", "GPT2LMHeadModel, n_layer=2; input_ids 1x128"),
          ("bert", "BertModel, 2 layers; input_ids + attention_mask 1x128"),
          ("t5", "T5Model, 2+2 layers; input_ids 1x128, decoder_input_ids 1x32"),
          ("llama", "LlamaForCausalLM, 2 layers, hidden 512, 8 heads / 2 kv heads; input_ids 1x128"),
          ("vit", "ViTModel, 2 layers; pixel_values 1x3x224x224")]
    for kind, text in hf:
        cases.append(Case(f"hf:{kind}", "transformers", text, _hf(kind), quick=kind == "gpt2",
                          speed=kind in ("gpt2", "bert")))
    return cases


def all_cases() -> list[Case]:
    from benchmarks.analytic import analytic_cases

    return analytic_cases() + zoo_cases()


# -- the meta-device path: llama-3 configs built without allocating ---------------------------------------------------

LLAMA3 = {
    # published configs (hidden, layers, heads, kv heads, intermediate, vocab)
    "llama-3-8b": (4096, 32, 32, 8, 14336, 128256),
    "llama-3-70b": (8192, 80, 64, 8, 28672, 128256),
}


def build_meta_llama(name: str, seq: int = 128) -> Built:
    import transformers as tf

    hidden, layers, heads, kv, inter, vocab = LLAMA3[name]
    cfg = tf.LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                         max_position_embeddings=8192, tie_word_embeddings=False)
    with torch.device("meta"):
        model = tf.LlamaForCausalLM(cfg)
    model.eval()
    ids = torch.zeros(1, seq, dtype=torch.long, device="meta")
    return Built(model, (), {"input_ids": ids})


def meta_llama_cases() -> list[str]:
    return list(LLAMA3)
