"""The files of a feature-cache folder: which are there, when each was last used, and removing old ones.

A cache file is ``<key>.pt`` (``features.FeatureJob``; ``key`` is 32 hexadecimal digits). Its modification time
is the time it was last written or read by a run (``mark_used``; a reader that may not change the file, another
user's, leaves it as it was), so that the files no run has used for some days can be found (``unused_for``) and
removed (``remove_files``; ``tools/feature_cache.py``); a run that needs one again encodes its images again.
Nothing else in the folder is touched, so a ``--cache_dir`` shared with other files is safe: only names of the
cache's own pattern, and the temporary files of its writes (``.<key>.pt.<random>.tmp``), are listed or removed.
"""
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

CACHE_NAME = re.compile(r"[0-9a-f]{32}\.pt")  # a cache file's name
TEMP_NAME = re.compile(r"\.[0-9a-f]{32}\.pt\..+\.tmp")  # a cache write's temporary file (clip.checkpoint.atomic_write)
# a temporary file untouched this long is a killed write's (a live one grows): in a cache folder, and of a run's
# test_results.json (checkpoint.claim_run_dir)
STALE_TEMP_SECONDS = 24 * 3600


@dataclass
class CacheFile:
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch: the file's modification time
    about: dict  # what was encoded (checkpoint, image folder, images, split, precision, ...); {} for older files


def mark_used(path):
    """Set a cache file's modification time to now: it was just read. A read-only cache stays as it is."""
    try:
        os.utime(path)
    except OSError:
        pass


def _about(path):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        about = blob.get("about") if isinstance(blob, dict) else None
        return about if isinstance(about, dict) else {}
    except Exception:  # damaged or of another layout: listed without a description (a run rebuilds it)
        return {"unreadable": True}


def cache_files(cache_dir, describe=True):
    """The cache files in ``cache_dir`` (``CacheFile``s, most recently used first); [] if there is no folder."""
    found = []
    for entry in os.scandir(cache_dir) if Path(cache_dir).is_dir() else ():
        try:
            if not (CACHE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
                continue
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile (by a prune beside this one)
            continue
        found.append(CacheFile(Path(entry.path), st.st_size, st.st_mtime, _about(entry.path) if describe else {}))
    return sorted(found, key=lambda f: -f.last_used)


def stale_temp_files(cache_dir, now=None, age=STALE_TEMP_SECONDS):
    """Temporary files of cache writes in ``cache_dir`` left unmodified for ``age`` seconds: those of killed
    processes (a write in progress renews its file's modification time as it writes)."""
    now = time.time() if now is None else now
    stale = []
    for entry in os.scandir(cache_dir) if Path(cache_dir).is_dir() else ():
        try:
            if (TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
                    and now - entry.stat(follow_symlinks=False).st_mtime > age):
                stale.append(Path(entry.path))
        except FileNotFoundError:  # renamed or removed by its writer meanwhile
            continue
    return stale


def remove_files(paths):
    """Remove ``paths`` (gone already counts as removed) -> the bytes freed. One that cannot be removed is
    left, with a warning."""
    freed = 0
    for path in paths:
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except FileNotFoundError:
            continue
        except OSError as error:
            print(f"[features] {path}: not removed ({error.strerror or error})")
    return freed


def remove_stale_temp_files(cache_dir):
    """Remove the temporary files of cache writes killed long ago (``stale_temp_files``) -> bytes freed."""
    return remove_files(stale_temp_files(cache_dir))


def unused_for(files, days, now=None):
    """The ``CacheFile``s among ``files`` that no run has written or read for more than ``days`` days."""
    now = time.time() if now is None else now
    return [f for f in files if now - f.last_used > days * 86400]
