"""A sweep of whole model zoos as a new user would try them: every family, built from its defaults, analysed.

    python -m benchmarks.sweep torchvision                 # every torchvision.models name
    python -m benchmarks.sweep timm                        # the smallest of the first 8 variants of each family
    python -m benchmarks.sweep hf-causal                   # transformers' causal-LM families, 2 layers
    python -m benchmarks.sweep hf-base                     # transformers' other base models, 2 layers
    python -m benchmarks.sweep torchvision --only resnet18,raft_small --out sweep.jsonl

Each model runs in a child process (a chunk of 8 per process, one torch thread, 300 s a model), which writes one
JSON line: what ran and what it gave. For each model, as far as it gets:

* ``eval``: ``analyze()`` of the model as built (torchvision/timm: from the resolver's spec; transformers: from the
  family's default config with 2 layers, on meta and, below 400 M parameters, on the cpu too);
* ``meta``: the same on the meta device (target "cpu"), whose counts must equal the cpu's (``meta_same``);
* ``train``: a training step; ``clean``: the model left as it came in (mode, hooks, state_dict keys and values);
* ``uncounted``: ops with floating tensors no formula prices, in eval and in the step.

The summary sorts the outcomes: ``ok``; ``config`` (the zoo's own defaults do not build or do not run on the cpu
either); ``inputs`` (the model needs inputs the resolver does not make: say so with ``--kwargs``/a Python spec);
``values`` (the forward reads tensor values, which a meta run has not); ``batch 1`` (a training step's batch norm
refuses one value per channel even at batch 2: where it refuses batch 1, the sweep, as the CLI, analyses the step at
batch 2 and writes ``"train batch": 2`` in the record); ``meta differs`` (it ran, but the meta build counts other
than the cpu build: a model's shortcut on its values, such as skipping an all-ones mask, that a run without values
cannot take); and ``other``, the ones to look at. Round 33's runs are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

ZOOS = ("torchvision", "timm", "hf-causal", "hf-base")
_CHUNK = 8
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "encoder_layers")
_CONFIG_WORDS = ("rejects this config", "cannot build the model", "StrictDataclass", "not a transformers model class")
_INPUT_WORDS = ("does not know the inputs", "missing 1 required", "missing 2 required", "You have to specify",
                "has to be not-None", "cannot be `None`", "is required", "targets should not be none",
                "an input it needs beside those given")
_VALUE_WORDS = (".item()", "Cannot copy out of meta", "nonzero", "cannot run on the meta device",
                "the forward reads a tensor's values")


def names(zoo: str) -> list[Any]:
    """What the sweep of ``zoo`` analyses: model names, or for timm (name, input size) pairs."""
    if zoo == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models())
    if zoo == "timm":
        return _timm_picks()
    from transformers.models.auto import modeling_auto as auto

    causal = set(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    return sorted(causal if zoo == "hf-causal" else set(auto.MODEL_MAPPING_NAMES) - causal)


def _timm_picks() -> list[tuple[str, list[int]]]:
    """Per timm family (a name's first word, digits dropped), the variant of fewest parameters among its first 8 (built
    on meta), up to 60 M parameters."""
    import timm
    import torch

    families: dict[str, list[str]] = collections.defaultdict(list)
    for name in timm.list_models():
        families[name.split("_")[0].rstrip("0123456789")].append(name)
    picks = []
    for variants in families.values():
        best: tuple[int, str, list[int]] | None = None
        for name in variants[:8]:
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = timm.create_model(name, pretrained=False)
            except Exception:  # (a variant that does not build is not picked)
                continue
            count = sum(p.numel() for p in model.parameters())
            if best is None or count < best[0]:
                best = (count, name, list(model.pretrained_cfg.get("input_size", (3, 224, 224))))
        if best is not None and best[0] <= 60_000_000:
            picks.append((best[1], best[2]))
    return sorted(picks)


def _hooks(model: Any) -> int:
    return sum(len(getattr(m, kind)) for m in model.modules()
               for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _snapshot(model: Any) -> tuple[bool, int, dict[str, Any]]:
    return model.training, _hooks(model), {k: v.clone() for k, v in model.state_dict().items()}


def _clean(model: Any, before: tuple[bool, int, dict[str, Any]]) -> bool:
    import torch

    training, hooks, state = before
    now = model.state_dict()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # (a meta tensor has no values: its metadata)
        alike = (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
        return alike and (a.device.type == "meta" or torch.equal(a, b))

    return (model.training == training and _hooks(model) == hooks and list(now) == list(state)
            and all(same(state[k], now[k]) for k in state))


def _uncounted(report: Any) -> list[str]:
    ops = {o.op for o in report.uncounted}
    ops.update(o.op for phase in report.phases for o in phase.uncounted)
    return sorted(ops)


def _two_kinds(kinds: list[Any]) -> list[Any]:
    """The first two of a config's per-layer kinds, the second the first full attention layer where the first two
    have none and the list has one: a hybrid cut to two linear-attention layers has no attention layer, which
    transformers' cache refuses (Qwen3.5 and its vision-language kin). Other kinds are kept as cut: a hybrid layer
    (Zamba) or another attention (Qwen4's indexed one) cut so does not build."""
    if any(k in _ATTENTION for k in kinds[:2]):
        return kinds[:2]
    other = next((k for k in kinds[2:] if k in _ATTENTION), None)
    return kinds[:2] if other is None else [kinds[0], other]


_ATTENTION = ("full_attention", "attention")


def _hf_spec(model_type: str, zoo: str, folder: str) -> str:
    """hf:PATH of the family's default config with at most 2 layers (and its per-layer lists cut to match)."""
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto as auto

    table = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if zoo == "hf-causal" else auto.MODEL_MAPPING_NAMES
    arch = table[model_type]
    data = AutoConfig.for_model(model_type).to_dict()
    data["architectures"] = [arch[0] if isinstance(arch, (list, tuple)) else arch]
    for part in (data, data.get("text_config")):
        if isinstance(part, dict):
            for key in _LAYER_KEYS:
                if isinstance(part.get(key), int) and part[key] > 2:
                    part[key] = 2
            for key in ("layer_types", "layers_block_type"):
                if isinstance(part.get(key), list):
                    part[key] = _two_kinds(part[key])
    path = os.path.join(folder, f"{model_type}.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return "hf:" + path


def _analyse(record: dict[str, Any], stage: list[str], zoo: str, item: Any, folder: str) -> None:
    """Fill ``record`` for one model, ``stage[0]`` saying how far it got (what an error happened in)."""
    import torch

    import torchcost
    from torchcost.api import TRAIN_BATCH
    from torchcost.resolve import resolve
    from torchcost.resolve import torchvision as torchvision_source
    from torchcost.run.failures import batch_norm_at_one

    options: dict[str, Any] = {}
    if zoo in ("torchvision", "timm"):
        name, size = (item, None) if zoo == "torchvision" else item
        spec = f"{zoo}:{name}"
        if size is not None:
            options["input_size"] = [1, *size]
    else:
        stage[0] = "config"
        spec = _hf_spec(item, zoo, folder)
    hf = zoo.startswith("hf")
    stage[0] = "resolve (meta)" if hf else "resolve (cpu)"
    first = resolve(spec, meta=hf, **options)
    record["inputs"] = first.description
    record["params"] = sum(p.numel() for p in {id(p): p for p in first.model.parameters()}.values())
    # the cpu run first (a transformers family only below 400 M parameters), then meta; torchvision's detection
    # models on the cpu only (their resolver refuses meta: the boxes they select are values)
    detection = zoo == "torchvision" and dict(torchvision_source.names()).get(item) == "detection"
    wheres = ["cpu"] if detection else ["cpu", "meta"] if not hf or record["params"] < 400_000_000 else ["meta"]
    counts: dict[str, tuple[int, int]] = {}
    uncounted: set[str] = set()
    for where in wheres:
        stage[0] = f"resolve ({where})"
        built = first if (where == "meta") == hf else resolve(spec, meta=where == "meta", **options)
        before = _snapshot(built.model)
        for mode in ("eval", "train"):
            stage[0] = f"{mode} ({where})"
            args = built.args
            if mode == "train" and detection:  # (the targets resolve(..., train=True) adds, for this model)
                args = (*args, torchvision_source.detection_targets(built.model, args[0]))
            torch.manual_seed(0)  # (a model that draws its structure, LayerDrop, draws the same on cpu and meta)
            try:
                report = torchcost.analyze(built.model, *args, kwargs=built.kwargs, mode=mode, target="cpu")
            except torchcost.ModelError as exc:  # (the CLI's default batch: 2 where batch norm refuses 1)
                if mode != "train" or not batch_norm_at_one(exc):
                    raise
                two = {**options, "batch_size": TRAIN_BATCH} if "input_size" not in options else \
                    {**options, "input_size": [TRAIN_BATCH, *options["input_size"][1:]]}
                again = resolve(spec, meta=where == "meta", train=detection, **two)
                torch.manual_seed(0)
                report = torchcost.analyze(again.model, *again.args, kwargs=again.kwargs, mode=mode, target="cpu")
                record["train batch"] = TRAIN_BATCH
            uncounted.update(_uncounted(report))
            counts[f"{mode} {where}"] = (report.step_macs, report.step_flops)
        stage[0] = f"clean ({where})"
        record[f"clean {where}"] = _clean(built.model, before)
    record["counts"] = counts
    record["uncounted"] = sorted(uncounted)
    if len(wheres) == 2:
        record["meta_same"] = all(counts[f"{m} cpu"] == counts[f"{m} meta"] for m in ("eval", "train"))


def child(zoo: str, items: list[Any]) -> None:
    """One chunk, in this process: a JSON line per model."""
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    def timeout(*_: Any) -> None:
        raise TimeoutError("over 300 s")

    signal.signal(signal.SIGALRM, timeout)
    with tempfile.TemporaryDirectory() as folder:
        for item in items:
            record: dict[str, Any] = {"model": item if isinstance(item, str) else item[0]}
            stage, start = ["build"], time.perf_counter()
            signal.alarm(300)
            try:
                _analyse(record, stage, zoo, item, folder)
            except BaseException as exc:  # (whatever the model or torchcost raised: the record says where)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                record["error"] = f"{stage[0]}: {type(exc).__name__}: {str(exc)[:400]}"
            finally:
                signal.alarm(0)
            record["seconds"] = round(time.perf_counter() - start, 1)
            print(json.dumps(record), flush=True)


def outcome(record: dict[str, Any]) -> str:
    """The summary's class of one record (see the module's docstring)."""
    error = record.get("error")
    if error is None:
        if record.get("uncounted") or False in (record.get("clean cpu"), record.get("clean meta")):
            return "other"
        return "meta differs" if record.get("meta_same") is False else "ok"
    if any(w in error for w in _CONFIG_WORDS) or error.startswith("config"):
        return "config"
    if "more than 1 value per channel" in error:
        return "batch 1"
    if any(w in error for w in _INPUT_WORDS):
        return "inputs"
    if any(w in error for w in _VALUE_WORDS):
        return "values"
    return "other"


def run(zoo: str, only: Iterable[str] | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    items = names(zoo)
    if only is not None:
        wanted = set(only)
        items = [i for i in items if (i if isinstance(i, str) else i[0]) in wanted]
    records: list[dict[str, Any]] = []
    for at in range(0, len(items), _CHUNK):
        chunk = items[at:at + _CHUNK]
        code = "import json, sys; from benchmarks.sweep import child; child(sys.argv[1], json.loads(sys.argv[2]))"
        done = subprocess.run([sys.executable, "-c", code, zoo, json.dumps(chunk)], capture_output=True, text=True,
                              timeout=300 * len(chunk) + 120)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        seen = {r["model"] for r in lines}
        for item in chunk:
            name = item if isinstance(item, str) else item[0]
            if name not in seen:  # (the process died: a crash in a kernel, or out of memory)
                lines.append({"model": name, "error": f"process: exit {done.returncode}: {done.stderr[-300:]}"})
        for record in lines:
            records.append(record)
            log(json.dumps(record))
    return records


def summary(zoo: str, records: list[dict[str, Any]]) -> str:
    by = collections.Counter(outcome(r) for r in records)
    lines = [f"{zoo}: {len(records)} models; " + ", ".join(f"{k} {by[k]}" for k in
                                                           ("ok", "meta differs", "config", "inputs", "values",
                                                            "batch 1", "other"))]
    for record in records:
        if outcome(record) in ("other", "meta differs"):
            said = record.get("error") or f"uncounted {record.get('uncounted')}, meta_same {record.get('meta_same')}"
            lines.append(f"  {record['model']}: {said[:200]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("zoo", choices=ZOOS)
    parser.add_argument("--only", help="comma-separated model names (default: the whole zoo)")
    parser.add_argument("--out", help="also write the JSON lines here")
    args = parser.parse_args(argv)
    records = run(args.zoo, args.only.split(",") if args.only else None, log=lambda _line: None)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    print(summary(args.zoo, records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
