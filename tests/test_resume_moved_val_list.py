"""A run whose --val_list lies in its dataset folder resumes after its data moved to another --data_root (the same
data in another --data_root resumes): the run's own val_list is read from the same place in the new folder, said in
one line, with or without --val_list on the resume; another validation file is still refused."""
import json
import shutil

import pytest

from lmpt import train as train_script
from test_reliability import train_argv
from test_val_list_dataset_folder import write_data_with_val


def note(old_list, old_root, new_root, new_list):
    return (f"[resume] note: the run's --val_list {old_list} is in its --data_root {old_root}; reading it from the "
            f"same place in --data_root {new_root}: {new_list}")


def test_a_val_list_in_the_dataset_folder_moves_with_the_data_root(tmp_path, tiny_vit_checkpoint, monkeypatch,
                                                                   capsys):
    cache, run = tmp_path / "cache", tmp_path / "run"
    write_data_with_val(tmp_path / "data0")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    train_script.main(train_argv(tmp_path / "data0", tiny_vit_checkpoint, run, cache, "--val_list", "voc_lt_val.txt",
                                 epochs=1))
    assert json.loads((run / "args.json").read_text())["val_list"] == str(tmp_path / "data0/voc/voc_lt_val.txt")
    # the data moves three times; each resume names the new --data_root, and --val_list not at all, by the name
    # the run was given (looked up in the new dataset folder), or by its new path
    for epochs, val_list in ((2, None), (3, "voc_lt_val.txt"), (4, str(tmp_path / "data3/voc/voc_lt_val.txt"))):
        old, new = tmp_path / f"data{epochs - 2}", tmp_path / f"data{epochs - 1}"
        shutil.copytree(old, new)
        shutil.rmtree(old)  # the recorded val_list is gone
        capsys.readouterr()
        train_script.main(["--resume", str(run), "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
                           "--cache_dir", str(cache), "--data_root", str(new),
                           *(["--val_list", val_list] if val_list else [])])
        assert note(old / "voc/voc_lt_val.txt", old, new, new / "voc/voc_lt_val.txt") in \
            capsys.readouterr().err.splitlines()
        saved = json.loads((run / "args.json").read_text())
        assert (saved["val_list"], saved["data_root"]) == (str(new / "voc/voc_lt_val.txt"), str(new))
        assert len((run / "metrics.jsonl").read_text().splitlines()) == epochs
        assert json.loads((run / "results.json").read_text())["selection_split"] == "val"


def test_another_val_file_is_still_refused_after_the_data_moved(tmp_path, tiny_vit_checkpoint, capsys):
    old, new, cache, run = tmp_path / "old", tmp_path / "new", tmp_path / "cache", tmp_path / "run"
    write_data_with_val(old)
    train_script.main(train_argv(old, tiny_vit_checkpoint, run, cache, "--val_list",
                                 str(old / "voc" / "voc_lt_val.txt"), epochs=1))
    shutil.copytree(old, new)
    other = new / "voc" / "other_val.txt"  # another file in the new dataset folder: refused by its path
    other.write_text((new / "voc" / "voc_lt_val.txt").read_text())
    resume = ["--resume", str(run), "--epochs", "2", "--device", "cpu", "--num_workers", "0", "--cache_dir",
              str(cache), "--data_root", str(new)]
    with pytest.raises(SystemExit) as refused:
        train_script.main(resume + ["--val_list", str(other)])
    assert refused.value.code == 2
    assert f"--val_list {other} differs from the run's own {new / 'voc' / 'voc_lt_val.txt'}" in \
        " ".join(capsys.readouterr().err.split())
    # the same name with other lines in the new folder: the lists are compared by what they hold
    lines = (new / "voc" / "voc_lt_val.txt").read_text().splitlines()
    (new / "voc" / "voc_lt_val.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="trained on other image lists or labels"):
        train_script.main(resume)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_new_data_root_without_the_val_list_keeps_the_runs_own_and_a_symlink_is_no_move(tmp_path,
                                                                                         tiny_vit_checkpoint, capsys):
    old, new, cache, run = tmp_path / "old", tmp_path / "new", tmp_path / "cache", tmp_path / "run"
    write_data_with_val(old)
    train_script.main(train_argv(old, tiny_vit_checkpoint, run, cache, "--val_list", "voc_lt_val.txt", epochs=1))
    own = str(old / "voc" / "voc_lt_val.txt")
    shutil.copytree(old, new)
    (new / "voc" / "voc_lt_val.txt").unlink()  # the new folder lacks the list; the run's own is still there

    def resume(epochs, root, *extra):
        capsys.readouterr()
        train_script.main(["--resume", str(run), "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
                           "--cache_dir", str(cache), "--data_root", str(root), *extra])
        assert "[resume] note: the run's --val_list" not in capsys.readouterr().err
        assert json.loads((run / "args.json").read_text())["val_list"] == own

    resume(2, new)  # nothing to read instead: the run's own list
    resume(3, new, "--val_list", own)  # named by its path: the run's own, accepted
    (tmp_path / "link").symlink_to(old)
    resume(4, tmp_path / "link")  # the same folder through a link: the same file, nothing moved


def test_a_relative_cache_and_pretrained_folder_resume_from_another_folder(tmp_path, tiny_vit_checkpoint,
                                                                           monkeypatch, capsys):
    """--cache_dir and --pretrained_dir given relative are recorded absolute, as --data_root is: a --resume
    from another folder finds the run's CLIP file and reuses its feature cache (nothing encoded again, no cache
    made in the new folder)."""
    work = tmp_path / "work"
    write_data_with_val(work / "data")
    (work / "pretrained").mkdir()
    shutil.copy(tiny_vit_checkpoint, work / "pretrained" / "ViT-B-16.pt")
    monkeypatch.chdir(work)
    train_script.main(["--data_root", "data", "--pretrain_clip", "ViT16", "--pretrained_dir", "pretrained",
                       "--cache_dir", "feature_cache", "--output_dir", "run", "--epochs", "1", "--batch_size", "8",
                       "--device", "cpu", "--num_workers", "0", "--n_ctx", "4"])
    saved = json.loads((work / "run" / "args.json").read_text())
    assert (saved["pretrained_dir"], saved["cache_dir"]) == (str(work / "pretrained"), str(work / "feature_cache"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    train_script.main(["--resume", str(work / "run"), "--epochs", "2"])
    assert "encoding" not in capsys.readouterr().err  # the features came from the run's own cache
    assert not list((tmp_path / "elsewhere").iterdir())
    assert len((work / "run" / "metrics.jsonl").read_text().splitlines()) == 2
