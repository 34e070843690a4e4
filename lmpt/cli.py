"""Command-line pieces shared by the scripts (train, test, zero-shot, fine-tune) and the tools: the parser and its
argument types, the common flag groups, notes on flags a run does not read, the run folders' names, the restoring
of a resumed run's arguments, and running a script (``run_resumable``, ``report_errors``: exit status and one
message per user error). The library does not import it."""
import argparse
import gc
import glob
import json
import math
import os
import re
import sys
import textwrap
from pathlib import Path

from clip.clip import PRETRAINED_DIR_ENV, pretrained_dir

from .backbones import BACKBONES, backbone_tag, is_backbone_name
from .checkpoint import release_run_dir
from .data import (DEFAULT_DATA_ROOT, DEFAULT_DATASET, PREPROCESS_KINDS, REPO_ROOT, DataError, available_cores,
                   dataset_folders, dataset_name, dataset_names, get_dataset_spec)
from .engine import NonFiniteError
from .interrupts import interrupt_status, sigterm_as_interrupt
from .losses import DB_LOSS_FLAGS, db_flags_read
from .metrics import SCORE_KINDS
from .paths import absolute, resolve_user_path
from .settings import RESUME_MAY_CHANGE, RUN_PLACE


DATASET_HELP = dataset_names()


