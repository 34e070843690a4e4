"""Storage: a run folder belongs to one training process at a time, a write that fails names its file, a
feature cache that cannot be written does not end the run, and an image rewritten under the same size and
mtime is not the cached one."""
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import clip
from conftest import write_lmpt_dataset
from lmpt import features as features_module
from lmpt.checkpoint import LOCK_FILE, check_run_dir, claim_run_dir, release_run_dir
from lmpt.cli import run_resumable
from lmpt.data import load_dataset
from lmpt.features import FeatureJob

REPO = Path(__file__).resolve().parents[1]


def run_args(run_dir, **flags):
    return SimpleNamespace(**{"output_dir": run_dir, "resume": False, "overwrite": False, **flags})


def hold_lock(run_dir):
    """Another process that claims ``run_dir`` and waits: (the process, its pid)."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from lmpt.checkpoint import claim_run_dir
        claim_run_dir({str(run_dir)!r})
        print("claimed", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "claimed"
    return holder


def test_a_run_folder_another_process_trains_in_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        with pytest.raises(FileExistsError, match=f"{run_dir}: another process .pid {holder.pid} on .*. is training "
                                                  f"or evaluating in this folder now"):
            check_run_dir(run_args(run_dir))
        with pytest.raises(FileExistsError, match="another process"):  # --resume and --overwrite as well
            check_run_dir(run_args(run_dir, overwrite=True))
    finally:
        holder.kill()
        holder.wait()
    check_run_dir(run_args(run_dir))  # its lock went with it
    release_run_dir(run_dir)


def refused_claim(run_dir):
    """Whether another process's claim of ``run_dir`` is refused (as a training run starting there would be)."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from lmpt.checkpoint import claim_run_dir
        try:
            claim_run_dir({str(run_dir)!r})
        except FileExistsError as error:
            print(error)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return "another process" in out and "is training or evaluating in this folder now" in out


