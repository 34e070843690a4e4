"""A class name has one spelling in prompt text (``models.class_text``): the prompts, the token counts that
place the name in the middle and front layouts (``name_lens``), the length checks and the zero-shot templates."""
from types import SimpleNamespace

import pytest
import torch

import clip
from lmpt.baselines import check_template_lengths, zero_shot_classifier
from lmpt.models import PromptLearner, check_prompt_length, class_text, prompt_texts
from tiny_clip import make_tiny_clip

NAMES = ["traffic_light", "hair_drier", "dog"]
SOT, EOT = 49406, 49407


def test_class_text_spells_underscores_as_spaces():
    assert [class_text(name) for name in NAMES] == ["traffic light", "hair drier", "dog"]
    # the two spellings are not the same tokens: counting one and writing the other would misplace the name
    assert len(clip._tokenizer.encode("traffic_light")) != len(clip._tokenizer.encode("traffic light"))


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_name_lens_count_the_tokens_the_prompt_text_holds(position):
    model = make_tiny_clip("vit")
    learner = PromptLearner(NAMES, model, ctx_init="a photo of a", class_token_position=position)
    _, texts = prompt_texts(NAMES, ctx_init="a photo of a")
    ctx_ids, half = clip._tokenizer.encode("a photo of a"), learner.n_ctx // 2
    with torch.no_grad():
        prompts = learner()  # [C, 77, D]
        for c, name in enumerate(NAMES):
            name_ids = clip._tokenizer.encode(class_text(name))
            assert texts[c] == f"a photo of a {class_text(name)}."
            assert learner.name_lens[c] == len(name_ids)
            body = {"end": ctx_ids + name_ids, "middle": ctx_ids[:half] + name_ids + ctx_ids[half:],
                    "front": name_ids + ctx_ids}[position]
            ids = [SOT] + body + clip._tokenizer.encode(".") + [EOT]
            expected = model.token_embedding(torch.tensor(ids + [0] * (77 - len(ids))))
            assert torch.equal(prompts[c], expected), (name, position)


def test_the_length_checks_count_the_spelling_the_prompts_use(tmp_path):
    name = "_".join(["x"] * 30)  # 30 tokens spelled with spaces, 59 with underscores
    assert len(clip._tokenizer.encode(class_text(name))) == 30 < len(clip._tokenizer.encode(name))
    check_prompt_length([name], n_ctx=44)  # 1 + 44 + 30 + 1 + 1 = 77 tokens: it fits
    with pytest.raises(ValueError, match=f"--n_ctx 45: the prompt of class '{name}' would be 78 tokens"):
        check_prompt_length([name], n_ctx=45)

    (tmp_path / "labels.txt").write_text(f"dog 0\n{name} 1\n")
    dataset = SimpleNamespace(class_names=["dog", name], root=tmp_path, spec=SimpleNamespace(labels="labels.txt"))
    check_template_lengths(dataset, (" ".join(["y"] * 44) + " {}.",), "--templates x")  # 1 + 44 + 30 + 1 + 1
    with pytest.raises(ValueError, match=r"labels.txt:2: class name .* gives 78 tokens with template"):
        check_template_lengths(dataset, (" ".join(["y"] * 45) + " {}.",), "--templates x")


def test_zero_shot_prompts_spell_the_name_as_the_learned_prompts_do():
    model = make_tiny_clip("vit").eval()
    templates = ("a photo of a {}.", "a {} in the street.")
    got = zero_shot_classifier(model, NAMES, templates, "cpu", progress=False)  # [C, E]
    spelled = zero_shot_classifier(model, [class_text(name) for name in NAMES], templates, "cpu", progress=False)
    assert torch.equal(got, spelled)
