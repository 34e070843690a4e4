"""tools/demo.py refuses the flags that would change where a method's script writes (the run folder whose
results.json the demo reads back: --output_dir, and zero-shot's --output) or which CLIP file it reads (the demo's
own tiny CLIP, prepared in its folder: --pretrain_clip(_path), --pretrained_dir), whatever their spelling; and its
own parser reads flags only as written, with their defaults in --help."""
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import demo  # noqa: E402

SCRIPTS = ["zero_shot_clip/test.py", "finetune_clip/fc.py", "lmpt/train.py"]


@pytest.mark.parametrize("extra, flag", [
    (["--output", "zs.json"], "--output"),  # zero-shot would write there and not the run folder the demo reads
    (["--output=zs.json"], "--output"),
    (["--pretrained_dir", "/elsewhere"], "--pretrained_dir"),  # the scripts would look for tiny elsewhere
    (["--pretrain_clip_path", "RN50"], "--pretrain_clip_path"),
    (["--output_dir", "x"], "--output_dir"),
])
def test_a_flag_that_moves_what_the_demo_reads_back_is_refused(extra, flag):
    messages = []

    def error(message):
        messages.append(message)
        raise SystemExit(2)

    with pytest.raises(SystemExit):
        demo.forwarded_flags(extra, SCRIPTS, error)
    assert messages[0].startswith(f"{flag}: set by the demo itself for every method")


@pytest.mark.parametrize("extra", [["--output", "zs.json"], ["--pretrained_dir", "/elsewhere"],
                                   ["--output", "zs.json", "--methods", "CoOp"],  # refused whatever the methods
                                   ["--from_scratch", "--methods", "CoOp"]])
def test_the_demo_stops_before_any_work(extra, monkeypatch, capsys):
    monkeypatch.setattr(demo, "ensure_benchmark", lambda root: pytest.fail("the benchmark was prepared"))
    with pytest.raises(SystemExit) as refused:
        demo.main(extra)
    assert refused.value.code == 2 and f"{extra[0]}: set by the demo itself" in capsys.readouterr().err


def test_flags_the_demo_does_not_set_are_still_passed_on(capsys):
    forwarded = demo.forwarded_flags(["--cache_dir", "/c", "--topk", "3"], SCRIPTS, pytest.fail)
    assert forwarded == {"zero_shot_clip/test.py": ["--cache_dir", "/c", "--topk", "3"],
                         "finetune_clip/fc.py": ["--cache_dir", "/c"], "lmpt/train.py": ["--cache_dir", "/c"]}


@pytest.mark.parametrize("argv, flag", [(["--out", "x"], "--out"), (["--me", "CoOp"], "--me"),
                                        (["--fa"], "--fa")])
def test_the_demos_own_flags_are_not_read_by_an_abbreviation(argv, flag, monkeypatch, capsys):
    monkeypatch.setattr(demo, "ensure_benchmark", lambda root: pytest.fail("the benchmark was prepared"))
    with pytest.raises(SystemExit) as refused:
        demo.main(argv)
    assert refused.value.code == 2 and f"{flag}: none of the methods' scripts" in capsys.readouterr().err


def test_the_demos_help_shows_its_defaults(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED every method's --seed (default: 0)" in text
    assert "(default: zero-shot CLIP, linear probe, CoOp, LMPT)" in text
    assert "--epochs 5 goes to fc.py and train.py, not to zero_shot_clip/test.py); a flag" in text  # as written
