"""One process at a time where two jobs started at once would work over each other (found by a concurrency
review): ``locks.folder_locked`` makes a second process wait, says so once, and lets it in when the first is done;
two first-time generations of the synthetic benchmark, or pretrainings of the tiny CLIP, do not undo each
other: the second waits, then uses what the first made."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from lmpt import pretrain, synthetic
from lmpt.locks import folder_locked

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=40, n_test=30)


def holder(folder, then=""):
    """Another process that holds ``folder`` and, once told (a line on its stdin), runs ``then`` and lets go."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from lmpt.locks import folder_locked
        with folder_locked({str(folder)!r}):
            print("held", flush=True)
            sys.stdin.readline()
            {then or "pass"}
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def run_beside(process, work):
    """``work()`` in a thread while ``process`` holds its folder: (whether it was still waiting after a while,
    its result once the process has let go)."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", work()))
    thread.start()
    thread.join(1.0)
    waited = thread.is_alive()
    process.communicate("go\n", timeout=120)
    thread.join(120)
    assert not thread.is_alive() and process.returncode == 0
    return waited, out.get("result")


def test_a_second_process_waits_for_the_folder_and_says_so_once(tmp_path, capsys):
    folder = tmp_path / "shared"
    process = holder(folder)

    def enter():
        with folder_locked(folder, "[x] waiting"):
            return "in"
    waited, result = run_beside(process, enter)
    assert waited and result == "in"
    assert capsys.readouterr().out == "[x] waiting\n"


def test_a_free_folder_is_entered_at_once_silently_and_made_if_missing(tmp_path, capsys):
    folder = tmp_path / "new" / "deeper"
    with folder_locked(folder, "[x] waiting"):
        assert folder.is_dir()
    assert capsys.readouterr().out == ""


def test_a_benchmark_generated_meanwhile_is_used_not_generated_again(tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "synth"
    process = holder(out_dir, then=f"from lmpt import synthetic; synthetic.generate_benchmark({str(out_dir)!r}, "
                                   f"seed=0, n_train=40, n_test=30)")
    monkeypatch.setattr(synthetic, "generate_benchmark", lambda *a, **k: pytest.fail("generated a second time"))
    waited, result = run_beside(process, lambda: synthetic.ensure_benchmark(tmp_path, seed=0, **SMALL))
    assert waited and result == out_dir and synthetic.benchmark_is_complete(out_dir, 0, **SMALL)
    assert f"[synthetic] waiting for another process generating {out_dir}" in capsys.readouterr().out


FINISHED_CLIP = """
from lmpt import pretrain, synthetic
from lmpt.checkpoint import save_json
path = pretrain.pretrained_folder({folder!r}) / pretrain.TINY_CHECKPOINT
path.write_bytes(b"weights")  # what pretraining leaves: the file, then its metadata
save_json(pretrain.metadata_path(path), {{"settings": pretrain._normalised(pretrain.DEFAULT_SETTINGS),
          "generator_version": synthetic.GENERATOR_VERSION, "architecture": pretrain.architecture_record(),
          "sha256": pretrain.sha256_of_file(path)}})
"""


def test_a_tiny_clip_pretrained_meanwhile_is_used_not_pretrained_again(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "pretrained"
    process = holder(folder, then=f"exec({FINISHED_CLIP.format(folder=str(folder))!r})")
    monkeypatch.setattr(pretrain, "pretrain_tiny_clip", lambda *a, **k: pytest.fail("pretrained a second time"))
    waited, result = run_beside(process, lambda: pretrain.ensure_tiny_clip(folder))
    assert waited and result == folder / pretrain.TINY_CHECKPOINT and result.read_bytes() == b"weights"
    assert capsys.readouterr().out == f"[pretrain] waiting for another process pretraining a CLIP in {folder}\n"


def folder_busy(folder):
    """Whether another process finds ``folder`` held (``folder_locked``'s lock)."""
    code = textwrap.dedent(f"""
        import fcntl, os
        fd = os.open({str(folder)!r}, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free")
        except BlockingIOError:
            print("busy")
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "busy"


def test_a_worker_forked_while_the_folder_is_held_does_not_keep_it_after_its_owner_is_killed(tmp_path):
    """A pool's worker (forked) outlives its owner killed with SIGKILL: the folder is free all the same."""
    folder = tmp_path / "pretrained"
    code = textwrap.dedent(f"""
        import multiprocessing, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from lmpt.locks import folder_locked
        with folder_locked({str(folder)!r}):
            worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
            worker.start()
            print(worker.pid, flush=True)
            time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(owner.stdout.readline())
    try:
        assert folder_busy(folder)
        owner.kill()
        owner.wait()
        os.kill(worker, 0)  # still running
        assert not folder_busy(folder)
    finally:
        owner.kill()
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_an_interrupt_while_waiting_leaves_nothing_open_or_held(tmp_path):
    folder = tmp_path / "shared"
    process = holder(folder)
    fds = len(os.listdir("/proc/self/fd"))

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    before = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            with folder_locked(folder):
                pytest.fail("entered a held folder")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    assert len(os.listdir("/proc/self/fd")) == fds
    process.communicate("go\n", timeout=60)
    with folder_locked(folder):  # free once its holder let go: this process holds nothing that would block it
        assert folder_busy(folder)
    assert not folder_busy(folder)
