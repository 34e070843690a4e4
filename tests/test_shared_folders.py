"""Jobs that share folders at once (found by a concurrency review): lmpt/test.py does not write results for a
checkpoint that was replaced while it was evaluated, a checkpoint's side file keeps what another process wrote
there meanwhile, and a cache file removed between its lookup and its read is said as such."""
import json
import os
import shutil

import pytest
import torch

from conftest import write_lmpt_dataset
from test_user_errors import train_argv
from lmpt import evaluation, features, fileid
from lmpt import test as test_script
from lmpt import train as train_script


def test_results_of_a_checkpoint_replaced_while_it_was_evaluated_are_not_written(finished_coop_run, tmp_path,
                                                                                 monkeypatch, capsys):
    run, cache = finished_coop_run
    mine = shutil.copytree(run, tmp_path / "run")
    (mine / "test_results.json").write_text('{"mAP": 1.0}\n')  # an earlier evaluation: kept as it is
    argv = ["--checkpoint", str(mine), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache)]
    show = evaluation.format_results

    def replaced_meanwhile(*args):  # a training run with --overwrite writes a new best.pt while this evaluates
        fresh = mine / ".best.pt.new"
        shutil.copyfile(mine / "best.pt", fresh)
        os.replace(fresh, mine / "best.pt")
        return show(*args)
    monkeypatch.setattr(evaluation, "format_results", replaced_meanwhile)
    with pytest.raises(ValueError, match=f"{mine / 'best.pt'} was replaced or removed while it was evaluated .*; the "
                                         f"results "
                                         f"above are of the file as it was read and are not written to "
                                         f"{mine / 'test_results.json'}"):
        test_script.main(argv)
    assert json.loads((mine / "test_results.json").read_text()) == {"mAP": 1.0}
    assert "CP, CR, CF1, OP, OR, OF1 at thre 0.5" in capsys.readouterr().out  # printed, for the record
    monkeypatch.setattr(evaluation, "format_results", show)
    results = test_script.main(argv)  # the file unchanged while it is evaluated: written
    assert json.loads((mine / "test_results.json").read_text())["mAP"] == results["mAP"]


def test_a_side_file_keeps_the_facts_another_process_wrote_meanwhile(tmp_path):
    checkpoint = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, checkpoint)
    digest = fileid.file_fingerprint(checkpoint)  # this process knows the sha256 and wrote the side file
    side = tmp_path / ".model.pt.lmpt.json"
    saved = json.loads(side.read_text())
    side.write_text(json.dumps({**saved, "facts": {**saved["facts"], "image_resolution": 224}}))  # another process
    fileid.remember_facts(checkpoint, note="mine")
    assert json.loads(side.read_text())["facts"] == {"sha256": digest, "image_resolution": 224, "note": "mine"}
    assert fileid.known_facts(checkpoint)["image_resolution"] == 224


def test_a_cache_file_removed_before_its_read_is_said_so(tmp_path, capsys):
    assert features._load_cache(tmp_path / ("0" * 32 + ".pt"), "key") is None
    assert capsys.readouterr().out == f"[features] cache file {tmp_path / ('0' * 32 + '.pt')} was removed " \
                                      f"meanwhile; encoding again\n"


def test_an_evaluation_replaces_a_results_file_while_it_holds_its_folder(finished_coop_run, tmp_path, tiny_data_root,
                                                                         tiny_vit_checkpoint, monkeypatch):
    """lmpt/test.py and zero-shot say what they replace and write it while no other evaluation can (two at once
    on one --output: each note names the evaluation it replaced, the last one written stays)."""
    from test_locks import folder_busy

    from lmpt import checkpoint
    from zero_shot_clip import test as zero_shot_script
    run, cache = finished_coop_run
    held = []
    note = checkpoint.note_replaced_results  # both write through checkpoint.replace_results
    monkeypatch.setattr(checkpoint, "note_replaced_results",
                        lambda path, *a, **k: (held.append(folder_busy(path.parent)), note(path, *a, **k)))
    out = tmp_path / "evaluations" / "out.json"
    out.parent.mkdir()
    test_script.main(["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache),
                      "--output", str(out)])
    zero_shot_script.main(["--data_root", str(tiny_data_root), "--pretrain_clip_path", str(tiny_vit_checkpoint),
                           "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache), "--output", str(out)])
    assert held == [True, True] and not folder_busy(out.parent)
    assert json.loads(out.read_text())["method"] == "zero-shot"


def test_a_side_files_killed_writes_are_removed_once_a_day_old(tmp_path):
    checkpoint = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, checkpoint)
    old, fresh = tmp_path / "..model.pt.lmpt.json.a1.tmp", tmp_path / "..model.pt.lmpt.json.b2.tmp"
    other = tmp_path / ".model.pt.c3.tmp"  # a write of another file
    for path in (old, fresh, other):
        path.write_text("{")
    day_old = old.stat().st_mtime - 25 * 3600
    os.utime(old, (day_old, day_old))
    os.utime(other, (day_old, day_old))
    fileid.file_fingerprint(checkpoint)  # reads and writes the side file
    assert not old.exists() and fresh.exists() and other.exists()
    old.write_text("{")  # a later process that only reads the complete side file removes them too
    os.utime(old, (day_old, day_old))
    fileid._FACTS.clear()
    assert "sha256" in fileid.known_facts(checkpoint) and not old.exists() and fresh.exists()


def test_a_checkpoint_whose_mode_changed_while_it_was_evaluated_is_still_the_one_read(finished_coop_run, tmp_path,
                                                                                     monkeypatch):
    """A chmod (or a hard link a backup makes) changes no byte: the results are written."""
    run, cache = finished_coop_run
    mine = shutil.copytree(run, tmp_path / "run")
    show = evaluation.format_results

    def protected_meanwhile(*args):
        os.chmod(mine / "best.pt", 0o444)
        os.link(mine / "best.pt", tmp_path / "backup.pt")
        return show(*args)
    monkeypatch.setattr(evaluation, "format_results", protected_meanwhile)
    results = test_script.main(["--checkpoint", str(mine), "--device", "cpu", "--num_workers", "0", "--cache_dir",
                                str(cache)])
    assert json.loads((mine / "test_results.json").read_text())["mAP"] == results["mAP"]


def test_a_training_run_writes_a_new_best_pt_while_it_holds_its_folder(tmp_path, tiny_vit_checkpoint, monkeypatch):
    """An lmpt/test.py beside it checks its checkpoint and writes its results wholly before or after the training
    run removes the old results and writes the new last.pt and best.pt, never between."""
    from test_locks import folder_busy

    from lmpt import engine
    write_lmpt_dataset(tmp_path / "data")
    run, held = tmp_path / "run", []
    save = engine.save_torch
    monkeypatch.setattr(engine, "save_torch", lambda path, state: (
        held.append((path.name, folder_busy(path.parent))), save(path, state)))
    train_script.main(train_argv(tmp_path / "data", tiny_vit_checkpoint, run, tmp_path / "cache",
                                 "--training_method", "coop", epochs=1))
    assert held == [("last.pt", True), ("best.pt", True)]