def backbone_help():
    """``--pretrain_clip``'s help: the names of ``BACKBONES`` as they are when a parser is built."""
    return f"{', '.join(BACKBONES)} (files in --pretrained_dir), or a path to a .pt"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The scripts' ``--help``: the description as written, and each flag's default after its help, where the
    help does not say it already and the default is a value (not None, a switch's True or False, or a path of
    this machine's: those flags say their default in words). Some defaults that decide whether two runs are
    comparable differ between the scripts (the backbone, --lr); --help shows them. A help line is wrapped at
    spaces only, so a folder pattern such as ``runs/<dataset>_zero-shot_<backbone>_seed<seed>`` stays whole."""

    def _split_lines(self, text, width):
        """argparse's wrapping of a flag's help, without breaking at a hyphen or inside a word."""
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False,
                             break_long_words=False)

    def _get_help_string(self, action):
        text = action.help  # argparse asks only for the flags that have help: every script flag has some
        if (not action.option_strings or re.search(r"\(default|default:", text) or action.default is None
                or isinstance(action.default, (bool, Path)) or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def script_parser(description):
    """A script's parser: ``HelpFormatter``, and no abbreviated flags (``allow_abbrev=False``): a flag is taken
    only as written, so a prefix such as ``--pretrain_clip`` of ``--pretrain_clip_path`` is not read as another
    flag (each script accepts both spellings of the backbone flag as they are) and a new flag cannot change
    what an abbreviation meant."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, allow_abbrev=False)


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def int_in(low, high=None):
    """An argparse ``type``: an integer in [low, high] (no upper bound without ``high``), refused at parse time
    with the range it must be in, rather than after the features are extracted."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            wanted = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"expected an integer {wanted}, got {value}")
        return value
    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


def float_in(low=None, high=None, above=None):
    """An argparse ``type``: a finite number, in [low, high] where given, or above ``above`` (exclusive);
    refused at parse time with the range it must be in."""
    if low is not None and high is not None:
        wanted = f" in [{low}, {high}]"
    else:
        wanted = "".join(f" {op} {v}" for op, v in ((">=", low), ("<=", high), (">", above)) if v is not None)

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
                and (above is None or value > above)):
            raise argparse.ArgumentTypeError(f"expected a finite number{wanted}, got {text}")
        return value
    parse.__name__ = "float"
    return parse


positive_float = float_in(above=0)  # learning rates, λ of the DB loss
unit_float = float_in(0, 1)  # thresholds on scores in [0, 1], loss mixing weights


_FROZEN = False


def freeze_imported_objects():
    """Take the objects alive now (chiefly the modules imported: torch's are hundreds of thousands) out
    of the cyclic garbage collector's scans (``gc.freeze``), once per process; the scripts call it first.

    Otherwise the collector's first full pass, early in a run, walks them all: on an evaluation that is
    a tenth of a second or more before the decoding workers start (the "before decoding" time of
    tools/benchmark_speed.py). Forked loader workers inherit the frozen heap, so their collections skip
    it too and leave its pages shared. Objects made afterwards are collected as usual; the frozen ones
    (modules, and in a test process what earlier tests still hold) stay for the process's life.
    """
    global _FROZEN
    if not _FROZEN:
        gc.freeze()
        _FROZEN = True


def default_workers(cores=None):
    """Image-decoding workers, at most 16: one per available core, less one on machines of more than
    four cores. A first run is decode-bound (the features are cached afterwards), so decoding gets the
    machine; where there are cores to spare, one is left to the main process, which feeds the encoder
    (on a 16-core GPU machine 15 workers made evaluation faster than 16: docs/SPEED.md)."""
    cores = available_cores() if cores is None else cores
    return max(1, min(16, cores - 1 if cores > 4 else cores))


SEED_HELP = "0 to 2^32 - 1 (NumPy's range)"


def add_common_args(parser, seed_help=SEED_HELP, of_run=False):
    """Flags every script takes: data, device, loader, scoring and caching (``seed_help``: what --seed does in
    a script that draws nothing at random). ``of_run``: for lmpt/test.py, which evaluates a training run: the
    data root, preprocessing, score and threshold default to the run's (None here, the checkpoint's later) and
    a full fine-tuning run's batch size to its own."""
    run_default = " (default: the training run's value, saved in the checkpoint)" if of_run else ""
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help=seed_help)
    parser.add_argument("--batch_size", type=int_in(1), default=64,
                        help="images per training batch (frozen-encoder features are encoded in batches of at least "
                             "64, whatever this says)" + (" (default: 64; for a finetune-full run, the run's own)"
                                                          if of_run else ""))
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--data_root", type=Path, default=None if of_run else DEFAULT_DATA_ROOT,
                        help=f"folder holding {dataset_folders()} " + (
                            "(default: the training run's, from the args.json beside the checkpoint; else data/ of "
                            "the repository)" if of_run else "(default: data/ of the repository)"))
    parser.add_argument("--pretrained_dir", type=Path, default=pretrained_dir(),
                        help=f"folder of the CLIP checkpoints (default: ${PRETRAINED_DIR_ENV} if set, else "
                             f"pretrained/ of the repository)")
    parser.add_argument("--num_workers", type=int_in(0), default=default_workers(),
                        help="image-decoding worker processes (default: one per available core, less one above "
                             "four cores, at most 16)")
    parser.add_argument("--score", choices=SCORE_KINDS, default=None if of_run else "softmax",
                        help="scores ranked and thresholded: softmax over classes (published) or sigmoid" + run_default)
    parser.add_argument("--thre", type=unit_float, default=None if of_run else 0.5,
                        help="threshold on the scores (in [0, 1]) for CP/CR/CF1/OP/OR/OF1" + run_default)
    parser.add_argument("--preprocess", choices=PREPROCESS_KINDS, default=None if of_run else "lmpt",
                        help="lmpt: squash to the input size, ImageNet mean/std (published); "
                             "clip: CLIP's resize + centre crop" + run_default)
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="image-feature cache (default: $LMPT_CACHE_DIR, else .cache/features of the "
                             "repository)")
    parser.add_argument("--skip_bad_images", action="store_true",
                        help="drop unreadable images with a report instead of refusing to run")
    return parser


def add_baseline_args(parser, backbone):
    """The published baseline scripts' first flags: --dataset, --nb_classes and --pretrain_clip_path, also
    spelt --pretrain_clip as in lmpt/train.py (default ``backbone``; a path is resolved by
    ``resolve_backbone_arg``)."""
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help=DATASET_HELP)
    parser.add_argument("--nb_classes", type=int_in(1), default=None, help="checked against the labels file")
    parser.add_argument("--pretrain_clip_path", "--pretrain_clip", dest="pretrain_clip_path", default=backbone,
                        help=f"{backbone_help()} (relative paths as in the published README work)")
    return parser


