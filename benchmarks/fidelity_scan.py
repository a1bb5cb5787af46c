"""Where a fake or meta kernel returns a tensor sized differently from the real CPU kernel (issue 10).

torchcost predicts memory by running a twin of fake (``FakeTensorMode``, device cpu) or meta tensors and reading each
op's output storages; where the fake/meta kernel's output storage differs from the real kernel's, the prediction is
wrong (``aten::mkldnn_rnn_layer``'s oneDNN workspace is the known case: ``collect/workspace.py``'s FIXED_OUTPUTS).

This scan runs a zoo of models at small shapes on real CPU tensors, in eval (``no_grad``) and in a training step
(forward, loss, backward, Adam ``foreach`` step), under a dispatch mode that sees every aten op. Each distinct call
(op overload and the metadata of its arguments) is replayed at once, on the spot, twice: on fake tensors made from
the real arguments (``FakeTensorMode().from_tensor``: same shape, stride, offset, dtype and storage size) and on meta
tensors on meta storages of the same sizes. Replaying op by op keeps the three runs on the same inputs. For every
output the scan compares the shape, the dtype, the storage (a fresh one, or an alias of which argument), its bytes
(``untyped_storage().nbytes()``), the storage offset and the strides (of dimensions longer than 1).

    python -m benchmarks.fidelity_scan               # the whole zoo, a report on stdout
    python -m benchmarks.fidelity_scan --only lstm   # models whose name contains "lstm"
    python -m benchmarks.fidelity_scan --json out.json

Mismatches are ranked by bytes (storage bytes or a fresh/alias difference first, then shapes and dtypes, then
offsets and strides); ops that fail on fake or meta are listed too (data-dependent ones, such as ``nonzero`` or
``.item()``, apart), with the ops where FakeTensorMode ran the real kernel on zeros because it has no fake kernel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch._subclasses import fake_tensor as ft
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["Finding", "Scan", "compare_call", "describe_outputs", "main", "run_scan", "zoo"]

# ops whose outputs are not a kernel's allocation (storage plumbing) or that the replay cannot reproduce
_SKIP = {"aten::set_", "aten::lift_fresh", "aten::lift_fresh_copy", "aten::_to_copy.__pin_memory"}
_DATA_DEPENDENT = ("DynamicOutputShapeException", "DataDependentOutputException", "GuardOnDataDependentSymNode")


# -- describing an op's outputs -----------------------------------------------------------------------------------

def _sref(t: torch.Tensor) -> Any:
    try:
        return StorageWeakRef(t.untyped_storage())
    except (RuntimeError, NotImplementedError):
        return None


def _arg_storages(args: Any) -> list[Any]:
    return [_sref(t) if isinstance(t, torch.Tensor) else None for t in pytree.tree_leaves(args)]


def describe_outputs(out: Any, inputs: list[Any]) -> list[tuple[Any, ...]]:
    """One tuple per output leaf: ("T", shape, strides, dtype, storage offset, storage bytes, alias) for a tensor,
    alias the index of the argument leaf whose storage it shares (-1: a fresh storage); ("-", type name) otherwise."""
    rows: list[tuple[Any, ...]] = []
    for x in pytree.tree_leaves(out):
        if isinstance(x, torch.Tensor):
            ref = _sref(x)
            alias = next((i for i, r in enumerate(inputs) if r is not None and ref is not None and r == ref), -1)
            nbytes = x.untyped_storage().nbytes() if ref is not None else -1
            rows.append(("T", tuple(x.shape), tuple(x.stride()), str(x.dtype).replace("torch.", ""),
                         x.storage_offset(), nbytes, alias))
        else:
            rows.append(("-", type(x).__name__))
    return rows


def _strides(row: tuple[Any, ...]) -> tuple[int, ...]:
    """The strides that matter: those of dimensions longer than one element."""
    return tuple(s for n, s in zip(row[1], row[2]) if n > 1)


def _fresh_bytes(rows: list[tuple[Any, ...]]) -> int:
    return sum(r[5] for r in rows if r[0] == "T" and r[6] < 0 and r[5] > 0)


def compare_call(real: list[tuple[Any, ...]], other: list[tuple[Any, ...]]) -> list[str]:
    """The kinds of difference between the real outputs and a fake/meta replay's, most important first:
    "bytes" (a fresh storage of another size, or fresh on one side and an alias on the other), "shape", "dtype",
    "count", then "offset" and "stride", and "undefined" (None on one side, an empty tensor on the other)."""
    kinds: list[str] = []
    if len(real) != len(other):
        return ["count"]
    for r, o in zip(real, other):
        if r[0] != o[0]:
            # an undefined (None) output on one side, an empty tensor on the other: no memory either way
            empty = (r[0] == "T" and r[5] == 0 and o == ("-", "NoneType")) or (
                o[0] == "T" and o[5] == 0 and r == ("-", "NoneType"))
            kinds.append("undefined" if empty else "count")
            continue
        if r[0] != "T":
            continue
        if (r[6] < 0) != (o[6] < 0) or (r[6] < 0 and r[5] != o[5]) or (r[6] >= 0 and r[6] != o[6]):
            kinds.append("bytes")
        if r[1] != o[1]:
            kinds.append("shape")
        if r[3] != o[3]:
            kinds.append("dtype")
        if r[4] != o[4]:
            kinds.append("offset")
        if _strides(r) != _strides(o):
            kinds.append("stride")
    order = ["bytes", "shape", "dtype", "count", "offset", "stride", "undefined"]
    return sorted(set(kinds), key=order.index)


# -- the recording mode -------------------------------------------------------------------------------------------

def _meta_of(x: Any, memo: dict[Any, torch.UntypedStorage]) -> Any:
    if isinstance(x, torch.device) and x.type == "cpu":
        return torch.device("meta")
    if not isinstance(x, torch.Tensor):
        return x
    if x.layout != torch.strided:
        return x.to("meta")
    s = x.untyped_storage()
    key = StorageWeakRef(s)
    ms = memo.get(key)
    if ms is None:
        ms = memo[key] = torch.UntypedStorage(s.nbytes(), device="meta")
    m = torch.empty(0, dtype=x.dtype, device="meta")
    m.set_(ms, x.storage_offset(), x.shape, x.stride())
    return m


def _arg_key(x: Any, storages: dict[Any, int]) -> Any:
    if isinstance(x, torch.Tensor):
        ref = _sref(x)
        group = storages.setdefault(ref, len(storages)) if ref is not None else -1
        nbytes = x.untyped_storage().nbytes() if ref is not None else -1
        return ("T", tuple(x.shape), tuple(x.stride()), x.dtype, x.storage_offset(), nbytes, group, str(x.layout))
    if isinstance(x, torch.Generator):
        return "Generator"
    r = repr(x)
    return r if len(r) < 200 else r[:200]


@dataclasses.dataclass
class Finding:
    """One distinct call of an op, its real outputs and the two replays'."""

    op: str
    args: str  # the arguments' shapes and scalars, shortened
    real: list[tuple[Any, ...]]
    fake: list[tuple[Any, ...]] | None = None
    meta: list[tuple[Any, ...]] | None = None
    fake_error: str = ""
    meta_error: str = ""
    fake_fallback: bool = False  # FakeTensorMode ran the real kernel on zeros (no fake/meta kernel)
    fake_kinds: list[str] = dataclasses.field(default_factory=list)
    meta_kinds: list[str] = dataclasses.field(default_factory=list)
    models: set[str] = dataclasses.field(default_factory=set)
    calls: int = 0


