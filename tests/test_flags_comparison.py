"""The flags that decide whether rows of a comparison table are comparable: every script's --help shows their
defaults (the backbone and --lr differ between the scripts; --thre, --epochs, --batch_size are the same in every
script that has them, as the cases below check); the backbone flag takes
both spellings in every script, and no flag is read by its abbreviation (the published ``--from scratch`` and a
prefix such as ``--pretrain_cl`` are refused, not taken as another flag); --seed says where it seeds nothing."""
import re

import pytest

from finetune_clip import fc as fc_script
from lmpt import test as test_script
from lmpt import train as train_script
from zero_shot_clip import test as zero_shot_script

SCRIPTS = {"lmpt/train.py": train_script, "lmpt/test.py": test_script, "zero_shot_clip/test.py": zero_shot_script,
           "finetune_clip/fc.py": fc_script}


def flag_help(script, flag):
    """The help text of ``flag`` in ``script``'s --help, on one line."""
    text = SCRIPTS[script].build_parser().format_help()
    options = text[text.index("options:"):]
    match = re.search(rf"\n  {re.escape(flag)}[ ,].*?(?=\n  -|\Z)", options, re.S)
    assert match, f"{script}: {flag} not in --help"
    return " ".join(match.group(0).split())


@pytest.mark.parametrize("script, flag, default", [
    ("lmpt/train.py", "--pretrain_clip", "ViT16"), ("lmpt/test.py", "--pretrain_clip", "ViT16"),
    ("zero_shot_clip/test.py", "--pretrain_clip_path", "RN50"),
    ("finetune_clip/fc.py", "--pretrain_clip_path", "ViT16"),
    ("lmpt/train.py", "--thre", "0.5"), ("zero_shot_clip/test.py", "--thre", "0.5"),
    ("finetune_clip/fc.py", "--thre", "0.5"),
    ("lmpt/train.py", "--lr", "0.0005"), ("finetune_clip/fc.py", "--lr", "0.0001"),
    ("lmpt/train.py", "--epochs", "50"), ("finetune_clip/fc.py", "--epochs", "50"),
    ("lmpt/train.py", "--batch_size", "64"), ("zero_shot_clip/test.py", "--batch_size", "64"),
    ("finetune_clip/fc.py", "--batch_size", "64"), ("lmpt/train.py", "--optimizer", "sgd"),
    ("lmpt/train.py", "--loss_function", "dbl"), ("finetune_clip/fc.py", "--loss_function", "dbl"),
    ("lmpt/train.py", "--n_ctx", "16"), ("lmpt/train.py", "--score", "softmax"),
    ("zero_shot_clip/test.py", "--templates", "imagenet80"), ("lmpt/test.py", "--training_method", "lmpt"),
])
def test_help_shows_the_default_of_each_flag_a_comparison_depends_on(script, flag, default):
    assert flag_help(script, flag).endswith(f"(default: {default})")


def test_help_says_where_the_default_is_the_training_runs_and_no_default_twice():
    assert "(default: the training run's value, saved in the checkpoint)" in flag_help("lmpt/test.py", "--thre")
    for script in SCRIPTS:
        text = " ".join(SCRIPTS[script].build_parser().format_help().split())
        assert "(default: None)" not in text and "(default: False)" not in text, script
        assert not re.search(r"\(default[^)]*\) \(default", text), script


@pytest.mark.parametrize("script", ["lmpt/train.py", "lmpt/test.py"])
def test_prompt_scripts_take_the_baselines_spelling_of_the_backbone_flag(script, tmp_path):
    argv = ["--pretrain_clip_path", "RN50"] + (["--output_dir", str(tmp_path / "run")]
                                               if script == "lmpt/train.py" else [])
    args = SCRIPTS[script].parse_args(argv)
    assert args.pretrain_clip == "RN50"
    assert "pretrain_clip_path" not in vars(args)  # one flag, recorded under one name


@pytest.mark.parametrize("script", ["zero_shot_clip/test.py", "finetune_clip/fc.py"])
def test_baselines_take_the_prompt_scripts_spelling_of_the_backbone_flag(script):
    parser = SCRIPTS[script].build_parser()
    assert any("--pretrain_clip" in action.option_strings for action in parser._actions)  # as written, not a prefix
    args = parser.parse_args(["--pretrain_clip", "tiny"])
    assert args.pretrain_clip_path == "tiny" and "pretrain_clip" not in vars(args)


@pytest.mark.parametrize("script, argv, unrecognised", [
    ("zero_shot_clip/test.py", ["--pretrain_clip_p", "tiny"], "--pretrain_clip_p tiny"),
    ("finetune_clip/fc.py", ["--from", "scratch"], "--from scratch"),  # the published line, uncommented
    ("lmpt/train.py", ["--epoch", "2"], "--epoch 2"),
    ("lmpt/test.py", ["--thr", "0.3"], "--thr 0.3"),
])
def test_an_abbreviated_flag_is_refused(script, argv, unrecognised, capsys):
    with pytest.raises(SystemExit) as exit_info:
        SCRIPTS[script].build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {unrecognised}" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["lmpt/test.py", "zero_shot_clip/test.py"])
def test_the_seed_of_an_evaluation_says_it_only_names_the_default_run_folder(script):
    text = flag_help(script, "--seed")
    assert "folder only" in text and "draws nothing at random" in text and "NumPy" not in text
    assert "NumPy's range" in flag_help("lmpt/train.py", "--seed")  # a training run is seeded