def add_db_loss_args(parser):
    """μ and λ of the Distribution-Balanced loss family (lmpt/train.py, finetune_clip/fc.py): None, the
    dataset's defaults (``losses.db_params``), unless given."""
    parser.add_argument("--neg_scale", type=positive_float, default=None,
                        help="λ of the DB loss's negative-tolerant regularisation (default per dataset)")
    parser.add_argument("--gamma", type=float_in(), default=None,
                        help="μ of the DB loss's re-balancing weights (default per dataset)")
    return parser


def no_effect(keys):
    """``--a, --b have no effect``: the flags of ``keys`` (destinations) that a run does not read."""
    return f"{', '.join(f'--{key}' for key in keys)} {'has' if len(keys) == 1 else 'have'} no effect"


def unread_flags_note(given, flag, value, read, every, neither=False):
    """The note on the flags of ``every`` written on the command line (``given``: destinations) but not in
    ``read``, those that ``flag value`` reads (``neither``: say "reads neither --a nor --b" when it reads none
    of two); None when each one given is read. args.json records them as given."""
    unused = [key for key in every if key in given and key not in read]
    if not unused:
        return None
    if read:
        reads = f"reads {', '.join(f'--{key}' for key in read)} only"
    elif neither and len(every) == 2:
        reads = f"reads neither --{every[0]} nor --{every[1]}"
    else:
        reads = f"reads none of {', '.join(f'--{key}' for key in every)}"
    return (f"{flag} {value} {reads}; {no_effect(unused)} (args.json records {'it' if len(unused) == 1 else 'them'} "
            f"as given, unused)")


def db_flag_note(args, given):
    """The note on μ and λ (``--gamma``, ``--neg_scale``: ``losses.DB_LOSS_FLAGS``) written where the chosen
    ``--loss_function`` does not read them (``losses.db_flags_read``: the plain losses read neither, and of the
    Distribution-Balanced family the re-balanced weights alone read μ, the negative-tolerant regularisation alone
    λ); None when each one given is read."""
    return unread_flags_note(given, "--loss_function", args.loss_function, db_flags_read(args.loss_function),
                             DB_LOSS_FLAGS, neither=True)


