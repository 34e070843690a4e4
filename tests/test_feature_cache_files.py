"""The feature-cache folder's housekeeping: last use, description, stale temporary files, tools/feature_cache.py."""
import os
import time

import pytest

import clip
from conftest import ROOT, write_lmpt_dataset
from lmpt.cache_files import cache_files, stale_temp_files, unused_for
from lmpt.data import load_dataset
from lmpt.features import FeatureJob

DAY = 86400


@pytest.fixture()
def data(tmp_path):
    write_lmpt_dataset(tmp_path / "data", n_train=4, n_test=3)
    return load_dataset("voc-lt", tmp_path / "data")


def encode(checkpoint, data, cache, mirrors=False):
    model, _ = clip.load(str(checkpoint), device="cpu")
    job = FeatureJob(checkpoint, data.root, data.test_paths, model.visual.input_resolution, "lmpt", "cpu",
                     batch_size=4, cache_dir=cache, desc="encoding test images", mirrors=mirrors)
    job.result(model.visual)
    return job


def age(path, days):
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def test_a_cache_file_describes_itself_and_a_run_that_reads_it_renews_its_last_use(tmp_path, data, tiny_vit_checkpoint):
    cache = tmp_path / "cache"
    written = encode(tiny_vit_checkpoint, data, cache)
    [entry] = cache_files(cache)
    assert entry.path == written.path and entry.bytes == written.path.stat().st_size
    assert entry.about == {"checkpoint": str(tiny_vit_checkpoint), "images": 3, "image_folder": str(data.root),
                           "what": "encoding test images", "preprocess": "lmpt", "resolution": 32,
                           "precision": "cpu-fp32", "views": 1}
    age(written.path, 10)
    assert [f.path for f in unused_for(cache_files(cache), 9)] == [written.path]
    again = encode(tiny_vit_checkpoint, data, cache)  # read from the cache
    assert again.cached is not None
    assert time.time() - written.path.stat().st_mtime < 60 and unused_for(cache_files(cache), 9) == []


def test_a_cache_write_removes_temporary_files_of_writes_killed_a_day_ago_and_nothing_else(tmp_path, data,
                                                                                          tiny_vit_checkpoint):
    cache = tmp_path / "cache"
    cache.mkdir()
    key = "0123456789abcdef" * 2
    killed, live = cache / f".{key}.pt.x1y2.tmp", cache / f".{key}.pt.z3w4.tmp"
    others = [cache / "notes.txt", cache / ".other.pt.ab.tmp", cache / "deadbeef.pt", cache / f".{key}.json.ab.tmp"]
    for path in [killed, live, *others]:
        path.write_bytes(b"partial")
    for path in [killed, *others]:
        age(path, 2)
    assert stale_temp_files(cache) == [killed]
    encode(tiny_vit_checkpoint, data, cache)
    assert not killed.exists() and live.exists() and all(path.exists() for path in others)


def run_tool(capsys, *argv):
    import importlib.util
    spec = importlib.util.spec_from_file_location("feature_cache_tool", ROOT / "tools" / "feature_cache.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(list(argv)) == 0
    return capsys.readouterr().out


def test_the_tool_lists_the_cache_and_removes_only_files_unused_for_the_days_given(tmp_path, data, tiny_vit_checkpoint,
                                                                                  tiny_rn_checkpoint, capsys):
    cache = tmp_path / "cache"
    old = encode(tiny_vit_checkpoint, data, cache).path
    recent = encode(tiny_rn_checkpoint, data, cache, mirrors=True).path
    killed = cache / f".{old.stem}.pt.q.tmp"
    unrelated = cache / "readme.txt"
    for path in (killed, unrelated):
        path.write_bytes(b"x")
        age(path, 40)
    age(old, 40)
    listing = run_tool(capsys, "--cache_dir", str(cache))
    assert f"{cache}: 2 cache file(s)" in listing
    lines = listing.splitlines()[1:]
    assert lines[0].split()[0] == recent.name and "test images: 3 images of" in lines[0]
    assert "tiny-rn.pt at 64 px, cpu-fp32, 2 view(s)" in lines[0] and "tiny-vit.pt at 32 px" in lines[1]
    assert "40.0 days ago" in lines[1]

    dry = run_tool(capsys, "--cache_dir", str(cache), "--unused_days", "30", "--dry_run")
    assert "would remove 1 cache file(s) unused for more than 30 days and 1 temporary file(s)" in dry
    assert old.exists() and killed.exists()

    pruned = run_tool(capsys, "--cache_dir", str(cache), "--unused_days", "30")
    assert "removed 1 cache file(s) unused for more than 30 days and 1 temporary file(s)" in pruned
    assert not old.exists() and not killed.exists() and recent.exists() and unrelated.exists()
    assert [f.path for f in cache_files(cache)] == [recent]


def test_the_tool_lists_an_absent_cache_as_empty_and_refuses_bad_arguments(tmp_path, capsys):
    assert f"{tmp_path / 'none'}: 0 cache file(s)" in run_tool(capsys, "--cache_dir", str(tmp_path / "none"))
    with pytest.raises(SystemExit):
        run_tool(capsys, "--cache_dir", str(tmp_path), "--unused_days", "-1")
    with pytest.raises(SystemExit):
        run_tool(capsys, "--cache_dir", str(tmp_path), "--dry_run")
    assert "--dry_run goes with --unused_days" in capsys.readouterr().err


def test_a_cache_folder_that_cannot_be_listed_does_not_end_the_run(tmp_path, data, tiny_vit_checkpoint, monkeypatch):
    import lmpt.cache_files as cache_files_module
    cache = tmp_path / "cache"
    listed = cache_files_module.os.scandir

    def refuse(path="."):
        if str(path) == str(cache):
            raise PermissionError(13, "Permission denied", str(path))
        return listed(path)
    monkeypatch.setattr(cache_files_module.os, "scandir", refuse)
    job = encode(tiny_vit_checkpoint, data, cache)  # housekeeping refused: the features are still returned, cached
    assert job.path.exists()
