"""resolve(): specs to models and default inputs, the shipped configs against their published sizes, and the JSON
schema against what the report emits. compare() is in tests/test_compare.py, the command line in tests/cli/.
"""

from __future__ import annotations

import json
from importlib import resources
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from torchcost.errors import InputError, SpecError
from torchcost.resolve import Resolved, list_names, parse_spec, resolve
from torchcost.resolve import hf as hf_source


def _params(r: Resolved) -> int:
    return sum(p.numel() for p in {id(p): p for p in r.model.parameters()}.values())


# -- the shipped configs ---------------------------------------------------------------------------------------------

def _llama_like(d: int, ff: int, layers: int, heads: int, kv: int, vocab: int, tied: bool = False,
                qkv_bias: bool = False) -> int:
    head = d // heads
    attn = d * d + 2 * d * kv * head + d * d + ((d + 2 * kv * head) if qkv_bias else 0)
    per_layer = attn + 3 * d * ff + 2 * d  # q,k,v,o; gate, up, down; two RMSNorms
    return (1 if tied else 2) * vocab * d + layers * per_layer + d


_MLA = 2048 * 16 * 192 + 2048 * (512 + 64) + 512 + 512 * 16 * 256 + 16 * 128 * 2048  # DeepSeek-V2-Lite attention
PUBLISHED = {
    # name: (params derived by hand, published figure)
    "llama-3-70b": (_llama_like(8192, 28672, 80, 64, 8, 128256), 70_553_706_496),  # "70.6B"
    "llama-3-8b": (_llama_like(4096, 14336, 32, 32, 8, 128256), 8_030_261_248),  # "8.0B"
    "mistral-7b": (_llama_like(4096, 14336, 32, 32, 8, 32000), 7_241_732_096),  # "7.24B"
    "qwen2-7b": (_llama_like(3584, 18944, 28, 28, 4, 152064, qkv_bias=True), 7_615_616_512),  # "7.6B"
    # Mixtral: attention as Mistral's, 8 experts of 3*d*ff each and a d x 8 router per layer
    "mixtral-8x7b": (2 * 32000 * 4096 + 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 8 * 3 * 4096 * 14336
                                              + 4096 * 8 + 2 * 4096) + 4096, 46_702_792_704),  # "46.7B"
    # GPT-2: wte + wpe + n_layer blocks (ln, c_attn, c_proj, ln, c_fc, c_proj, with biases) + ln_f; lm_head tied
    "gpt2": (50257 * 768 + 1024 * 768 + 12 * (12 * 768 * 768 + 13 * 768) + 2 * 768, 124_439_808),  # "124M"
    # Whisper small ("244M", openai/whisper-small: 241,734,912). Encoder: conv1 80 -> 768 and conv2 768 -> 768
    # (kernel 3, biases), 1,500 positions, 12 layers of attention (q, k, v, o; k without a bias), the 768 -> 3072 ->
    # 768 MLP and two LayerNorms, a final LayerNorm; decoder: 51,865 token and 448 position embeddings, 12 layers
    # with cross-attention too (three LayerNorms), a final LayerNorm; the output projection tied to the tokens
    "whisper-small": (80 * 768 * 3 + 768 + 768 * 768 * 3 + 768 + 1500 * 768
                      + 12 * (4 * 768 * 768 + 3 * 768 + 2 * 768 * 3072 + 3072 + 768 + 2 * 2 * 768) + 2 * 768
                      + 51865 * 768 + 448 * 768
                      + 12 * (8 * 768 * 768 + 6 * 768 + 2 * 768 * 3072 + 3072 + 768 + 3 * 2 * 768) + 2 * 768,
                      241_734_912),
    "gpt2-xl": (50257 * 1600 + 1024 * 1600 + 48 * (12 * 1600 * 1600 + 13 * 1600) + 2 * 1600, 1_557_611_200),
    "bert-base-uncased": (None, 109_514_298),  # BertForMaskedLM: 109,482,240 encoder+embeddings + MLM head
    "t5-base": (None, 222_903_552),  # "220M"
    "vit-base-patch16-224": (None, 86_567_656),  # "86.6M", as torchvision's vit_b_16
    # issue 14. Gemma 2 9B (google/gemma-2-9b, "9.24B"): tied embeddings; per layer q, o 3584 x 4096 (16 heads x 256),
    # k, v 3584 x 2048 (8 x 256), the gated MLP, four norms; a final norm
    "gemma-2-9b": (256000 * 3584 + 42 * (2 * 3584 * 4096 + 2 * 3584 * 2048 + 3 * 3584 * 14336 + 4 * 3584) + 3584,
                   9_241_705_984),
    # Gemma 3 1B (google/gemma-3-1b-pt, 999,885,952): as Gemma 2 with 4 heads and 1 KV head of 256, q/k norms
    "gemma-3-1b": (262144 * 1152 + 26 * (2 * 1152 * 1024 + 2 * 1152 * 256 + 2 * 256 + 3 * 1152 * 6912 + 4 * 1152)
                   + 1152, 999_885_952),
    # DeepSeek-V2-Lite ("15.7B"): untied embeddings; latent attention per layer q 2048 x 16 x 192, kv_a 2048 x (512
    # + 64), its norm 512, kv_b 512 x 16 x 256, o 16 x 128 x 2048; layer 0 a dense MLP (10944), layers 1-26 64
    # routed experts of 3 x 2048 x 1408, 2 shared (3 x 2048 x 2816) and a 64 x 2048 gate; two norms a layer
    "deepseek-v2-lite": (2 * 102400 * 2048 + _MLA + 3 * 2048 * 10944 + 2 * 2048
                         + 26 * (_MLA + 64 * 3 * 2048 * 1408 + 3 * 2048 * 2816 + 64 * 2048 + 2 * 2048) + 2048,
                         15_706_484_224),
    # Qwen3-30B-A3B ("30.5B"): untied; q, o 2048 x 4096 (32 x 128), k, v 2048 x 512, q/k norms, 128 experts of
    # 3 x 2048 x 768 and a 128 x 2048 router, two norms a layer
    "qwen3-30b-a3b": (2 * 151936 * 2048 + 48 * (2 * 2048 * 4096 + 2 * 2048 * 512 + 2 * 128 + 128 * 3 * 2048 * 768
                                                + 128 * 2048 + 2 * 2048) + 2048, 30_532_122_624),
}


