"""lmpt/test.py's notes: a backbone named by --pretrain_clip with --pretrained_dir that is the run's own file (given
by its path in training) is not noted as ignored; the 'replacing' note of a test_results.json written by an earlier
version (without dataset, data_root, images) names no difference when nothing differs."""
import json
import shutil

import pytest

from conftest import write_lmpt_dataset
from lmpt import test as test_script
from lmpt import train as train_script
from test_reliability import train_argv


@pytest.fixture(scope="module")
def run_on_a_named_file(tmp_path_factory, tiny_vit_checkpoint):
    """A tiny lmpt run trained with --pretrain_clip <folder>/ViT-B-16.pt (the tiny CLIP, under the file name of the
    ViT16 backbone): (the run folder, the folder holding the file, the cache)."""
    tmp = tmp_path_factory.mktemp("test_notes")
    pretrained = tmp / "pretrained"
    pretrained.mkdir()
    shutil.copy(tiny_vit_checkpoint, pretrained / "ViT-B-16.pt")
    write_lmpt_dataset(tmp / "data", n_train=12, n_test=8)
    run, cache = tmp / "run", tmp / "cache"
    train_script.main(train_argv(tmp / "data", pretrained / "ViT-B-16.pt", run, cache, epochs=1))
    return run, pretrained, cache


def evaluate(run, cache, *extra):
    return test_script.main(["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir",
                             str(cache), *extra])


def notes(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[test] note:")]


def test_the_runs_backbone_named_in_its_pretrained_dir_is_not_noted(run_on_a_named_file, tiny_vit_checkpoint,
                                                                     tmp_path, capsys):
    run, pretrained, cache = run_on_a_named_file
    out = ["--output", str(tmp_path / "named.json")]
    capsys.readouterr()
    evaluate(run, cache, "--pretrain_clip", "ViT16", "--pretrained_dir", str(pretrained), *out)  # the same file
    assert notes(capsys) == []
    evaluate(run, cache, "--pretrain_clip", str(pretrained / "ViT-B-16.pt"), *out)  # the same file by its path
    assert notes(capsys) == []
    # another file, though of the same bytes: another backbone, noted and ignored
    evaluate(run, cache, "--pretrain_clip", str(tiny_vit_checkpoint), *out)
    assert notes(capsys) == [f"[test] note: --pretrain_clip {str(tiny_vit_checkpoint)!r} ignored; the checkpoint "
                             f"was trained with {str(pretrained / 'ViT-B-16.pt')!r}"]


def test_keys_an_earlier_versions_test_results_lack_are_not_named(run_on_a_named_file, tmp_path, capsys):
    run, _, cache = run_on_a_named_file
    out = tmp_path / "earlier.json"
    evaluate(run, cache, "--output", str(out))
    earlier = json.loads(out.read_text())
    assert {"dataset", "data_root", "images"} <= set(earlier)
    for key in ("dataset", "data_root", "images"):  # not written before 1671ff5 / b96fc47
        del earlier[key]
    out.write_text(json.dumps(earlier))
    capsys.readouterr()
    evaluate(run, cache, "--output", str(out))
    assert f"[test] replacing {out} of an earlier evaluation (mAP {earlier['mAP']:.2f})\n" in capsys.readouterr().out
