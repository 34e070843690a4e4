"""lmpt/test.py's "replacing … of an earlier evaluation" note names the data that differs (test_results.json
records the dataset and the absolute data root, and the images scored), and judges the relative checkpoint of
an earlier version's file conservatively."""
import json
import shutil

import pytest

from conftest import write_lmpt_dataset
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.evaluation import same_checkpoint
from test_reliability import train_argv


def test_an_evaluation_on_other_data_says_which_data_differs(tmp_path, tiny_vit_checkpoint, capsys, monkeypatch):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    train_script.main(train_argv(data, tiny_vit_checkpoint, run, cache, epochs=1))
    other = tmp_path / "other"
    shutil.copytree(data, other)
    test_list = other / "voc" / "voc_lt_test.txt"
    lines = test_list.read_text().splitlines(keepends=True)
    test_list.write_text("".join(lines[: len(lines) // 2]))  # another test list: half the images
    evaluate = ["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache)]
    first = test_script.main(evaluate)
    saved = json.loads((run / "test_results.json").read_text())
    assert (saved["dataset"], saved["data_root"]) == ("voc-lt", str(data))  # the training run's data root
    capsys.readouterr()

    second = test_script.main(evaluate + ["--data_root", str(other)])
    assert (second["images"], first["images"]) == (len(lines) // 2, len(lines))
    assert (f"[test] replacing {run / 'test_results.json'} of an earlier evaluation (mAP {first['mAP']:.2f}; "
            f"other data_root, images)\n") in capsys.readouterr().out
    assert json.loads((run / "test_results.json").read_text())["data_root"] == str(other)

    # the whole test list again in the same data root, given relative (recorded absolute): the images differ
    shutil.copy(data / "voc" / "voc_lt_test.txt", test_list)
    monkeypatch.chdir(tmp_path)
    third = test_script.main(evaluate + ["--data_root", "other"])
    assert f"(mAP {second['mAP']:.2f}; other images)\n" in capsys.readouterr().out
    assert json.loads((run / "test_results.json").read_text())["data_root"] == str(other)
    # the same images in the training run's data root: the data root alone differs
    test_script.main(evaluate)
    assert f"(mAP {third['mAP']:.2f}; other data_root)\n" in capsys.readouterr().out
    test_script.main(evaluate)
    assert f"(mAP {first['mAP']:.2f})\n" in capsys.readouterr().out  # nothing differs


@pytest.mark.parametrize("old, new, same", [
    ("/w/runs/a/best.pt", "/w/runs/a/best.pt", True),
    ("/w/runs/b/best.pt", "/w/runs/a/best.pt", False),
    ("a/best.pt", "/w/runs/a/best.pt", True),  # the run folder and the file: the end of the path
    ("runs/a/best.pt", "/w/runs/a/best.pt", True),
    ("./runs/a/best.pt", "/w/runs/a/best.pt", True),
    ("../runs/a/best.pt", "/w/runs/a/best.pt", True),  # from a sibling folder of runs/
    ("../a/best.pt", "/w/runs/a/best.pt", True),
    ("best.pt", "/w/runs/OTHER/best.pt", False),  # any run's best.pt: not known to be this one
    ("./best.pt", "/w/runs/a/best.pt", False),
    ("../best.pt", "/w/runs/a/best.pt", False),
    ("b/best.pt", "/w/runs/a/best.pt", False),
    ("a/last.pt", "/w/runs/a/best.pt", False),
    ("x/runs/a/best.pt", "/w/runs/a/best.pt", False),
    ("", "/w/runs/a/best.pt", False),
    (None, "/w/runs/a/best.pt", False),
])
def test_a_relative_earlier_checkpoint_is_the_same_only_when_its_folder_and_name_end_the_path(old, new, same):
    assert same_checkpoint(old, new) is same