def test_every_shipped_config_is_listed() -> None:
    folder = resources.files("torchcost") / "configs"
    files = sorted(e.name.removesuffix(".json") for e in folder.iterdir() if e.name.endswith(".json"))
    assert files == sorted(PUBLISHED)
    assert [spec for spec, _ in list_names("hf")] == [f"hf:{n}" for n in files]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_config_has_its_published_size(name: str) -> None:
    pytest.importorskip("transformers")
    derived, published = PUBLISHED[name]
    if derived is not None:
        assert derived == published
    r = resolve(f"hf:{name}", meta=True)
    assert next(r.model.parameters()).device.type == "meta"  # nothing allocated
    assert _params(r) == published


def test_llama_key_fields() -> None:
    data, _ = hf_source.load_config("llama-3-70b")
    assert (data["hidden_size"], data["num_hidden_layers"], data["num_attention_heads"],
            data["num_key_value_heads"], data["intermediate_size"], data["vocab_size"], data["rope_theta"],
            data["tie_word_embeddings"]) == (8192, 80, 64, 8, 28672, 128256, 500000.0, False)


# -- hf: overrides, inputs, meta ---------------------------------------------------------------------------------------

def test_config_overrides_are_typed_by_the_field() -> None:
    pytest.importorskip("transformers")
    r = resolve("hf:llama-3-8b", meta=True, config={"num_hidden_layers": "1", "rope_theta": "1e4",
                                                    "tie_word_embeddings": "true", "hidden_act": "gelu"})
    cfg = r.model.config
    assert (cfg.num_hidden_layers, cfg.tie_word_embeddings, cfg.hidden_act) == (1, True, "gelu")
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta}  # transformers 5 nests it
    assert rope["rope_theta"] == 1e4
    assert len(r.model.model.layers) == 1


def test_text_inputs_are_within_the_vocabulary() -> None:
    pytest.importorskip("transformers")
    r = resolve("hf:gpt2", config={"n_layer": "1"}, seq_len=16, batch_size=2)
    ids = r.kwargs["input_ids"]
    assert (ids.shape, ids.dtype) == (torch.Size([2, 16]), torch.int64)
    assert 0 <= int(ids.min()) and int(ids.max()) < 50257
    assert torch.equal(r.kwargs["attention_mask"], torch.ones(2, 16, dtype=torch.int64))


def test_encoder_decoder_and_vision_inputs() -> None:
    pytest.importorskip("transformers")
    t5 = resolve("hf:t5-base", meta=True)
    assert set(t5.kwargs) == {"input_ids", "attention_mask", "decoder_input_ids"}
    assert t5.kwargs["decoder_input_ids"].shape == (1, 128)
    vit = resolve("hf:vit-base-patch16-224", meta=True)
    assert vit.kwargs["pixel_values"].shape == (1, 3, 224, 224)


@pytest.mark.parametrize("name", ["llama-3-8b", "bert-base-uncased"])
def test_meta_counts_equal_cpu_counts(name: str) -> None:
    """On meta a causal model gets a 4-d causal mask and an encoder none (transformers' mask code reads values):
    the counts must still be those of the real run."""
    pytest.importorskip("transformers")
    small: dict[str, Any] = {"num_hidden_layers": "1", "hidden_size": "64", "intermediate_size": "128",
                             "num_attention_heads": "4", "vocab_size": "1000"}
    if name.startswith("llama"):
        small["num_key_value_heads"] = "2"
    reports = []
    for meta in (False, True):
        r = resolve(f"hf:{name}", meta=meta, config=small, seq_len=16, dtype=torch.float32)
        reports.append(torchcost.analyze(r.model, *r.args, kwargs=r.kwargs))
    cpu, on_meta = reports
    assert (on_meta.params, on_meta.macs, on_meta.flops) == (cpu.params, cpu.macs, cpu.flops)


def _tiny_config(tmp_path: Any, model_type: str, arch: str, **fields: Any) -> str:
    """hf:PATH of a config.json of transformers' defaults for ``model_type`` with ``fields`` set."""
    from transformers import AutoConfig

    data = AutoConfig.for_model(model_type, **fields).to_dict()
    data["architectures"] = [arch]
    (tmp_path / "config.json").write_text(json.dumps(data))
    return f"hf:{tmp_path / 'config.json'}"


def _counts_as_on_the_cpu(cpu: Resolved, on_meta: Resolved, extra_flops: int = 0) -> None:
    """Eval and a training step of the meta build (target cpu) count what the cpu build's do (+ ``extra_flops``)."""
    for mode in ("eval", "train"):
        want = torchcost.analyze(cpu.model, kwargs=cpu.kwargs, mode=mode)
        got = torchcost.analyze(on_meta.model, kwargs=on_meta.kwargs, mode=mode, target="cpu")
        assert (got.params, got.macs, got.step_macs, got.step_flops) == \
            (want.params, want.macs, want.step_macs, want.step_flops + extra_flops)


# model type, class, fields: each derives positions or ALiBi slopes from a 2-d mask, multiplies its states by it,
# or builds its own 4-d mask from it, and fails with a 4-d one
TAKE_NO_4D_MASK = {
    "opt": ("OPTForCausalLM", {"num_hidden_layers": 2, "hidden_size": 32, "ffn_dim": 64, "num_attention_heads": 4,
                               "word_embed_proj_dim": 32, "vocab_size": 100, "max_position_embeddings": 64}),
    "bloom": ("BloomForCausalLM", {"n_layer": 2, "hidden_size": 32, "n_head": 4, "vocab_size": 100}),
    "mamba": ("MambaForCausalLM", {"num_hidden_layers": 2, "hidden_size": 32, "state_size": 4, "vocab_size": 100}),
    "openai-gpt": ("OpenAIGPTLMHeadModel", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 100,
                                            "n_positions": 64}),
    # XLNet also makes parameters with torch.FloatTensor(...), which ignores the default device: a meta build kept
    # them on the cpu, and its forward failed on the two devices ("Tensor on device meta is not on the expected ...")
    "xlnet": ("XLNetLMHeadModel", {"n_layer": 2, "d_model": 32, "n_head": 4, "d_inner": 64, "vocab_size": 100}),
}


