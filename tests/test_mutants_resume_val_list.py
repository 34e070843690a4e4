"""Resuming with another --data_root (lmpt/cli.py reroot_val_list, restore_run_args), the cases the other tests
reach only behind another guard: a --val_list naming the run's own file is accepted though the new folder holds
the list too; the same folder through a symbolic link moves nothing; a list outside the run's data folder stays
where it is though the new folder holds a file at the same last parts of its path."""
import json
import shutil

from lmpt import train as train_script
from test_val_list_dataset_folder import train_argv, write_data_with_val

NOTE = "[resume] note: the run's --val_list"


def resume(run, cache, root, epochs, *extra):
    """Resume ``run`` for one more epoch with --data_root ``root`` -> its args.json."""
    train_script.main(["--resume", str(run), "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
                       "--cache_dir", str(cache), "--data_root", str(root), *extra])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == epochs
    return json.loads((run / "args.json").read_text())


def test_the_runs_own_val_list_named_on_a_resume_is_read_though_the_new_folder_holds_the_list(
        tmp_path, tiny_vit_checkpoint, capsys):
    old, new, cache, run = tmp_path / "old", tmp_path / "new", tmp_path / "cache", tmp_path / "run"
    write_data_with_val(old)
    own = str(old / "voc" / "voc_lt_val.txt")
    train_script.main(train_argv(old, tiny_vit_checkpoint, run, cache, "--val_list", own))
    shutil.copytree(old, new)  # the new folder holds the list too, at the same place
    capsys.readouterr()
    saved = resume(run, cache, new, 2, "--val_list", own)  # the file the run read, named by its path: accepted
    err = capsys.readouterr().err
    assert "differs from the run's own" not in err
    assert NOTE not in err  # no note of reading the new folder's list: the run's own, named, is read
    assert (saved["val_list"], saved["data_root"]) == (own, str(new))
    assert json.loads((run / "results.json").read_text())["selection_split"] == "val"


def test_the_same_data_root_through_a_symbolic_link_keeps_the_val_list_without_a_note(tmp_path, tiny_vit_checkpoint,
                                                                                        capsys):
    old, cache, run = tmp_path / "old", tmp_path / "cache", tmp_path / "run"
    write_data_with_val(old)
    train_script.main(train_argv(old, tiny_vit_checkpoint, run, cache, "--val_list", "voc_lt_val.txt"))
    own = str(old / "voc" / "voc_lt_val.txt")
    assert json.loads((run / "args.json").read_text())["val_list"] == own
    link = tmp_path / "link"
    link.symlink_to(old)
    capsys.readouterr()
    saved = resume(run, cache, link, 2)  # args.json's data_root is `old`, the list is under it, and so under link
    assert NOTE not in capsys.readouterr().err
    assert saved["val_list"] == own


def test_a_val_list_outside_the_data_root_stays_where_it_is_when_the_data_moves(tmp_path, tiny_vit_checkpoint,
                                                                                capsys):
    old, new, cache, run = tmp_path / "old", tmp_path / "new", tmp_path / "cache", tmp_path / "run"
    base = write_data_with_val(old)
    lists = tmp_path / "lists"
    lists.mkdir()
    own = lists / "voc_lt_val.txt"  # outside the data folder; its lines name images under voc/
    own.write_text((base / "voc_lt_val.txt").read_text())
    train_script.main(train_argv(old, tiny_vit_checkpoint, run, cache, "--val_list", str(own)))
    assert json.loads((run / "args.json").read_text())["val_list"] == str(own)
    shutil.copytree(old, new)
    (new / "lists").mkdir()  # a copy at the list's last two parts in the new folder: not the run's list
    (new / "lists" / "voc_lt_val.txt").write_text(own.read_text())
    capsys.readouterr()
    saved = resume(run, cache, new, 2)
    assert NOTE not in capsys.readouterr().err
    assert (saved["val_list"], saved["data_root"]) == (str(own), str(new))