def _short_args(args: Any, kwargs: Any) -> str:
    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            shape = "x".join(map(str, x.shape)) or "scalar"
            d = str(x.dtype).replace("torch.", "")
            cl = "" if x.is_contiguous() or x.dim() < 2 else "!"
            return f"{d}[{shape}]{cl}"
        return x

    text = ", ".join(str(pytree.tree_map(one, a)) for a in args)
    if kwargs:
        text += ", " + ", ".join(f"{k}={pytree.tree_map(one, v)}" for k, v in kwargs.items())
    return text if len(text) < 240 else text[:237] + "..."


def _error(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:160]}"


@contextmanager
def _watch_fallback() -> Iterator[list[bool]]:
    """Sets flag[0] when FakeTensorMode runs an op's real kernel on zero-filled tensors (the op has no fake kernel)."""
    flag = [False]
    original = ft.run_fallback_kernel

    def watched(*a: Any, **k: Any) -> Any:
        flag[0] = True
        return original(*a, **k)

    ft.run_fallback_kernel = watched
    try:
        yield flag
    finally:
        ft.run_fallback_kernel = original


class Scan(TorchDispatchMode):
    """Runs every op for real and, once per distinct call, replays it on fake and on meta tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.findings: dict[tuple[Any, ...], Finding] = {}
        self.model = ""
        self.fallback: list[bool] = [False]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = func._schema.name if hasattr(func, "_schema") else str(func)
        overload = f"{name}.{func._overloadname}" if hasattr(func, "_overloadname") else name
        if name in _SKIP or overload in _SKIP:
            return func(*args, **kwargs)
        storages: dict[Any, int] = {}
        key = (func, pytree.tree_map(lambda x: _arg_key(x, storages), (list(args), kwargs)))
        try:
            hash(key)
        except TypeError:
            key = (func, repr(key))
        finding = self.findings.get(key)
        if finding is not None:
            finding.calls += 1
            finding.models.add(self.model)
            return func(*args, **kwargs)
        # the replays' arguments are made before the real kernel runs (in-place ops change their arguments)
        fake_mode = ft.FakeTensorMode()
        fake_in: Any = None
        meta_in: Any = None
        errors = ["", ""]
        try:
            # detached: from_tensor reads .grad, which warns on a non-leaf (the storage is the same)
            fake_in = pytree.tree_map_only(torch.Tensor, lambda t: fake_mode.from_tensor(t.detach()), (args, kwargs))
        except Exception as e:
            errors[0] = "from_tensor " + _error(e)
        try:
            memo: dict[Any, torch.UntypedStorage] = {}
            meta_in = pytree.tree_map(lambda x: _meta_of(x, memo), (args, kwargs))
        except Exception as e:
            errors[1] = "to meta " + _error(e)
        inputs = _arg_storages((args, kwargs))
        out = func(*args, **kwargs)
        finding = Finding(overload, _short_args(args, kwargs), describe_outputs(out, inputs), calls=1,
                          models={self.model})
        self.findings[key] = finding
        if fake_in is not None:
            self.fallback[0] = False
            try:
                with fake_mode:
                    fake_out = func(*fake_in[0], **fake_in[1])
                finding.fake = describe_outputs(fake_out, _arg_storages(fake_in))
                finding.fake_kinds = compare_call(finding.real, finding.fake)
            except Exception as e:
                errors[0] = _error(e)
            finding.fake_fallback = self.fallback[0]
        if meta_in is not None:
            try:
                meta_out = func(*meta_in[0], **meta_in[1])
                finding.meta = describe_outputs(meta_out, _arg_storages(meta_in))
                finding.meta_kinds = compare_call(finding.real, finding.meta)
            except Exception as e:
                errors[1] = _error(e)
        finding.fake_error, finding.meta_error = errors
        return out


# -- the zoo ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Model:
    name: str
    build: Callable[[], tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]
    train: bool = True
    optimizer: str = "adam-foreach"  # or "adam-fused", "sgd-momentum"


def _img(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _tv(name: str, shape: tuple[int, ...], channels_last: bool = False, **kw: Any) -> Model:
    def build() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
        from torchvision.models import get_model

        model = get_model(name, weights=None, **kw)
        x = _img(*shape)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        return model, (x,), {}

    suffix = " channels_last" if channels_last else ""
    return Model(f"torchvision:{name}{suffix}", build)


def _vit_small() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    from torchvision.models.vision_transformer import VisionTransformer

    # vit_b_16's architecture (patch 16, class token, torchvision's encoder) at 2 layers, hidden 64, image 32
    return VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64,
                             mlp_dim=128, num_classes=10), (_img(2, 3, 32, 32),), {}


def _timm(name: str, shape: tuple[int, ...], **kw: Any) -> Model:
    def build() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
        import timm

        return timm.create_model(name, pretrained=False, **kw), (_img(*shape),), {}

    return Model(f"timm:{name}", build)


def _ids(b: int, s: int, vocab: int = 1000) -> torch.Tensor:
    return torch.randint(0, vocab, (b, s))


def _hf(kind: str) -> Model:
    def build() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
        import transformers as tf

        small = {"vocab_size": 1000}
        if kind == "gpt2":
            m: nn.Module = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64,
                                                            use_cache=False, **small))
            return m, (), {"input_ids": _ids(2, 16)}
        if kind == "llama":
            cfg = tf.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=128, max_position_embeddings=64, use_cache=False, **small)
            return tf.LlamaForCausalLM(cfg), (), {"input_ids": _ids(2, 16)}
        if kind == "bert":
            cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                max_position_embeddings=64, **small)
            ids = _ids(2, 16)
            mask = torch.ones_like(ids)
            mask[1, 12:] = 0
            return tf.BertModel(cfg), (), {"input_ids": ids, "attention_mask": mask}
        if kind == "t5":
            cfg = tf.T5Config(d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2, num_decoder_layers=2,
                              use_cache=False, **small)
            ids = _ids(2, 16)
            return tf.T5Model(cfg), (), {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                         "decoder_input_ids": _ids(2, 8)}
        raise KeyError(kind)

    return Model(f"hf:{kind}", build)


class _Seq(nn.Module):
    """A recurrent layer and a head (the output of a recurrent module is a tuple)."""

    def __init__(self, rnn: nn.Module, packed: bool = False) -> None:
        super().__init__()
        self.rnn, self.packed = rnn, packed

    def forward(self, x: torch.Tensor) -> Any:
        if self.packed:
            x = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3, 2]), enforce_sorted=True)
            out = self.rnn(x)[0]
            return nn.utils.rnn.pad_packed_sequence(out)[0]
        return self.rnn(x)


def _rnn(name: str, rnn: Callable[[], nn.Module], batch_first: bool = False, packed: bool = False) -> Model:
    def build() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
        shape = (3, 5, 16) if batch_first else (5, 3, 16)
        return _Seq(rnn(), packed), (_img(*shape),), {}

    return Model(name, build)


class _Attn(nn.Module):
    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> Any:
        mask = torch.zeros(x.size(0), x.size(1), dtype=torch.bool)
        mask[0, -2:] = True
        return self.mha(x, x, x, key_padding_mask=mask, need_weights=self.need_weights)


def _module(name: str, make: Callable[[], nn.Module], *shape: int, dtype: torch.dtype = torch.float32,
            train: bool = True, optimizer: str = "adam-foreach") -> Model:
    def build() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
        x = _ids(*shape, vocab=50) if dtype == torch.long else _img(*shape).to(dtype)
        return make().to(dtype if dtype.is_floating_point else torch.float32), (x,), {}

    return Model(name, build, train, optimizer)


class _Misc(nn.Module):
    """FFT, unfold/fold, grid sampling, antialiased resizing, sorting, scans and a few losses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fold = nn.Fold((8, 8), 2, stride=2)
        self.cell = nn.LSTMCell(8, 16)
        self.gcell = nn.GRUCell(8, 16)
        self.prelu = nn.PReLU(8)

    def forward(self, x: torch.Tensor) -> Any:
        F = nn.functional
        y = self.prelu(self.conv(x))  # 2x8x8x8
        f = torch.fft.irfft2(torch.fft.rfft2(y) * 0.5, s=y.shape[-2:])
        cols = F.unfold(f, 2, stride=2)  # 2x32x16
        z = self.fold(cols)
        grid = torch.tanh(z[:, :2].permute(0, 2, 3, 1))
        g = F.grid_sample(z, grid, align_corners=False)
        a = F.interpolate(g, size=(5, 5), mode="bilinear", antialias=True)
        vals, idx = a.flatten(1).topk(10, dim=1)
        s, _ = a.flatten(1).sort(dim=1, descending=True)
        c = s.cumsum(1).logcumsumexp(1)
        h, cstate = self.cell(a.mean((2, 3)))
        h2 = self.gcell(a.amax((2, 3)), h)
        logits = torch.cat([vals, c[:, :6], h2], 1)
        target = torch.tensor([1, 3])
        ce = F.cross_entropy(logits, target, label_smoothing=0.1)
        logp = logits[:, :12].reshape(2, 4, 3).permute(1, 0, 2).log_softmax(-1)  # T=4, N=2, C=3
        ctc = F.ctc_loss(logp, torch.tensor([[1, 2], [2, 1]]), torch.tensor([4, 4]), torch.tensor([2, 1]))
        return ce + ctc + F.smooth_l1_loss(h, cstate) + F.kl_div(logp, logp.detach(), log_target=True,
                                                                 reduction="batchmean") + idx.float().mean()


