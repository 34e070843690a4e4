"""What a file is, without reading it twice: a file's sha256, memoised on its size, times, inode and device in
the process and in a side file ``.<name>.lmpt.json`` beside it, with other facts learned of it (a CLIP
checkpoint's input resolution). The feature cache keys on checkpoints by it, and runs record the CLIP they
were trained on by it."""
import hashlib
import json
import os
from pathlib import Path

from clip.checkpoint import check_archive

from .cache_files import STALE_TEMP_SECONDS
from .checkpoint import remove_temp_files, save_text

_FACTS = {}  # (resolved path, _stamp) -> {"sha256": ..., "image_resolution": ...}, for this process


def _stamp(stat):
    """What tells a file's bytes apart without reading them: its size, mtime and change time, inode and
    device. Tools set mtimes (tar, zip, ``cp -p``, ``touch -d``) and ext4 reuses a freed inode at once, but no
    tool sets the change time: every write, ``utime`` or ``chmod`` renews it."""
    return f"{stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns} {stat.st_ino} {stat.st_dev}"


def _facts_key(path, stat=None):
    """(side file, key) under which what we know of a file is remembered: valid while its ``_stamp`` holds
    (of ``stat`` if given, else of the file now)."""
    stamp = _stamp(path.stat() if stat is None else stat)
    return path.with_name(f".{path.name}.lmpt.json"), (str(path.resolve()), stamp)


def file_version(path):
    """(device, inode, size, modification time) of the file at ``path`` now, None where there is none: every
    write of this project changes it (a file is replaced by a rename, a new inode), and a ``chmod``, a hard link
    or a read does not."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _saved_facts(side, stamp):
    """What a side file holds of its file as of ``stamp``; {} if nothing (no file, another stamp, damaged)."""
    try:
        saved = json.loads(side.read_text())
        return saved["facts"] if saved.get("stamp") == stamp and isinstance(saved.get("facts"), dict) else {}
    except (OSError, ValueError, AttributeError, KeyError):
        return {}


def known_facts(path, stat=None):
    """What this process or the file's side file ``.<name>.lmpt.json`` knows of a file (its sha256, for a
    checkpoint its input resolution), for its current ``_stamp`` (or that of ``stat``); {} if nothing. When the
    side file is read, the temporary files of its writes killed a day ago or more are removed."""
    path = Path(path)
    side, key = _facts_key(path, stat)
    if key not in _FACTS:
        _FACTS[key] = _saved_facts(side, key[1])
        remove_temp_files(side.parent, side.name, STALE_TEMP_SECONDS)  # of writes killed a day ago or more
    return dict(_FACTS[key])


def remember_facts(path, stat=None, **facts):
    """Add to what is known of a file (as ``stat`` found it, by default as it is now), in this process and
    in its side file (skipped where the folder is read-only, as a shared pretrained/ may be). The side file
    is read again first: what another process wrote there meanwhile (a run of another script, which learns
    other facts) is kept."""
    path = Path(path)
    side, key = _facts_key(path, stat)
    _FACTS[key] = {**_FACTS.get(key, {}), **_saved_facts(side, key[1]), **facts}
    try:
        save_text(side, json.dumps({"stamp": key[1], "facts": _FACTS[key]}) + "\n")
    except OSError:
        pass


def _sha256_of(f):
    """sha256 of an open binary file's bytes from where it stands, read in blocks."""
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def sha256_of_file(path):
    """sha256 of a file's bytes, read now (not memoised: for checking that a file is still the one saved)."""
    with open(path, "rb") as f:
        return _sha256_of(f)


def file_fingerprint(path, tries=3):
    """sha256 of a checkpoint file's bytes, memoised on its path and ``_stamp`` in the process and in a side file.

    Remembered only for the file that was read, unchanged: one replaced (``mv``) or still written while it
    was hashed is hashed again, up to ``tries`` times (its old bytes' sha256 must never stand for the new).
    A file seen for the first time is checked as well (``clip.checkpoint.check_archive``: a damaged zip
    archive is refused, which ``torch.load`` would read), before its sha256 vouches for it."""
    path = Path(path)
    digest = known_facts(path).get("sha256")
    if digest is not None:
        return digest
    for _ in range(tries):
        with open(path, "rb") as f:
            read = os.fstat(f.fileno())  # the file read, as it was before its first byte
            digest = _sha256_of(f)
        if _stamp(path.stat()) == _stamp(read):  # the same file at the path, not written since
            check_archive(path)
            remember_facts(path, stat=read, sha256=digest)
            return digest
    raise OSError(f"{path}: the file changed while it was read, {tries} times; wait until whatever writes it "
                  f"has finished")
