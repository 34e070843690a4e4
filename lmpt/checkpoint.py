"""Run folders and atomic writes: nothing half-written survives a crash.

A run folder holds plain files: ``args.json``, ``metrics.jsonl`` (one line per
epoch), ``results.json``, ``last.pt`` and ``best.pt``. Every file is written to
a temporary name in the same folder and renamed into place, so a reader (or a
resumed run) only ever sees a complete file.
"""
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import torch

from clip.checkpoint import archive_problem
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


def save_pickle(path, obj):
    _atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


def save_json(path, obj):
    save_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def save_args(run_dir, args):
    """``args.json`` of a run: the command-line arguments."""
    save_json(Path(run_dir) / "args.json", vars(args))


# ---------------------------------------------------------------- run folders

TRAINING_FILES = ("metrics.jsonl", "last.pt", "best.pt")  # only a training run writes these
RESULT_FILES = ("results.json", "test_results.json")  # evaluations of best.pt (train.py's, test.py's)
RUN_FILES = ("args.json", *TRAINING_FILES, *RESULT_FILES)


def check_writable_dir(path, flag):
    """Refuse, before any work, a folder that cannot be made or written to (an error naming ``flag``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{flag} {path}: a file is there; expected a folder (or nothing)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {existing} is a file, so no folder can be made below it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: {existing} is not writable by this user")
    return path


def check_run_dir(args):
    """Before any work: the run folder of a training script. ``--resume`` needs its ``last.pt``; else a
    folder holding a run is refused unless ``--overwrite`` (its files are only removed by ``start_run_dir``,
    once the new run has everything it needs); and the folder must be writable."""
    run_dir = Path(args.output_dir)
    if args.resume:
        if not (run_dir / "last.pt").exists():
            raise FileNotFoundError(f"--resume {run_dir}: no last.pt there, nothing to resume")
    elif (run_dir / "last.pt").exists() and not args.overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a run. Continue it with --resume {run_dir}, choose another "
            f"--output_dir, or pass --overwrite to replace it.")
    elif (run_dir / "results.json").exists() and not args.overwrite:
        raise FileExistsError(f"{run_dir} already holds results (results.json). Choose another --output_dir, "
                              f"or pass --overwrite to replace them.")
    return check_writable_dir(run_dir, "--output_dir")


def start_run_dir(args):
    """Once the run is ready to train: with ``--overwrite`` remove the old run's files (``RUN_FILES`` only;
    other files in the folder stay), then write ``args.json``. Returns the folder."""
    run_dir = Path(args.output_dir)
    if args.overwrite and not args.resume:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_args(run_dir, args)
    args.run_started = True  # an interruption from now on concerns the new run (cli.run_resumable)
    return run_dir


def check_evaluation_dir(run_dir):
    """Before any work: the folder of an evaluation (zero-shot), which replaces its own earlier results
    but never a training run's files."""
    run_dir = Path(run_dir)
    held = [name for name in TRAINING_FILES if (run_dir / name).exists()]
    if held:
        raise FileExistsError(f"--output_dir {run_dir}: holds a training run ({', '.join(held)}); its "
                              f"results.json and args.json would be replaced. Choose another --output_dir.")
    return check_writable_dir(run_dir, "--output_dir")


def check_results_file(path):
    """Before any work: a results file (``lmpt/test.py --output``) that is not a run's own file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--output {path}: a folder; expected the path of a .json file")
    if path.suffix != ".json":
        raise ValueError(f"--output {path}: expected the path of a .json file (results are JSON)")
    if path.name in RUN_FILES and path.name != "test_results.json" and path.exists():
        raise FileExistsError(f"--output {path}: a file of the run itself ({path.name}); expected another "
                              f"name, such as test_results.json (the default)")
    check_writable_dir(path.parent, "--output")
    return path


def save_torch(path, obj):
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_metrics(path, rows):
    """Rewrite ``metrics.jsonl`` with all epoch rows (atomic, so a resumed run
    never sees a torn last line)."""
    save_text(path, "".join(json.dumps(_jsonable(r)) + "\n" for r in rows))


def read_metrics(path):
    """The epoch rows of ``metrics.jsonl`` ([] when there is none), epochs counted from 1 (the rows of a run
    written before they were, counted from 0, are renumbered); a bad line is named."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e}); expected one epoch's row a run wrote"
                                     ) from None
                if not isinstance(row, dict) or "epoch" not in row:
                    raise ValueError(f"{path}:{n}: expected an object with the epoch number, got {line.strip()!r}")
                rows.append(row)
    if rows and rows[0]["epoch"] == 0:  # counted from 0
        rows = [{**r, **{k: r[k] + 1 for k in ("epoch", "best_epoch") if isinstance(r.get(k), int)}} for r in rows]
    return rows


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
        problem = archive_problem(path)
        raise ValueError(f"{path}: cannot be read as an LMPT checkpoint; "
                         + (f"found {problem}" if problem else f"torch.load says: {e}")) from None
    missing = CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS
    if missing:
        raise ValueError(f"{path}: not a checkpoint of lmpt/train.py or finetune_clip/fc.py (no "
                         f"{', '.join(sorted(missing))}); expected best.pt or last.pt of a run folder "
                         f"(a CLIP backbone goes to --pretrain_clip / --pretrained_dir)")
    return state
