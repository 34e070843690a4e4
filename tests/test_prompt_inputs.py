"""Prompt inputs refused before any image work: class names too long for zero-shot's templates, templates
without their one '{}', a --ctx_init that gives no token; lmpt/test.py's prompt flags typed as train.py's;
and a relative checkpoint path not found named wherever it was looked for."""
import shutil
from types import SimpleNamespace

import pytest

from conftest import ROOT, write_lmpt_dataset
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.baselines import zero_shot_classifier
from lmpt.models import check_prompt_length
from lmpt.templates import TEMPLATES
from zero_shot_clip import test as zero_shot_script

LONG_NAME = " ".join(["very"] * 68 + ["big", "dog"])  # 70 tokens: 75 with 'a photo of a {}.', more with others


def zero_shot_argv(data_root, checkpoint, out, cache, *extra):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip_path", str(checkpoint),
            "--output_dir", str(out), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache), *extra]


def data_without_images(tmp_path, names=None):
    """A dataset whose images are gone: a check that passes only before any image is looked at."""
    base = write_lmpt_dataset(tmp_path / "data")
    if names is not None:
        (base / "voc_labels.txt").write_text("".join(f"{n} {i}\r\n" for i, n in enumerate(names)))
    shutil.rmtree(base / "images")
    return tmp_path / "data", base


# ---------------------------------------------------------------- zero-shot: class names and templates

def test_zero_shot_refuses_a_class_name_too_long_for_a_template_naming_its_line(tmp_path, tiny_vit_checkpoint):
    data, base = data_without_images(tmp_path, ["dog", LONG_NAME, "cat", "boat"])
    with pytest.raises(ValueError) as refused:
        zero_shot_script.main(zero_shot_argv(data, tiny_vit_checkpoint, tmp_path / "zs", tmp_path / "cache"))
    message = str(refused.value)
    assert message.startswith(f"{base / 'voc_labels.txt'}:2: class name {LONG_NAME!r} gives 81 tokens with "
                              f"template 'a jpeg corrupted photo of a {{}}.' (--templates imagenet80)")
    assert "the start and end of text included; expected at most CLIP's 77: shorten the name" in message
    assert not (tmp_path / "zs").exists()


def test_the_length_check_counts_the_templates_used(tmp_path):
    from lmpt.baselines import check_template_lengths
    (tmp_path / "labels.txt").write_text(f"dog 0\n{LONG_NAME} 1\n")
    dataset = SimpleNamespace(class_names=["dog", LONG_NAME], root=tmp_path, spec=SimpleNamespace(labels="labels.txt"))
    check_template_lengths(dataset, TEMPLATES["single"], "--templates single")  # 75 tokens: it fits
    with pytest.raises(ValueError, match=r"labels.txt:2: class name .* gives 78 tokens with template "
                                         r"'a nice photo of a \{\}.' \(--templates x\), the start and end of text included; expected at most CLIP's 77"):
        check_template_lengths(dataset, ("a {}.", "a nice photo of a {}."), "--templates x")


@pytest.mark.parametrize("template,found", [
    ("a photo of a dog.", "has no field"),
    ("a photo of a {name}.", "has the field {name}"),
    ("a {} next to a {}.", "has the fields {}, {}"),
    ("a photo of a {0!r}.", "has the field {0!r}"),
])
def test_a_template_without_exactly_one_placeholder_is_refused(template, found):
    from lmpt.templates import check_templates
    with pytest.raises(ValueError) as refused:
        check_templates(("a photo of a {}.", template), "TEMPLATES['mine']")
    assert str(refused.value) == (f"TEMPLATES['mine'][1]: template {template!r} {found}; expected exactly one '{{}}' "
                                  f"where the class name goes, such as 'a photo of a {{}}.'")
    check_templates(("a {{braced}} photo of a {}.",), "TEMPLATES['mine']")  # doubled braces are literal


def test_a_lone_brace_in_a_template_is_refused():
    from lmpt.templates import check_templates
    with pytest.raises(ValueError, match=r"^T\[0\]: cannot read template 'a \{ photo of a \{\}.' \("):
        check_templates(("a { photo of a {}.",), "T")


