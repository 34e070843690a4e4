"""Run folders and their files: atomic writes (nothing half-written survives a crash), a folder's lock and
checks, results files (and the note when one replaces an earlier evaluation), ``metrics.jsonl`` read back,
and checkpoints loaded and checked (the configuration's schema, with the training methods' names). Interrupts
held back during a write: ``lmpt.interrupts``.

A run folder holds plain files: ``args.json``, ``metrics.jsonl`` (one line per
epoch), ``results.json``, ``test_results.json`` (``lmpt/test.py``'s), ``last.pt``
and ``best.pt``. Every file is written to a temporary name in the same folder and
renamed into place, so a reader (or a resumed run) only ever sees a complete file.
"""
import errno
import glob
import json
import math
import operator
import os
import pickle
import socket
import time
import zipfile
from pathlib import Path

try:
    import fcntl  # POSIX: a run folder is claimed by a lock (claim_run_dir); elsewhere it is not
except ImportError:
    fcntl = None

import torch

from clip.checkpoint import archive_problem, has_torchscript_layout
from clip.checkpoint import atomic_write as _atomic_write  # one atomic writer for the whole project

from .cache_files import STALE_TEMP_SECONDS
from .interrupts import interrupts_deferred
from .locks import folder_locked
from .methods import PROMPT_METHODS
from .settings import CONFIG_KINDS, OPTIONAL_CONFIG_KINDS, is_int, is_number


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


def _write(path, write):
    """``clip.checkpoint.atomic_write``, where a write that fails (a full disk, a file size limit) is an OSError
    that names ``path``: the OSError of a write says no file, and ``torch.save`` turns it into a RuntimeError
    of its archive writer ("[enforce fail at inline_container.cc…] unexpected pos …")."""
    try:
        return _atomic_write(path, write)
    except OSError as error:
        if error.filename is not None or str(path) in str(error):
            raise
        message = f"{path}: could not be written: {error.strerror or error}"
        raise (OSError(error.errno, message) if error.errno else OSError(message)) from error
    except RuntimeError as error:
        if "inline_container" not in str(error) and "PytorchStreamWriter" not in str(error):
            raise
        raise OSError(f"{path}: could not be written (torch.save: {str(error).splitlines()[0]}); is the disk "
                      f"full, or a file size limit reached?") from error


def save_text(path, text):
    _write(path, lambda f: f.write(text.encode("utf-8")))


def save_pickle(path, obj):
    _write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


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


