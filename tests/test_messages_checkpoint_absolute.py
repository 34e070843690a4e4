"""lmpt/test.py records the checkpoint it evaluated absolute in test_results.json, as results.json does (``~``
expanded, a symbolic link keeping its own name), and names the results file absolute, whatever the current folder."""
import json
import os

from conftest import ROOT, write_lmpt_dataset
from finetune_clip import fc as fc_script
from lmpt import test as test_script
from lmpt import train as train_script
from test_reliability import train_argv


def evaluate(checkpoint, cache, capsys, *extra):
    """test_results.json's checkpoint and the file the "[test] results written to" line names."""
    test_script.main(["--checkpoint", checkpoint, "--device", "cpu", "--num_workers", "0", "--cache_dir",
                      str(cache), *extra])
    written = capsys.readouterr().out.split("[test] results written to ")[-1].strip()
    return json.loads(open(written).read())["checkpoint"], written


def check_absolute(tmp_path, run, cache, monkeypatch, capsys):
    os.symlink(run, tmp_path / "link")
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    os.symlink(run, tmp_path / "home" / "mine")
    monkeypatch.chdir(tmp_path)
    assert evaluate(run.name, cache, capsys) == (str(run / "best.pt"), str(run / "test_results.json"))
    assert evaluate(f"{run.name}/last.pt", cache, capsys)[0] == str(run / "last.pt")
    assert evaluate("link", cache, capsys) == (str(tmp_path / "link" / "best.pt"),  # the link's own name
                                               str(tmp_path / "link" / "test_results.json"))
    assert evaluate("~/mine", cache, capsys)[0] == str(tmp_path / "home" / "mine" / "best.pt")  # '~' expanded
    assert evaluate(run.name, cache, capsys, "--output", "own.json") == (str(run / "best.pt"),
                                                                          str(tmp_path / "own.json"))
    monkeypatch.chdir(ROOT)


def test_a_prompt_run_tested_from_a_relative_path_records_it_absolute(tmp_path, tiny_vit_checkpoint, monkeypatch,
                                                                      capsys):
    tmp_path = tmp_path.resolve()  # as the current folder reads, which a relative path is taken from
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    train_script.main(train_argv(data, tiny_vit_checkpoint, run, cache, epochs=1))
    assert json.loads((run / "results.json").read_text())["checkpoint"] == str(run / "best.pt")
    check_absolute(tmp_path, run, cache, monkeypatch, capsys)


def test_a_finetuning_run_tested_from_a_relative_path_records_it_absolute(tmp_path, tiny_vit_checkpoint,
                                                                          monkeypatch, capsys):
    tmp_path = tmp_path.resolve()  # as the current folder reads, which a relative path is taken from
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    fc_script.main(["--dataset", "voc-lt", "--data_root", str(data), "--pretrain_clip_path", str(tiny_vit_checkpoint),
                    "--batch_size", "8", "--epochs", "1", "--device", "cpu", "--num_workers", "0",
                    "--cache_dir", str(cache), "--output_dir", str(run)])
    check_absolute(tmp_path, run, cache, monkeypatch, capsys)
