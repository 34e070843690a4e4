"""Under a locale whose encoding lacks μ, λ, Δ or − (Latin-1, on older clusters), the scripts and tools print
them as \\u escapes, as Python's standard error does, rather than stop with UnicodeEncodeError before work."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, write_lmpt_dataset

LATIN1 = {**os.environ, "PYTHONIOENCODING": "latin-1"}  # a Latin-1 standard output, as LANG=en_US.ISO-8859-1 gives


def run(*argv):
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=LATIN1, capture_output=True,
                          encoding="latin-1")


@pytest.mark.parametrize("script,shown", [("lmpt/train.py", r"\u0394 of the embedding loss"),
                                          ("tools/compare_runs.py", r"\u2212")])
def test_help_in_a_latin1_locale(script, shown):
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert shown in done.stdout


def test_db_loss_training_in_a_latin1_locale(tmp_path, tiny_vit_checkpoint):
    """The DB loss's settings line (μ, λ) printed before training, which stopped fc.py and lmpt/train.py."""
    write_lmpt_dataset(tmp_path / "data")
    done = run("finetune_clip/fc.py", "--dataset", "voc-lt", "--nb_classes", "4", "--data_root", tmp_path / "data",
               "--pretrain_clip_path", tiny_vit_checkpoint, "--epochs", "1", "--batch_size", "8", "--device", "cpu",
               "--num_workers", "0", "--loss_function", "dbl", "--output_dir", tmp_path / "run", "--cache_dir",
               tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert r"\u03bc" in done.stdout and (tmp_path / "run" / "results.json").exists()