def find_val_list(value, dataset, data_root):
    """``--val_list`` as written (``~`` expanded), made absolute: from the current folder, or, for a relative
    path that names no file there, from the dataset folder under ``data_root`` (where the other lists are named,
    and the published tree keeps ``voc_lt_val.txt``), said in one line. A path found in neither stays as from the
    current folder (``data.load_dataset`` refuses it)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.is_file():
        return absolute(path)
    try:
        folder = absolute(data_root) / get_dataset_spec(dataset).folder
    except (DataError, TypeError):  # an unknown dataset: refused, with the known ones, when it is read
        return absolute(path)
    if not (folder / path).is_file():
        return absolute(path)
    found = absolute(folder / path)
    print(f"[data] note: --val_list {value} is not in the current folder; using {found}, in the dataset folder")
    return found


def resolve_backbone_arg(value, script_dir):
    """``--pretrain_clip(_path)`` as written: a backbone name stays a name; a path is resolved by
    ``resolve_user_path`` (absolute when the file exists)."""
    return value if is_backbone_name(value) else str(resolve_user_path(value, script_dir))


def default_run_dir(dataset, method, backbone, seed):
    """runs/<dataset>_<method>_<backbone>_seed<seed> under the repository; a dataset alias (``VOC``) is
    named as its dataset (``voc-lt``), so train.py and test.py find the same folder whichever was typed.
    A backbone is named by ``backbones.backbone_tag`` (``ViT-B/16``, ``ViT16`` and ``pretrained/ViT-B-16.pt``
    -> ``ViT16``; another path by its file's stem)."""
    return _run_dir_named(dataset, method, backbone_tag(backbone), seed)


def _name_part(value):
    """A part of a run folder's name: a value without path separators."""
    return str(value).replace("/", "-").replace(os.sep, "-")


def _run_dir_named(dataset, method, tag, seed):
    return REPO_ROOT / "runs" / "_".join(_name_part(p) for p in (dataset_name(dataset), method, tag, f"seed{seed}"))


def note_earlier_run_dir(run_dir, dataset, method, backbone, seed):
    """Say where a run of the same command went before a backbone given as the path of a known name's file
    (``../pretrained/ViT-B-16.pt``) was tagged by that name (``ViT16``, not ``ViT-B-16``), when that folder
    exists and the default ``run_dir`` does not: a run started there or a resume of it is what was meant."""
    earlier = _run_dir_named(dataset, method, Path(str(backbone)).stem, seed)
    if earlier != Path(run_dir) and earlier.is_dir() and not Path(run_dir).exists():
        print(f"[run] note: {earlier} holds the run of this command from before a backbone's file was named by "
              f"its short name ({backbone_tag(backbone)}); this run goes to {run_dir}; to continue or extend "
              f"that one instead, pass --resume {earlier} (zero-shot: --output_dir {earlier})", file=sys.stderr)


def runs_on_other_backbones(dataset, method, seed):
    """The run folders under runs/ of ``dataset``, ``method`` and ``seed`` on any backbone (``default_run_dir``'s
    names), for an error that finds no run on the backbone asked for."""
    prefix = "_".join(glob.escape(_name_part(p)) for p in (dataset_name(dataset), method))
    return sorted(p for p in (REPO_ROOT / "runs").glob(f"{prefix}_*_seed{seed}") if p.is_dir())


def add_run_args(parser, run_dir_pattern):
    """Flags of the scripts that train: validation list, run folder, resume, overwrite."""
    parser.add_argument("--val_list", type=Path, default=None,
                        help="list file for model selection (default: the test split, as published)")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help=f"run folder (default: runs/{run_dir_pattern})")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR where it stopped (with more --epochs: extend a finished run)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --output_dir")
    return parser


def given_flags(parser, argv=None):
    """The destinations of the flags written on the command line ``argv`` (not those left at their defaults)."""
    actions = [a for a in parser._actions if a.dest != "help"]
    defaults, parser_defaults = [a.default for a in actions], dict(parser._defaults)
    try:
        for a in actions:
            a.default = argparse.SUPPRESS
        parser._defaults.clear()
        return set(vars(parser.parse_args(argv)))
    finally:
        for a, default in zip(actions, defaults):
            a.default = default
        parser._defaults.update(parser_defaults)


def _setting(action, value):
    """A flag's value as a setting, for comparison: a dataset by its name (``VOC`` is ``voc-lt``), a path as
    an absolute one (relative to the current folder)."""
    if value is None:
        return None
    if action.dest == "dataset":
        return dataset_name(value)
    return str(absolute(value)) if action.type is Path else str(value)


def _saved_problem(parser, action, value):
    """What is wrong with ``value``, a flag's value as args.json holds it, before its type checks it (None when
    nothing): a flag without a value (``--skip_bad_images``) holds true or false, null is only the value of a
    flag whose default is null, and a flag of no type holds a string."""
    if action.nargs == 0:
        typed = any(a.dest == action.dest and a.nargs != 0 for a in parser._actions)  # --no-csc: --csc checks it
        return None if typed or not isinstance(action.const, bool) or isinstance(value, bool) else \
            "expected true or false"
    if value is None:
        return None if action.default is None else "expected a value, not null"
    if action.type is None and action.nargs in (None, "?") and not isinstance(value, str):
        return "expected a string"
    return None


