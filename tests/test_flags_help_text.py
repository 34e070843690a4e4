"""--help as a user copies from it: a folder pattern is not broken at a hyphen; lmpt/test.py's --topk default is
printed by the formatter (from the flag's default, not written by hand) and --checkpoint says its default; every
flag has a help line; tools/compare_runs.py and tools/sweep_cse.py show their defaults and read flags only as
written, as the four scripts do."""
import re
import sys

import pytest

from conftest import ROOT
from finetune_clip import fc as fc_script
from lmpt import test as test_script
from lmpt import train as train_script
from zero_shot_clip import test as zero_shot_script

sys.path.insert(0, str(ROOT / "tools"))
import compare_runs  # noqa: E402
import sweep_cse  # noqa: E402


def one_line(parser):
    return " ".join(parser.format_help().split())


@pytest.mark.parametrize("module, pattern", [
    (zero_shot_script, "runs/<dataset>_zero-shot_<backbone>_seed<seed>"),
    (fc_script, "runs/<dataset>_<linear-probe|finetune-full>_<backbone>_seed<seed>"),
    (train_script, "runs/<dataset>_<method>_<backbone>_seed<seed>"),
])
def test_a_default_folder_pattern_is_on_one_line(module, pattern, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lines = module.build_parser().format_help().splitlines()
    assert any(pattern in line for line in lines), pattern


def test_topk_default_is_the_flags_own_and_checkpoint_says_its_default(monkeypatch):
    parser = test_script.build_parser()
    topk = next(a for a in parser._actions if a.dest == "topk")
    assert "default" not in topk.help  # written by the formatter from topk.default
    topk.default = 7
    assert re.search(r"--topk TOPK k of the top-k precision/recall/F1, as zero_shot_clip/test\.py reports them "
                     r"\(default: 7\)", one_line(parser))
    assert ("--checkpoint CHECKPOINT a run folder (uses best.pt) or a .pt file (default: the run folder "
            "lmpt/train.py, or finetune_clip/fc.py, writes for the same --dataset, --training_method, "
            "--pretrain_clip and --seed)") in one_line(parser)


@pytest.mark.parametrize("module", [train_script, test_script, zero_shot_script, fc_script])
def test_every_flag_has_a_help_line(module):
    missing = [a.option_strings[0] for a in module.build_parser()._actions if a.option_strings and not a.help]
    assert missing == []


def test_the_tools_show_their_defaults():
    sweep = one_line(sweep_cse.build_parser())
    assert "--seeds SEEDS [SEEDS ...] the seeds of every configuration (default: [0, 1, 2])" in sweep
    assert "the grid's --cse_margin (Δ) (default: [0.2, 0.5, 1.0])" in sweep
    assert "(default: runs/sweep of the repository)" in sweep
    assert "--output OUTPUT also write the comparison" in one_line(compare_runs.build_parser())


@pytest.mark.parametrize("parser, argv, unrecognised", [
    (lambda: sweep_cse.build_parser(), ["--seed", "0"], "--seed 0"),
    (lambda: sweep_cse.build_parser(), ["--out", "x"], "--out x"),
    (lambda: compare_runs.build_parser(), ["a", "--str"], "--str"),
])
def test_the_tools_read_flags_only_as_written(parser, argv, unrecognised, capsys):
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(argv)
    assert stopped.value.code == 2 and f"unrecognized arguments: {unrecognised}" in capsys.readouterr().err
