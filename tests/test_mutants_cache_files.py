"""The feature cache's housekeeping in the cases the other tests do not reach: a cache file another user owns (its
last use cannot be set) is still read; a file removed while the folder is listed is skipped; a damaged file is listed
as unreadable; a temporary file of a write in progress hours ago is kept; a file as --cache_dir is refused."""
import os

import pytest
import torch

import lmpt.cache_files as cache_files_module
from conftest import write_lmpt_dataset
from lmpt.cache_files import cache_files, stale_temp_files
from lmpt.data import load_dataset
from test_feature_cache_files import DAY, age, encode, run_tool

KEY = "0123456789abcdef" * 2  # a cache file's key: 32 hexadecimal digits


@pytest.fixture()
def data(tmp_path):
    write_lmpt_dataset(tmp_path / "data", n_train=4, n_test=3)
    return load_dataset("voc-lt", tmp_path / "data")


def test_a_cache_file_whose_last_use_cannot_be_set_is_still_read(tmp_path, data, tiny_vit_checkpoint, monkeypatch):
    cache = tmp_path / "cache"
    written = encode(tiny_vit_checkpoint, data, cache)
    features = torch.load(written.path, weights_only=True)["features"]  # [N, 1, E], as written
    age(written.path, 3)
    before = written.path.stat().st_mtime

    def refuse(path, *args, **kwargs):  # another user's file: os.utime may not change it (tests run as root)
        raise PermissionError(1, "Operation not permitted", str(path))
    monkeypatch.setattr(cache_files_module.os, "utime", refuse)
    again = encode(tiny_vit_checkpoint, data, cache)
    assert again.cached is not None
    assert torch.equal(again.result(None)[0], features)  # read from the cache: no encoder needed
    assert written.path.stat().st_mtime == before  # left as it was


def test_a_cache_file_removed_while_the_folder_is_listed_is_skipped(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    kept, gone = cache / f"{KEY}.pt", cache / f"{KEY[::-1]}.pt"
    for path in (kept, gone):
        torch.save({"about": {"what": "encoding test images"}}, path)
    listed = os.scandir

    def scandir_then_remove(path="."):  # a prune beside this one removes a file between readdir and stat
        entries = list(listed(path))
        gone.unlink()
        return iter(entries)
    monkeypatch.setattr(cache_files_module.os, "scandir", scandir_then_remove)
    assert [f.path for f in cache_files(cache)] == [kept]


def test_a_damaged_cache_file_is_listed_as_unreadable(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    damaged = cache / f"{KEY}.pt"
    damaged.write_bytes(b"garbage")  # a truncated or foreign file under a cache file's name
    [entry] = cache_files(cache)
    assert (entry.path, entry.about) == (damaged, {"unreadable": True})
    listing = run_tool(capsys, "--cache_dir", str(cache))  # exit 0
    assert f"{cache}: 1 cache file(s)" in listing
    assert f"{damaged.name}" in listing and "unreadable (a run that needs it rebuilds it)" in listing


def test_a_temporary_file_written_hours_ago_is_kept(tmp_path, data, tiny_vit_checkpoint):
    cache = tmp_path / "cache"
    cache.mkdir()
    killed, live = cache / f".{KEY}.pt.x1y2.tmp", cache / f".{KEY}.pt.z3w4.tmp"
    for path, days in ((killed, 1.5), (live, 0.5)):  # 36 hours: a killed write's; 12 hours: maybe a slow one's
        path.write_bytes(b"partial")
        age(path, days)
    assert stale_temp_files(cache) == [killed]
    assert sorted(stale_temp_files(cache, age=0.25 * DAY)) == sorted([killed, live])
    encode(tiny_vit_checkpoint, data, cache)  # a cache write removes the killed one only
    assert not killed.exists() and live.exists()


def test_a_file_as_cache_dir_is_refused(tmp_path, capsys):
    file = tmp_path / "cache.txt"
    file.write_text("not a folder")
    with pytest.raises(SystemExit) as refused:
        run_tool(capsys, "--cache_dir", str(file))
    assert refused.value.code == 2
    assert f"--cache_dir {file} is not a folder" in capsys.readouterr().err
    assert file.read_text() == "not a folder"
