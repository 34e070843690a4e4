"""Run folders and atomic writes: nothing half-written survives a crash.

A run folder holds plain files: ``args.json``, ``metrics.jsonl`` (one line per
epoch), ``results.json``, ``last.pt`` and ``best.pt``. Every file is written to
a temporary name in the same folder and renamed into place, so a reader (or a
resumed run) only ever sees a complete file.
"""
import json
import math
import zipfile
from pathlib import Path

import torch

from clip.checkpoint import atomic_write as _atomic_write  # one atomic writer for the whole project


def _jsonable(value):
    """NaN/Inf become null so that every file is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def save_text(path, text):
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_json(path, obj):
    save_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def save_args(run_dir, args):
    """``args.json`` of a run: the command-line arguments (callables such as hooks left out)."""
    save_json(Path(run_dir) / "args.json", {k: v for k, v in vars(args).items() if not callable(v)})


def load_json(path):
    with open(path) as f:
        return json.load(f)


def save_torch(path, obj):
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_metrics(path, rows):
    """Rewrite ``metrics.jsonl`` with all epoch rows (atomic, so a resumed run
    never sees a torn last line)."""
    text = "".join(json.dumps(_jsonable(r)) + "\n" for r in rows)
    _atomic_write(path, lambda f: f.write(text.encode()))


def read_metrics(path):
    path = Path(path)
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


CHECKPOINT_KEYS = {"model", "config", "epoch"}  # what every run checkpoint holds (and best, optimizer, scheduler)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by :func:`save_torch`; a folder means its ``best.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no checkpoint here; expected a run folder written by lmpt/train.py "
            f"(holding best.pt and last.pt) or the path of one of those files")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") for name in archive.namelist()):
                raise ValueError(f"{path}: a TorchScript archive (a CLIP backbone?), not a run checkpoint; "
                                 f"expected best.pt or last.pt of a run folder (a CLIP backbone goes to "
                                 f"--pretrain_clip / --pretrained_dir)")
    try:  # weights_only: plain containers and tensors, as written here; a file is never run as code
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{path}: cannot be read as an LMPT checkpoint ({e})") from e
    missing = CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS
    if missing:
        raise ValueError(f"{path}: not a checkpoint of lmpt/train.py or finetune_clip/fc.py (no "
                         f"{', '.join(sorted(missing))}); expected best.pt or last.pt of a run folder "
                         f"(a CLIP backbone goes to --pretrain_clip / --pretrained_dir)")
    return state
