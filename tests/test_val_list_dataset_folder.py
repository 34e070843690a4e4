"""--val_list named as the other lists are, relative to the dataset folder (``--val_list voc_lt_val.txt``): a relative
path that names no file in the current folder is read from the dataset folder, said in one line; the run records
the absolute path, and a --resume looks its --val_list up the same way before comparing it with the run's own."""
import json
import shutil

import pytest

from conftest import write_lmpt_dataset
from finetune_clip import fc as fc_script
from lmpt import train as train_script

NOTE = "[data] note: --val_list voc_lt_val.txt is not in the current folder; using {}, in the dataset folder\n"


def write_data_with_val(root):
    """A tiny VOC-LT folder with voc_lt_val.txt beside the other lists (its own images, copies of the test ones)."""
    base = write_lmpt_dataset(root)
    for image in (base / "images").glob("test_*.jpg"):
        shutil.copy(image, image.with_name(image.name.replace("test_", "val_")))
    (base / "voc_lt_val.txt").write_text((base / "voc_lt_test.txt").read_text().replace("/test_", "/val_"))
    return base


def train_argv(data_root, checkpoint, out, cache, *extra):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--batch_size", "8", "--epochs", "1", "--device", "cpu", "--num_workers", "0", "--n_ctx", "4",
            "--cache_dir", str(cache), "--output_dir", str(out), "--optimizer", "adam", "--lr", "0.01", *extra]


@pytest.mark.parametrize("script", [train_script, fc_script], ids=["lmpt/train.py", "finetune_clip/fc.py"])
def test_a_val_list_named_relative_to_the_dataset_folder_is_found_there(tmp_path, monkeypatch, capsys, script):
    base = write_data_with_val(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    common = ["--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run")]
    args = script.parse_args(common + ["--val_list", "voc_lt_val.txt"])
    assert args.val_list == base / "voc_lt_val.txt" and args.val_list.is_absolute()
    assert NOTE.format(base / "voc_lt_val.txt") in capsys.readouterr().out
    (tmp_path / "elsewhere" / "voc_lt_val.txt").write_text("")  # a file in the current folder wins, unsaid
    assert script.parse_args(common + ["--val_list", "voc_lt_val.txt"]).val_list == \
        tmp_path / "elsewhere" / "voc_lt_val.txt"
    assert "--val_list" not in capsys.readouterr().out
    # found nowhere: named from the current folder, as before (load_dataset refuses it, naming the dataset folder's)
    assert script.parse_args(common + ["--val_list", "other_val.txt"]).val_list == tmp_path / "elsewhere" / \
        "other_val.txt"
    assert "--val_list" not in capsys.readouterr().out


def test_a_run_with_a_dataset_folder_val_list_records_it_and_resumes_with_it(tmp_path, tiny_vit_checkpoint,
                                                                            monkeypatch, capsys):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    base = write_data_with_val(data)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    train_script.main(train_argv(data, tiny_vit_checkpoint, run, cache, "--val_list", "voc_lt_val.txt"))
    assert NOTE.format(base / "voc_lt_val.txt") in capsys.readouterr().out
    assert json.loads((run / "args.json").read_text())["val_list"] == str(base / "voc_lt_val.txt")
    assert json.loads((run / "results.json").read_text())["selection_split"] == "val"
    # a resume names it the same way (its --data_root from args.json): the same file, accepted
    resume = ["--resume", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache)]
    train_script.main(resume + ["--epochs", "2", "--val_list", "voc_lt_val.txt"])
    assert NOTE.format(base / "voc_lt_val.txt") in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text())["checkpoint_epoch"] in (1, 2)
    assert json.loads((run / "args.json").read_text())["val_list"] == str(base / "voc_lt_val.txt")
    # from a folder that has a voc_lt_val.txt of its own, that one is meant: another file, refused
    (tmp_path / "elsewhere" / "voc_lt_val.txt").write_text((base / "voc_lt_val.txt").read_text())
    with pytest.raises(SystemExit):
        train_script.main(resume + ["--epochs", "3", "--val_list", "voc_lt_val.txt"])
    err = capsys.readouterr().err
    assert f"--val_list {tmp_path / 'elsewhere' / 'voc_lt_val.txt'} differs from the run's own " \
           f"{base / 'voc_lt_val.txt'}" in err