def _convs() -> nn.Module:
    return nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, groups=8, dilation=2),
                         nn.ConvTranspose1d(8, 4, 4, stride=2), nn.BatchNorm1d(4), nn.MaxPool1d(2),
                         nn.AdaptiveAvgPool1d(3), nn.Flatten(), nn.LayerNorm(12), nn.GELU())


def _convs2d() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(),
                         nn.Conv2d(16, 16, 3, groups=4, padding=2, dilation=2), nn.InstanceNorm2d(16, affine=True),
                         nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1),
                         nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveMaxPool2d(3),
                         nn.Upsample(scale_factor=2, mode="bilinear"), nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Upsample(size=(7, 5), mode="bicubic", align_corners=True), nn.PixelShuffle(1),
                         nn.Conv2d(8, 4, 1), nn.Hardswish(), nn.Dropout(0.1))


def _convs3d() -> nn.Module:
    return nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                         nn.ConvTranspose3d(8, 4, 2, stride=2), nn.MaxPool3d(2), nn.AvgPool3d(2),
                         nn.Upsample(scale_factor=2, mode="trilinear"), nn.AdaptiveAvgPool3d(2))


class _Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16, padding_idx=0)
        self.bag = nn.EmbeddingBag(50, 16, mode="mean")
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> Any:
        return self.head(self.emb(ids).mean(1) + self.bag(ids)).log_softmax(-1)