@pytest.mark.parametrize("model_type", list(TAKE_NO_4D_MASK))
def test_a_model_that_takes_no_4d_mask_gets_a_2d_one_or_none_on_meta(model_type: str, tmp_path: Any) -> None:
    """Round 33's sweep of transformers' causal-LM families: these failed on meta with the 4-d causal mask (OPT:
    "too many values to unpack"). Every model now gets the 2-d mask of ones the CPU run gets where a probe forward of
    a one-layer meta copy runs with it (its values known on meta: collect/shadows.py), so these do too, and count as
    the CPU run does. (OPT reads that mask's values, its positions are cumsum(mask) * mask - 1: before the values
    were known it got no mask on meta and counted the 47 float ops of the mask it then makes itself.)"""
    pytest.importorskip("transformers")
    arch, fields = TAKE_NO_4D_MASK[model_type]
    spec = _tiny_config(tmp_path, model_type, arch, **fields)
    cpu = resolve(spec, seq_len=16)
    on_meta = resolve(spec, meta=True, seq_len=16)
    assert cpu.kwargs["attention_mask"].shape == (1, 16)
    assert {t.device.type for t in (*on_meta.model.parameters(), *on_meta.model.buffers())} == {"meta"}
    mask = on_meta.kwargs["attention_mask"]
    assert (mask.shape, mask.dtype, mask.device.type) == ((1, 16), torch.int64, "meta")
    assert "attention_mask of ones" in on_meta.description and "2-d" not in on_meta.description  # (the cpu's words)
    _counts_as_on_the_cpu(cpu, on_meta, 0)


_SMALL_ENCODER = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
                  "vocab_size": 100, "max_position_embeddings": 64}