def test_an_edited_templates_entry_is_refused_at_import():
    source = (ROOT / "lmpt" / "templates.py").read_text()
    edited = source.replace('SINGLE_TEMPLATE = ("a photo of a {}.",)', 'SINGLE_TEMPLATE = ("a photo of a {name}.",)')
    assert edited != source
    with pytest.raises(ValueError, match=r"^templates.TEMPLATES\['single'\]\[0\]: template 'a photo of a \{name\}.' "
                                         r"has the field \{name\}"):
        exec(compile(edited, "lmpt/templates.py", "exec"), {"__name__": "edited_templates"})


def test_the_classifier_refuses_a_template_before_encoding_anything():
    with pytest.raises(ValueError, match=r"^zero_shot_classifier's templates\[0\]: template 'a photo' has no field"):
        zero_shot_classifier(None, ["dog", "cat"], ("a photo",), "cpu")  # no model needed to be refused


# ---------------------------------------------------------------- --ctx_init that tokenises to nothing

@pytest.mark.parametrize("ctx_init", ["&nbsp;", "\x07", "&nbsp;_\x1b"])
def test_a_ctx_init_without_any_token_is_refused(ctx_init):
    with pytest.raises(ValueError) as refused:
        check_prompt_length(["dog", "cat"], 16, ctx_init)
    assert str(refused.value).startswith(f"--ctx_init {ctx_init!r}: CLIP's tokenizer gives no token for it")
    check_prompt_length(["dog", "cat"], 16, "a &nbsp; photo")  # some words left: fine


def test_train_refuses_a_ctx_init_without_any_token_before_any_image(tmp_path, tiny_vit_checkpoint):
    data, _ = data_without_images(tmp_path)
    argv = ["--dataset", "voc-lt", "--data_root", str(data), "--pretrain_clip", str(tiny_vit_checkpoint),
            "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
            "--output_dir", str(tmp_path / "run"), "--ctx_init", "&nbsp;", "--training_method", "coop"]
    with pytest.raises(ValueError, match=r"^--ctx_init '&nbsp;': CLIP's tokenizer gives no token for it"):
        train_script.main(argv)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- lmpt/test.py's prompt flags

@pytest.mark.parametrize("flag,value,expected", [
    ("--n_ctx", "0", "argument --n_ctx: expected an integer in 1..75, got 0"),
    ("--n_ctx", "100000000000", "argument --n_ctx: expected an integer in 1..75, got 100000000000"),
    ("--class_token_position", "middel", "argument --class_token_position: invalid choice: 'middel'"),
    ("--training_method", "lmtp", "argument --training_method: invalid choice: 'lmtp'"),
])
def test_test_refuses_the_prompt_flags_train_refuses(flag, value, expected, capsys):
    for script in (train_script, test_script):
        with pytest.raises(SystemExit) as refused:
            script.parse_args([flag, value])
        assert refused.value.code == 2
        assert expected in capsys.readouterr().err


def test_test_prompt_flags_still_default_to_the_checkpoints():
    args = test_script.parse_args([])
    assert (args.n_ctx, args.class_token_position, args.ctx_init, args.csc) == (None, None, None, None)
    args = test_script.parse_args(["--n_ctx", "4", "--class_token_position", "front"])
    assert (args.n_ctx, args.class_token_position) == (4, "front")


# ---------------------------------------------------------------- a relative checkpoint path not found

def test_a_relative_checkpoint_not_found_names_the_path_beside_the_script(tmp_path, monkeypatch):
    data = write_lmpt_dataset(tmp_path / "data").parent
    monkeypatch.chdir(ROOT)  # the README's command, run from the repository root
    with pytest.raises(FileNotFoundError) as missing:
        zero_shot_script.main(zero_shot_argv(data, "../pretrained/NO-SUCH.pt", tmp_path / "zs", tmp_path / "cache"))
    message = str(missing.value)
    from_here, beside_script = ROOT.parent / "pretrained" / "NO-SUCH.pt", ROOT / "pretrained" / "NO-SUCH.pt"
    assert f"no checkpoint file at {from_here} or {beside_script} (the scripts look for a relative path" in message
    assert "put the CLIP .pt file at one of these paths" in message
    assert not (tmp_path / "zs").exists()


def test_test_help_says_the_evaluation_settings_default_to_the_training_runs():
    from lmpt import test as test_script
    text = " ".join(test_script.build_parser().format_help().split())
    for flag in ("--thre", "--score", "--preprocess"):
        assert text.split(f" {flag} ")[-1].split(" --")[0].endswith("(default: the training run's value, saved in "
                                                                  "the checkpoint)"), flag
