"""``torchvision:NAME``: any model in torchvision's registry, built with ``weights=None`` (nothing is downloaded).

Default inputs, by the task the model's module says it does:

==============  ==========================================================================================
classification  1x3xSxS; S is the model's own ``image_size`` (ViT), else the crop size of its DEFAULT weights'
                transforms (inception_v3 299, efficientnet_b7 600, swin_v2_t 256), else 224
video           1x3x16xHxW; HxW the DEFAULT weights' crop size (r3d_18 112x112, mvit/s3d/swin3d 224x224),
                16 frames or the weights' ``min_temporal_size`` if larger
segmentation    1x3xSxS; S the DEFAULT weights' resize size (520)
detection       a list of one 3xSxS image (models in eval take a list of tensors); S the model's own
                ``transform.min_size`` (800 for the R-CNNs, 300/320 for SSD); for a training step also the
                targets (:func:`detection_targets`), which these models need in training
optical flow    two 1x3x368x496 frames (RAFT's training crop; H and W must be multiples of 8)
==============  ==========================================================================================

``--input-size`` replaces these (for detection each size is one image, or B images for a 4-d size; for optical
flow one size is used for both frames); ``--batch-size`` replaces the leading dimension (detection: the number of
images).

A detection model's training step takes a list of targets beside its images and returns a dict of its losses, whose
sum is the step's loss (torchcost's default loss, run/step.py). The targets are made here, the same for every image
(:data:`DETECTION_BOXES` boxes of several sizes on a fixed layout, labels cycling over the model's classes, each box's
mask a filled rectangle for Mask R-CNN, keypoints at fixed points of each box for Keypoint R-CNN). What such a step
computes depends on the values: which anchors and proposals match a box, and how many proposals are positive (Mask
R-CNN's mask head and Keypoint R-CNN's keypoint head run on the positive ones only), so its counts are those of these
targets and of the model's weights: two random initialisations of Keypoint R-CNN gave forwards of 255 and 307 GFLOPs
(its keypoint head, 8 convolutions of 512 channels on 14 x 14, is about 3.5 GMACs a positive proposal). The run is on
the cpu (not meta: the boxes are values). To count other targets, call ``torchcost.analyze(model, images, targets,
mode="train")`` with your own.
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

__all__ = ["DETECTION_BOXES", "TASKS", "build", "detection_targets", "names"]

TASKS = ("classification", "video", "segmentation", "detection", "optical_flow", "quantization")
VIDEO_FRAMES = 16
FLOW_SIZE = (368, 496)
DETECTION_BOXES = 8  # boxes per image in a detection model's training targets (COCO averages about 7 per image)
# box k of an image of height H and width W: its centre on a 4 x 2 grid, its width and height these fractions of W
# and H, clipped to the image (the R-CNNs' FPN levels take boxes by size: small, medium and large ones)
_BOX_SIDES = (0.08, 0.12, 0.18, 0.25, 0.35, 0.45, 0.6, 0.8)


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
    targets = f"; training targets: {DETECTION_BOXES} boxes an image" if len(args) == 2 and task == "detection" else ""
    return Resolved(model, args, {}, f"{spec} ({task}, weights=None{targets})", spec, name)


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
        images = [make(tuple(s)) for s in shapes]
        return (images, detection_targets(model, images)) if opts.train else (images,)
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


def detection_targets(model: nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """One target per image for a torchvision detection model's training step (the module's docstring): "boxes"
    (n, 4) as x1, y1, x2, y2 in the image's pixels, "labels" (n,) int64; "masks" (n, H, W) uint8 for a model with a
    mask head; "keypoints" (n, K, 3) (x, y, visible) for one with a keypoint head. On the images' device."""
    classes = _num_classes(model)
    heads = getattr(model, "roi_heads", None)
    masks = bool(getattr(heads, "has_mask", lambda: False)())
    keypoints = _num_keypoints(heads)
    targets = []
    for image in images:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        boxes = []
        for k, side in enumerate(_BOX_SIDES[:DETECTION_BOXES]):
            cx, cy = w * (k % 4 + 0.5) / 4, h * (k // 4 + 0.5) / 2
            bw, bh = max(w * side, 2.0), max(h * side, 2.0)
            x1, y1 = max(cx - bw / 2, 0.0), max(cy - bh / 2, 0.0)
            boxes.append([x1, y1, min(x1 + bw, float(w)), min(y1 + bh, float(h))])
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32, device=image.device),
                  "labels": torch.tensor([1 + k % max(classes - 1, 1) for k in range(len(boxes))],
                                         dtype=torch.int64, device=image.device)}
        if masks:
            filled = torch.zeros((len(boxes), h, w), dtype=torch.uint8, device=image.device)
            for k, (x1, y1, x2, y2) in enumerate(boxes):
                filled[k, int(y1):int(y2), int(x1):int(x2)] = 1
            target["masks"] = filled
        if keypoints:
            points = torch.zeros((len(boxes), keypoints, 3), dtype=torch.float32, device=image.device)
            t = torch.linspace(0.1, 0.9, keypoints)  # (spread along each box's diagonal, all visible)
            for k, (x1, y1, x2, y2) in enumerate(boxes):
                points[k, :, 0] = x1 + t * (x2 - x1)
                points[k, :, 1] = y1 + t * (y2 - y1)
                points[k, :, 2] = 1
            target["keypoints"] = points
        targets.append(target)
    return targets


def _num_classes(model: nn.Module) -> int:
    """The classes a torchvision detection model predicts, background included (2 where it cannot be read: every
    label then 1, which any such model takes)."""
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    score = getattr(predictor, "cls_score", None)
    if isinstance(score, nn.Linear):  # the R-CNNs
        return int(score.out_features)
    head = getattr(getattr(model, "head", None), "classification_head", None)
    for name in ("num_classes", "num_columns"):  # RetinaNet and FCOS; SSD
        value = getattr(head, name, None)
        if isinstance(value, int) and value >= 2:
            return value
    return 2


def _num_keypoints(heads: object) -> int:
    """Keypoint R-CNN's keypoints per box (0 for another model)."""
    predictor = getattr(heads, "keypoint_predictor", None)
    channels = getattr(getattr(predictor, "kps_score_lowres", None), "out_channels", None)
    return channels if isinstance(channels, int) else 0
