"""A training script that SIGTERM stops ends with status 143 (128 + 15), Ctrl-C (SIGINT) with 130, each after the
message saying how to resume: a scheduler's pre-emption is told apart from a person's Ctrl-C."""
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, write_lmpt_dataset
from test_reliability import train_argv


def stopped_by(signum, script, argv, run, tmp_path):
    """Run ``script`` with ``argv`` in a process of its own, send it ``signum`` once its first epoch is saved
    (``run``/last.pt) and return its exit status and stderr."""
    err_file = tmp_path / "stderr.txt"
    with open(tmp_path / "stdout.txt", "w") as out, open(err_file, "w") as err:
        process = subprocess.Popen([sys.executable, str(ROOT / script), *argv], cwd=ROOT, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 240
            while not (run / "last.pt").exists():
                assert process.poll() is None, err_file.read_text()
                assert time.monotonic() < deadline, "no epoch saved in 240 s"
                time.sleep(0.05)
            process.send_signal(signum)
            status = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return status, err_file.read_text()


def fc_argv(data, checkpoint, out, cache, epochs):
    return ["--dataset", "voc-lt", "--data_root", str(data), "--pretrain_clip_path", str(checkpoint),
            "--batch_size", "8", "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
            "--cache_dir", str(cache), "--output_dir", str(out)]


@pytest.mark.parametrize("script", ["lmpt/train.py", "finetune_clip/fc.py"])
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_ends_a_training_script_with_143_and_ctrl_c_with_130(tmp_path, tiny_vit_checkpoint, script,
                                                                     signum, status):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    argv_of = train_argv if script == "lmpt/train.py" else fc_argv
    argv = argv_of(data, tiny_vit_checkpoint, run, cache, epochs=100_000)  # still training when the signal comes
    code, err = stopped_by(signum, script, argv, run, tmp_path)
    assert code == status, err
    assert f"interrupted. The last completed epoch is saved; continue with --resume {run}" in err
    assert not (run / "results.json").exists()
