"""The model's own key/value cache: making it as ``generate()`` would, walking its tensors, grouping its layers.

Nothing here knows an architecture. The cache is the object transformers' ``generate()`` makes for the model
(``DynamicCache(config=model.config.get_text_config(decoder=True))``, whose layers follow the config: a
``DynamicLayer`` for full attention, a ``DynamicSlidingWindowLayer`` for a sliding window, a latent layer is a
``DynamicLayer`` holding the latents the attention module gives it). Its bytes are read from the tensors its layers
hold after a run: every tensor in a public attribute of every layer (keys and values; the convolution and recurrent
states of a linear-attention layer, held in dicts), each distinct storage once at its whole size, so a sliding
layer's view of the last ``window - 1`` tokens counts the storage it is a view of. A layer's private helpers (the
sliding layer's 8-byte window-size scalar) are not cache state and are not counted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.errors import InputError
from torchcost.trees import tensors_in

__all__ = ["CacheLayerInfo", "cache_keyword", "cache_layers", "cache_tensors", "check_generative", "make_cache",
           "storage_bytes", "text_config", "window_kinks"]


def check_generative(model: nn.Module) -> str:
    """Refuse, with one readable line, a model that cannot generate with a cache; return the forward's keyword for
    the cache (``cache``, or ``past_key_values`` on models that still take the older name)."""
    config = getattr(model, "config", None)
    name = type(model).__name__
    can_generate = getattr(model, "can_generate", None)
    if config is None or not callable(can_generate):
        raise InputError(f"{name} is not a transformers model: serving analysis runs the model's own key/value "
                         f"cache, which needs a transformers causal language model (hf:NAME)")
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(f"{name} is an encoder-decoder model; serving analysis covers decoder-only causal language "
                         f"models")
    if not can_generate():
        raise InputError(f"{name} cannot generate text (not a causal language model, or no generation head); "
                         f"give its ...ForCausalLM class")
    keyword = cache_keyword(model)
    if keyword is None:
        raise InputError(f"{name}'s forward takes no key/value cache (no 'cache' or 'past_key_values' argument)")
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    if callable(supports) and not supports():
        raise InputError(f"{name} keeps its generation state in a cache of its own that generate() does not make "
                         f"through transformers' Cache classes; serving analysis does not cover it yet")
    return keyword


def cache_keyword(model: nn.Module) -> str | None:
    """The forward's keyword for the cache object: ``cache`` (transformers 5.24) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    for keyword in ("cache", "past_key_values"):
        if keyword in params:
            return keyword
    return None


def make_cache(model: nn.Module) -> Any:
    """A fresh cache, as ``generate()`` makes one for this model."""
    from transformers import DynamicCache

    return DynamicCache(config=text_config(model))


def text_config(model: nn.Module) -> Any:
    """The decoder's config of a transformers model (its own config for a text-only one); None without one."""
    config: Any = getattr(model, "config", None)
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The state tensors of ``cache``: each public tensor attribute of each of its layers."""
    return [t for layer in getattr(cache, "layers", ()) for t in _layer_tensors(layer)]


def _layer_tensors(layer: Any) -> list[torch.Tensor]:
    """A layer's state: the tensors in its public attributes (a linear-attention layer keeps its convolution and
    recurrent states in dicts by index)."""
    return [t for k, v in vars(layer).items() if not k.startswith("_") for t in tensors_in(v)]


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a view counts its whole storage, once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[id(s) if s.device.type == "meta" else s.data_ptr()] = s.nbytes()
    return sum(seen.values())


@dataclass(frozen=True)
class CacheLayerInfo:
    """One layer of the cache after a run: its kind, window, the tokens its keys hold and its bytes."""

    kind: str  # "full attention", "sliding window", ... (the layer type transformers gave it)
    cls: str  # the cache layer's class name
    window: int | None
    tokens: int  # sequence length of its keys (the view it keeps)
    bytes: int  # distinct storages of its tensors
    shapes: tuple[tuple[int, ...], ...]


def cache_layers(cache: Any, model: nn.Module) -> list[CacheLayerInfo]:
    """Each layer of ``cache``, described from the tensors it holds."""
    types = list(getattr(text_config(model), "layer_types", None) or [])
    out = []
    for i, layer in enumerate(getattr(cache, "layers", ())):
        tensors = _layer_tensors(layer)
        window = getattr(layer, "sliding_window", None)
        window = int(window) if isinstance(window, int) else None
        kind = types[i] if i < len(types) else ("sliding_attention" if window is not None else "full_attention")
        keys = getattr(layer, "keys", None)
        tokens = int(keys.shape[-2]) if isinstance(keys, torch.Tensor) and keys.dim() >= 2 else 0
        out.append(CacheLayerInfo(kind.replace("_", " "), type(layer).__name__, window, tokens,
                                  storage_bytes(tensors), tuple(tuple(map(int, t.shape)) for t in tensors)))
    return out


def window_kinks(cache: Any) -> set[int]:
    """Contexts at which a decode step's cost may change slope: a sliding window W stops growing its keys at W - 1
    cached tokens, and its storage at W."""
    kinks: set[int] = set()
    for layer in getattr(cache, "layers", ()):
        window = getattr(layer, "sliding_window", None)
        if isinstance(window, int) and window > 0:
            kinks.update({window - 1, window})
    return kinks