def test_zero_shot_holds_its_folder_from_its_check_until_it_lets_go(tmp_path):
    """Zero-shot is refused where a training run is starting, and a training run (or another zero-shot) is refused
    where zero-shot is evaluating, whichever starts first; a folder it made and wrote nothing to goes with it."""
    from lmpt.checkpoint import check_evaluation_dir
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)  # a training run, still encoding: no training file yet
    try:
        with pytest.raises(FileExistsError, match=f"{run_dir}: another process .pid {holder.pid} on .*. is training"):
            check_evaluation_dir(run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert check_evaluation_dir(run_dir) == run_dir  # its lock went with it
    try:
        assert refused_claim(run_dir)  # the evaluation holds the folder now
    finally:
        release_run_dir(run_dir)
    assert not refused_claim(run_dir)
    assert check_evaluation_dir(tmp_path / "new") == tmp_path / "new"
    release_run_dir(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_zero_shot_refuses_a_finished_training_run_and_lets_its_folder_go(tmp_path, tiny_data_root,
                                                                          tiny_vit_checkpoint):
    from zero_shot_clip import test as zero_shot_script
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"a run's")
    with pytest.raises(FileExistsError, match="holds a training run .last.pt."):
        zero_shot_script.main(["--data_root", str(tiny_data_root), "--pretrain_clip_path", str(tiny_vit_checkpoint),
                               "--device", "cpu", "--output_dir", str(run_dir)])
    assert not refused_claim(run_dir)


def test_a_claim_removes_the_temporary_files_of_killed_writes(tmp_path):
    """Of every run file but test_results.json (lmpt/test.py writes it without the lock), whose are removed once a
    day old; other files stay."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    names = [".args.json.a1.tmp", ".results.json.b2.tmp", ".last.pt.c3.tmp", ".metrics.jsonl.d4.tmp",
             ".test_results.json.e5.tmp", ".test_results.json.f6.tmp", ".notes.txt.g7.tmp", "mine.txt"]
    for name in names:
        (run_dir / name).write_text("x")
    day_old = (run_dir / ".test_results.json.f6.tmp").stat().st_mtime - 25 * 3600
    os.utime(run_dir / ".test_results.json.f6.tmp", (day_old, day_old))
    claim_run_dir(run_dir)
    release_run_dir(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([LOCK_FILE, ".test_results.json.e5.tmp",
                                                               ".notes.txt.g7.tmp", "mine.txt"])


def test_a_run_folder_is_let_go_and_removed_when_the_run_wrote_nothing(tmp_path):
    run_dir = tmp_path / "new"

    def refused(args):
        check_run_dir(args)
        assert (run_dir / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on ")
        raise ValueError("a bad list")
    with pytest.raises(ValueError):
        run_resumable(refused, run_args(run_dir), "train")
    assert not run_dir.exists()  # made for the lock, removed with it

    def wrote(args):
        check_run_dir(args)
        (run_dir / "args.json").write_text("{}")
    run_resumable(wrote, run_args(run_dir), "train")
    holder = hold_lock(run_dir)  # let go: another process claims it
    holder.kill()
    holder.wait()
    assert sorted(os.listdir(run_dir)) == [LOCK_FILE, "args.json"]


def test_a_forked_loader_worker_does_not_keep_the_folder_claimed(tmp_path):
    """DataLoader workers are forked after the claim: a lock they inherited (an flock would be) would outlive
    the run that let go of the folder, or was killed, for as long as they take to exit."""
    import multiprocessing
    import time
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # kept when let go, with its .lock
    claim_run_dir(run_dir)
    worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    worker.start()
    try:
        release_run_dir(run_dir)
        holder = hold_lock(run_dir)  # claimed by another process while the worker still runs
        holder.kill()
        holder.wait()
    finally:
        worker.kill()
        worker.join()


def test_an_error_while_letting_go_does_not_hide_the_runs_own(tmp_path):
    run_dir = tmp_path / "gone"

    def removed_then_failed(args):
        check_run_dir(args)
        (run_dir / LOCK_FILE).unlink()
        run_dir.rmdir()
        raise ValueError("the run's own error")
    with pytest.raises(ValueError, match="the run's own error"):
        run_resumable(removed_then_failed, run_args(run_dir), "train")


def test_a_lock_file_this_user_cannot_write_leaves_the_folder_unclaimed(tmp_path, monkeypatch):
    """Another user's .lock in a shared folder (as root, whom permissions do not stop: its open refused)."""
    import lmpt.checkpoint as checkpoint_module
    run_dir = tmp_path / "shared"
    run_dir.mkdir()
    os_open = os.open

    def refused(path, *args, **kwargs):
        if Path(path).name == LOCK_FILE:
            raise PermissionError(13, "Permission denied", str(path))
        return os_open(path, *args, **kwargs)
    monkeypatch.setattr(checkpoint_module.os, "open", refused)
    monkeypatch.setattr(checkpoint_module, "open", refused, raising=False)  # open(), had it used that
    assert check_run_dir(run_args(run_dir)) == run_dir  # as before there were locks
    monkeypatch.undo()
    release_run_dir(run_dir)  # nothing was claimed: nothing to let go
    holder = hold_lock(run_dir)
    holder.kill()
    holder.wait()


def test_an_oserror_after_an_epoch_was_saved_says_how_to_resume(tmp_path, capsys):
    def disk_full(args):
        args.run_started = True
        (tmp_path / "last.pt").write_bytes(b"")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        run_resumable(disk_full, run_args(tmp_path), "train")
    assert f"continue with --resume {tmp_path}" in capsys.readouterr().err


def test_a_torch_save_that_cannot_write_names_its_file(tmp_path):
    """A file size limit (as a full disk) makes torch.save fail in its archive writer with a RuntimeError that
    names no file; save_torch says which, as an OSError (a user error: one line), and leaves nothing behind."""
    path = tmp_path / "last.pt"
    code = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        from lmpt.checkpoint import save_torch
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            save_torch({str(path)!r}, {{"model": torch.zeros(1 << 16)}})
        except OSError as error:
            print("OSError:", error)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"OSError: {path}: could not be written" in out.stdout, out.stdout + out.stderr
    assert os.listdir(tmp_path) == []


@pytest.fixture()
def data(tmp_path):
    write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=6)
    return load_dataset("voc-lt", tmp_path / "data")


