"""clip.model against open_clip's implementation on the same weights, and architecture inference."""
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import clip  # noqa: E402
from clip.model import CLIP, ModifiedResNet, VisionTransformer, build_model, infer_config  # noqa: E402
from tiny_clip import make_tiny_clip, tiny_clip_config, write_tiny_clip  # noqa: E402

open_clip = pytest.importorskip("open_clip")

TOL = 1e-4
CAPTIONS = ["a photo of a dog.", "two cats sleeping on a red sofa", "", "a traffic light at night"]
EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def read_file_state_dict(path, fmt):
    """The file's state dict, read here independently of clip.checkpoint."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; still the released format
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    return torch.load(str(path), map_location="cpu", weights_only=True)


def open_clip_reference(state_dict):
    """open_clip's CLIP from an OpenAI state dict, in fp32 with exactly the file's values."""
    model = open_clip.model.build_model_from_openai_state_dict(dict(state_dict), cast_dtype=None).float()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state_dict.items() if k not in EXTRA_KEYS})
    return model.eval()


@pytest.fixture(scope="module", params=[(a, f) for a in ("vit", "resnet") for f in ("torchscript", "state_dict")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def loaded(request, tmp_path_factory):
    arch, fmt = request.param
    path = write_tiny_clip(tmp_path_factory.mktemp(arch) / f"tiny-{arch}.pt", arch=arch, fmt=fmt)
    model, preprocess = clip.load(str(path), device="cpu")
    file_state = read_file_state_dict(path, fmt)
    return dict(arch=arch, fmt=fmt, model=model, reference=open_clip_reference(file_state), file_state=file_state)


def inputs(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    resolution = model.visual.input_resolution
    images = torch.randn(3, 3, resolution, resolution, generator=generator)  # [B, 3, R, R]
    return images, clip.tokenize(CAPTIONS)  # [N, 77]


def test_loaded_model_is_fp32_eval_and_holds_the_file_weights(loaded):
    model, file_state = loaded["model"], loaded["file_state"]
    assert not model.training
    assert model.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    state = model.state_dict()
    assert set(state) == set(file_state) - set(EXTRA_KEYS)
    for key, value in state.items():
        assert torch.equal(value, file_state[key].to(value.dtype)), key
    if loaded["fmt"] == "torchscript":
        assert all(v.dtype == torch.float16 for k, v in file_state.items()
                   if v.is_floating_point() and k not in EXTRA_KEYS)


def test_encoders_and_logits_match_open_clip(loaded):
    model, reference = loaded["model"], loaded["reference"]
    images, text = inputs(model)
    with torch.no_grad():
        image_features = model.encode_image(images)  # [B, E]
        text_features = model.encode_text(text)  # [N, E]
        logits_per_image, logits_per_text = model(images, text)
        ref_image = reference.encode_image(images)
        ref_text = reference.encode_text(text)
        ref_image_n, ref_text_n, ref_scale = reference(images, text)
    ref_logits = ref_scale * ref_image_n @ ref_text_n.t()  # [B, N]
    embed_dim = tiny_clip_config(loaded["arch"])["embed_dim"]
    assert image_features.shape == (len(images), embed_dim)
    assert text_features.shape == (len(CAPTIONS), embed_dim)
    assert image_features.abs().max() > 1e-3 and text_features.abs().max() > 1e-3  # not a trivial agreement
    assert (image_features - ref_image).abs().max() <= TOL
    assert (text_features - ref_text).abs().max() <= TOL
    assert logits_per_image.shape == (len(images), len(CAPTIONS))
    assert (logits_per_image - ref_logits).abs().max() <= TOL
    assert torch.equal(logits_per_text, logits_per_image.t())


def test_dense_features_agree_with_pooled_and_with_open_clip(loaded):
    model, reference = loaded["model"], loaded["reference"]
    images, _ = inputs(model, seed=1)
    config = tiny_clip_config(loaded["arch"])
    with torch.no_grad():
        pooled, dense = model.encode_image_dense(images)
        image_features = model.encode_image(images)
        if loaded["arch"] == "vit":
            grid = config["image_resolution"] // config["vision_patch_size"]
            reference.visual.output_tokens = True
            ref_pooled, ref_tokens = reference.visual(images)  # tokens after ln_post, before proj
            ref_dense = ref_tokens @ reference.visual.proj
        else:
            grid = config["image_resolution"] // 32
            visual = reference.visual
            x = visual.stem(images)
            x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))  # [B, C, g, g]
            x = x.flatten(2).permute(0, 2, 1) + visual.attnpool.positional_embedding[1:]  # [B, HW, C]
            ref_dense = visual.attnpool.c_proj(visual.attnpool.v_proj(x))
            ref_pooled = visual(images)
    assert pooled.shape == (len(images), config["embed_dim"])
    assert dense.shape == (len(images), grid * grid, config["embed_dim"])
    assert (pooled - image_features).abs().max() <= 1e-6
    assert (pooled - ref_pooled).abs().max() <= TOL
    assert (dense - ref_dense).abs().max() <= TOL


def test_deeper_resnet_and_multi_head_text_tower_match_open_clip():
    """Paths the tiny models miss: layer1 of two Bottlenecks (the second one without downsample; the tiny
    ResNet's single blocks all have one) and a text tower of 2 heads (the tiny one has 1), through
    clip.build_model from the state dict as a released checkpoint is read."""
    source = make_tiny_clip("resnet", seed=5, vision_layers=(2, 1, 1, 1), transformer_width=128,
                            transformer_heads=2, transformer_layers=2)
    state = source.state_dict()
    model = build_model(state, fp16=False)
    reference = open_clip_reference(state)
    first, second = model.visual.layer1[0], model.visual.layer1[1]
    assert len(model.visual.layer1) == 2 and first.downsample is not None and second.downsample is None
    assert model.transformer.resblocks[0].attn.num_heads == 2 and len(model.transformer.resblocks) == 2
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(3, 3, 64, 64, generator=generator)  # [B, 3, R, R]
    text = clip.tokenize(CAPTIONS)  # [N, 77]
    with torch.no_grad():
        image_features, text_features = model.encode_image(images), model.encode_text(text)  # [B, E], [N, E]
        logits_per_image, _ = model(images, text)  # [B, N]
        ref_image, ref_text = reference.encode_image(images), reference.encode_text(text)
        ref_image_n, ref_text_n, ref_scale = reference(images, text)
    assert image_features.abs().max() > 1e-3 and text_features.abs().max() > 1e-3  # not a trivial agreement
    assert (image_features - ref_image).abs().max() <= TOL
    assert (text_features - ref_text).abs().max() <= TOL
    assert (logits_per_image - ref_scale * ref_image_n @ ref_text_n.t()).abs().max() <= TOL


def test_resnet_dense_features_average_to_pooled_under_uniform_attention():
    # Zero query/key projections and positions make the attention uniform over the
    # mean token and the HW locations; the pooled output is then the mean of the dense map.
    model = make_tiny_clip("resnet", seed=3)
    pool = model.visual.attnpool
    with torch.no_grad():
        for proj in (pool.q_proj, pool.k_proj):
            proj.weight.zero_()
            proj.bias.zero_()
        pool.positional_embedding.zero_()
        images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        pooled, dense = model.encode_image_dense(images)
    assert dense.shape[1] == 4
    assert (dense - dense.mean(1, keepdim=True)).abs().max() > 1e-3  # locations differ
    assert (pooled - dense.mean(1)).abs().max() <= 1e-5


def test_text_shorter_than_context_gives_the_same_features():
    # attention is causal and pooled at the end-of-text token, so cutting the padding changes nothing
    model = make_tiny_clip("vit", seed=1)
    text = clip.tokenize(CAPTIONS)
    length = int((text != 0).sum(1).max())
    with torch.no_grad():
        full = model.encode_text(text)
        cut = model.encode_text(text[:, :length])
    assert (full - cut).abs().max() <= 1e-5
    assert model.encode_text(clip.tokenize([])).shape == (0, full.shape[1])  # an empty batch, as OpenAI's


def test_build_model_fp16_converts_like_openai_and_leaves_input_alone():
    model = make_tiny_clip("resnet", seed=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = {k: v.clone() for k, v in state.items()}
    half = build_model(state)  # OpenAI's default: fp16 weights
    assert not half.training
    assert half.dtype == torch.float16
    assert half.visual.attnpool.q_proj.weight.dtype == torch.float16
    assert half.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    assert half.text_projection.dtype == torch.float16
    assert half.ln_final.weight.dtype == torch.float32  # LayerNorms stay fp32
    assert half.token_embedding.weight.dtype == torch.float32
    assert set(state) == set(before) and all(torch.equal(state[k], before[k]) for k in state)
    full = build_model(state, fp16=False)
    assert all(p.dtype == torch.float32 for p in full.parameters())
    assert all(torch.equal(full.state_dict()[k], before[k]) for k in before)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_build_model_owns_its_tensors_and_runs_like_the_original(arch):
    # build_model constructs on the meta device and takes the dict's tensors (assign=True): it must copy
    # them, rebuild the text transformer's causal mask, and compute what the original model computes.
    model = make_tiny_clip(arch, seed=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    built = build_model(state, fp16=False)
    assert all(p.device.type == "cpu" for p in built.parameters()) and all(p.requires_grad for p in built.parameters())
    with torch.no_grad():
        for p in built.parameters():
            p.add_(1.0)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the caller's dict untouched
    built = build_model(state, fp16=False)
    mask = built.transformer.resblocks[-1].attn_mask
    torch.testing.assert_close(mask, model.build_attention_mask())
    images, text = inputs(model, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(built.encode_text(text), model.encode_text(text), rtol=0, atol=0)
        torch.testing.assert_close(built.encode_image(images), model.encode_image(images), rtol=0, atol=0)


def test_build_model_on_another_device_copies_there_then_converts():
    # The GPU path (tensors cross as stored, fp32 made there), run on the meta device: no GPU needed.
    model = make_tiny_clip("vit", seed=6)
    state = {k: v.half() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}
    built = build_model(state, fp16=False, device="meta")
    assert all(p.device.type == "meta" and p.dtype == torch.float32 for p in built.parameters())
    assert built.transformer.resblocks[0].attn_mask.device.type == "meta"  # the causal mask lives there too
    assert all(v.device.type == "cpu" and (v.dtype == torch.float16 or not v.is_floating_point())
               for v in state.values())  # the caller's dict untouched


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_fp16_model_as_on_cuda_agrees_with_fp32(arch):
    # clip.load builds this fp16 model on CUDA; the CPU runs it too, so its dtype handling is checked here
    model = make_tiny_clip(arch, seed=7)
    state = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    full, half = build_model(state, fp16=False), build_model(state, fp16=True)
    images, text = inputs(full, seed=2)
    with torch.no_grad():
        for encode in ("encode_image", "encode_text"):
            argument = images if encode == "encode_image" else text
            expected, got = getattr(full, encode)(argument), getattr(half, encode)(argument)
            assert got.dtype == torch.float16
            assert (got.float() - expected).abs().max() <= 1e-2 * expected.abs().max()
        pooled, dense = half.encode_image_dense(images)
        assert pooled.dtype == dense.dtype == torch.float16
        assert torch.isfinite(dense).all()
        logits, _ = half(images, text)
        assert (logits.float() - full(images, text)[0]).abs().max() <= 0.05


def test_layernorm_computes_in_fp32():
    norm = clip.model.LayerNorm(8)
    x = (torch.randn(4, 8) * 100).half()
    out = norm(x)
    assert out.dtype == torch.float16
    expected = torch.nn.functional.layer_norm(x.float(), (8,)).half()
    assert torch.equal(out, expected)


def test_model_exposes_what_prompt_learners_use():
    model = make_tiny_clip("vit")
    config = tiny_clip_config("vit")
    assert isinstance(model.visual, VisionTransformer)
    assert isinstance(make_tiny_clip("resnet").visual, ModifiedResNet)
    assert model.visual.input_resolution == config["image_resolution"]
    assert model.token_embedding.weight.shape == (config["vocab_size"], config["transformer_width"])
    assert model.positional_embedding.shape == (config["context_length"], config["transformer_width"])
    assert model.text_projection.shape == (config["transformer_width"], config["embed_dim"])
    assert model.ln_final.normalized_shape == (config["transformer_width"],)
    assert model.logit_scale.shape == ()
    # a CoOp-style text encoder: token embeddings through the transformer (sequence first)
    text = clip.tokenize(CAPTIONS)
    with torch.no_grad():
        x = model.token_embedding(text) + model.positional_embedding  # [N, 77, D]
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = model.ln_final(x)[torch.arange(len(text)), text.argmax(-1)] @ model.text_projection
        assert (x - model.encode_text(text)).abs().max() <= 1e-5  # encode_text cuts after end-of-text


# ---- architecture inference for OpenAI's nine released models --------------------------------

def published_config(name):
    """CLIP kwargs of a released model, from open_clip's shipped model_configs JSON (the independent source)."""
    folder = Path(importlib.util.find_spec("open_clip").origin).parent / "model_configs"
    config = json.loads((folder / (name.replace("/", "-").replace("@336px", "-336") + ".json")).read_text())
    vision, text = config["vision_cfg"], config["text_cfg"]
    layers = vision["layers"]
    return dict(embed_dim=config["embed_dim"], image_resolution=vision["image_size"],
                vision_layers=tuple(layers) if isinstance(layers, list) else layers,
                vision_width=vision["width"], vision_patch_size=vision.get("patch_size"),
                context_length=text["context_length"], vocab_size=text["vocab_size"],
                transformer_width=text["width"], transformer_heads=text["heads"], transformer_layers=text["layers"])


@pytest.mark.parametrize("name", clip.available_models())
def test_infer_config_reads_every_released_architecture(name):
    expected = published_config(name)
    with torch.device("meta"):  # shapes only, nothing allocated
        ours = CLIP(**expected)
        theirs = open_clip.model.CLIP(expected["embed_dim"],
                                      vision_cfg=open_clip.model.CLIPVisionCfg(
                                          layers=expected["vision_layers"], width=expected["vision_width"],
                                          patch_size=expected["vision_patch_size"],
                                          image_size=expected["image_resolution"]),
                                      text_cfg=open_clip.model.CLIPTextCfg(
                                          context_length=expected["context_length"], vocab_size=expected["vocab_size"],
                                          width=expected["transformer_width"], heads=expected["transformer_heads"],
                                          layers=expected["transformer_layers"]),
                                      quick_gelu=True)
    released = theirs.state_dict()  # OpenAI's key names and shapes, as open_clip loads them
    assert infer_config(released) == expected
    ours_state = ours.state_dict()
    assert set(ours_state) == set(released)
    assert all(ours_state[k].shape == released[k].shape for k in released)
    # heads: text width // 64; vision width // 64 (ViT) or 32 * width // 64 (ResNet attention pool)
    assert ours.transformer.resblocks[0].attn.num_heads == theirs.transformer.resblocks[0].attn.num_heads
    if isinstance(expected["vision_layers"], tuple):
        assert ours.visual.attnpool.num_heads == theirs.visual.attnpool.num_heads == expected["vision_width"] * 32 // 64
    else:
        heads = theirs.visual.transformer.resblocks[0].attn.num_heads
        assert ours.visual.transformer.resblocks[0].attn.num_heads == heads == expected["vision_width"] // 64


def test_infer_config_refuses_what_is_not_clip():
    with pytest.raises(ValueError, match="missing"):
        infer_config({"foo": torch.zeros(1)})
    state = make_tiny_clip("vit").state_dict()
    state["visual.positional_embedding"] = torch.zeros(18, 128)  # 17 is not a square
    with pytest.raises(ValueError, match="square"):
        infer_config(state)