class _Losses(nn.Module):
    """The built-in losses, each reduced (mean and sum): some CPU kernels return the reduced scalar in a storage
    as large as the elementwise loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 12)

    def forward(self, x: torch.Tensor) -> Any:
        F = nn.functional
        y = self.lin(x)  # 6x12
        t = torch.linspace(-1, 1, 72).reshape(6, 12)
        p, sign, cls = torch.sigmoid(y), torch.sign(t + 0.01), torch.arange(6) % 12
        losses = []
        for r in ("mean", "sum"):
            losses += [F.mse_loss(y, t, reduction=r), F.l1_loss(y, t, reduction=r),
                       F.smooth_l1_loss(y, t, reduction=r, beta=0.5), F.huber_loss(y, t, reduction=r),
                       F.binary_cross_entropy(p, (t > 0).float(), reduction=r),
                       F.binary_cross_entropy_with_logits(y, (t > 0).float(), reduction=r),
                       F.soft_margin_loss(y, sign, reduction=r), F.cross_entropy(y, cls, reduction=r),
                       F.nll_loss(y.log_softmax(1), cls, reduction=r), F.multi_margin_loss(y, cls, reduction=r),
                       F.multilabel_soft_margin_loss(y, (t > 0).float(), reduction=r),
                       F.hinge_embedding_loss(y, sign, reduction=r), F.poisson_nll_loss(y, p, reduction=r),
                       F.gaussian_nll_loss(y, t, p + 0.1, reduction=r),
                       F.cosine_embedding_loss(y, t, sign[:, 0], reduction=r),
                       F.margin_ranking_loss(y[:, 0], t[:, 0], sign[:, 0], reduction=r),
                       F.triplet_margin_loss(y, t, p, reduction=r)]
        losses.append(F.kl_div(y.log_softmax(1), p, reduction="batchmean"))
        return torch.stack(losses).sum()


class _Bf16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.lin = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> Any:
        y = self.conv(x).permute(0, 2, 3, 1)
        return torch.nn.functional.scaled_dot_product_attention(*(self.lin(self.norm(y)).flatten(1, 2),) * 3)


def zoo(quick: bool = False) -> list[Model]:
    models = [
        _tv("resnet18", (2, 3, 64, 64)),
        _tv("mobilenet_v2", (2, 3, 64, 64)),
        _tv("efficientnet_b0", (2, 3, 64, 64)),
        Model("torchvision:vit_b_16 (arch, 2 layers, hidden 64, 32px)", _vit_small),
        _tv("swin_t", (1, 3, 64, 64)),
        _tv("convnext_tiny", (2, 3, 64, 64)),
        _tv("densenet121", (2, 3, 64, 64)),
        _tv("r3d_18", (2, 3, 4, 32, 32)),
        _tv("deeplabv3_mobilenet_v3_large", (2, 3, 64, 64), weights_backbone=None),
        _tv("fcn_resnet50", (2, 3, 64, 64), weights_backbone=None, aux_loss=True),
        _tv("resnet18", (2, 3, 64, 64), channels_last=True),
        _timm("resnet18", (2, 3, 64, 64)),
        _timm("vit_tiny_patch16_224", (2, 3, 32, 32), img_size=32),
        _hf("gpt2"), _hf("llama"), _hf("bert"), _hf("t5"),
        _rnn("nn.LSTM", lambda: nn.LSTM(16, 32)),
        _rnn("nn.LSTM bi 2-layer", lambda: nn.LSTM(16, 32, num_layers=2, bidirectional=True)),
        _rnn("nn.LSTM batch_first", lambda: nn.LSTM(16, 24, batch_first=True), batch_first=True),
        _rnn("nn.LSTM proj_size", lambda: nn.LSTM(16, 32, proj_size=8)),
        _rnn("nn.LSTM packed", lambda: nn.LSTM(16, 32), packed=True),
        _rnn("nn.GRU", lambda: nn.GRU(16, 32)),
        _rnn("nn.GRU bi 2-layer batch_first", lambda: nn.GRU(16, 32, 2, batch_first=True, bidirectional=True),
             batch_first=True),
        _rnn("nn.RNN tanh", lambda: nn.RNN(16, 32)),
        _rnn("nn.RNN relu bi", lambda: nn.RNN(16, 32, nonlinearity="relu", bidirectional=True)),
        _module("nn.MultiheadAttention", lambda: _Attn(True), 2, 6, 32),
        _module("nn.MultiheadAttention need_weights=False", lambda: _Attn(False), 2, 6, 32),
        _module("nn.TransformerEncoderLayer", lambda: nn.TransformerEncoderLayer(32, 4, 64, batch_first=True),
                2, 6, 32),
        _module("nn.TransformerDecoderLayer", lambda: _Decoder(), 2, 6, 32),
        _module("conv1d/bn1d/pool/layernorm", _convs, 2, 4, 16),
        _module("conv2d/groupnorm/instancenorm/upsample", _convs2d, 2, 4, 12, 12),
        _module("conv3d/bn3d/pool3d/trilinear", _convs3d, 2, 3, 4, 8, 8),
        _module("embedding/embeddingbag", _Embed, 3, 7, dtype=torch.long),
        _module("bf16 conv/layernorm/linear/sdpa", _Bf16, 2, 16, 6, 6, dtype=torch.bfloat16),
        _module("bf16 nn.LSTM", lambda: _Seq(nn.LSTM(16, 32)), 5, 3, 16, dtype=torch.bfloat16),
        _module("losses (mean and sum)", _Losses, 6, 8),
        _module("fft/fold/grid_sample/sort/cells/losses", _Misc, 2, 4, 8, 8, optimizer="adam-fused"),
        _module("conv2d/groupnorm (SGD momentum)", _convs2d, 2, 4, 12, 12, optimizer="sgd-momentum"),
    ]
    if quick:
        keep = ("resnet18", "nn.LSTM", "nn.GRU", "hf:gpt2", "nn.MultiheadAttention")
        models = [m for m in models if m.name.split(" ")[0].endswith(keep) and "timm" not in m.name]
    return models


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dec = nn.TransformerDecoderLayer(32, 4, 64, batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor) -> Any:
        mask = nn.Transformer.generate_square_subsequent_mask(x.size(1))
        return self.dec(x, x[:, :4], tgt_mask=mask)


# -- running ------------------------------------------------------------------------------------------------------

def _loss(out: Any) -> torch.Tensor:
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    floats = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()
              and t.requires_grad]
    return sum((t.float().pow(2).mean() for t in floats), torch.zeros(()))


def _optimizer(kind: str, net: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if kind == "adam-fused":
        return torch.optim.AdamW(params, lr=1e-3, fused=True)
    if kind == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)
    return torch.optim.Adam(params, lr=1e-3, foreach=True)


def run_model(scan: Scan, model: Model, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The model's eval forward under no_grad, then a training step (forward, loss, backward, Adam foreach)."""
    start = time.perf_counter()
    torch.manual_seed(0)
    net, args, kwargs = model.build()
    notes: dict[str, Any] = {"model": model.name}
    for phase in ("eval", "train"):
        if phase == "train" and not model.train:
            continue
        scan.model = f"{model.name} [{phase}]"
        try:
            if phase == "eval":
                net.eval()
                with torch.no_grad(), scan:
                    net(*args, **kwargs)
            else:
                net.train()
                opt = _optimizer(model.optimizer, net)
                with scan:
                    _loss(net(*args, **kwargs)).backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
        except Exception as e:
            notes[phase] = _error(e)
            log(f"  {model.name} [{phase}] failed: {_error(e)}")
    notes["seconds"] = round(time.perf_counter() - start, 2)
    return notes


