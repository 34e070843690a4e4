"""The prompt learner's layout: context, class name and full stop where each class-token position puts them."""
import pytest
import torch

import clip
from lmpt.backbones import BACKBONES, backbone_file, resolve_backbone
from lmpt.models import PromptLearner, check_prompt_length, context_words, prompt_texts
from tiny_clip import make_tiny_clip

NAMES = ["traffic light", "dog"]
SOT, EOT = 49406, 49407


def expected_ids(ctx_ids, name_ids, position):
    """Token ids [77] of one class's prompt in ``position``."""
    half = len(ctx_ids) // 2
    body = {"end": ctx_ids + name_ids,
            "middle": ctx_ids[:half] + name_ids + ctx_ids[half:],
            "front": name_ids + ctx_ids}[position]
    ids = [SOT] + body + clip._tokenizer.encode(".") + [EOT]
    return torch.tensor(ids + [0] * (77 - len(ids)))


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("ctx_init", ["a photo of a", "a high-resolution photo of"])
def test_word_initialised_prompts_hold_every_context_token_and_the_whole_name(position, ctx_init):
    model = make_tiny_clip("vit")
    learner = PromptLearner(NAMES, model, ctx_init=ctx_init, csc=True, class_token_position=position)
    ctx_ids = clip._tokenizer.encode(ctx_init)  # 'high-resolution' is three tokens: all are learned
    assert learner.n_ctx == len(ctx_ids) == prompt_texts(NAMES, ctx_init=ctx_init)[0]
    with torch.no_grad():
        prompts = learner()  # [C, 77, D]
        for c, name in enumerate(NAMES):
            expected = model.token_embedding(expected_ids(ctx_ids, clip._tokenizer.encode(name), position))
            assert torch.equal(prompts[c], expected), (name, position)


@pytest.mark.parametrize("position", ["middle", "front"])
@pytest.mark.parametrize("ctx_init", ["a photo of a", "a photo of"])  # an odd context: CoOp's half is n_ctx // 2
def test_a_name_ending_in_punctuation_keeps_the_end_of_text_where_the_tokenizer_put_it(position, ctx_init):
    # CLIP's BPE joins ')' or '!' with the full stop (').</w>' is one token), so such a name's slice, counted
    # as CoOp counts it, ends with the joined token: the full stop moves with the name, the end of text stays.
    names = ["bench (park)", "coffee mug!"]
    model = make_tiny_clip("vit")
    learner = PromptLearner(names, model, ctx_init=ctx_init, class_token_position=position)
    ctx_ids, half = clip._tokenizer.encode(ctx_init), learner.n_ctx // 2
    with torch.no_grad():
        prompts = learner()  # [C, 77, D]
        for c, name in enumerate(names):
            name_ids = clip._tokenizer.encode(name + ".")  # as in the prompt: the stop joined to the last token
            assert len(name_ids) == len(clip._tokenizer.encode(name)) == learner.name_lens[c]
            body = ctx_ids[:half] + name_ids + ctx_ids[half:] if position == "middle" else name_ids + ctx_ids
            ids = [SOT] + body + [EOT]
            assert int(learner.tokenized_prompts[c].argmax()) == len(ids) - 1  # where the encoder reads
            expected = model.token_embedding(torch.tensor(ids + [0] * (77 - len(ids))))
            assert torch.equal(prompts[c], expected), (name, position)


def test_random_contexts_take_n_ctx_tokens_and_too_long_ones_are_refused():
    model = make_tiny_clip("vit")
    learner = PromptLearner(NAMES, model, n_ctx=5)
    assert learner.ctx.shape == (2, 5, model.token_embedding.weight.shape[1])
    check_prompt_length(NAMES, n_ctx=72)  # 1 + 72 + 2 + 1 + 1 = 77 tokens for 'traffic light'
    with pytest.raises(ValueError, match="--n_ctx 73: the prompt of class 'traffic light' would be 78 tokens"):
        check_prompt_length(NAMES, n_ctx=73)
    with pytest.raises(ValueError, match="--ctx_init 'x x"):
        PromptLearner(NAMES, model, ctx_init=" ".join(["x"] * 73))


@pytest.mark.parametrize("ctx_init, words", [("a_photo_of_a", "a photo of a"), ("  a  photo ", "a photo"),
                                              ("_", ""), ("   ", ""), (None, "")])
def test_ctx_init_words_follow_coop_and_nothing_left_means_random_contexts(ctx_init, words):
    assert context_words(ctx_init) == words
    n_ctx, texts = prompt_texts(NAMES, n_ctx=4, ctx_init=ctx_init)
    assert n_ctx == (len(clip._tokenizer.encode(words)) if words else 4)  # never zero context tokens
    learner = PromptLearner(NAMES, make_tiny_clip("vit"), n_ctx=4, ctx_init=ctx_init)
    assert learner.ctx.shape[1] == n_ctx > 0