def reroot_val_list(saved, args, given):
    """args.json's ``val_list`` for a resume: as saved, or, when ``--data_root`` is given (``given``) with another
    folder than the run's, the list lay under the run's (in its dataset folder, say: where ``find_val_list``
    finds a list by name) and the same path under the new folder is a file (another than the saved one), that
    path, said in one line. The same data in another ``--data_root`` resumes; the lists are compared by what
    they hold (``splits_sha256``, prepare.check_resumable)."""
    value, root = saved.get("val_list"), saved.get("data_root")
    if "data_root" not in given or not isinstance(value, str) or not isinstance(root, str):
        return value
    if not (Path(value).is_absolute() and Path(root).is_absolute()) or absolute(args.data_root) == Path(root):
        return value
    try:
        inside = Path(value).relative_to(root)
    except ValueError:  # a list outside the run's data folder stays where it is
        return value
    moved = absolute(args.data_root) / inside
    if not moved.is_file() or (Path(value).is_file() and os.path.samefile(moved, value)):
        return value  # nothing there to read instead (the run's own is read, or refused if gone), or the same file
    print(f"[resume] note: the run's --val_list {value} is in its --data_root {root}; reading it from the same "
          f"place in --data_root {absolute(args.data_root)}: {moved}", file=sys.stderr)
    return str(moved)


def restore_run_args(parser, args, argv=None):
    """``--resume DIR``: continue the run with the settings in ``DIR/args.json``, not the defaults.

    A flag written now may change only where the run reads and computes (``RESUME_MAY_CHANGE``: more
    ``--epochs``, another device, worker count or folder); any other flag written now must equal the
    run's own value, or the run is refused (exit 2) naming the flag, since a resumed run must see
    exactly the batches, losses and prompts an uninterrupted one would. Values are compared as settings: a
    dataset alias equals its dataset, a relative path the absolute one it names (``--val_list`` as
    ``find_val_list`` finds it, also in the dataset folder of the run's ``--dataset`` and ``--data_root``; a
    ``--data_root`` given with another folder moves the run's own val_list with it: ``reroot_val_list``). A
    value of the wrong kind (``_saved_problem``) is refused naming it; a flag args.json lacks (a run of an earlier
    version) takes its default, with a note (``prepare.check_settings`` then compares the settings last.pt
    holds). A file as ``DIR`` (its last.pt), ``--overwrite`` with it, and an ``--output_dir`` other than ``DIR``
    (the run continues in its own folder) are refused (exit 2).
    """
    if args.resume is None:
        return args
    saved, saved_file = read_saved_args(parser, args)
    output_dir = getattr(args, "output_dir", None)
    if output_dir is not None and os.path.realpath(absolute(output_dir)) != os.path.realpath(absolute(args.resume)):
        parser.error(f"--resume {args.resume} with --output_dir {output_dir}: a resumed run continues in its own "
                     f"folder; leave --output_dir out (to continue a copy of the run elsewhere, copy its folder "
                     f"there and resume the copy)")
    given = given_flags(parser, argv)
    saved = with_val_list_of_resume(saved, args, given)
    for action in parser._actions:
        key = action.dest
        if key not in saved or key in RUN_PLACE:
            continue
        value = saved_value(parser, action, saved[key], saved_file)
        if key not in given:
            setattr(args, key, value)
        elif key not in RESUME_MAY_CHANGE and _setting(action, getattr(args, key)) != _setting(action, value):
            flag = action.option_strings[0]
            may = [f"--{k}" for k in RESUME_MAY_CHANGE if any(a.dest == k for a in parser._actions)]
            parser.error(f"--resume {args.resume}: {flag} {getattr(args, key)} differs from the run's own "
                         f"{value} ({saved_file}); a resumed run keeps its settings (only {', '.join(may)} "
                         f"may change)")
    note_missing_saved(parser, saved, args, saved_file)
    return args


def read_saved_args(parser, args):
    """(the run's args.json as a dict, its path) for ``--resume DIR``; refused (exit 2, naming the file): a file as
    ``DIR`` (its last.pt), ``--overwrite`` with it, a folder without args.json, one that is not a JSON object."""
    if getattr(args, "overwrite", False):
        parser.error(f"--resume {args.resume} with --overwrite: --overwrite replaces a run, --resume continues it; "
                     f"pass one")
    if Path(args.resume).is_file():
        parser.error(f"--resume {args.resume}: a file; --resume takes the run folder ({Path(args.resume).parent})")
    saved_file = Path(args.resume) / "args.json"
    try:
        saved = json.loads(saved_file.read_text())
    except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: a path below a file
        parser.error(f"--resume {args.resume}: no args.json there; expected the folder of an interrupted run")
    except ValueError as e:
        parser.error(f"{saved_file}: not valid JSON ({e}); expected the args.json a run wrote")
    if not isinstance(saved, dict):
        parser.error(f"{saved_file}: holds a {type(saved).__name__}; expected the args.json a run wrote")
    return saved, saved_file