def run_scan(models: list[Model], log: Callable[[str], None] = print) -> tuple[Scan, list[dict[str, Any]]]:
    scan = Scan()
    notes = []
    with _watch_fallback() as flag:
        scan.fallback = flag
        for m in models:
            notes.append(run_model(scan, m, log))
            log(f"  {m.name}: {notes[-1]['seconds']} s, {len(scan.findings)} distinct calls so far")
    return scan, notes


# -- the report ---------------------------------------------------------------------------------------------------

_RANK = {"bytes": 0, "shape": 1, "dtype": 2, "count": 3, "offset": 4, "stride": 5, "undefined": 6}


def _bytes_text(rows: list[tuple[Any, ...]] | None, err: str = "") -> str:
    if rows is None:
        return f"fails ({err[:60]})" if err else "-"
    parts = []
    for r in rows:
        if r[0] != "T":
            parts.append(r[1])
        elif r[6] >= 0:
            parts.append(f"alias(arg {r[6]})")
        else:
            parts.append(f"{r[5]:,}")
    return " / ".join(parts)


def _models(f: Finding) -> list[str]:
    return sorted(f.models)


def summarise(scan: Scan) -> dict[str, Any]:
    """Mismatches grouped by op (with the largest byte difference of any call), failures, fallbacks."""
    by_op: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, Any]] = {}
    fallbacks: dict[str, set[str]] = {}
    for f in scan.findings.values():
        if f.fake_kinds or f.meta_kinds:
            entry = by_op.setdefault(f.op, {"op": f.op, "kinds": set(), "calls": [], "models": set(),
                                            "max_diff": 0})
            entry["kinds"].update(f"fake:{k}" for k in f.fake_kinds)
            entry["kinds"].update(f"meta:{k}" for k in f.meta_kinds)
            entry["models"].update(f.models)
            real = _fresh_bytes(f.real)
            diff = max(abs(real - _fresh_bytes(x)) for x in (f.fake, f.meta) if x is not None)
            entry["max_diff"] = max(entry["max_diff"], diff)
            entry["calls"].append(f)
        for side, err in (("fake", f.fake_error), ("meta", f.meta_error)):
            if err:
                e = failures.setdefault(f.op, {"op": f.op, "fake": "", "meta": "", "models": set(), "args": f.args,
                                               "data_dependent": False})
                e[side] = e[side] or err
                e["models"].update(f.models)
                e["data_dependent"] = e["data_dependent"] or any(d in err for d in _DATA_DEPENDENT)
        if f.fake_fallback:
            fallbacks.setdefault(f.op, set()).update(f.models)
    ops = sorted(by_op.values(), key=lambda e: (min(_RANK[k.split(":")[1]] for k in e["kinds"]), -e["max_diff"],
                                                e["op"]))
    return {"mismatches": ops, "failures": sorted(failures.values(), key=lambda e: e["op"]),
            "fallbacks": {k: sorted(v) for k, v in sorted(fallbacks.items())}}


