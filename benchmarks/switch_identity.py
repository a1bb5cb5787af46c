"""The speed paths switched off, over models report_identity does not hold: every report must be the same.

    python -m benchmarks.switch_identity                    # all models (about two minutes)
    python -m benchmarks.switch_identity --models tv:alexnet,hf:bert --no-train
    python -m benchmarks.switch_identity --target cuda      # training steps on a meta twin (foreach optimizer)

Four paths skip work that the ordinary one does, on the promise of the same report: direct leaves
(collect/leaves.py, an eval run on real tensors: common leaf modules run past the modes, their ops handed to the
collectors as planned), their kernels skipped where the output's metadata is known (collect/unwritten.py), the
fake-op shortcuts with their fake tensors (collect/fakeops.py, a training step on a fake twin: ops answered
from metadata, fake tensors made from the constructor's state, optimizer step counters copied past the converter),
and the optimizer's per-parameter loop replayed from tapes (collect/tape.py).
For each model, the eval report with direct leaves (the second analysis in the process: the first checks the plans)
is compared with the one with them off, and so is the third analysis's, which skips every kernel whose output the
second learnt (collect/unwritten.py; the count is shown); the training-step report with the shortcuts and the fast
wrap is compared with the one with both off (every op through the fake mode, every fake tensor from the constructor,
every step counter from the converter, and the optimizer's step run, not replayed from its tapes: collect/tape.py),
and so is the third training-step report's, whose optimizer step is replayed from the tapes the second wrote down.
One line per model; the exit status is 1 if any report differs.
Models come from torchvision, timm and transformers (configs built here, no download); a library that is not
installed is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["MODELS", "compare", "every_kernel_worth_skipping", "fake_paths_off", "main"]

Made = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


def _vision(name: str, size: int = 64, **options: Any) -> Callable[[], Made]:
    def make() -> Made:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, **options)
        return model.eval(), (torch.randn(1, 3, size, size),), {}
    return make


def _video() -> Made:
    import torchvision

    return torchvision.models.video.r3d_18(weights=None).eval(), (torch.randn(1, 3, 4, 32, 32),), {}


def _timm(name: str, size: int = 64) -> Callable[[], Made]:
    def make() -> Made:
        import timm

        return timm.create_model(name, pretrained=False).eval(), (torch.randn(1, 3, size, size),), {}
    return make


def _hf(kind: str) -> Callable[[], Made]:
    def make() -> Made:
        import transformers as tf

        ids = torch.randint(0, 500, (1, 12))
        if kind == "bert":
            model: nn.Module = tf.BertModel(tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                          intermediate_size=128, vocab_size=500))
        elif kind == "t5":
            model = tf.T5ForConditionalGeneration(tf.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16,
                                                              vocab_size=500))
            return model.eval(), (), {"input_ids": ids, "decoder_input_ids": ids}
        elif kind == "gpt2-cls":  # (each sequence's logits at its last token: indexing values a skipped kernel made)
            model = tf.GPT2ForSequenceClassification(tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500,
                                                                   num_labels=3, pad_token_id=0, bos_token_id=0,
                                                                   eos_token_id=0))
        elif kind == "llama":  # grouped-query attention: 4 heads, 2 key/value heads
            model = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=500))
        else:
            model = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500,
                                                     bos_token_id=0, eos_token_id=0))
        return model.eval(), (), {"input_ids": ids}
    return make


MODELS: dict[str, Callable[[], Made]] = {
    "tv:densenet121": _vision("densenet121"),
    "tv:shufflenet_v2_x1_0": _vision("shufflenet_v2_x1_0"),
    "tv:squeezenet1_1": _vision("squeezenet1_1"),
    "tv:mnasnet0_5": _vision("mnasnet0_5"),
    "tv:regnet_y_400mf": _vision("regnet_y_400mf"),
    "tv:convnext_tiny": _vision("convnext_tiny"),
    "tv:swin_t": _vision("swin_t", 224),
    "tv:swin_v2_t": _vision("swin_v2_t", 224),
    "tv:googlenet": _vision("googlenet", aux_logits=False, init_weights=True),
    "tv:resnext50_32x4d": _vision("resnext50_32x4d"),
    "tv:mobilenet_v3_large": _vision("mobilenet_v3_large"),
    "tv:efficientnet_v2_s": _vision("efficientnet_v2_s"),
    "tv:inception_v3": _vision("inception_v3", 299, aux_logits=False, init_weights=True),
    "tv:vgg11_bn": _vision("vgg11_bn", 32),
    "tv:alexnet": _vision("alexnet", 224),
    "tv:r3d_18": _video,
    "timm:resnet18d": _timm("resnet18d"),
    "timm:efficientnet_b0": _timm("efficientnet_b0"),
    "timm:vit_tiny_patch16_224": _timm("vit_tiny_patch16_224", 224),
    "timm:convnext_atto": _timm("convnext_atto"),
    "timm:regnety_002": _timm("regnety_002"),
    "timm:ghostnet_100": _timm("ghostnet_100"),
    "timm:mixer_s16_224": _timm("mixer_s16_224", 224),
    "timm:cspresnet50": _timm("cspresnet50"),
    "hf:bert": _hf("bert"),
    "hf:t5": _hf("t5"),
    "hf:llama": _hf("llama"),
    "hf:gpt2": _hf("gpt2"),
    "hf:gpt2-cls": _hf("gpt2-cls"),
}


@contextlib.contextmanager
def fake_paths_off() -> Iterator[None]:
    """Every op of a twin through the fake mode (or a meta twin's through its meta kernels), every fake tensor from
    FakeTensor's constructor, every optimizer step counter copied by the fake mode's converter, every
    ``torch.tensor(x)`` of the warm-up made by it too, every part of a foreach call priced on its own."""
    from torchcost.collect import fakeops, ops
    from torchcost.run import step

    answer, wrap, constant, lifted = (fakeops.FakeShortcuts.answer, fakeops.FakeWrapper.wrap, step.fake_constant,
                                      fakeops.lifted)
    parts_keys = ops._parts_keys
    ops._parts_keys = lambda *args: None  # (a foreach call's parts each priced: no memo)
    fakeops.FakeShortcuts.answer = lambda self, func, args, kwargs: fakeops.MISS  # type: ignore[method-assign]
    fakeops.FakeWrapper.wrap = lambda self, mode, elem, device: self._fake(mode, elem, device)  # type: ignore
    step.fake_constant = lambda mode, value, wrap: mode.fake_tensor_converter.from_real_tensor(
        mode, value, make_constant=True)
    fakeops.lifted = lambda *args: fakeops.MISS
    try:
        yield
    finally:
        fakeops.FakeShortcuts.answer = answer  # type: ignore[method-assign]
        fakeops.FakeWrapper.wrap = wrap  # type: ignore[method-assign]
        step.fake_constant = constant
        fakeops.lifted = lifted
        ops._parts_keys = parts_keys


@contextlib.contextmanager
def every_kernel_worth_skipping() -> Iterator[list[int | None]]:
    """While inside, an eval run skips every kernel whose output it knows, however little work it saves (the models
    here take small inputs: at the usual threshold, collect/leaves.py's WORTH_SKIPPING, few kernels would be); yields
    the kernels each run skipped (None: a run that skips none), in order."""
    from torchcost.collect import leaves
    from torchcost.run import execute

    threshold, original = leaves.WORTH_SKIPPING, execute.execute
    seen: list[int | None] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        values = kwargs.get("unwritten")
        try:
            return original(*args, **kwargs)
        finally:
            seen.append(None if values is None else values.skipped)

    leaves.WORTH_SKIPPING, execute.execute = 0, spy
    try:
        yield seen
    finally:
        leaves.WORTH_SKIPPING, execute.execute = threshold, original


def _report(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> dict[str, Any]:
    import torchcost
    from benchmarks.report_identity import _VOLATILE

    report = torchcost.analyze(model, *args, kwargs=kwargs, **options).to_dict()
    for key in _VOLATILE:
        report.pop(key, None)
    return report


def compare(made: Made, train: bool = True, target: str | None = None) -> dict[str, str]:
    """{"eval": ..., "skipped": ..., "train": ..., "taped": ...}: "identical" (for "skipped" with the kernels it
    skipped), or "differ at <path>" with the first difference. ``target``: the training steps' memory target
    ("cuda": a meta twin, whose optimizer takes its foreach path, as a GPU step does)."""
    from benchmarks.report_identity import _first_difference
    from torchcost.collect import leaves

    model, args, kwargs = made
    with every_kernel_worth_skipping() as skips:
        _report(model, args, kwargs)  # (checks the plans of this model's kinds of leaf call)
        planned = _report(model, args, kwargs)  # (learns the outputs of the kernels a later run may skip)
        skipped = _report(model, args, kwargs)  # (skips them: collect/unwritten.py)
    with leaves.off():
        plain = _report(model, args, kwargs)
    found = {"eval": _said(_first_difference(planned, plain)), "skipped": _said(_first_difference(skipped, plain))}
    found["skipped"] += f" ({skips[-1] if skips and skips[-1] is not None else 0} kernels skipped)"
    if train:
        from torchcost.collect import tape

        step_options: dict[str, Any] = {"mode": "train", **({"target": target} if target else {})}
        short = _report(model, args, kwargs, **step_options)
        _report(model, args, kwargs, **step_options)  # (the second such step in the process: written down as tapes)
        replay, replayed = tape.replay, []

        def spy(dispatch: Any, opt: torch.optim.Optimizer) -> bool:
            replayed.append(replay(dispatch, opt))
            return replayed[-1]

        tape.replay = spy  # type: ignore[assignment]
        try:
            taped = _report(model, args, kwargs, **step_options)  # (its step replayed from them)
        finally:
            tape.replay = replay  # type: ignore[assignment]
        with fake_paths_off(), tape.off():
            slow = _report(model, args, kwargs, **step_options)
        found["taped"] = _said(_first_difference(taped, slow)) + (" (replayed)" if replayed == [True]
                                                                   else " (not replayed)")
        found["train"] = _said(_first_difference(short, slow))
    return found


def _said(difference: str) -> str:
    """A comparison's cell: "identical", or "differ at <path>" with the first difference."""
    return f"differ at {difference}" if difference else "identical"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.switch_identity", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="", help="comma-separated names (default: all): " + ", ".join(MODELS))
    parser.add_argument("--no-train", action="store_true", help="the eval comparison only")
    parser.add_argument("--target", choices=("cuda",), help="the training steps' memory target: cuda runs them on a "
                        "meta twin, its optimizer on the foreach path (default: the model's own device)")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}")
    torch.set_num_threads(1)
    differ = 0
    print("| model | eval: direct leaves on / off | eval: kernels skipped / every kernel | "
          "training step: shortcuts on / off | training step: optimizer replayed / run | seconds |")
    print("|---|---|---|---|---|---|")
    for name in names:
        start = time.perf_counter()
        try:
            torch.manual_seed(0)
            made = MODELS[name]()
        except ImportError as exc:
            print(f"| {name} | not installed ({exc.name}) | | |")
            continue
        found = compare(made, train=not args.no_train, target=args.target)
        differ += sum(not v.startswith("identical") for v in found.values())
        print(f"| {name} | {found['eval']} | {found['skipped']} | {found.get('train', '-')} | "
              f"{found.get('taped', '-')} | {time.perf_counter() - start:.0f} |", flush=True)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
