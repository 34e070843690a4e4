"""Kills the mutants a mutation review of the shared-folder fixes left alive: a folder's descriptor forgotten
once let go (later forks would close a stranger's file), the tools' locks, zero-shot's check of training files
after its claim, the checkpoint's version taken before it is read, a missing checkpoint named as such, facts kept
in the process where the side file cannot be written, mean ± std of missing or NaN metrics, the singular note of
a row without a seed, and a seed that is not an integer."""
import json
import os
import sys

import pytest
import torch

from conftest import ROOT
from lmpt import checkpoint, evaluation, fileid
from lmpt import test as test_script
from lmpt.locks import folder_locked
from lmpt.report import mean_std
from test_compare_runs_over_seeds import ARGS, run, seed_table
from test_locks import holder, run_beside

sys.path.insert(0, str(ROOT / "tools"))
import compare_runs  # noqa: E402
import make_synthetic  # noqa: E402
import pretrain_tiny_clip  # noqa: E402


class Stop(Exception):
    """Raised by a stand-in for long work, once the lock was taken."""


def test_a_fork_after_a_folder_was_let_go_keeps_every_file_it_opened(tmp_path):
    with folder_locked(tmp_path / "shared"):
        pass
    with open(tmp_path / "mine.txt", "w") as mine:  # may get the number the folder's descriptor had
        pid = os.fork()
        if pid == 0:
            try:
                os.fstat(mine.fileno())
                os._exit(0)
            except OSError:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("tool", ["make_synthetic", "pretrain_tiny_clip"])
def test_the_tools_wait_for_another_process_in_their_folder(tmp_path, monkeypatch, capsys, tool):
    def stand_in(*args, **kwargs):
        raise Stop
    if tool == "make_synthetic":
        folder, argv, module = tmp_path / "synth", ["--data_root", str(tmp_path), "--force"], make_synthetic
        monkeypatch.setattr(make_synthetic, "generate_benchmark", stand_in)
        line = f"[synthetic] waiting for another process generating {folder}"
    else:
        folder, argv, module = tmp_path / "pre", ["--out", str(tmp_path / "pre" / "x.pt")], pretrain_tiny_clip
        monkeypatch.setattr(pretrain_tiny_clip, "pretrain_tiny_clip", stand_in)
        line = f"[pretrain] waiting for another process pretraining a CLIP in {folder}"

    def work():
        try:
            module.main(argv)
        except Stop:
            return "done"
    waited, result = run_beside(holder(folder), work)
    assert waited and result == "done" and line in capsys.readouterr().out


def test_zero_shot_looks_for_training_files_once_it_holds_the_folder(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    claim = checkpoint.claim_run_dir

    def training_started_first(folder):  # a training run wrote last.pt and let go just before this claim
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "last.pt").write_bytes(b"a run's")
        claim(folder)
    monkeypatch.setattr(checkpoint, "claim_run_dir", training_started_first)
    try:
        with pytest.raises(FileExistsError, match="holds a training run .last.pt."):
            checkpoint.check_evaluation_dir(run_dir)
    finally:
        checkpoint.release_run_dir(run_dir)


def test_a_checkpoint_replaced_while_it_is_read_is_told(finished_coop_run, tmp_path, monkeypatch):
    import shutil
    run_dir, cache = finished_coop_run
    mine = shutil.copytree(run_dir, tmp_path / "run")
    load = evaluation.load_checkpoint

    def replaced_while_read(path, **kwargs):
        state = load(path, **kwargs)
        shutil.copyfile(path, tmp_path / "new.pt")
        os.replace(tmp_path / "new.pt", path)
        return state
    monkeypatch.setattr(evaluation, "load_checkpoint", replaced_while_read)
    with pytest.raises(ValueError, match="was replaced or removed while it was evaluated"):
        test_script.main(["--checkpoint", str(mine), "--device", "cpu", "--num_workers", "0", "--cache_dir",
                          str(cache)])
    assert not (mine / "test_results.json").exists()


def test_a_missing_checkpoint_is_named_as_such(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no checkpoint here; expected a run folder"):
        test_script.main(["--checkpoint", str(tmp_path / "nothing"), "--device", "cpu"])


def test_facts_stay_known_in_the_process_where_the_side_file_cannot_be_written(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, path)

    def read_only(*args):
        raise PermissionError("read-only folder")
    monkeypatch.setattr(fileid, "save_text", read_only)
    digest = fileid.file_fingerprint(path)
    fileid.remember_facts(path, image_resolution=224)
    assert fileid.known_facts(path) == {"sha256": digest, "image_resolution": 224}
    assert not (tmp_path / ".model.pt.lmpt.json").exists()


def test_the_mean_of_a_missing_or_nan_metric_is_none():
    assert mean_std([30.0, None]) == (None, None) and mean_std([None, 30.0]) == (None, None)
    assert mean_std([30.0, float("nan")]) == (None, None) and mean_std([]) == (None, None)
    assert mean_std([30.0]) == (30.0, 0.0)


def test_one_row_without_a_seed_is_said_in_the_singular_and_a_text_seed_is_no_seed(tmp_path, capsys):
    paths = [run(tmp_path, "x_seed0", 0, 30.0), run(tmp_path, "x_seed1", "1", 32.0)]
    compare_runs.main([*paths, "--over_seeds"])
    out = capsys.readouterr().out
    assert "Row 2: no seed recorded (no args.json of its run, or no seed in it); a group of its own." in out
    assert [(r[0], r[1], r[2]) for r in seed_table(out)] == [("x_seed0", "1", "0"), ("x_seed1", "2", "?")]
    assert json.loads((tmp_path / "x_seed1" / "args.json").read_text())["seed"] == "1" and ARGS["seed"] == 0