@pytest.mark.parametrize(("model_type", "arch"), [("deberta", "DebertaModel"), ("markuplm", "MarkupLMModel")])
def test_an_encoder_that_reads_its_ids_without_a_mask_runs_on_meta(model_type: str, arch: str,
                                                                    tmp_path: Any) -> None:
    """Round 33's sweep: without a mask these encoders check their ids for padding, a read of values a meta run
    could not make ("Tensor.item() cannot be called on meta tensors"). The ids and masks torchcost makes now keep
    their values on meta (collect/shadows.py), and a meta build gets the cpu's 2-d mask of ones where it runs with
    it: these do, and count as on the CPU, the training step too. (Round 37 gave them no mask on meta, where
    DeBERTa's step makes its own float mask and multiplies it out, 16 x 16 = 256 FLOPs the CPU run's int64 mask does
    for free.) MarkupLM indexes its list of xpath embeddings by a count of its own, so the copy with one entry per
    list fails with every mask, and the whole model is tried."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, model_type, arch, **_SMALL_ENCODER)
    cpu = resolve(spec, seq_len=16)
    on_meta = resolve(spec, meta=True, seq_len=16)
    assert tuple(on_meta.kwargs["attention_mask"].shape) == tuple(cpu.kwargs["attention_mask"].shape) == (1, 16)
    _counts_as_on_the_cpu(cpu, on_meta, 0)


def test_a_dual_encoder_gets_its_image_beside_its_text(tmp_path: Any) -> None:
    """Round 33's sweep: CLIP-like models (CLIP, SigLIP, AltCLIP, OWL-ViT) take input_ids and pixel_values together;
    with the text alone they failed ("'NoneType' object has no attribute 'shape'" in the vision embeddings). A probe
    sees it, and they get pixel_values of their vision config's size, on the cpu and on meta alike."""
    pytest.importorskip("transformers")
    from transformers import CLIPConfig

    config = CLIPConfig(text_config={"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
                                     "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 32},
                        vision_config={"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
                                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                        projection_dim=16).to_dict()
    config["architectures"] = ["CLIPModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = f"hf:{tmp_path / 'config.json'}"
    cpu, on_meta = resolve(spec, seq_len=16), resolve(spec, meta=True, seq_len=16)
    for r in (cpu, on_meta):
        assert r.kwargs["pixel_values"].shape == (1, 3, 32, 32)
        assert r.description.endswith(", pixel_values 1x3x32x32)")
    _counts_as_on_the_cpu(cpu, on_meta)
    report = torchcost.analyze(cpu.model, kwargs=cpu.kwargs)
    # the vision tower's patch embedding: (32/8)^2 = 16 patches of 3*8*8 inputs to 32 channels
    assert report.module("vision_model.embeddings.patch_embedding").macs == 16 * 3 * 8 * 8 * 32 == 98_304


def test_a_video_model_gets_frames_and_sam_its_vision_configs_size(tmp_path: Any) -> None:
    """Round 33's sweep: VideoMAE, ViViT and TimeSformer take (batch, frames, channels, H, W) and were given a
    single image; SAM's image size is its vision config's (1024), not the 224 default."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "videomae", "VideoMAEModel", image_size=32, patch_size=16, num_frames=4,
                        tubelet_size=2, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64)
    r = resolve(spec)
    assert r.kwargs["pixel_values"].shape == (1, 4, 3, 32, 32)
    report = torchcost.analyze(r.model, kwargs=r.kwargs)
    # tubelets of 2 frames x 16 x 16: (4 / 2) * (32 / 16)^2 = 8, each 3*2*16*16 = 1,536 inputs to 32 channels
    assert report.module("embeddings.patch_embeddings.projection").macs == 8 * 32 * 3 * 2 * 16 * 16 == 393_216
    sam_like = SimpleNamespace(vision_config=SimpleNamespace(image_size=1024, num_channels=3))
    assert hf_source._image_shape(nn.Identity(), sam_like, 1, torch.float32) == (1, 3, 1024, 1024)


def test_a_causal_model_gets_the_cpus_mask_on_meta_and_the_probe_leaves_it_as_it_was() -> None:
    pytest.importorskip("transformers")
    r = resolve("hf:llama-3-8b", meta=True, seq_len=16, config={"num_hidden_layers": "2"})
    assert r.kwargs["attention_mask"].shape == (1, 16) and r.kwargs["attention_mask"].dtype == torch.int64
    assert "attention_mask of ones" in r.description and "causal" not in r.description
    layers = r.model.model.layers  # (the probe ran a copy with one layer: the model keeps both, on meta)
    assert len(layers) == 2 and {p.device.type for p in r.model.parameters()} == {"meta"}


def test_a_causal_model_whose_mask_values_are_not_followed_gets_the_4d_causal_mask(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the elements a meta run follows (here made 8), the 2-d mask has no known values, transformers' read of
    them fails in the probe, and the model gets the mask that needs no read: the 4-d causal one."""
    pytest.importorskip("transformers")
    from torchcost.collect import shadows

    monkeypatch.setattr(shadows, "LIMIT", 8)
    r = resolve("hf:llama-3-8b", meta=True, seq_len=16, config={"num_hidden_layers": "2"})
    assert r.kwargs["attention_mask"].shape == (1, 1, 16, 16) and r.kwargs["attention_mask"].dtype == torch.bool
    assert "causal attention_mask" in r.description


def test_a_max_position_count_of_minus_one_is_no_bound(tmp_path: Any) -> None:
    """XLNet's max_position_embeddings is -1 (relative positions of any length): not "takes at most -1 positions"."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "xlnet", "XLNetLMHeadModel", n_layer=1, d_model=32, n_head=4, d_inner=64,
                        vocab_size=100)
    r = resolve(spec, seq_len=16)
    assert r.kwargs["input_ids"].shape == (1, 16)
    assert resolve(spec, meta=True).kwargs["input_ids"].shape == (1, 128)  # (the default length, not capped)


# -- torchvision / timm / examples: default inputs ---------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The default weight initialization of inception_v3:FutureWarning")
@pytest.mark.parametrize(("spec", "shape"), [
    ("torchvision:inception_v3", (1, 3, 299, 299)),  # its weights' crop size
    ("torchvision:vit_b_16", (1, 3, 224, 224)),  # its own image_size
    ("torchvision:efficientnet_b3", (1, 3, 300, 300)),
    ("torchvision:r3d_18", (1, 3, 16, 112, 112)),
    ("torchvision:mvit_v2_s", (1, 3, 16, 224, 224)),
    ("torchvision:fcn_resnet50", (1, 3, 520, 520)),
    ("timm:resnet18", (1, 3, 224, 224)),
    ("example:conv3d_action", (1, 3, 10, 112, 112)),
])
def test_default_inputs(spec: str, shape: tuple[int, ...]) -> None:
    pytest.importorskip(spec.partition(":")[0].replace("example", "torch"))
    r = resolve(spec, meta=True)
    assert [tuple(a.shape) for a in r.args] == [shape]


def test_detection_gets_a_list_of_images_and_flow_two_frames() -> None:
    pytest.importorskip("torchvision")
    det = resolve("torchvision:ssdlite320_mobilenet_v3_large")
    (images,) = det.args
    assert isinstance(images, list) and [tuple(i.shape) for i in images] == [(3, 320, 320)]
    det2 = resolve("torchvision:fasterrcnn_mobilenet_v3_large_fpn", batch_size=2)
    assert [tuple(i.shape) for i in det2.args[0]] == [(3, 800, 800)] * 2
    flow = resolve("torchvision:raft_small", meta=True, input_size=(1, 3, 128, 128))
    assert [tuple(a.shape) for a in flow.args] == [(1, 3, 128, 128)] * 2


def test_detection_training_step_gets_targets() -> None:
    # for a training step (train=True) a detection model also gets one target per image: 8 boxes on a 4 x 2 grid of
    # centres, box k's sides (0.08, 0.12, ...) of the image's, labels 1 + k % (classes - 1)
    pytest.importorskip("torchvision")
    r = resolve("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", batch_size=2, train=True)
    images, targets = r.args
    assert [tuple(i.shape) for i in images] == [(3, 320, 320)] * 2 and len(targets) == 2
    boxes, labels = targets[0]["boxes"], targets[0]["labels"]
    assert set(targets[0]) == {"boxes", "labels"} and boxes.shape == (8, 4) and boxes.dtype == torch.float32
    # box 0: centre (320 * 0.5 / 4, 320 * 0.5 / 2) = (40, 80), sides 320 * 0.08 = 25.6: (27.2, 67.2, 52.8, 92.8)
    assert boxes[0].tolist() == pytest.approx([27.2, 67.2, 52.8, 92.8])
    # box 7: centre (320 * 3.5 / 4, 320 * 1.5 / 2) = (280, 240), sides 256: x from 152 to 408, clipped to 320;
    # y from 112 to 368, clipped
    assert boxes[7].tolist() == pytest.approx([152.0, 112.0, 320.0, 320.0])
    assert labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # 91 classes
    assert torch.equal(targets[1]["boxes"], boxes)
    assert r.description.endswith("(detection, weights=None; training targets: 8 boxes an image)")
    # not for an eval analysis
    assert len(resolve("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn").args) == 1


def test_detection_targets_of_mask_and_keypoint_models() -> None:
    pytest.importorskip("torchvision")
    from torchvision.models import detection

    from torchcost.resolve.torchvision import detection_targets

    image = torch.zeros(3, 100, 200)
    mask_model = detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    (target,) = detection_targets(mask_model, [image])
    assert target["labels"].tolist() == [1, 2, 1, 2, 1, 2, 1, 2]  # 3 classes: 1 + k % 2
    # box 0 of a 100 x 200 image: centre (25, 25), 16 x 8: (17, 21, 33, 29); its mask fills rows 21..28, columns 17..32
    assert target["boxes"][0].tolist() == pytest.approx([17.0, 21.0, 33.0, 29.0])
    assert target["masks"].shape == (8, 100, 200) and target["masks"].dtype == torch.uint8
    assert int(target["masks"][0].sum()) == 8 * 16 and int(target["masks"][0, 21:29, 17:33].sum()) == 8 * 16
    keypoint_model = detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_keypoints=5)
    (target,) = detection_targets(keypoint_model, [image])
    assert target["labels"].tolist() == [1] * 8  # Keypoint R-CNN's 2 classes: every box is class 1
    points = target["keypoints"]
    assert points.shape == (8, 5, 3) and points[..., 2].eq(1).all()
    # box 0's 5 points spread from 10% to 90% of its diagonal: x 17 + (0.1, 0.3, 0.5, 0.7, 0.9) * 16
    assert points[0, :, 0].tolist() == pytest.approx([18.6, 21.8, 25.0, 28.2, 31.4])
    assert "masks" not in target


def test_overrides_batch_size_input_size_dtype() -> None:
    r = resolve("example:standard_conv", batch_size=8, dtype=torch.float16)
    assert r.args[0].shape == (8, 3, 64, 64)
    assert r.args[0].dtype == torch.float16 and next(r.model.parameters()).dtype == torch.float16
    r = resolve("example:standard_conv", input_size=[(2, 3, 32, 32)])
    assert r.args[0].shape == (2, 3, 32, 32)
    pytest.importorskip("torchvision")
    r = resolve("torchvision:resnet18", kwargs={"num_classes": 10}, meta=True)
    assert r.model.fc.out_features == 10


def test_python_path_spec() -> None:
    r = resolve("torchcost.examples:StandardConv", kwargs={"out_ch": 8}, input_size=(1, 3, 8, 8))
    assert r.model.conv.out_channels == 8
    assert r.spec == "torchcost.examples:StandardConv"
    r = resolve("torchcost.examples:build", kwargs={"name": "standard_conv"})  # a factory giving (model, inputs)
    assert r.args[0].shape == (1, 3, 64, 64)


# -- spec parsing ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "parsed"), [
    ("example:simple_cnn", ("example", "simple_cnn", None)),
    ("tv:resnet50", ("torchvision", "resnet50", None)),
    ("transformers:gpt2", ("hf", "gpt2", None)),
    ("hf:some/dir/config.json", ("hf", "some/dir/config.json", None)),
    ("models/net.py:Net", ("file", "models/net.py", "Net")),
    ("net.py", ("file", "net.py", None)),
    ("pkg.mod:make_model", ("module", "pkg.mod", "make_model")),
    ("resnet50", ("bare", "resnet50", None)),
])
def test_parse_spec(spec: str, parsed: tuple[str, str, str | None]) -> None:
    assert parse_spec(spec) == parsed


def test_bare_name_searches_the_sources_in_order() -> None:
    assert resolve("simple_cnn", meta=True).spec == "example:simple_cnn"
    pytest.importorskip("torchvision")
    assert resolve("resnet18", meta=True).spec == "torchvision:resnet18"  # torchvision before timm
    with pytest.raises(SpecError, match="no example, shipped config, torchvision or timm model is named"):
        resolve("resnet1x")


def test_builds_on_the_cpu_by_default() -> None:
    r = resolve("example:standard_conv")
    assert {p.device for p in r.model.parameters()} == {torch.device("cpu")}  # real weights, not meta
    assert r.args[0].device == torch.device("cpu")


# -- the JSON schema documents everything the report emits -------------------------------------------------------------

def _keys_documented(data: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    missing = set(data) - set(spec["properties"])
    assert not missing, f"{where} emits keys the schema does not describe: {sorted(missing)}; update " \
                        f"src/torchcost/schema/report.schema.json and docs/json-schema.md"


def test_schema_describes_every_key() -> None:
    r = resolve("example:conv1d_series")
    data = torchcost.analyze(r.model, *r.args).to_dict()
    spec = json.loads((resources.files("torchcost") / "schema" / "report.schema.json").read_text())
    _keys_documented(data, spec, "the report")
    _keys_documented(data["modules"][0], spec["$defs"]["module"], "a module")
    if data.get("memory"):
        _keys_documented(data["memory"], spec["$defs"]["memory"], "memory")
    assert spec["properties"]["schema_version"]["const"] == data["schema_version"]


def test_hf_local_config_file_and_folder(tmp_path: Any) -> None:
    pytest.importorskip("transformers")
    data, _ = hf_source.load_config("gpt2")
    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**data, "n_layer": 1, "n_embd": 64, "n_head": 4}))
    for spec in (f"hf:{folder / 'config.json'}", f"hf:{folder}"):
        r = resolve(spec, meta=True)
        assert r.name == "tiny-gpt2"
        # wte 50257*64 + wpe 1024*64 + one block 12*64*64 + 13*64 + ln_f 2*64 (lm_head tied)
        assert _params(r) == 50257 * 64 + 1024 * 64 + 12 * 64 * 64 + 13 * 64 + 2 * 64
    # no architectures: the bare AutoModel of the model_type
    (tmp_path / "bert.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                                                    "num_attention_heads": 2, "intermediate_size": 64,
                                                    "vocab_size": 100}))
    r = resolve(f"hf:{tmp_path / 'bert.json'}", meta=True)
    assert type(r.model).__name__ == "BertModel" and set(r.kwargs) == {"input_ids", "attention_mask"}  # (the cpu's)


@pytest.mark.parametrize("name", ["conv1d_series", "conv3d_action", "standard_conv", "depthwise_separable"])
def test_examples_are_built_with_their_draws_as_means(name: str) -> None:
    # the shipped examples' initialisers draw from distributions of mean 0 (kaiming_uniform_ on weights, uniform_ in
    # +-1/sqrt(fan_in) on biases; BatchNorm's ones and zeros are fills, not draws): built by the resolver, every
    # parameter is its mean, 0, and every buffer what the constructor set. Their figures do not depend on values
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    from torchcost.examples import EXAMPLES

    r = resolve(f"example:{name}")
    drawn = EXAMPLES[name].factory()
    assert _get_current_dispatch_mode_stack() == []  # (the mode that made the means is gone)
    for (key, p), (_, q) in zip(r.model.named_parameters(), drawn.named_parameters(), strict=True):
        assert torch.count_nonzero(p) == 0 and torch.count_nonzero(q) > 0, key
    for (key, b), (_, c) in zip(r.model.named_buffers(), drawn.named_buffers(), strict=True):
        assert torch.equal(b, c), key
    x = r.args[0]
    assert torchcost.analyze(r.model, x).to_dict() == torchcost.analyze(drawn, x).to_dict()


# -- audio models (round 34: "does not know the inputs" for every transformers audio family) ------------------------


def test_whisper_gets_its_spectrogram_and_decoder_ids(tmp_path: Any) -> None:
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "whisper", "WhisperModel", d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=20, max_target_positions=16,
                        vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    cpu = resolve(spec)
    # Whisper takes exactly 2 x max_source_positions frames: (1, 8 bins, 40 frames); the decoder 16 tokens (capped
    # at its 16 positions)
    assert cpu.kwargs["input_features"].shape == (1, 8, 40)
    assert cpu.kwargs["decoder_input_ids"].shape == (1, 16)
    assert "decoder_attention_mask" not in cpu.kwargs
    on_meta = resolve(spec, meta=True)
    # no decoder mask on meta either: the decoder's positions, which it reads without one, are known there
    # (collect/shadows.py; it got the 4-d causal mask before)
    assert "decoder_attention_mask" not in on_meta.kwargs
    report = torchcost.analyze(cpu.model, kwargs=cpu.kwargs)
    # conv1: Conv1d(8, 32, 3, padding=1) over 40 frames: 40 * 32 * 8 * 3 = 30,720 MACs
    assert report.module("encoder.conv1").macs == 30_720
    meta_report = torchcost.analyze(on_meta.model, kwargs=on_meta.kwargs, target="cpu")
    assert (meta_report.macs, meta_report.flops) == (report.macs, report.flops)
    assert report.uncounted == ()


def test_wav2vec2_gets_one_second_of_waveform(tmp_path: Any) -> None:
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "wav2vec2", "Wav2Vec2Model", hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2),
                        conv_kernel=(10, 3), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    r = resolve(spec)
    assert r.kwargs["input_values"].shape == (1, 16_000)  # one second at the default 16 kHz
    report = torchcost.analyze(r.model, kwargs=r.kwargs)
    # the first conv: 1 -> 8 channels, kernel 10, stride 5: (16,000 - 10) // 5 + 1 = 3,199 outputs: 3,199 * 8 * 10
    assert report.module("feature_extractor.conv_layers.0.conv").macs == 3_199 * 8 * 10 == 255_920
    assert report.uncounted == ()  # (the positional conv's weight norm is priced)


def test_audio_layouts_tried_in_order() -> None:
    # a spectrogram passed as input_values (AST): max_length x num_mel_bins first
    ast = SimpleNamespace(num_mel_bins=128, max_length=1024)
    assert hf_source._audio_shapes(ast, "input_values", 2)[0][0] == (2, 1024, 128)
    # a codec (its config names its channels) takes batch x channels x samples first, at its own rate
    codec = SimpleNamespace(audio_channels=2, sampling_rate=24_000)
    assert [s for s, _ in hf_source._audio_shapes(codec, "input_values", 1)] == [(1, 2, 24_000), (1, 24_000)]
    # Speech2Text's features: input_feat_per_channel x input_channels, 100 frames where the positions run past
    # Whisper's 1,500 (its 6,000 is not a fixed length)
    s2t = SimpleNamespace(input_feat_per_channel=80, input_channels=1, max_source_positions=6000)
    assert [s for s, _ in hf_source._audio_shapes(s2t, "input_features", 1)] == [(1, 80, 100), (1, 100, 80)]


def test_whisper_small_counts_derived_by_hand() -> None:
    pytest.importorskip("transformers")
    r = resolve("hf:whisper-small", meta=True)
    assert r.kwargs["input_features"].shape == (1, 80, 3000) and r.kwargs["decoder_input_ids"].shape == (1, 128)
    report = torchcost.analyze(r.model, kwargs=r.kwargs)
    d, ff, frames, tokens, vocab = 768, 3072, 1500, 128, 51865
    convs = 3000 * d * 80 * 3 + frames * d * d * 3  # conv1 over 3,000 mel frames, conv2 (stride 2) to 1,500
    # an encoder layer: q, k, v, o; Q K^T and P V over 1,500 positions; the MLP
    encoder = 12 * (4 * frames * d * d + 2 * frames * frames * d + 2 * frames * d * ff)
    # a decoder layer: self-attention over 128 tokens; cross-attention: q, o on the tokens, k, v on the 1,500
    # encoder positions, scores and values 128 x 1,500; the MLP
    decoder = 12 * (4 * tokens * d * d + 2 * tokens * tokens * d + 2 * tokens * d * d + 2 * frames * d * d
                    + 2 * tokens * frames * d + 2 * tokens * d * ff)
    head = tokens * d * vocab
    assert report.macs == convs + encoder + decoder + head == 214_937_862_144
    assert report.uncounted == ()


# -- time-series models (round 34: "does not know the inputs" for PatchTST, TimesFM, Informer, ...) ------------------


def test_patchtst_gets_its_context_of_channels(tmp_path: Any) -> None:
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "patchtst", "PatchTSTModel", context_length=32, patch_length=4, patch_stride=4,
                        num_input_channels=3, d_model=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32)
    r = resolve(spec)
    assert r.kwargs["past_values"].shape == (1, 32, 3)  # context_length steps of num_input_channels
    report = torchcost.analyze(r.model, kwargs=r.kwargs)
    # 3 channels x 32 / 4 = 8 patches of 4 values: embedding Linear(4, 16) 3*8*4*16 = 1,536; per channel attention
    # over 8 tokens of 16: q, k, v, o 4 * 3*8*16*16 = 24,576, scores and values 2 * 3*8*8*16 = 6,144; the MLP
    # 16 -> 32 -> 16: 2 * 3*8*16*32 = 24,576
    assert report.macs == 1_536 + 24_576 + 6_144 + 24_576 == 56_832
    on_meta = resolve(spec, meta=True)
    assert torchcost.analyze(on_meta.model, kwargs=on_meta.kwargs).macs == 56_832


def test_lagged_series_models_get_time_features_and_the_future(tmp_path: Any) -> None:
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "autoformer", "AutoformerModel", prediction_length=6, context_length=12,
                        lags_sequence=[1, 2, 3], num_time_features=2, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32)
    r = resolve(spec)
    # 12 context steps + the largest lag, 3: 15 past steps; 6 future ones; 2 time features each
    shapes = {k: tuple(v.shape) for k, v in r.kwargs.items()}
    assert shapes == {"past_values": (1, 15), "past_time_features": (1, 15, 2), "past_observed_mask": (1, 15),
                      "future_values": (1, 6), "future_time_features": (1, 6, 2)}
    report = torchcost.analyze(r.model, kwargs=r.kwargs)
    assert report.uncounted == ()  # (Autoformer's autocorrelation runs FFTs: priced)
    assert any(o.op == "aten::_fft_r2c" for o in report.ops)


class _NeedsFrameMask(nn.Module):
    """An audio encoder whose forward needs a mask over the frames of a (batch, bins, frames) input."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, input_features: torch.Tensor, input_features_mask: torch.Tensor) -> torch.Tensor:
        if input_features.shape[1] != 8 or input_features_mask.shape != (input_features.shape[0],
                                                                         input_features.shape[2]):
            raise ValueError("features must be (batch, 8 bins, frames) with a (batch, frames) mask")
        return self.proj(input_features.transpose(1, 2))


def test_audio_features_from_a_nested_config_with_their_frame_mask() -> None:
    from torchcost.resolve.common import BuildOptions

    # the bins are the encoder part's (Canary, Cohere ASR: encoder_config.num_mel_bins); 100 frames; the probe takes
    # bins first with the mask over dim 2
    config = SimpleNamespace(encoder_config=SimpleNamespace(num_mel_bins=8))
    assert hf_source._audio_field(config, "num_mel_bins") == 8
    _, kwargs, said = hf_source._audio_inputs(_NeedsFrameMask(), config, "input_features", torch.float32,
                                              BuildOptions(), "hf:test")
    assert kwargs["input_features"].shape == (1, 8, 100)
    assert kwargs["input_features_mask"].shape == (1, 100) and bool(kwargs["input_features_mask"].all())
    assert "input_features_mask of ones 1x100" in said


def test_an_encoder_that_reads_a_2d_masks_values_counts_on_meta_as_on_the_cpu(tmp_path: Any) -> None:
    """Round 34's sweep: SqueezeBERT, ConvBERT, DPR, TAPAS and others read their ids for padding without a mask and
    the mask's values (``.all()``) with a 2-d one: on meta they got a 4-d mask of ones, which SDPA adds, 1,024 FLOPs
    more here than the cpu. The ids and masks torchcost makes now keep their values on meta (collect/shadows.py):
    the meta build gets the cpu's 2-d mask of ones, and counts what the cpu build counts."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "squeezebert", "SqueezeBertModel", hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=4, intermediate_size=64, embedding_size=32)
    cpu, on_meta = resolve(spec, seq_len=16), resolve(spec, seq_len=16, meta=True)
    assert tuple(on_meta.kwargs["attention_mask"].shape) == (1, 16)
    want = torchcost.analyze(cpu.model, kwargs=cpu.kwargs)
    got = torchcost.analyze(on_meta.model, kwargs=on_meta.kwargs, target="cpu")
    assert (got.macs, got.flops) == (want.macs, want.flops)


def test_a_model_that_reads_its_masks_values_runs_on_meta_as_on_the_cpu(tmp_path: Any) -> None:
    """LED pads its input to the attention window and asks whether any token is masked, whatever mask it gets. On
    meta that read stopped it (it got the cpu's 2-d mask and a failure saying to build it on the cpu). The mask of
    ones torchcost makes keeps its values on meta (collect/shadows.py): the probe runs the 2-d mask, and the meta
    build counts what the cpu build counts."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "led", "LEDModel", d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, attention_window=[8])
    on_meta = resolve(spec, seq_len=16, meta=True)
    assert tuple(on_meta.kwargs["attention_mask"].shape) == (1, 16)
    assert "attention_mask of ones" in on_meta.description
    meta = torchcost.analyze(on_meta.model, kwargs=on_meta.kwargs, target="cpu")
    cpu = resolve(spec, seq_len=16)
    real = torchcost.analyze(cpu.model, kwargs=cpu.kwargs)
    assert (meta.macs, meta.flops) == (real.macs, real.flops)


def test_a_naflex_vision_encoder_gets_patches_a_mask_and_their_grid(tmp_path: Any) -> None:
    """Round 35's sweep: SigLIP 2 takes its image as patches already cut (NaFlex), with a patch mask and each
    image's grid; it failed with "'NoneType' object has no attribute 'to'". It now gets a square image of its
    config's patch count."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "siglip2_vision_model", "Siglip2VisionModel", hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, patch_size=4, num_patches=16)
    built = resolve(spec)
    kwargs = built.kwargs
    assert tuple(kwargs["pixel_values"].shape) == (1, 16, 3 * 4 * 4)
    assert tuple(kwargs["pixel_attention_mask"].shape) == (1, 16) and bool(kwargs["pixel_attention_mask"].all())
    assert kwargs["spatial_shapes"].tolist() == [[4, 4]]
    assert "(4x4 patches of 4x4 pixels)" in built.description
    report = torchcost.analyze(built.model, kwargs=kwargs)
    # the patches' Linear 16 patches x 48 x 32 = 24,576; the position embeddings resized by a product of
    # interpolation weights (16 positions x 16 grid cells) with the 16 x 32 table: 16*16*32 = 8,192
    assert report.module("embeddings").macs == 24_576 + 8_192 == 32_768
    # the layer: q, k, v, o 4*16*32*32 = 65,536; scores and weighted values 2 * 16*16*32 = 16,384 (2 heads of 16);
    # the MLP 2*16*32*64 = 65,536
    assert report.module("encoder.layers.0").macs == 65_536 + 16_384 + 65_536 == 147_456
    # the pooling head: one probe's query 32*32 = 1,024, keys and values of 16 tokens 2*16*32*32 = 32,768, its
    # scores and values 2 * 16*32 = 1,024, the output projection 1,024; its MLP 2*32*64 = 4,096
    assert report.module("head").macs == 1_024 + 32_768 + 1_024 + 1_024 + 4_096 == 39_936
    assert report.macs == 32_768 + 147_456 + 39_936 == 220_160


def test_a_vision_tower_of_the_qwen2_vl_layout_gets_its_patches_and_grid(tmp_path: Any) -> None:
    """Round 35's sweep: the vision towers of Qwen2.5-VL, Qwen3-VL, Qwen3.5, GLM-4V and others take one sequence of
    flattened patches and a (frames, rows, columns) grid per image; torchcost did not know their inputs. A square
    image of the config's size (here 32 pixels: 8 x 8 patches of 4) over the 2 frames of a temporal patch."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "qwen2_5_vl_vision", "Qwen2_5_VisionTransformerPretrainedModel", depth=1,
                        hidden_size=32, num_heads=2, intermediate_size=64, patch_size=4, out_hidden_size=48,
                        fullatt_block_indexes=[0], image_size=32)
    built = resolve(spec)
    assert tuple(built.kwargs["hidden_states"].shape) == (64, 3 * 2 * 4 * 4)
    assert built.kwargs["grid_thw"].tolist() == [[1, 8, 8]]
    assert "(1 image of 8x8 patches of 4x4 pixels x 2 frames)" in built.description
    report = torchcost.analyze(built.model, kwargs=built.kwargs)
    # the patch embedding, a Conv3d without bias: 64 patches x 96 values x 32 = 196,608
    assert report.module("patch_embed").macs == 64 * 96 * 32 == 196_608
    # the block: qkv 64*32*96 = 196,608, scores and weighted values 2 * 64*64*32 = 262,144, the projection
    # 64*32*32 = 65,536; the gated MLP 3 * 64*32*64 = 393,216
    assert report.module("blocks.0.attn").macs == 196_608 + 262_144 + 65_536 == 524_288
    assert report.module("blocks.0.mlp").macs == 393_216
    # the merger: 2 x 2 patches into one, 16 tokens of 4*32 = 128: 16*128*128 + 16*128*48 = 360,448
    assert report.module("merger").macs == 16 * 128 * 128 + 16 * 128 * 48 == 360_448
    assert report.macs == 196_608 + 524_288 + 393_216 + 360_448 == 1_474_560
    with pytest.raises(InputError, match="--input-size does not apply"):
        resolve(spec, input_size=(1, 3, 32, 32))
    # on meta the tower reads its grid's values (as Python numbers): the grid torchcost made keeps them there
    # (collect/shadows.py), and the meta build counts what the cpu build counts
    on_meta = resolve(spec, meta=True)
    assert torchcost.analyze(on_meta.model, kwargs=on_meta.kwargs, target="cpu").macs == 1_474_560


def test_a_vision_language_model_on_its_text_alone_says_so(tmp_path: Any) -> None:
    """A vision-language model (LLaVA) runs on the input_ids torchcost makes, without an image: its vision tower has
    no call, and the inputs' description now says that, where it said only "input_ids 1x16"."""
    pytest.importorskip("transformers")
    from transformers import LlavaConfig

    config = LlavaConfig(text_config={"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 32,
                                      "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
                                      "vocab_size": 100, "max_position_embeddings": 64},
                         vision_config={"model_type": "clip_vision_model", "num_hidden_layers": 1,
                                        "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                                        "image_size": 32, "patch_size": 8},
                         image_token_index=99).to_dict()
    config["architectures"] = ["LlavaModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    built = resolve(f"hf:{tmp_path / 'config.json'}", seq_len=16)
    assert "pixel_values" not in built.kwargs
    assert built.description.endswith("; text only: no image, so its vision tower does not run)")
    report = torchcost.analyze(built.model, kwargs=built.kwargs)
    assert report.module("vision_tower").calls == 0 and report.module("vision_tower").macs == 0


def test_a_probe_forward_runs_what_an_analysis_runs_on_meta() -> None:
    """A probe forward on meta answers what torch's meta kernels refuse and the CPU's and CUDA's take, as an analysis
    does (collect/metagaps.py): Aria's float32 experts (`_grouped_mm`) failed every mask candidate in the probe, so
    round 35's sweep first gave Aria the mask of no candidate that runs."""

    class Experts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 64, 32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            offs = torch.tensor([7, 14, 21, 28], dtype=torch.int32, device=x.device)
            out: torch.Tensor = torch._grouped_mm(x, self.w, offs=offs)
            return out

    assert hf_source._first_that_runs(Experts(), [{"x": torch.empty(28, 64)}]) == 0


def test_a_vision_language_model_that_runs_on_its_text_alone_gets_no_patches(tmp_path: Any) -> None:
    """LFM2-VL's vision tower is SigLIP 2's (NaFlex patches); it runs on its text alone, as the other vision-language
    models do, and is given no patches (on meta they stopped a run that went through before)."""
    pytest.importorskip("transformers")
    spec = _tiny_config(tmp_path, "lfm2_vl", "Lfm2VlModel",
                        text_config={"model_type": "lfm2", "num_hidden_layers": 2, "hidden_size": 32,
                                     "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
                                     "vocab_size": 100, "layer_types": ["conv", "full_attention"]},
                        vision_config={"model_type": "siglip2_vision_model", "num_hidden_layers": 1,
                                       "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                       "patch_size": 4, "num_patches": 16})
    for meta in (False, True):
        built = resolve(spec, seq_len=16, meta=meta)
        assert "pixel_values" not in built.kwargs and "spatial_shapes" not in built.kwargs
        assert built.description.endswith("; text only: no image, so its vision tower does not run)")


class _SizedImages(nn.Module):
    """Takes pixel_values of one side only (as SAM 2 its 1024: its embeddings are reshaped to a fixed grid), or of at
    least ``smallest`` (as Depth Pro its 1536: 384-pixel patches at its smallest scale, 0.25)."""

    def __init__(self, side: int | None = None, smallest: int = 1) -> None:
        super().__init__()
        self.side, self.smallest = side, smallest
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = pixel_values.shape[-1]
        if (self.side is not None and h != self.side) or h < self.smallest:
            raise ValueError(f"image side {h} is not one this model takes")
        return self.conv(pixel_values)


class _Config:
    """A stand-in for a transformers config: attributes, sub-configs recognised by their to_dict."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def test_a_vision_model_without_an_image_size_of_its_own_gets_one_that_runs() -> None:
    # no image_size on the config or its vision config: 224 first (as before), then its sub-configs' sizes (SAM 2:
    # its backbone's and prompt encoder's 1024), then 384, 512, 1024, 1536: the first a probe forward runs with
    nested = _Config(prompt_encoder_config=_Config(image_size=64), backbone=_Config(inner=_Config(image_size=[96, 96])))
    assert hf_source._nested_sizes(nested) == [(64, 64), (96, 96)]
    assert hf_source._image_shape(_SizedImages(side=96), nested, 1, torch.float32) == (1, 3, 96, 96)
    assert hf_source._image_shape(_SizedImages(smallest=1000), _Config(), 2, torch.float32) == (2, 3, 1024, 1024)
    assert hf_source._image_shape(_SizedImages(), _Config(), 1, torch.float32) == (1, 3, 224, 224)  # as before
    assert hf_source._image_shape(_SizedImages(), nested, 1, torch.float32) == (1, 3, 224, 224)  # 224 runs: kept
    # a config's own size is taken as it is, without a probe (a model that refuses it says so in the analysis)
    assert hf_source._image_shape(_SizedImages(side=96), _Config(image_size=32), 1, torch.float32) == (1, 3, 32, 32)


def test_sam2_gets_its_1024_pixels(tmp_path: Any) -> None:
    # SAM 2's default config gives its size only in sub-configs (the backbone's [1024, 1024], the prompt
    # encoder's 1024); at 224 its mask decoder's reshape to the 64 x 64 grid of image embeddings failed
    pytest.importorskip("transformers")
    built = resolve(_tiny_config(tmp_path, "sam2", "Sam2Model"), meta=True)
    assert tuple(built.kwargs["pixel_values"].shape) == (1, 3, 1024, 1024)
