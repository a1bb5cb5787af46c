"""``torchvision:NAME``: any model in torchvision's registry, built with ``weights=None`` (nothing is downloaded).

Default inputs, by the task the model's module says it does:

==============  ==========================================================================================
classification  1x3xSxS; S is the model's own ``image_size`` (ViT), else the crop size of its DEFAULT weights'
                transforms (inception_v3 299, efficientnet_b7 600, swin_v2_t 256), else 224
video           1x3x16xHxW; HxW the DEFAULT weights' crop size (r3d_18 112x112, mvit/s3d/swin3d 224x224),
                16 frames or the weights' ``min_temporal_size`` if larger
segmentation    1x3xSxS; S the DEFAULT weights' resize size (520)
detection       a list of one 3xSxS image (models in eval take a list of tensors); S the model's own
                ``transform.min_size`` (800 for the R-CNNs, 300/320 for SSD)
optical flow    two 1x3x368x496 frames (RAFT's training crop; H and W must be multiples of 8)
==============  ==========================================================================================

``--input-size`` replaces these (for detection each size is one image, or B images for a 4-d size; for optical
flow one size is used for both frames); ``--batch-size`` replaces the leading dimension (detection: the number of
images).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from torchcost.errors import SpecError
from torchcost.resolve.common import (
    BuildOptions,
    Resolved,
    build_under,
    float_input,
    model_dtype,
    require,
    unknown_name,
    with_batch,
)

__all__ = ["TASKS", "build", "names"]

TASKS = ("classification", "video", "segmentation", "detection", "optical_flow", "quantization")
VIDEO_FRAMES = 16
FLOW_SIZE = (368, 496)


def _models(spec: str) -> Any:
    require("torchvision", spec)
    import torchvision.models as models

    return models


def _task_of(models: Any, name: str) -> str:
    module = models.get_model_builder(name).__module__  # torchvision.models.video.resnet -> video
    parts = module.split(".")
    if len(parts) >= 4 and parts[2] in TASKS:
        return str(parts[2])
    return "classification"


def names() -> list[tuple[str, str]]:
    models = _models("torchvision:")
    return [(n, _task_of(models, n)) for n in models.list_models()]


def _weights_meta(models: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(transform keyword arguments, meta) of the DEFAULT weights, read without downloading anything."""
    try:
        weights = models.get_model_weights(name).DEFAULT
    except Exception:  # a model without registered weights
        return {}, {}
    transforms = getattr(weights, "transforms", None)
    return dict(getattr(transforms, "keywords", None) or {}), dict(weights.meta)


def _hw(value: Any, default: tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, (tuple, list)) and len(value) == 1:
        return int(value[0]), int(value[0])
    return default


def build(name: str, opts: BuildOptions) -> Resolved:
    spec = f"torchvision:{name}"
    models = _models(spec)
    available = models.list_models()
    if name not in available:
        raise unknown_name("torchvision", name, available)
    for key in ("weights", "weights_backbone", "pretrained"):
        if key in opts.kwargs and opts.kwargs[key] not in (None, False):
            raise SpecError(f"torchcost builds {spec} with {key}=None and never downloads weights; drop --kwargs {key}")
    if opts.seq_len is not None:
        raise SpecError(f"--seq-len applies to text models (hf:...), not to {spec}")
    task = _task_of(models, name)
    if task == "detection" and opts.meta:
        raise SpecError(f"{spec} cannot run on the meta device: its post-processing (box selection, non-maximum "
                        "suppression) depends on the values computed; analyse it on cpu instead")
    kwargs: dict[str, Any] = {"weights": None, **opts.kwargs}
    if "weights_backbone" in inspect.signature(models.get_model_builder(name)).parameters:
        kwargs.setdefault("weights_backbone", None)  # detection/segmentation builders default to downloading one
    model = build_under(opts.device, opts.dtype, lambda: models.get_model(name, **kwargs), spec, opts.kwargs)
    transforms, meta = _weights_meta(models, name)
    args = _inputs(task, model, transforms, meta, opts)
    return Resolved(model, args, {}, f"{spec} ({task}, weights=None)", spec, name)


def _inputs(task: str, model: nn.Module, transforms: dict[str, Any], meta: dict[str, Any],
            opts: BuildOptions) -> tuple[Any, ...]:
    dtype = model_dtype(model)
    dev = opts.device
    batch = opts.batch_size

    def make(shape: tuple[int, ...]) -> torch.Tensor:
        return float_input(shape, dtype, dev)

    given = opts.input_sizes
    if task == "detection":
        if given:
            shapes = [s for size in given for s in ([size[1:]] * size[0] if len(size) == 4 else [size])]
        else:
            side = _hw(getattr(getattr(model, "transform", None), "min_size", None), (800, 800))
            shapes = [(3, *side)]
        if batch is not None:
            shapes = [shapes[0]] * batch
        return ([make(tuple(s)) for s in shapes],)
    if task == "optical_flow":
        sizes = list(given) if given else [(1, 3, *FLOW_SIZE)]
        if len(sizes) == 1:
            sizes = sizes * 2
        return tuple(make(with_batch(s, batch)) for s in sizes)
    if given:
        return tuple(make(with_batch(s, batch)) for s in given)
    if task == "video":
        h, w = _hw(transforms.get("crop_size"), (112, 112))
        frames = max(VIDEO_FRAMES, int(meta.get("min_temporal_size", 0) or 0))
        return (make((batch or 1, 3, frames, h, w)),)
    if task == "segmentation":
        h, w = _hw(transforms.get("resize_size", transforms.get("crop_size")), (520, 520))
        return (make((batch or 1, 3, h, w)),)
    own = getattr(model, "image_size", None)  # VisionTransformer: fixed by its position embedding
    h, w = _hw(own, (0, 0)) if own is not None else _hw(transforms.get("crop_size"), (224, 224))
    if (h, w) == (0, 0):
        h, w = 224, 224
    return (make((batch or 1, 3, h, w)),)