@pytest.mark.parametrize("name, file", [("ViT16", "ViT-B-16.pt"), ("ViT-B/16", "ViT-B-16.pt"), ("RN50", "RN50.pt"),
                                        ("ViT14@336", "ViT-L-14-336px.pt"), ("ViT-L/14@336px", "ViT-L-14-336px.pt"),
                                        ("tiny", "tiny-clip-synth.pt")])
def test_a_backbone_name_finds_the_released_file_in_the_pretrained_folder(tmp_path, monkeypatch, name, file):
    (tmp_path / file).write_bytes(b"weights")
    assert backbone_file(name) == file
    assert resolve_backbone(name, tmp_path) == tmp_path / file
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path))
    assert resolve_backbone(name) == tmp_path / file  # the default folder follows $LMPT_PRETRAINED_DIR
    (tmp_path / file).unlink()
    with pytest.raises(FileNotFoundError, match=f"{name}: checkpoint {tmp_path / file} not found"):
        resolve_backbone(name, tmp_path)


def test_every_short_name_stands_for_a_released_model_or_the_tiny_clip():
    for short, model in BACKBONES.items():
        assert (short, model) == ("tiny", "tiny-clip-synth.pt") or model in clip.available_models(), short
        assert backbone_file(short) == backbone_file(model)
    with pytest.raises(ValueError, match="'ViT-B/99' is not a released CLIP model; expected one of RN50, "):
        clip.model_file("ViT-B/99")


def test_logits_stay_fp32_inside_the_encoders_bf16_autocast():
    # bf16 would space logits of about 30 (100·cos) 0.125 apart, tying images in the ranking
    from lmpt.baselines import LinearProbe
    from lmpt.device import autocast_on
    from lmpt.models import CustomCLIP
    torch.manual_seed(0)
    model = CustomCLIP(NAMES, make_tiny_clip("vit"), n_ctx=4)
    probe = LinearProbe(model.image_encoder, 32, len(NAMES))
    features = torch.randn(200, 32)  # [N, E]
    text = torch.nn.functional.normalize(torch.randn(len(NAMES), 32), dim=-1)  # [C, E]
    with torch.no_grad():
        expected = (model.logits(features, text), probe(features))
        with autocast_on(torch.device("cpu"), True):
            assert torch.matmul(features, text.t()).dtype == torch.bfloat16  # autocast is on
            got = (model.logits(features, text), probe(features))
    for g, e in zip(got, expected):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_custom_clip_and_linear_probe_run_on_the_fp16_clip_of_clip_load_on_cuda(arch):
    """``clip.load(device='cuda')`` halves the towers but not the token and positional embeddings (as OpenAI's):
    CustomCLIP's text encoder and a frozen LinearProbe run in the weights' precision (the fp16 model is built here
    on the CPU as clip.load builds it on CUDA), and agree with the fp32 model; a trainable fp16 encoder is refused."""
    from lmpt.baselines import LinearProbe
    from lmpt.models import CustomCLIP
    model32 = make_tiny_clip(arch)
    model16 = clip.from_state_dict(model32.state_dict(), "cpu", fp16=True)
    assert model16.text_projection.dtype == torch.float16 and model16.positional_embedding.dtype == torch.float32
    resolution = model32.visual.input_resolution
    images, features = torch.rand(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(2)), {}
    for name, model in (("fp32", model32), ("fp16", model16)):
        torch.manual_seed(0)
        custom = CustomCLIP(NAMES, model)
        text = custom.text_features()  # [C, E]
        text.sum().backward()
        assert custom.prompt_learner.ctx.dtype == torch.float32 and custom.prompt_learner.ctx.grad.isfinite().all()
        probe = LinearProbe(model.visual, model.visual.output_dim, len(NAMES))
        torch.manual_seed(1)
        probe.fc.reset_parameters()
        with torch.no_grad():
            features[name] = text.detach(), probe.forward_images(images)
    assert features["fp16"][0].dtype == features["fp16"][1].dtype == torch.float32
    torch.testing.assert_close(features["fp16"][0], features["fp32"][0], atol=2e-2, rtol=0)  # unit vectors
    torch.testing.assert_close(features["fp16"][1], features["fp32"][1], atol=5e-2, rtol=2e-2)
    with pytest.raises(ValueError, match=r"train_encoder=True\): the image encoder has torch.float16 weights"):
        LinearProbe(model16.visual, model16.visual.output_dim, len(NAMES), train_encoder=True)
