"""lmpt/provenance.py: the reports of tools/benchmark_speed.py and tools/demo.py name the commit they measured
(and whether tracked files were modified) and the processor."""
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT
from lmpt import data, provenance

sys.path.insert(0, str(ROOT / "tools"))
import demo  # noqa: E402

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@needs_git
def test_the_commit_and_modified_tracked_files_are_recorded(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    assert provenance.code_version(repo) == {"commit": git(repo, "rev-parse", "HEAD"), "modified": False}
    (repo / "new.txt").write_text("untracked files do not count\n")
    assert provenance.code_version(repo)["modified"] is False
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.code_version(repo) == {"commit": git(repo, "rev-parse", "HEAD"), "modified": True}


def test_a_copy_without_git_records_no_commit(tmp_path):
    assert provenance.code_version(tmp_path) == {"commit": None, "modified": None}


def test_the_processor_is_named_with_its_cores(monkeypatch):
    monkeypatch.setattr(provenance.os, "cpu_count", lambda: 3)
    name = provenance.cpu_name("torch threads 1")
    assert name.startswith("CPU") and name.endswith("(3 cores, torch threads 1)")
    assert provenance.cpu_name().endswith("(3 cores)")


def test_the_demo_summary_names_its_commit_machine_and_torch(tmp_path, monkeypatch):
    row = {"mAP": 1.0, "head_mAP": 1.0, "medium_mAP": 1.0, "tail_mAP": 1.0, "CF1": 1.0, "OF1": 1.0,
           "per_class_AP": [1.0], "seconds": 1.0}
    monkeypatch.setattr(demo, "ensure_benchmark", lambda root: None)
    monkeypatch.setattr(demo, "ensure_tiny_clip", lambda **kw: None)
    monkeypatch.setattr(demo, "run_method", lambda *a: dict(row))
    monkeypatch.setattr(demo, "plot", lambda *a: None)
    monkeypatch.setattr(data, "load_dataset", lambda *a: SimpleNamespace(class_names=["a"], train_freq=[3]))
    demo.main(["--out_dir", str(tmp_path), "--methods", "CoOp"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["code"] == provenance.code_version() and summary["machine"] == provenance.cpu_name()
    assert summary["torch"] == torch.__version__ and summary["rows"]["CoOp"]["mAP"] == 1.0
    assert summary["device"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")


def test_the_demo_records_the_device_its_flags_chose(monkeypatch):
    named = []
    monkeypatch.setattr(demo, "select_device", lambda name: named.append(name) or torch.device("cpu"))
    assert demo.device_used([]) == "cpu" and demo.device_used(["--device", "cpu", "--epochs", "2"]) == "cpu"
    assert demo.device_used(["--device=cuda:1"]) == "cpu"
    assert named == [None, "cpu", "cuda:1"]