def feature_job(checkpoint, data, cache):
    resolution = clip.load(str(checkpoint), device="cpu")[0].visual.input_resolution
    return FeatureJob(checkpoint, data.root, data.test_paths, resolution, "lmpt", "cpu", batch_size=4,
                      num_workers=0, cache_dir=cache)


def test_an_image_rewritten_under_the_same_size_and_mtime_is_not_the_cached_one(tmp_path, data, tiny_vit_checkpoint):
    image = data.root / data.test_paths[1]
    before = feature_job(tiny_vit_checkpoint, data, tmp_path / "cache").key
    stat = image.stat()
    raw = bytearray(image.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    image.write_bytes(bytes(raw))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # touch -r: the size and mtime as they were
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert feature_job(tiny_vit_checkpoint, data, tmp_path / "cache").key != before


def test_a_feature_cache_that_cannot_be_written_does_not_end_the_run(tmp_path, data, tiny_vit_checkpoint, capsys,
                                                                     monkeypatch):
    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    good, _ = feature_job(tiny_vit_checkpoint, data, tmp_path / "good").result(model.visual)

    def disk_full(path, obj):
        raise OSError(28, f"{path}: could not be written: No space left on device")
    monkeypatch.setattr(features_module, "save_torch", disk_full)
    features, errors = feature_job(tiny_vit_checkpoint, data, tmp_path / "cache").result(model.visual)
    assert torch.equal(features, good) and errors == {}
    assert "could not be written: No space left on device); going on: the next run encodes these images again" \
        in capsys.readouterr().out


def test_zero_shot_writes_its_results_while_it_holds_its_folder(tmp_path, tiny_data_root, tiny_vit_checkpoint,
                                                               monkeypatch):
    from lmpt import baselines
    from zero_shot_clip import test as zero_shot_script
    run_dir, held = tmp_path / "zs", []
    write = baselines.note_replaced
    monkeypatch.setattr(baselines, "note_replaced", lambda *a: (held.append(refused_claim(run_dir)), write(*a)))
    zero_shot_script.main(["--data_root", str(tiny_data_root), "--pretrain_clip_path", str(tiny_vit_checkpoint),
                           "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
                           "--output_dir", str(run_dir)])
    assert held == [True] and (run_dir / "results.json").exists() and not refused_claim(run_dir)


def test_a_folder_removed_while_it_is_claimed_is_made_again_and_locked(tmp_path, monkeypatch):
    """A run that let go of the folder it made removes it; a claim that found it a moment before makes it again
    rather than train without the lock."""
    from lmpt import checkpoint
    run_dir, calls = tmp_path / "run", []
    real_open = os.open

    def open_after_removal(path, *args):
        calls.append(path)
        if len(calls) == 1:
            os.rmdir(run_dir)  # the other run let go of it between our mkdir and our open
            raise FileNotFoundError(path)
        return real_open(path, *args)
    monkeypatch.setattr(checkpoint.os, "open", open_after_removal)
    claim_run_dir(run_dir)
    monkeypatch.setattr(checkpoint.os, "open", real_open)
    try:
        assert len(calls) == 2 and refused_claim(run_dir)
    finally:
        release_run_dir(run_dir)


def test_zero_shot_refused_early_leaves_an_existing_empty_folder_empty(tmp_path, tiny_data_root):
    from zero_shot_clip import test as zero_shot_script
    run_dir = tmp_path / "zs"
    run_dir.mkdir()
    with pytest.raises(FileNotFoundError):
        zero_shot_script.main(["--data_root", str(tiny_data_root), "--pretrain_clip_path", str(tmp_path / "no.pt"),
                               "--device", "cpu", "--output_dir", str(run_dir)])
    assert list(run_dir.iterdir()) == []


def test_without_locks_a_claim_leaves_no_folder_behind(tmp_path, monkeypatch):
    from lmpt import checkpoint

    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, "no locks")
    monkeypatch.setattr(checkpoint.fcntl, "lockf", no_locks)
    claim_run_dir(tmp_path / "new")
    release_run_dir(tmp_path / "new")  # nothing was claimed
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    claim_run_dir(tmp_path / "old")
    assert list((tmp_path / "old").iterdir()) == []  # no .lock left in a folder that was there
