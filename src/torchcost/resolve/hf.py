"""``hf:NAME`` or ``hf:path/to/config.json``: a transformers model built from a config, never from downloaded weights.

``NAME`` is one of the config.json files shipped in ``torchcost/configs`` (the published configs of landmark models,
``torchcost list hf``); a path reads a local config.json (or a directory holding one). ``--config key=value``
overrides a field, converted to the type the field already has (``n_layer=2``, ``rope_theta=1e6``,
``tie_word_embeddings=false``); the config is then rebuilt, so fields derived from others follow.
The model class is the config's ``architectures[0]`` (AutoModel when it names none), built with ``_from_config``
in the config's own dtype (``torch_dtype``/``dtype``; float32 when it names none) unless ``--dtype`` says otherwise.
``--kwargs`` go to ``_from_config`` (e.g. ``attn_implementation=eager``).

Default inputs: text models get ``input_ids`` of 1 x 128 tokens (int64, random within the vocabulary; the sequence
length is capped at the config's maximum positions), an ``attention_mask`` of ones when the forward takes one, and
``decoder_input_ids`` of the same shape for encoder-decoders; vision models get ``pixel_values`` of 1 x channels x
image_size x image_size (where the config and its vision config give no image size, the first a probe forward runs
with of 224, its sub-configs' sizes, then 384, 512, 1024 and 1536: :func:`_image_shape`); audio models
``input_values`` (one second of waveform) or ``input_features`` (a spectrogram), in the layout a probe forward takes
(:func:`_audio_inputs`); time-series models ``past_values`` of the config's context length (:func:`_series_inputs`);
vision towers that take their image as patches already cut get them with their grid: SigLIP 2's NaFlex patches, mask
and spatial shapes (:func:`_patches`), the Qwen2-VL layout's patch sequence and ``grid_thw`` (:func:`_grid_inputs`:
Qwen2.5-VL, Qwen3-VL, GLM-4V, Kimi and others). On the meta
device a model gets the cpu's 2-d mask of ones where a probe forward of a one-layer meta copy runs with it: its
values are known to the run (collect/shadows.py), so transformers' mask code skips it as on the cpu and the counts
equal a cpu run's. Where that probe fails (values the run does not follow), the masks that need no read: a causal
model the 4-d boolean causal mask, an encoder-decoder a 4-d mask of ones, an encoder none, or none at all where the
model makes its own (``meta_attention_mask``). A maximum position count of
0 or less (XLNet's -1) is no bound.

Building on cpu first checks, on the meta device, that the parameters fit in the memory available, and otherwise
says to add ``--meta``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import torchcost.inputs as _input_rules
from torchcost.collect import metagaps
from torchcost.collect.shadows import following, known_input, known_made
from torchcost.errors import InputError, SpecError, a_kind
from torchcost.resolve.common import (
    BuildOptions,
    Resolved,
    closest,
    float_input,
    int_input,
    known_full,
    on_device,
    parse_value,
    require,
    uncollected,
    unknown_name,
    with_batch,
)
from torchcost.run.concurrency import importing
from torchcost.run.failures import reads_values

__all__ = ["DEFAULT_SEQ_LEN", "build", "load_config", "names", "shipped"]

DEFAULT_SEQ_LEN = 128
MEMORY_FRACTION = 0.7  # refuse a cpu build whose parameters alone need more than this share of the available memory


def shipped() -> dict[str, Path]:
    """The config.json files shipped with torchcost, by name (``gpt2``, ``llama-3-70b``, ...)."""
    folder = resources.files("torchcost") / "configs"
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            found[entry.name.removesuffix(".json")] = Path(str(entry))
    return dict(sorted(found.items()))


def names() -> list[tuple[str, str]]:
    out = []
    for name, path in shipped().items():
        data = json.loads(path.read_text())
        arch = (data.get("architectures") or [data.get("model_type", "?")])[0]
        layers = _first(data, "num_hidden_layers", "n_layer", "num_layers")
        hidden = _first(data, "hidden_size", "n_embd", "d_model")
        experts = _first(data, "num_local_experts")
        parts = [arch, f"{layers} layers", f"hidden {hidden}"]
        if experts:
            parts.append(f"{experts} experts")
        out.append((name, ", ".join(parts)))
    return out


def _first(data: dict[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)


def load_config(name: str) -> tuple[dict[str, Any], str]:
    """The raw config dict of a shipped name or a path, and a short label for it."""
    configs = shipped()
    if name in configs:
        return json.loads(configs[name].read_text()), name
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SpecError(f"cannot read {path} as a config.json: {exc}") from exc
        if not isinstance(data, dict):
            raise SpecError(f"{path} is not a config.json: it holds {a_kind(data)}, not an object")
        label = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
        return data, label
    if "/" in name or name.endswith(".json") or Path(name).suffix:
        raise SpecError(f"hf:{name}: no such file; give a shipped name (torchcost list hf) or a path to a config.json")
    error = unknown_name("hf", name, configs, what="shipped config")
    raise SpecError(f"{error} (torchcost never downloads: for another model, save its config.json and give "
                    f"hf:path/to/config.json)")


def _typed(key: str, text: str, current: Any, spec: str) -> Any:
    try:
        if isinstance(current, bool):
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise SpecError(f"{spec}: --config {key}={text}: {key} is {a_kind(current)} (now {current!r}); {text!r} is "
                        f"not one") from None
    if isinstance(current, str):
        return text
    return parse_value(text)


def _make_config(transformers: Any, data: dict[str, Any], spec: str) -> Any:
    model_type = data.get("model_type")
    if not model_type:
        raise SpecError(f"{spec}: the config has no model_type, so transformers cannot tell which model it is")
    try:
        with uncollected():  # (the model's configuration module imported: resolve/common.py)
            config_class = transformers.CONFIG_MAPPING[model_type]
    except KeyError:
        raise SpecError(f"{spec}: transformers {transformers.__version__} does not know model_type "
                        f"{model_type!r}") from None
    try:
        return config_class.from_dict(dict(data))
    except Exception as exc:  # transformers validates fields with its own error classes (strict dataclasses)
        raise SpecError(f"{spec}: transformers rejects this config: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (transformers' validation errors span several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def _config_dtype(data: dict[str, Any], spec: str) -> torch.dtype | None:
    value = data.get("dtype") or data.get("torch_dtype")
    if value is None or value == "auto":
        return None
    dtype = getattr(torch, value, None) if isinstance(value, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SpecError(f"{spec}: the config's dtype {value!r} is not a floating torch dtype (float32, bfloat16, ...)")
    return dtype


def _model_class(transformers: Any, data: dict[str, Any], spec: str) -> Any:
    """The class named by the config's ``architectures[0]`` (None: none named, AutoModel builds it)."""
    archs = data.get("architectures") or []
    if not archs:
        return None
    with uncollected():  # (the model's modules imported, and the library's most of it: resolve/common.py)
        found = getattr(transformers, str(archs[0]), None)
    if not (isinstance(found, type) and issubclass(found, transformers.PreTrainedModel)):
        raise SpecError(f"{spec}: the config's architectures[0] {archs[0]!r} is not a transformers model class")
    return found