def read_saved_json(path):
    """A JSON object a run saved (args.json, results.json), or None where the file is missing, unreadable or holds
    no object: for notes and messages, which go on without it."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def run_finished(run_dir):
    """Whether the run in ``run_dir`` has trained the ``--epochs`` of its args.json (its last.pt's epoch) and
    written its results; a folder whose files do not say is taken as finished when it holds results.json."""
    run_dir = Path(run_dir)
    results = (run_dir / "results.json").exists()
    epochs = (read_saved_json(run_dir / "args.json") or {}).get("epochs")
    try:
        return results and load_checkpoint(run_dir / "last.pt", mmap=True)["epoch"] + 1 >= epochs
    except (OSError, ValueError, TypeError):  # no epochs to compare, or a last.pt that does not say
        return results


LOCK_FILE = ".lock"  # in a run folder: locked by the process that trains or evaluates (zero-shot) there (claim_run_dir)
_CLAIMED = {}  # resolved run folder -> (the descriptor of its locked .lock, whether this process made the folder)


def claim_run_dir(run_dir):
    """Lock ``<run_dir>/.lock`` for a training run or a zero-shot evaluation (a POSIX ``lockf`` lock: the kernel
    lets go of it when the process ends, however it ends, and its forked loader workers never hold it), so that a
    second process training, resuming, overwriting or evaluating in the same folder meanwhile is refused rather
    than mix its files with this run's. The temporary files of a write killed half-way (``atomic_write``'s) are
    removed: no other process writes the run's files now (those of ``test_results.json``, which lmpt/test.py
    writes without the lock, once a day old). A folder this process claimed already is its own (one
    ``release_run_dir`` lets it go); a file system without locks, or a ``.lock`` this user cannot write
    (another user's, in a shared folder), leaves the folder unclaimed, as before there were locks."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if fcntl is None or key in _CLAIMED:
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was removed by a run that let go of it meanwhile: made again
            run_dir.mkdir(parents=True, exist_ok=True)
            created = True
            continue
        except OSError:
            return
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
            os.close(fd)
            if error.errno in (errno.EACCES, errno.EAGAIN):
                raise FileExistsError(f"{run_dir}: another process ({holder or 'see ' + str(path)}) is training or "
                                      f"evaluating in this folder now; wait until it has finished, or choose "
                                      f"another --output_dir") from None
            _remove_lone_lock(run_dir, remove_dir=created)  # no locks on this file system: the run makes its files
            return
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # a .lock removed by the run that let go of the folder meanwhile: lock the one there now
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _CLAIMED[key] = (fd, created)
    for name in RUN_FILES:  # written under the lock alone, but test_results.json (lmpt/test.py's)
        remove_temp_files(run_dir, name, STALE_TEMP_SECONDS if name == "test_results.json" else 0)


def remove_temp_files(folder, name, older_than=0):
    """Remove the temporary files (``atomic_write``'s ``.<name>.<random>.tmp``) that writes of ``folder/name``
    killed half-way left: those untouched for more than ``older_than`` seconds (0: all; a live write's file
    grows). One that cannot be removed stays."""
    now = time.time()
    for tmp in glob.glob(os.path.join(glob.escape(str(folder)), f".{glob.escape(name)}.*.tmp")):
        try:
            if not older_than or now - os.stat(tmp).st_mtime > older_than:
                os.unlink(tmp)
        except OSError:
            pass


def release_run_dir(run_dir):
    """Let go of a run folder ``claim_run_dir`` claimed; a ``.lock`` alone in it is removed (while still locked,
    so that a process waiting on that file locks the next one), and the folder too if the claim made it."""
    run_dir = Path(run_dir)
    fd, created = _CLAIMED.pop(run_dir.resolve(), (None, False))
    if fd is None:
        return
    try:
        _remove_lone_lock(run_dir, remove_dir=created)  # a run refused or stopped before it wrote anything
    finally:
        os.close(fd)  # lets go of the lock


def _remove_lone_lock(run_dir, remove_dir):
    """Where ``run_dir`` holds nothing but its ``.lock``: remove that (and, with ``remove_dir``, the folder)."""
    try:
        if os.listdir(run_dir) == [LOCK_FILE]:
            (run_dir / LOCK_FILE).unlink()
            if remove_dir:
                run_dir.rmdir()
    except OSError:
        pass  # the folder went, or another process wrote there meanwhile: nothing to tidy, and no error to hide


def check_run_dir(args):
    """Before any work: the run folder of a training script. It must be writable, and is claimed for this
    process (``claim_run_dir``: another one training there is refused). ``--resume`` needs its ``last.pt``;
    else a folder holding a run is refused unless ``--overwrite`` (its files are only removed by
    ``start_run_dir``, once the new run has everything it needs)."""
    run_dir = check_writable_dir(args.output_dir, "--output_dir")
    claim_run_dir(run_dir)
    if args.resume:
        if not (run_dir / "last.pt").exists():
            raise FileNotFoundError(f"--resume {run_dir}: no last.pt there, nothing to resume")
    elif (run_dir / "last.pt").exists() and not args.overwrite:
        if run_finished(run_dir):  # --resume only extends it
            raise FileExistsError(
                f"{run_dir} already holds a finished run (results.json). Extend it with --resume {run_dir} and "
                f"more --epochs than it trained, choose another --output_dir, or pass --overwrite to replace it.")
        raise FileExistsError(
            f"{run_dir} already holds a run. Continue it with --resume {run_dir}, choose another "
            f"--output_dir, or pass --overwrite to replace it.")
    elif (run_dir / "results.json").exists() and not args.overwrite:
        raise FileExistsError(f"{run_dir} already holds results (results.json). Choose another --output_dir, "
                              f"or pass --overwrite to replace them.")
    return run_dir


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
    but never a training run's files. The folder is claimed (``claim_run_dir``) until the caller lets it go
    with ``release_run_dir`` once its results are written: a training run or another zero-shot evaluation there
    meanwhile is refused, whichever starts first."""
    run_dir = Path(run_dir)
    check_writable_dir(run_dir, "--output_dir")
    claim_run_dir(run_dir)
    held = [name for name in TRAINING_FILES if (run_dir / name).exists()]
    if held:
        raise FileExistsError(f"--output_dir {run_dir}: holds a training run ({', '.join(held)}); its "
                              f"results.json and args.json would be replaced. Choose another --output_dir.")
    return run_dir


def check_results_file(path, own="test_results.json", hint="such as test_results.json (the default)"):
    """Before any work: a results file (``--output`` of lmpt/test.py, ``own`` its default name, which it may
    replace; of zero_shot_clip/test.py, ``own`` None) that is not a run's own file (refused with ``hint``)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--output {path}: a folder; expected the path of a .json file")
    if path.suffix != ".json":
        raise ValueError(f"--output {path}: expected the path of a .json file (results are JSON)")
    if path.name in RUN_FILES and path.name != own and path.exists():
        raise FileExistsError(f"--output {path}: a file of the run itself ({path.name}); expected another "
                              f"name, {hint}")
    check_writable_dir(path.parent, "--output")
    return path


def note_replaced_results(path, results, keys, tag, compare=None, also_differ=()):
    """Say when ``results`` are about to replace an earlier evaluation's results in ``path`` (a results file that
    holds a JSON object): with the mAP it held and which of ``keys`` differ (a key the earlier file lacks is not
    compared), each compared with ``==`` or with the comparator ``compare[key](old, new)`` (True: the same);
    ``also_differ``: names of further differences the caller found, said after those."""
    old = read_saved_json(path)
    if old is None:
        return
    compare = compare or {}
    differ = [key for key in keys if key in old and not compare.get(key, operator.eq)(old[key], results.get(key))]
    differ += [name for name in also_differ if name not in differ]
    mAP = f"mAP {old['mAP']:.2f}" if isinstance(old.get("mAP"), (int, float)) else "no mAP"
    print(f"[{tag}] replacing {path} of an earlier evaluation ({mAP}"
          f"{'; other ' + ', '.join(differ) if differ else ''})")


def replace_results(path, results, keys, tag, compare=None, check=None):
    """Write ``results`` to the results file ``path``, first saying what they replace (``note_replaced_results``:
    ``keys``, ``compare``, ``tag``), while no other evaluation writes in its folder (``locks.folder_locked``, said
    when it waits); ``check()`` first, in the same hold (it raises to refuse the write)."""
    with folder_locked(path.parent, f"[{tag}] waiting for another process writing in {path.parent}"):
        if check is not None:
            check()
        note_replaced_results(path, results, keys, tag, compare=compare)
        save_json(path, results)


def save_torch(path, obj):
    """``torch.save`` of ``obj`` to ``path``, atomically; an interrupt meanwhile waits until the file is written."""
    with interrupts_deferred():
        _write(path, lambda f: torch.save(obj, f))


def write_metrics(path, rows):
    """Rewrite ``metrics.jsonl`` with all epoch rows (atomic, so a resumed run
    never sees a torn last line)."""
    save_text(path, "".join(json.dumps(_jsonable(r)) + "\n" for r in rows))


def read_metrics(path, epochs=None):
    """The epoch rows of ``metrics.jsonl`` ([] when there is none), epochs counted from 1 (the rows of a run
    written before they were, counted from 0, are renumbered); a bad line is named. With ``epochs``, the
    rows of the first ``epochs`` epochs (a row a line, in order): the lines after them, of epochs that a
    resumed run's last.pt does not hold (a run stopped between the two writes leaves one), are not read."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if epochs is not None and len(rows) >= epochs:
                break
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e}); expected one epoch's row a run wrote"
                                     ) from None
                if not isinstance(row, dict) or "epoch" not in row:
                    raise ValueError(f"{path}:{n}: expected an object with the epoch number, got {line.strip()!r}")
                if not is_int(row["epoch"]):
                    raise ValueError(f"{path}:{n}: epoch {row['epoch']!r}: expected an integer, the epoch's number")
                rows.append(row)
    if rows and rows[0]["epoch"] == 0:  # counted from 0
        rows = [{**r, **{k: r[k] + 1 for k in ("epoch", "best_epoch") if isinstance(r.get(k), int)}} for r in rows]
    return rows


CHECKPOINT_KEYS = {"model", "config", "epoch"}  # what every run checkpoint holds (and best, optimizer, scheduler)
RESUME_KEYS = ("optimizer", "scheduler", "best")  # what last.pt holds beside them, for --resume


def check_config(config, path):
    """Refuse a checkpoint's ``config`` that is not a dict of settings of the kinds ``CONFIG_KINDS`` says, or one
    of a prompt run (``PROMPT_METHODS``) without one of them (what lmpt/test.py rebuilds its prompts from)."""
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config: expected a dict of the run's settings, found a {type(config).__name__}")
    prompts = config.get("method") in PROMPT_METHODS
    missing = [key for key in (CONFIG_KINDS if prompts else ("method",)) if key not in config]
    if missing:
        raise ValueError(f"{path}: config: no {', '.join(missing)}; expected the settings "
                         f"{'lmpt/train.py' if prompts else 'a training script'} saves with a run")
    for key, (fits, kind) in {**CONFIG_KINDS, **OPTIONAL_CONFIG_KINDS}.items():
        if key in config and not fits(config[key]):
            raise ValueError(f"{path}: config: {key} {config[key]!r}: expected {kind}")


def check_resume_state(state, path):
    """Refuse a ``last.pt`` without what ``--resume`` continues from: the optimizer's and the scheduler's
    state and the record of the best epoch so far (one of the epochs it holds)."""
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)}; expected the last.pt of a run, which holds what "
                         f"--resume continues from ({', '.join(RESUME_KEYS)})")
    for key in ("optimizer", "scheduler"):
        if not isinstance(state[key], dict):
            raise ValueError(f"{path}: {key}: expected its state dict, found a {type(state[key]).__name__}")
    best = state["best"]
    if not (isinstance(best, dict) and is_int(best.get("epoch")) and 0 <= best["epoch"] <= state["epoch"]
            and is_number(best.get("mAP"))):
        raise ValueError(f"{path}: best {best!r}: expected the record of the run's best epoch, "
                         f"{{'epoch': 0 to {state['epoch']}, 'mAP': a number}}")


def load_checkpoint(path, map_location="cpu", resume=False, mmap=False):
    """Load a checkpoint written by :func:`save_torch`; a folder means its ``best.pt``. Its contents are
    checked (``check_config``; with ``resume``, a ``last.pt`` to continue: ``check_resume_state``). ``mmap``:
    its tensors stay in the file until used (for a look at its epoch or configuration: no copy in memory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no checkpoint here; expected a run folder written by lmpt/train.py or finetune_clip/fc.py "
            f"(holding best.pt and last.pt) or the path of one of those files")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive: anything else is another file
        problem = archive_problem(path)
        if problem:
            raise ValueError(f"{path}: cannot be read as an LMPT checkpoint; found {problem}")
        raise ValueError(f"{path}: not a run checkpoint (not a torch.save archive); expected best.pt or last.pt of "
                         f"a run folder")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as e:  # the end record intact, the directory damaged
        raise ValueError(f"{path}: cannot be read as an LMPT checkpoint; a damaged zip archive ({e})") from None
    if has_torchscript_layout(names):
        raise ValueError(f"{path}: a TorchScript archive (a CLIP backbone?), not a run checkpoint; expected best.pt "
                         f"or last.pt of a run folder (a CLIP backbone goes to --pretrain_clip / --pretrained_dir)")
    try:  # weights_only: plain containers and tensors, as written here; a file is never run as code
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated or foreign file
        problem = archive_problem(path)
        raise ValueError(f"{path}: cannot be read as an LMPT checkpoint; "
                         + (f"found {problem}" if problem else f"torch.load says: {e}")) from None
    missing = CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS
    if missing:
        raise ValueError(f"{path}: not a checkpoint of lmpt/train.py or finetune_clip/fc.py (no "
                         f"{', '.join(sorted(missing))}); expected best.pt or last.pt of a run folder "
                         f"(a CLIP backbone goes to --pretrain_clip / --pretrained_dir)")
    if not is_int(state["epoch"]) or state["epoch"] < 0:
        raise ValueError(f"{path}: epoch {state['epoch']!r}: expected an epoch number (an integer from 0)")
    if not isinstance(state["model"], dict):
        raise ValueError(f"{path}: model: expected the trained tensors by name, found a "
                         f"{type(state['model']).__name__}")
    check_config(state["config"], path)
    if resume:
        check_resume_state(state, path)
    return state