def with_val_list_of_resume(saved, args, given):
    """args.json's values with its val_list as the resume reads it. A ``--val_list`` written now is found as for a
    new run (``find_val_list``, in the run's dataset and data root unless they are written too), and compared as
    the file it names; the run's own, when not named so, moves with a new ``--data_root`` (``reroot_val_list``)."""
    names_own = False  # --val_list given, naming the file the run read, where it was: its own too
    if "val_list" in given and args.val_list is not None:  # compared as the file it names: found as for a new run
        place = {key: saved[key] if key not in given and isinstance(saved.get(key), str) else getattr(args, key)
                 for key in ("dataset", "data_root")}
        args.val_list = find_val_list(args.val_list, place["dataset"], place["data_root"])
        names_own = isinstance(saved.get("val_list"), str) and Path(args.val_list) == Path(saved["val_list"])
    if "val_list" in saved and not names_own:  # not moved (nor noted as moved) when named
        saved = {**saved, "val_list": reroot_val_list(saved, args, given)}
    return saved


def saved_value(parser, action, value, saved_file):
    """A flag's value from args.json (``saved_file``), checked as if it were written: of the right kind
    (``_saved_problem``), through the flag's type (ranges, types, paths) and within its choices; refused (exit 2)
    naming the file, the flag and the value."""
    key, shown = action.dest, value
    problem = _saved_problem(parser, action, value)
    if problem:
        parser.error(f"{saved_file}: {key} {value!r} is not a valid {action.option_strings[0]} ({problem})")
    if value is not None and action.type is not None:  # checked as if typed: ranges, types, paths
        try:
            value = action.type(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            parser.error(f"{saved_file}: {key} {shown!r} is not a valid {action.option_strings[0]} ({e})")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{saved_file}: {key} {value!r} is not one of {list(action.choices)}")
    return value


def note_missing_saved(parser, saved, args, saved_file):
    """Say which flags args.json lacks (a run written before they existed), with the defaults they take
    (``prepare.check_settings`` then compares what last.pt holds); nothing when it holds flags this script
    lacks (another script's run, which ``prepare.check_resumable`` names)."""
    dests = dict.fromkeys(a.dest for a in parser._actions if a.dest != "help")
    missing = [key for key in dests if key not in saved and key not in RUN_PLACE + RESUME_MAY_CHANGE]
    foreign = set(saved) - set(dests)  # flags this script lacks: another script's run (check_resumable names it)
    if missing and not foreign:  # a run written before a flag existed: its default, said (last.pt checks its own)
        print(f"[resume] note: {saved_file} has no {', '.join(missing)} (a run of an earlier version?); "
              f"{'it takes its default' if len(missing) == 1 else 'they take their defaults'}: "
              f"{', '.join(f'{key} {getattr(args, key)!r}' for key in missing)}", file=sys.stderr)


def default_output_dir(args, method, backbone):
    """The default run folder of ``args``' dataset and seed, ``method`` and ``backbone`` (``default_run_dir``),
    noting the runs that an earlier version named otherwise (``note_earlier_run_dir``)."""
    folder = default_run_dir(args.dataset, method, backbone, args.seed)
    note_earlier_run_dir(folder, args.dataset, method, backbone, args.seed)
    return folder


def resolve_run_dir(args, method, backbone):
    """Set ``args.output_dir`` (``--resume DIR`` wins, then ``--output_dir``, then the default), turn
    ``args.resume`` into a bool, and make ``--val_list`` (``find_val_list``: from the current folder, else from
    the dataset folder), ``--data_root``, ``--pretrained_dir``, ``--cache_dir`` and the run folder absolute
    (args.json and results.json then name them from any folder, for a resumed run too)."""
    if getattr(args, "val_list", None) is not None:
        args.val_list = find_val_list(args.val_list, args.dataset, args.data_root)
    args.data_root = absolute(args.data_root)  # lmpt/test.py reads it from args.json, from any folder
    for name in ("pretrained_dir", "cache_dir"):  # a --resume from another folder reads them from args.json
        if getattr(args, name, None) is not None:
            setattr(args, name, absolute(getattr(args, name)))
    if args.resume is not None:
        args.output_dir, args.resume = args.resume, True
    else:
        args.resume = False
    if args.output_dir is None:
        args.output_dir = default_output_dir(args, method, backbone)
    args.output_dir = absolute(args.output_dir)
    return args


def run_resumable(fn, args, tag):
    """``fn(args)``: a training run in ``args.output_dir``, whose claim on that folder
    (``checkpoint.claim_run_dir``, made in ``fn``) is let go here, however it ends. On Ctrl-C or SIGTERM
    (from the start: decoding too) say whether and how to resume, and exit with status 130 (Ctrl-C) or 143
    (SIGTERM), 128 + the signal's number (``interrupts.interrupt_status``); on a file that
    could not be written (a full disk, say) once the run has saved an epoch, say that it resumes."""
    try:
        with sigterm_as_interrupt():
            return fn(args)
    except OSError:
        last = Path(args.output_dir) / "last.pt"
        if getattr(args, "run_started", False) and last.exists():
            print(f"[{tag}] the last completed epoch is saved in {last}; once the cause below is fixed, continue "
                  f"with --resume {args.output_dir}", file=sys.stderr)
        raise
    except KeyboardInterrupt as interrupt:
        last = Path(args.output_dir) / "last.pt"
        started = getattr(args, "run_started", False)  # set by checkpoint.start_run_dir
        if getattr(args, "overwrite", False) and not started and last.exists():
            print(f"\n[{tag}] interrupted before the new run started: the run in {args.output_dir} is as it "
                  f"was", file=sys.stderr)
        elif last.exists():
            print(f"\n[{tag}] interrupted. The last completed epoch is saved; continue with "
                  f"--resume {args.output_dir}", file=sys.stderr)
        else:
            print(f"\n[{tag}] interrupted before the first epoch ended: nothing to resume; run the same "
                  f"command again (the features of splits already encoded are cached)", file=sys.stderr)
        sys.exit(interrupt_status(interrupt))
    finally:
        release_run_dir(args.output_dir)


USER_ERRORS = (ValueError, OSError, NonFiniteError)  # bad data, flags, files, devices, a diverged run


def printable_output():
    """Standard output that writes a character its encoding lacks (μ, λ, Δ or − under a Latin-1 locale) as a
    ``\\u`` escape, as Python's standard error does, rather than stop the script with ``UnicodeEncodeError``."""
    if hasattr(sys.stdout, "reconfigure"):  # a text stream (a test's capture may not be one)
        sys.stdout.reconfigure(errors="backslashreplace")


def report_errors(main, argv=None):
    """A script's ``main(argv)``, where a user error (``USER_ERRORS``: a bad file, flag, checkpoint or
    device, or a run whose loss diverged) ends the run with its message, ``<script>: error: …``, on stderr
    and exit status 1, rather than a traceback; ``LMPT_TRACEBACK=1`` shows the traceback too. Other
    exceptions are bugs and keep it. Ctrl-C ends it with status 130, a SIGTERM that a training script turned
    into an interrupt (``interrupts.sigterm_as_interrupt``) with 143. Output the locale cannot encode is
    escaped (``printable_output``)."""
    printable_output()
    try:
        return main(argv)
    except USER_ERRORS as error:
        if os.environ.get("LMPT_TRACEBACK", "").lower() in ("1", "true", "yes", "on"):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as interrupt:  # the training scripts say first whether and how to resume (run_resumable)
        print(f"\n{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        sys.exit(interrupt_status(interrupt))