def _refuse_remote_code(data: dict[str, Any], opts: BuildOptions, spec: str) -> None:
    if opts.kwargs.get("trust_remote_code"):
        raise SpecError(f"{spec}: trust_remote_code is refused: torchcost never downloads or runs code from a hub; "
                        f"build the model in a .py file and give path/to/file.py:Name")


def build(name: str, opts: BuildOptions) -> Resolved:
    spec = f"hf:{name}"
    data, label = load_config(name)
    _refuse_remote_code(data, opts, spec)
    transformers = require("transformers", spec)
    # (transformers imports a config's and a model's modules at their first use, and the inputs may be picked by a
    # forward on meta: like transformers' own import, without torch._dynamo where nothing needs it, run/dynamo.py)
    with importing():
        config = _make_config(transformers, data, spec)
        if opts.config:
            data = dict(data)
            attribute_map = getattr(config, "attribute_map", {}) or {}
            for key, text in opts.config.items():
                # a field of the config object, or a key of the file that transformers folds into another field
                # (transformers 5 keeps rope_theta inside rope_parameters)
                if hasattr(config, key):
                    current = getattr(config, key)
                elif key in data:
                    current = data[key]
                else:
                    known = list(config.to_dict()) + list(attribute_map) + list(data)
                    near = closest(key, known)
                    hint = f"; closest: {', '.join(near)}" if near else ""
                    raise SpecError(f"{spec}: the config has no field {key!r}{hint}")
                data[attribute_map.get(key, key)] = _typed(key, text, current, spec)
            config = _make_config(transformers, data, spec)
        if hasattr(config, "use_cache"):
            config.use_cache = False  # one forward, no key/value cache in the outputs
        dtype = opts.dtype or _config_dtype(data, spec) or torch.float32
        model_class = _model_class(transformers, data, spec)

        def make() -> nn.Module:
            kwargs = {"dtype": dtype, **opts.kwargs}
            built: nn.Module = (model_class._from_config(config, **kwargs) if model_class is not None
                                else transformers.AutoModel.from_config(config, **kwargs))
            return built

        if not opts.meta and opts.device.type == "cpu":
            with torch.device("meta"):
                probe = _call(make, spec, opts)
            need = sum(p.numel() * p.element_size() for p in {id(p): p for p in probe.parameters()}.values())
            available = _input_rules.available_memory(opts.device)
            if available is not None and need > MEMORY_FRACTION * available:
                raise SpecError(f"{spec} needs {need / 2**30:.1f} GiB for its parameters in {_dtype_name(dtype)}, more "
                                f"than this machine can spare ({available / 2**30:.1f} GiB available); add --meta to "
                                f"analyse it without allocating weights")
            del probe
        with torch.device(opts.device), following() if opts.device.type == "meta" else contextlib.nullcontext() as seen:
            model = on_device(_call(make, spec, opts), opts.device)
            if seen is not None:  # (buffers made from numbers, EnCodec's strides: known to a run that reads them)
                seen.keep(list(model.buffers()))
        args, kwargs, what = _inputs(model, config, dtype, opts, spec)  # (a meta forward may pick them)
    extra = f"; {', '.join(f'{k}={v}' for k, v in opts.config.items())}" if opts.config else ""
    return Resolved(model, args, kwargs, f"{spec} ({type(model).__name__} from config{extra}; {what})", spec, label)