def _importance(f: Finding) -> tuple[int, int]:
    diff = max((abs(_fresh_bytes(f.real) - _fresh_bytes(x)) for x in (f.fake, f.meta) if x is not None), default=0)
    return min((_RANK[k] for k in f.fake_kinds + f.meta_kinds), default=9), -diff


def _model_list(models: set[str], n: int = 4) -> str:
    names = sorted({m.rsplit(" [", 1)[0] for m in models})
    phases = sorted({m.rsplit(" [", 1)[1].rstrip("]") for m in models if " [" in m})
    text = ", ".join(names[:n]) + (f" (+{len(names) - n})" if len(names) > n else "")
    return f"{text} [{'/'.join(phases)}]"


def render(scan: Scan, notes: list[dict[str, Any]], seconds: float) -> str:
    s = summarise(scan)
    lines = [f"# fake/meta vs real CPU kernels: {len(scan.findings)} distinct calls of "
             f"{len({f.op for f in scan.findings.values()})} op overloads, {len(notes)} models, {seconds:.1f} s",
             f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}", ""]
    lines.append("## Mismatches, ranked by bytes (storage bytes first, then shape/dtype, then offset/strides)")
    lines.append("")
    lines.append("| op | kinds | real bytes | fake bytes | meta bytes | example call | models |")
    lines.append("|---|---|---|---|---|---|---|")
    for e in s["mismatches"]:
        calls = sorted(e["calls"], key=_importance)
        ex = calls[0]
        kinds = ", ".join(sorted(e["kinds"], key=lambda k: (_RANK[k.split(':')[1]], k)))
        lines.append(f"| {e['op']} | {kinds} | {_bytes_text(ex.real)} | {_bytes_text(ex.fake, ex.fake_error)} | "
                     f"{_bytes_text(ex.meta, ex.meta_error)} | `{ex.args}` ({len(calls)} calls differ) | "
                     f"{_model_list(e['models'])} |")
    lines.append("")
    lines.append("### Details (every differing call: real / fake / meta outputs as shape, strides, dtype, offset, "
                 "bytes, alias)")
    for e in s["mismatches"]:
        lines.append(f"- **{e['op']}**")
        for f in e["calls"][:6]:
            lines.append(f"  - `{f.args}` fake {f.fake_kinds or 'ok'} meta {f.meta_kinds or 'ok'}")
            for label, rows in (("real", f.real), ("fake", f.fake), ("meta", f.meta)):
                lines.append(f"    - {label}: {rows}")
        if len(e["calls"]) > 6:
            lines.append(f"  - ... {len(e['calls']) - 6} more")
    lines.append("")
    lines.append("## Ops that fail on fake or meta")
    lines.append("")
    lines.append("| op | data-dependent | fake | meta | example call | models |")
    lines.append("|---|---|---|---|---|---|")
    for e in s["failures"]:
        lines.append(f"| {e['op']} | {'yes' if e['data_dependent'] else 'no'} | {e['fake'] or 'ok'} | "
                     f"{e['meta'] or 'ok'} | `{e['args']}` | {_model_list(e['models'])} |")
    lines.append("")
    lines.append("## Ops FakeTensorMode ran on the real kernel (zero-filled inputs: no fake/meta kernel)")
    lines.append("")
    for op, models in s["fallbacks"].items():
        lines.append(f"- {op}: {_model_list(set(models))}")
    if not s["fallbacks"]:
        lines.append("- none")
    lines.append("")
    lines.append("## Models")
    lines.append("")
    for n in notes:
        extra = "; ".join(f"{k}: {v}" for k, v in n.items() if k in ("eval", "train"))
        lines.append(f"- {n['model']}: {n['seconds']} s{'; ' + extra if extra else ''}")
    return "\n".join(lines)


def _jsonable(scan: Scan, notes: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    s = summarise(scan)
    return {
        "torch": torch.__version__, "seconds": round(seconds, 1), "models": notes,
        "mismatches": [{"op": e["op"], "kinds": sorted(e["kinds"]), "max_byte_diff": e["max_diff"],
                        "models": sorted(e["models"]),
                        "calls": [{"args": f.args, "real": f.real, "fake": f.fake, "meta": f.meta,
                                   "fake_error": f.fake_error, "meta_error": f.meta_error} for f in e["calls"]]}
                       for e in s["mismatches"]],
        "failures": [{**e, "models": sorted(e["models"])} for e in s["failures"]],
        "fallbacks": s["fallbacks"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fidelity_scan", description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help="models whose name contains this")
    p.add_argument("--quick", action="store_true", help="a few models")
    p.add_argument("--json", default="", help="write the findings here too")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    models = [m for m in zoo(a.quick) if a.only.lower() in m.name.lower()]
    start = time.perf_counter()
    scan, notes = run_scan(models, log=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - start
    print(render(scan, notes, seconds))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(_jsonable(scan, notes, seconds), f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