def _call(make: Any, spec: str, opts: BuildOptions) -> nn.Module:
    try:
        model = make()
    except TypeError as exc:
        if opts.kwargs:
            raise SpecError(f"{spec} does not take --kwargs {', '.join(opts.kwargs)}: {exc}") from exc
        raise SpecError(f"{spec}: transformers cannot build the model from this config: {_one_line(exc)}") from exc
    except Exception as exc:  # the config is the user's input: whatever transformers raises on it is a spec error
        raise SpecError(f"{spec}: transformers cannot build the model from this config: "
                        f"{type(exc).__name__}: {_one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise SpecError(f"{spec} did not build an nn.Module")
    return model


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def meta_attention_mask(model: nn.Module, config: Any, batch: int, seq: int, device: torch.device | str,
                        inputs: dict[str, Any] | None = None) -> tuple[torch.Tensor | None, str] | None:
    """The attention mask a run on meta tensors gives a transformers model for ``batch`` sequences of ``seq`` tokens
    without padding, and its description; None: no mask, nothing to say.

    Where ``inputs`` (the other keyword inputs) are given, the mask a cpu run gets, the 2-d mask of ones, is tried
    first in a forward of a meta copy of the model with one layer per stack (:func:`_first_that_runs`).
    transformers reads its values (it skips an all-ones mask and lets SDPA take ``is_causal``), and a meta run knows
    them (collect/shadows.py), so with it the meta run takes the cpu run's path and counts what the cpu run counts.
    That fails only where the forward reads values a run does not follow (a mask past its limit of elements, values
    from the weights) or where the model is not made for the mask. Then, and where no ``inputs`` are given (no
    probe), the masks of before values were followed, which need no read: a causal model gets the 4-d causal mask,
    an encoder-decoder a 4-d one of ones, an encoder none; with ``inputs``, where that fails too, a causal model or
    an encoder-decoder none (it makes its own from the sizes), an encoder the 4-d mask of ones. Where none runs,
    and the 2-d one fails on a read of values and the next not, the 2-d one: the analysis then fails on that read,
    and says to analyse the model built on the cpu."""
    if _is_causal(model, config):
        first: tuple[torch.Tensor | None, str | None] = (
            _causal_mask(batch, seq, device), "causal attention_mask")
    elif getattr(config, "is_encoder_decoder", False):
        first = known_full((batch, 1, seq, seq), 1, torch.bool, device), "attention_mask of ones"
    else:  # an encoder
        first = None, None
    if inputs is None:
        mask, said = first
        return None if said is None else (mask, said)
    candidates = [(known_full((batch, seq), 1, torch.int64, device), "attention_mask of ones"), first]
    if first[0] is not None:
        candidates.append((None, "no attention_mask (this model takes no 4-d mask on meta, nor one of ones: it "
                                 "makes its own)"))
    else:
        candidates.append((known_full((batch, 1, seq, seq), 1, torch.bool, device),
                           "attention_mask of ones (4-d: this model reads its inputs' values without one and a "
                           "2-d one's values)"))
    failed: dict[int, BaseException] = {}
    found = _first_that_runs(model, [inputs if c[0] is None else {**inputs, "attention_mask": c[0]}
                                     for c in candidates], failed=failed)
    if found is not None:
        mask, said = candidates[found]
    elif _reads_values(failed.get(0)) and not _reads_values(failed.get(1)):
        mask, said = candidates[0][0], "attention_mask of ones (2-d, as on the cpu: no mask runs on meta)"
    else:
        mask, said = first
    return None if said is None else (mask, said)


def _reads_values(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a forward's read of a meta tensor's values (which a cpu build runs)."""
    return exc is not None and reads_values(str(exc))


class _MetaGaps(TorchDispatchMode):
    """A probe's ops as an analysis runs them on meta: a call torch's meta kernel refuses although the CPU's and
    CUDA's kernels run it gets their output (collect/metagaps.py; a float32 ``_grouped_mm``, Aria's experts), so a
    probe does not fail where the analysis would not."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        try:
            return func(*args, **kwargs)
        except Exception:
            out = metagaps.answer(func, args, kwargs, "cpu")  # (the CPU's and CUDA's answers are the same)
            if out is None:
                raise
            return out


def _furthest(model: nn.Module, candidates: list[dict[str, Any]], whole_too: bool = True) -> int | None:
    """:func:`_first_that_runs`, else the first candidate whose forward failed only where it read values (it got
    past the shapes: a cpu build runs it); None where neither."""
    failed: dict[int, BaseException] = {}
    found = _first_that_runs(model, candidates, whole_too, failed=failed)
    return found if found is not None else next((i for i in range(len(candidates)) if _reads_values(failed.get(i))),
                                                None)


def _first_that_runs(model: nn.Module, candidates: list[dict[str, Any]], whole_too: bool = True,
                     failed: dict[int, BaseException] | None = None) -> int | None:
    """The index of the first of ``candidates`` (keyword inputs) a forward of a meta copy of ``model`` runs on, in
    eval mode (as an eval analysis runs it: transformers builds from a config in training mode, where
    FastSpeech2-Conformer asks for its labels); None where none runs. The copy has one layer per stack (run/step.py's
    ``shortened_meta_copy``): where a model takes its inputs is in the code before the layers and in each layer
    alike. With ``whole_too``, where no candidate runs on it, a copy of the whole model is tried (a model may index a
    list by a count of its own, as MarkupLM its xpath embeddings). One copy a pass serves every candidate; the
    user's model is left as it is. ``failed``, where given, gets each candidate's error in the last pass run."""
    import warnings

    from torchcost.run.step import make_twin, shortened_meta_copy
    from torchcost.trees import map_tensors

    def meta(t: torch.Tensor) -> torch.Tensor:
        return t if t.device.type == "meta" else torch.empty_like(t, device="meta")

    for whole in (False, True) if whole_too else (False,):
        try:
            probe = (make_twin(model, (), {}, "meta", torch.device("meta")).model if whole
                     else shortened_meta_copy(model))
        except Exception:  # (a model that cannot be copied so: the next pass, or the analysis, reports it)
            continue
        probe.eval()
        for index, kwargs in enumerate(candidates):
            try:
                with torch.no_grad(), warnings.catch_warnings(), _MetaGaps(), following(kwargs):
                    warnings.simplefilter("ignore")
                    probe(**map_tensors(kwargs, meta))
            except Exception as exc:  # (whatever the model raises: the analysis reports it)
                if failed is not None:
                    failed[index] = exc
                continue
            return index
    return None


def _positive(part: Any, *keys: str) -> int | None:
    """The first of ``keys`` that the config ``part`` sets to a positive integer; None where none does."""
    return next((v for v in (getattr(part, k, None) for k in keys) if isinstance(v, int) and v > 0), None)


def _causal_mask(batch: int, seq: int, device: torch.device | str) -> torch.Tensor:
    """The 4-d boolean causal mask, (batch, 1, seq, seq), transformers derives from an all-ones 2-d mask."""
    shape = (batch, 1, seq, seq)
    return known_made(lambda: torch.ones(shape, dtype=torch.bool).tril(), shape, torch.bool, device)


def _is_causal(model: nn.Module, config: Any) -> bool:
    if getattr(config, "is_encoder_decoder", False):
        return False
    arch = type(model).__name__
    if arch.endswith(("ForCausalLM", "LMHeadModel")) or getattr(config, "is_decoder", False):
        return True
    try:
        from transformers.models.auto import modeling_auto
    except ImportError:  # pragma: no cover - layout of older transformers
        return False
    model_type = getattr(config, "model_type", "")
    causal = getattr(modeling_auto, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", {})
    masked = getattr(modeling_auto, "MODEL_FOR_MASKED_LM_MAPPING_NAMES", {})
    return model_type in causal and model_type not in masked


def _dual_pixels(model: nn.Module, config: Any, ids: dict[str, Any], masked: bool,
                 dtype: torch.dtype) -> tuple[int, ...] | None:
    """The shape of the pixel_values a model that takes its text and an image together needs beside ``ids`` (a dual
    encoder: CLIP, SigLIP, AltCLIP, OWL-ViT), from its vision config, where :func:`_needs_image`. None otherwise: a
    vision-language model runs on its text alone, as before."""
    vision = getattr(config, "vision_config", None)
    size = getattr(vision, "image_size", None)
    if getattr(config, "text_config", None) is None or not isinstance(size, (int, list, tuple)):
        return None
    side = (size, size) if isinstance(size, int) else tuple(size)
    batch = int(ids["input_ids"].shape[0])
    shape = (batch, int(getattr(vision, "num_channels", 3)), *side)
    image = {"pixel_values": torch.empty(shape, dtype=dtype, device="meta")}
    return shape if _needs_image(model, ids, masked, image) else None


def _needs_image(model: nn.Module, ids: dict[str, Any], masked: bool, image: dict[str, Any]) -> bool:
    """Whether a model given text ``ids`` needs the ``image`` inputs beside them: where a probe forward
    (:func:`_furthest`) sees the text alone fail, and the text with the image run or get as far as reading values,
    with no mask or a 2-d one of ones (``masked``: the forward takes one)."""
    masks: list[dict[str, Any]] = [{}]
    if masked:
        masks.append({"attention_mask": known_full(ids["input_ids"].shape, 1, torch.int64, "meta")})
    text_alone, with_image = [{**ids, **m} for m in masks], [{**ids, **m, **image} for m in masks]
    found = _furthest(model, text_alone + with_image)
    return found is not None and found >= len(text_alone)


def _patches(config: Any, params: Any, batch: int, dtype: torch.dtype, device: torch.device
             ) -> tuple[dict[str, Any], str] | None:
    """The inputs of a vision encoder that takes its image as patches already cut, at their own aspect ratio
    (NaFlex: SigLIP 2): ``pixel_values`` (batch, patches, channels x patch x patch), a ``pixel_attention_mask`` of
    ones and the ``spatial_shapes`` of a square image of the config's ``num_patches``, the processor's default
    (256: 16 x 16 patches of 16 pixels, 256 x 256). None for any other model (its forward takes no
    ``spatial_shapes``, or its config gives no patch count and size)."""
    if "spatial_shapes" not in params or "pixel_attention_mask" not in params:
        return None
    vision = getattr(config, "vision_config", None) or config
    count, patch = _positive(vision, "num_patches"), _positive(vision, "patch_size")
    if count is None or patch is None:
        return None
    side = math.isqrt(count)
    rows, cols = (side, side) if side * side == count else (1, count)
    channels = _positive(vision, "num_channels") or 3
    shape = (batch, rows * cols, channels * patch * patch)
    made = {"pixel_values": float_input(shape, dtype, device),
            "pixel_attention_mask": known_full((batch, rows * cols), 1, torch.int64, device),
            "spatial_shapes": known_input(torch.tensor([[rows, cols]] * batch, dtype=torch.int64), device)}
    said = (f"pixel_values {'x'.join(map(str, shape))} ({rows}x{cols} patches of {patch}x{patch} pixels), "
            f"pixel_attention_mask of ones, spatial_shapes {rows}x{cols}")
    return made, said


# the inputs of a vision tower that takes its images as one sequence of flattened patches and a grid per image (the
# Qwen2-VL family's layout: Qwen2.5-VL, Qwen3-VL, GLM-4V, ...): the grid's name, and the patches' first
_GRIDS = ("grid_thw", "image_grid_thw")
_PATCH_INPUTS = ("hidden_states", "pixel_values")
_GRID_SIDE = 224  # pixels: the side of the square image a vision tower whose config gives no image size gets


def _grid_inputs(model: nn.Module, config: Any, params: Any, grid: str, batch: int, dtype: torch.dtype,
                 device: torch.device) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """The inputs of a vision tower of the Qwen2-VL layout: ``batch`` square images of the config's ``image_size``
    (224 pixels where it gives none), each cut into patches of ``patch_size`` pixels over ``temporal_patch_size``
    frames (an image is its own frame repeated, as the processors do), the side rounded to a whole number of
    ``spatial_merge_size`` patch groups: all images' patches in one sequence, and a ``grid`` row (1, rows, columns)
    an image (and where the forward takes them, ``merge_sizes``). A patch is one row of channels x frames x patch x
    patch values, or where a probe forward of a meta copy gets further with it, channels x patch x patch (Kimi): the
    first layout that runs, else the first that fails only where the forward reads the grid's values (which a meta
    copy has not), else the first."""
    patch = _positive(config, "patch_size") or 14
    frames = _positive(config, "temporal_patch_size", "patch_temporal") or 1
    merge = _positive(config, "spatial_merge_size", "merge_size") or 1
    channels = _positive(config, "in_channels", "num_channels", "in_chans") or 3
    size = getattr(config, "image_size", None)
    side = size if isinstance(size, int) and size > 0 else _GRID_SIDE
    cells = max(1, round(side / (patch * merge))) * merge  # patches a side
    name = next(n for n in _PATCH_INPUTS if n in params)
    count = batch * cells * cells
    layouts = [(count, channels * frames * patch * patch), (count, channels, patch, patch)]
    rest = {grid: [[1, cells, cells]] * batch, **({"merge_sizes": [merge] * batch} if "merge_sizes" in params else {})}

    def made(shape: tuple[int, ...], where: torch.device | str) -> dict[str, Any]:
        return {name: torch.empty(shape, dtype=dtype, device=where) if where == "meta" else
                float_input(shape, dtype, torch.device(where)),
                **{k: known_input(torch.tensor(v, dtype=torch.int64), where) for k, v in rest.items()}}

    found = _furthest(model, [made(shape, "meta") for shape in layouts], whole_too=False)
    shape = layouts[found or 0]
    said = (f"{name} {'x'.join(map(str, shape))} ({batch} image{'s' if batch > 1 else ''} of {cells}x{cells} "
            f"patches of {patch}x{patch} pixels{f' x {frames} frames' if frames > 1 else ''}), {grid} {batch}x3"
            + (f", merge_sizes {merge}" if "merge_sizes" in params else ""))
    return (), made(shape, device), said


# square sides a vision model whose config gives no image size of its own is tried at: the common default first (a
# model that ran at it runs as before), then its sub-configs' sizes, then these (Depth Pro's 1536: its 384-pixel
# patches at its smallest scale, 0.25)
_FIRST_SIDE = 224
_TRIED_SIDES = (384, 512, 1024, 1536)


def _image_shape(model: nn.Module, config: Any, batch: int, dtype: torch.dtype) -> tuple[int, ...]:
    """A vision model's pixel_values shape: the config's image size and channels, or its vision config's (SAM's
    1024); where neither gives one, the first that a probe forward (:func:`_furthest`) runs with of 224 (a model
    that runs with it gets it as before), the sizes its other sub-configs give (SAM 2's backbone and prompt
    encoder: 1024), then :data:`_TRIED_SIDES` (Depth Pro: 1536); a video model's (a config with ``num_frames``:
    VideoMAE, ViViT, TimeSformer) batch x frames x channels x side where a probe runs with that and not with a
    single image."""
    vision = getattr(config, "vision_config", None)
    channels = next((c for c in (getattr(config, "num_channels", None), getattr(vision, "num_channels", None))
                     if isinstance(c, int)), 3)
    size = next((s for s in (getattr(config, "image_size", None), getattr(vision, "image_size", None))
                 if isinstance(s, (int, list, tuple))), None)
    if size is not None:
        image = (batch, channels, *((size, size) if isinstance(size, int) else tuple(size)))
    else:
        sides = list(dict.fromkeys([(_FIRST_SIDE, _FIRST_SIDE), *_nested_sizes(config),
                                    *((s, s) for s in _TRIED_SIDES)]))
        shapes = [(batch, channels, *side) for side in sides]
        found = _furthest(model, [{"pixel_values": torch.empty(shape, dtype=dtype, device="meta")}
                                  for shape in shapes])
        image = shapes[found if found is not None else 0]
    frames = getattr(config, "num_frames", None)
    if not isinstance(frames, int) or frames < 1:
        return image
    video = (batch, frames, channels, *image[2:])
    found = _first_that_runs(model, [{"pixel_values": torch.empty(shape, dtype=dtype, device="meta")}
                                     for shape in (image, video)])
    return video if found == 1 else image


def _nested_sizes(config: Any, depth: int = 3) -> list[tuple[int, int]]:
    """The ``image_size`` values of ``config``'s sub-configs, breadth first, as (height, width)."""
    found: list[tuple[int, int]] = []
    level = [config]
    for _ in range(depth):
        below = []
        for part in level:
            for value in vars(part).values():
                if not hasattr(value, "to_dict") or not hasattr(value, "__dict__"):
                    continue
                size = getattr(value, "image_size", None)
                if isinstance(size, int) and size > 0:
                    found.append((size, size))
                elif isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
                    found.append((int(size[0]), int(size[1])))
                below.append(value)
        level = below
    return found


def _inputs(model: nn.Module, config: Any, dtype: torch.dtype, opts: BuildOptions,
            spec: str) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    params = inspect.signature(model.forward).parameters
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text_config, "vocab_size", None)
    dev = opts.device
    given = opts.input_sizes
    if given and len(given) > 1:
        raise InputError(f"{spec} takes one --input-size (input_ids as batch,seq or pixel_values as b,c,h,w)")
    if "input_ids" in params and vocab:
        # (a count of at most 0 is no bound: XLNet's -1, relative positions of any length)
        max_pos = _positive(text_config, "max_position_embeddings", "n_positions")
        if given:
            shape = with_batch(given[0], opts.batch_size)
            if len(shape) != 2:
                raise InputError(f"{spec} takes input_ids of shape batch,seq; --input-size {shape} is not 2-d")
            if opts.seq_len is not None:
                shape = (shape[0], opts.seq_len)
        else:
            seq = opts.seq_len or (min(DEFAULT_SEQ_LEN, max_pos) if max_pos else DEFAULT_SEQ_LEN)
            shape = (opts.batch_size or 1, seq)
        if max_pos and shape[1] > max_pos:
            raise InputError(f"{spec} takes at most {max_pos} positions; a sequence of {shape[1]} is longer")
        kwargs: dict[str, Any] = {"input_ids": int_input(shape, vocab, dev)}
        what = f"input_ids {shape[0]}x{shape[1]}"
        encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        decoder = encoder_decoder and "decoder_input_ids" in params
        if decoder:
            kwargs["decoder_input_ids"] = int_input(shape, vocab, dev)
        naflex = _patches(config, params, shape[0], dtype, dev) if "pixel_values" in params else None
        # (a vision-language model that runs on its text alone gets no patches: as the others, said below)
        patches = naflex if naflex is not None and _needs_image(model, kwargs, "attention_mask" in params,
                                                                naflex[0]) else None
        pixels = _dual_pixels(model, config, kwargs, "attention_mask" in params, dtype) \
            if "pixel_values" in params and naflex is None else None
        if pixels is not None:
            kwargs["pixel_values"] = float_input(pixels, dtype, dev)
        if "attention_mask" in params:
            if not opts.meta:
                kwargs["attention_mask"] = known_full(shape, 1, torch.int64, dev)
                what += ", attention_mask of ones"
            else:
                made = meta_attention_mask(model, config, *shape, dev, inputs=dict(kwargs))
                if made is not None:
                    mask, said = made
                    if mask is not None:
                        kwargs["attention_mask"] = mask
                    what += ", " + said
        if decoder:
            kwargs["decoder_input_ids"] = kwargs.pop("decoder_input_ids")  # (keyword order: as before)
            what += f", decoder_input_ids {shape[0]}x{shape[1]}"
        if pixels is not None:
            kwargs["pixel_values"] = kwargs.pop("pixel_values")
            what += ", pixel_values " + "x".join(map(str, pixels))
        if patches is not None:
            kwargs.update(patches[0])
            what += ", " + patches[1]
        elif pixels is None and "pixel_values" in params:  # (a vision-language model on its text alone: said)
            what += "; text only: no image, so its vision tower does not run"
        return (), kwargs, what
    if "past_values" in params and "pixel_values" not in params:
        return _series_inputs(model, config, dtype, opts, spec)
    grid = next((name for name in _GRIDS if name in params), None)
    if grid is not None and any(name in params for name in _PATCH_INPUTS):
        if given:
            raise InputError(f"{spec} takes its image as a sequence of patches and their grid, which torchcost makes "
                             f"for a square image of the config's size; --input-size does not apply")
        return _grid_inputs(model, config, params, grid, opts.batch_size or 1, dtype, dev)
    audio = next((name for name in params if name in _AUDIO_INPUTS), None)
    if audio is not None and "pixel_values" not in params:
        return _audio_inputs(model, config, audio, dtype, opts, spec)
    if opts.seq_len is not None:
        raise InputError(f"--seq-len applies to text models; {spec} is not one")
    if "pixel_values" in params:
        patches = None if given else _patches(config, params, opts.batch_size or 1, dtype, dev)
        if patches is not None:
            return (), patches[0], patches[1]
        shape = with_batch(given[0], opts.batch_size) if given else _image_shape(model, config, opts.batch_size or 1,
                                                                                 dtype)
        return (), {"pixel_values": float_input(shape, dtype, dev)}, "pixel_values " + "x".join(map(str, shape))
    raise SpecError(f"{spec}: torchcost does not know the inputs of {type(model).__name__} (its forward takes "
                    f"none of input_ids, pixel_values, input_values and input_features)")


# one input of a candidate set: (name, shape, what it holds: "values" (random), "ones", "zeros" or "int zeros")
_Made = tuple[str, tuple[int, ...], str]


def _series_inputs(model: nn.Module, config: Any, dtype: torch.dtype, opts: BuildOptions,
                   spec: str) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """A time-series model's inputs (a forward taking ``past_values``): the config's ``context_length`` steps, as
    batch x steps x ``num_input_channels`` (PatchTST, PatchTSMixer) or batch x steps; with TimesFM's padding and
    frequency; or, for the models that read lagged values and time features (Time Series Transformer, Informer,
    Autoformer), ``context_length + max(lags_sequence)`` past steps with their time features and observed mask and
    the ``prediction_length`` future values and time features. The first set a probe forward of a meta copy runs
    on (:func:`_first_that_runs`); ``--input-size`` gives past_values' shape."""
    params = inspect.signature(model.forward).parameters
    batch = opts.batch_size or 1
    steps = _positive(config, "context_length", "prediction_length")
    if opts.seq_len is not None:
        steps = opts.seq_len
    if steps is None and not opts.input_sizes:
        raise SpecError(f"{spec}: {type(model).__name__} takes past_values, and its config names no context_length: "
                        f"give it (--config context_length=N) or the input's shape (--input-size)")
    sets: list[list[_Made]] = []
    if opts.input_sizes:
        sets.append([("past_values", with_batch(opts.input_sizes[0], opts.batch_size), "values")])
    else:
        assert steps is not None
        channels = getattr(config, "num_input_channels", None)
        if isinstance(channels, int) and channels > 0:
            sets.append([("past_values", (batch, steps, channels), "values")])
        sets.append([("past_values", (batch, steps), "values")])
        if "past_values_padding" in params:  # (TimesFM)
            sets.append([("past_values", (batch, steps), "values"), ("past_values_padding", (batch, steps), "zeros"),
                         *([("freq", (batch, 1), "int zeros")] if "freq" in params else [])])
        lags, ahead = getattr(config, "lags_sequence", None), getattr(config, "prediction_length", None)
        if isinstance(lags, (list, tuple)) and lags and isinstance(ahead, int) and ahead > 0:
            past = steps + max(int(lag) for lag in lags)
            size = getattr(config, "input_size", 1)
            features = int(getattr(config, "num_time_features", 0) or 0)
            values = (batch, past) if size == 1 else (batch, past, int(size))
            future = (batch, ahead) if size == 1 else (batch, ahead, int(size))
            sets.append([("past_values", values, "values"), ("past_time_features", (batch, past, features), "values"),
                         ("past_observed_mask", values, "ones"), ("future_values", future, "values"),
                         ("future_time_features", (batch, ahead, features), "values")])
    sets = [made for made in sets if all(name in params for name, _, _ in made)]
    found = _first_that_runs(model, [{name: _series_tensor(shape, kind, dtype, torch.device("meta"))
                                      for name, shape, kind in made} for made in sets]) if len(sets) > 1 else 0
    made = sets[found if found is not None else 0]
    kwargs = {name: _series_tensor(shape, kind, dtype, opts.device) for name, shape, kind in made}
    return (), kwargs, ", ".join(f"{name} " + "x".join(map(str, shape)) for name, shape, _ in made)


def _series_tensor(shape: tuple[int, ...], kind: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if kind == "values":
        return float_input(shape, dtype, device)
    if kind == "int zeros":
        return known_full(shape, 0, torch.int64, device)
    return known_full(shape, 1 if kind == "ones" else 0, dtype, device)


_AUDIO_INPUTS = ("input_values", "input_features")
_FEATURE_KEYS = ("feature_projection_input_dim", "num_mel_bins", "feature_size", "n_mels", "num_mel_filters",
                 "mel_bins", "feature_dim")
AUDIO_FRAMES = 100  # a spectrogram's frames where the config names no length: one second at a 10 ms hop


def _audio_inputs(model: nn.Module, config: Any, name: str, dtype: torch.dtype, opts: BuildOptions,
                  spec: str) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """An audio model's inputs: ``input_values`` (a waveform: one second at the config's sampling rate, 16 kHz where
    it names none, as batch x samples or batch x channels x samples; the Audio Spectrogram Transformer's
    batch x max_length x num_mel_bins) or ``input_features`` (a spectrogram: the config's mel bins by its frames,
    2 x ``max_source_positions`` where it names them (Whisper's 3,000), else 100; bins first or frames first), the
    first layout a probe forward of a one-layer meta copy runs on, or gets furthest with (:func:`_furthest`); and
    ``decoder_input_ids`` of ``--seq-len`` tokens (128 by default, capped at the decoder's positions) where the
    model has a text decoder (Whisper, Speech2Text, Moonshine), with on meta the 4-d causal decoder mask where the
    decoder's mask code would read values without one; an ``input_features_mask`` of ones over the frames where the
    forward takes one (Qwen3-ASR, Audio Flamingo 3). Where no candidate runs on meta nor fails only on a read of
    values, the first layout, with every mask, is taken: a cpu build runs it. ``--input-size`` gives the audio input's
    shape."""
    params = inspect.signature(model.forward).parameters
    batch = opts.batch_size or 1
    decoder_vocab = getattr(config, "vocab_size", None) if "decoder_input_ids" in params else None
    if opts.seq_len is not None and not decoder_vocab:
        raise InputError(f"--seq-len applies to text models and audio models with a text decoder; {spec} is neither")
    extra: dict[str, Any] = {}
    said = ""
    # the decoder's mask on meta: none, else the 4-d causal one (transformers' mask code reads the positions'
    # values without one, as for the causal text models: meta_attention_mask)
    masks: list[dict[str, Any]] = [{}]
    if decoder_vocab:
        most = _positive(config, "max_target_positions", "max_position_embeddings")
        seq = opts.seq_len or (min(DEFAULT_SEQ_LEN, most) if most else DEFAULT_SEQ_LEN)
        if most and seq > most:
            raise InputError(f"{spec} takes at most {most} decoder positions; a sequence of {seq} is longer")
        extra["decoder_input_ids"] = int_input((batch, seq), int(decoder_vocab), opts.device)
        said = f", decoder_input_ids {batch}x{seq}"
        masks.append({"decoder_attention_mask": _causal_mask(batch, seq, "meta")})
    shapes = ([(with_batch(opts.input_sizes[0], opts.batch_size), "")] if opts.input_sizes
              else _audio_shapes(config, name, batch))
    # a feature mask the forward takes: ones over the frames, whichever dimension of a 3-d input they are; required
    # (Qwen3-ASR, Fun-ASR), or tried after none where the forward reads it even so (Audio Flamingo 3)
    takes_mask = "input_features_mask" in params
    needs_mask = takes_mask and params["input_features_mask"].default is inspect.Parameter.empty
    probes = {k: torch.empty_like(v, device="meta") for k, v in extra.items()}
    candidates: list[tuple[int, int, tuple[int, ...] | None]] = []
    for i, (shape, _) in enumerate(shapes):
        frame_masks: list[tuple[int, ...] | None] = [None]
        if takes_mask and len(shape) == 3:
            ones: list[tuple[int, ...] | None] = list(dict.fromkeys([(shape[0], shape[2]), (shape[0], shape[1])]))
            frame_masks = ones if needs_mask else [None, *ones]
        candidates += [(i, j, frames) for frames in frame_masks for j in range(len(masks))]
    found = _furthest(model, [
        {name: torch.empty(shapes[i][0], dtype=dtype, device="meta"), **probes, **masks[j],
         **({"input_features_mask": known_full(frames, 1, torch.int64, "meta")} if frames else {})}
        for i, j, frames in candidates])
    # (none runs on meta, nor gets as far as reading values: a cpu build runs the first shape with every mask tried,
    # a meta one fails with the analysis's own error)
    first = [c for c in candidates if c[0] == 0]
    shape_at, mask_at, frames = candidates[found] if found is not None else \
        (0, len(masks) - 1, next((c[2] for c in first if c[2] is not None), None))
    shape, why = shapes[shape_at]
    kwargs = {name: float_input(shape, dtype, opts.device), **extra}
    if frames:
        kwargs["input_features_mask"] = known_full(frames, 1, torch.int64, opts.device)
        said += f", input_features_mask of ones {frames[0]}x{frames[1]}"
    if opts.meta and mask_at:
        kwargs["decoder_attention_mask"] = masks[mask_at]["decoder_attention_mask"].to(opts.device)
        said += ", causal decoder_attention_mask"
    return (), kwargs, f"{name} " + "x".join(map(str, shape)) + (f" ({why})" if why else "") + said


def _audio_field(config: Any, *keys: str) -> int | None:
    """The first of ``keys`` that the config, or else its audio part (``audio_config``, ``encoder_config``,
    ``asr_config``: Canary, Cohere ASR, Nemotron), sets to a positive integer."""
    for part in (config, *(getattr(config, k, None) for k in ("audio_config", "encoder_config", "asr_config"))):
        if part is None:
            continue
        found = _positive(part, *keys)
        if found is not None:
            return found
    return None


def _audio_shapes(config: Any, name: str, batch: int) -> list[tuple[tuple[int, ...], str]]:
    """The shapes :func:`_audio_inputs` tries, in order, each with what it stands for."""
    if name == "input_values":
        bins, length = getattr(config, "num_mel_bins", None), getattr(config, "max_length", None)
        shapes: list[tuple[tuple[int, ...], str]] = []
        if isinstance(bins, int) and isinstance(length, int):  # (AST: a spectrogram passed as input_values)
            shapes.append(((batch, length, bins), f"{length} frames of {bins} mel bins"))
        rate = getattr(config, "sampling_rate", None)
        rate = rate if isinstance(rate, int) and rate > 0 else 16_000
        channels = getattr(config, "audio_channels", None)
        channels = channels if isinstance(channels, int) and channels > 0 else 1
        clip = f"one second at {rate / 1000:g} kHz"
        flat, with_channels = ((batch, rate), clip), ((batch, channels, rate), clip + f", {channels} channel(s)")
        # (codecs, whose configs name their channels, take batch x channels x samples: EnCodec, DAC, Mimi)
        shapes += [with_channels, flat] if hasattr(config, "audio_channels") else [flat, with_channels]
        return shapes
    bins = _audio_field(config, *_FEATURE_KEYS)
    per_channel, channels = _audio_field(config, "input_feat_per_channel"), _audio_field(config, "input_channels")
    if per_channel and channels:  # (Speech2Text)
        bins = per_channel * channels
    bins = bins or 80
    positions = _audio_field(config, "max_source_positions")
    frames = 2 * positions if isinstance(positions, int) and 0 < positions <= 1500 else AUDIO_FRAMES
    what = f"{frames} frames of {bins} features"
    return [((batch, bins, frames), what), ((batch, frames, bins), what)]
