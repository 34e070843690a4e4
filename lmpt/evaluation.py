"""Rebuild a trained run from its checkpoint and evaluate it: what ``lmpt/test.py`` runs (``evaluate_run``), and
the pieces ``lmpt.api.load_run`` shares with it.

A checkpoint of ``lmpt/train.py`` (CoOp, LMPT) or of ``finetune_clip/fc.py`` (the linear probe, full
fine-tuning) holds its run's configuration: the model is rebuilt from it (``prompt_tuning.prompt_model``,
``baselines.finetuned_model``), on the CLIP file the run trained on (``run_backbone``), and the flags of
``lmpt/test.py`` are read against it (``apply_checkpoint_config``). The test images are encoded while the
model is restored: ``prompt_tuning.evaluate_checkpoint_prompts`` and ``baselines.finetuned_logits``.
"""
import operator
from pathlib import Path

from .backbones import check_backbone, find_backbone, same_backbone
from .baselines import FINETUNE_TEST_KEYS, finetuned_logits
from .checkpoint import check_results_file, load_checkpoint, read_saved_json, replace_results
from .data import DEFAULT_DATA_ROOT
from .device import select_device
from .engine import RUN_IDENTITY, checkpoint_results, selection_record
from .fileid import file_version
from .methods import FINETUNE_METHODS, FULL_FINETUNE, PROMPT_METHODS
from .metrics import evaluate_logits
from .models import context_words, prompt_texts
from .paths import absolute
from .prepare import load_splits, results_data, splits_identity
from .prompt_tuning import PROMPT_KEYS, evaluate_checkpoint_prompts
from .report import format_results


def training_data_root(run_dir):
    """The ``--data_root`` of the training run in ``run_dir`` (its ``args.json``, said) when that folder is here,
    else the default ``data/`` of the repository: a run trained on a dataset of one's own is tested on it."""
    args_file = Path(run_dir) / "args.json"
    saved = (read_saved_json(args_file) or {}).get("data_root")  # none: a checkpoint copied alone
    if not isinstance(saved, str) or not saved or Path(saved) == DEFAULT_DATA_ROOT:
        return DEFAULT_DATA_ROOT
    if not Path(saved).is_dir():  # a run copied from another machine or clone
        print(f"[test] the training run's --data_root {saved} ({args_file}) is not here; testing on "
              f"{DEFAULT_DATA_ROOT} (pass --data_root to test elsewhere)")
        return DEFAULT_DATA_ROOT
    print(f"[test] --data_root {saved}: the training run's ({args_file}); pass --data_root to test elsewhere")
    return Path(saved)


def run_checkpoint_path(source):
    """The file ``lmpt/test.py --checkpoint source`` names: a run folder's ``best.pt``, or the .pt file itself."""
    source = Path(source)
    return source / "best.pt" if source.is_dir() else source


def read_run_checkpoint(source):
    """The checkpoint that ``lmpt/test.py --checkpoint`` evaluates: ``source`` is a run folder (its ``best.pt``)
    or a .pt file. Returns (the checkpoint, its path), refused unless ``check_evaluable``. Its tensors stay in
    the file until used (``mmap``): the optimizer state of a last.pt is never read."""
    checkpoint_path = run_checkpoint_path(source)
    state = load_checkpoint(checkpoint_path, mmap=True)
    check_evaluable(state["config"], checkpoint_path)
    return state, checkpoint_path


def check_evaluable(config, checkpoint_path):
    """Refuse a checkpoint's configuration that ``lmpt/test.py`` (and ``lmpt.api.load_run``) cannot rebuild a
    model from: a method other than those of lmpt/train.py and finetune_clip/fc.py, or a fine-tuning run of an
    earlier version, without ``FINETUNE_TEST_KEYS`` (``load_checkpoint`` checked a prompt run's settings)."""
    method = config.get("method")
    if method not in PROMPT_METHODS + FINETUNE_METHODS:
        raise ValueError(f"{checkpoint_path}: a {method} checkpoint; lmpt/test.py evaluates the runs of "
                         f"lmpt/train.py ({', '.join(PROMPT_METHODS)}) and finetune_clip/fc.py "
                         f"({', '.join(FINETUNE_METHODS)})")
    missing = [key for key in FINETUNE_TEST_KEYS if key not in config] if method in FINETUNE_METHODS else []
    if missing:
        raise ValueError(f"{checkpoint_path}: config: no {', '.join(missing)}; a {method} run of an earlier "
                         f"version, which lmpt/test.py cannot evaluate (its results.json holds its evaluation)")


def run_backbone(config, pretrained_dir, checkpoint_path):
    """The CLIP file a run (``config``, of ``checkpoint_path``) was trained on: found by its name, or by its file
    name in ``pretrained_dir``, else in the run's own ``--pretrained_dir`` (its ``args.json``, said: a run trained
    with ``--pretrained_dir /x`` is tested as it is resumed, without the flag), and refused when its sha256 is not
    the run's (``check_backbone``)."""
    try:
        clip_file = find_backbone(config["backbone"], pretrained_dir, config.get("backbone_file"))
        check_backbone(config, clip_file, checkpoint_path)  # another file of that name: the run's own is tried
    except (FileNotFoundError, ValueError) as not_found:
        args_file = Path(checkpoint_path).parent / "args.json"
        own = (read_saved_json(args_file) or {}).get("pretrained_dir")  # none: a checkpoint copied alone
        if not isinstance(own, str) or not own:
            raise
        try:
            clip_file = find_backbone(config["backbone"], own, config.get("backbone_file"))
            check_backbone(config, clip_file, checkpoint_path)
        except (FileNotFoundError, ValueError):
            raise not_found from None
        print(f"[test] CLIP file {clip_file}: in the training run's --pretrained_dir {own} ({args_file})")
    return clip_file


def apply_checkpoint_config(args, config, checkpoint_path):
    """``lmpt/test.py``'s flags against the configuration of a checkpoint ``read_run_checkpoint`` read: the prompt
    layout and the backbone come from the checkpoint (a flag that differs is noted and ignored; a fine-tuning
    run has no prompts); the dataset, its data root, preprocessing, score and threshold default to the
    training run's."""
    method = config.get("method")
    same = {"ctx_init": lambda a, b: context_words(a) == context_words(b),  # 'a_photo' is 'a photo'
            "pretrain_clip": lambda a, b: same_backbone(a, b, getattr(args, "pretrained_dir", None))}  # one file
    if method in FINETUNE_METHODS:
        ignored = [f"--{key}" for key in PROMPT_KEYS if getattr(args, key, None) is not None]
        if ignored:
            print(f"[test] note: {', '.join(ignored)} ignored; a {method} run (finetune_clip/fc.py) has no prompts")
        if method == FULL_FINETUNE and "batch_size" not in getattr(args, "given", ()) \
                and "batch_size" in config:  # its trained encoder runs on the images in batches, as in training
            args.batch_size = config["batch_size"]
    else:
        trained = dict(config)  # with --ctx_init, the context vectors are its words' tokens, whatever --n_ctx said
        trained["n_ctx"] = prompt_texts([], config["n_ctx"], config["ctx_init"])[0]
        for key in PROMPT_KEYS:  # the seed's test command passes flags that the checkpoint already fixes
            given = getattr(args, key, None)
            if given is not None and not same.get(key, operator.eq)(given, trained[key]):
                print(f"[test] note: --{key} {given!r} ignored; the checkpoint was trained with {trained[key]!r} "
                      f"and the prompt learner is rebuilt from it")
    for flag, saved in (("pretrain_clip", config.get("backbone")), ("training_method", config.get("method"))):
        given = getattr(args, flag, None)  # these find the default run folder; written with --checkpoint, compared
        if flag in getattr(args, "given", ()) and saved is not None and not same.get(flag, operator.eq)(given, saved):
            print(f"[test] note: --{flag} {given!r} ignored; the checkpoint was trained with {saved!r}")
    if args.preprocess is not None and args.preprocess != config["preprocess"]:
        evaluated = "prompts are" if method in PROMPT_METHODS else "classifier is"
        print(f"[test] note: --preprocess {args.preprocess}: the run trained on images of {config['preprocess']!r} "
              f"preprocessing; its {evaluated} evaluated on images of another")
    args.dataset = args.dataset or config["dataset"]
    if getattr(args, "data_root", None) is None:
        args.data_root = training_data_root(Path(checkpoint_path).parent)
    args.preprocess = args.preprocess or config["preprocess"]
    args.score = args.score or config["score"]
    args.thre = config["thre"] if args.thre is None else args.thre


def note_other_lists(config, splits, args):
    """Say when the train and test lists read now are not those the run trained with (each one's
    ``splits_identity``; a checkpoint of an earlier version has them together, with the val list's when it
    had one, which is not read here): the head/medium/tail groups follow the train list read now."""
    saved = config.get("split_sha256")
    if saved is not None:
        other = any(name in saved and splits_identity({name: splits[name]}) != saved[name]
                    for name in ("train", "test"))
    else:
        other = "splits_sha256" in config and config.get("selection_split") != "val" and \
            splits_identity({name: splits[name] for name in ("train", "test")}) != config["splits_sha256"]
    if other:
        print(f"[test] note: the train or test list of --dataset {args.dataset} in --data_root {args.data_root} is "
              f"not the one the run trained with (their sha256 differs): the test split and the head/medium/tail "
              f"groups are those of the lists read now")


def checkpoint_selection(state):
    """How the run of a checkpoint (``state``) selected its best epoch, as its results.json records it: the
    ``selected_epoch`` (counted from 1; a last.pt's best so far, which may not be the epoch evaluated),
    ``selection_split`` (from its configuration; not in those of older runs) and ``selection_mAP``."""
    best, split = state.get("best"), state["config"].get("selection_split")
    if isinstance(best, dict) and isinstance(best.get("epoch"), int):
        return selection_record(best, split)
    return {"selection_split": split} if split is not None else {}


# what an lmpt/test.py evaluation depends on, said when one replaces an earlier one's results (note_replaced_results):
# the run evaluated, the data (``dataset``, ``data_root`` absolute, and ``images`` scored: another test list in the
# same data root shows there) and the settings of the evaluation
TEST_REPLACED_KEYS = ("checkpoint", "checkpoint_epoch", "backbone_sha256", "dataset", "data_root", "images",
                      "preprocess", "score", "thre")


def same_checkpoint(old, new):
    """Whether an earlier evaluation's ``checkpoint`` names the absolute path ``new``, erring towards "other".

    ``old`` is absolute, or relative in the files of earlier versions (from a folder not recorded): such a path
    counts as the same only when it has at least two parts besides ``.`` and ``..`` (a run folder and the file:
    ``best.pt`` alone would be any run's) and they are the end of ``new``."""
    if not isinstance(old, str) or not old:
        return False
    old, new = Path(old), Path(new)
    if old.is_absolute():
        return old == new
    parts = [part for part in old.parts if part not in (".", "..")]
    return len(parts) >= 2 and list(new.parts[-len(parts):]) == parts


def check_still_read(checkpoint_path, read, out):
    """Refuse to write results that name ``checkpoint_path`` when the file there is no longer the one evaluated
    (``read``: its ``fileid.file_version`` before it was read): a training run wrote its folder meanwhile (a new
    best epoch, or ``--overwrite``), and the results would stand for a checkpoint they are not of."""
    if file_version(checkpoint_path) != read:
        raise ValueError(f"{checkpoint_path} was replaced or removed while it was evaluated (by a training run in "
                         f"its folder?); "
                         f"the results above are of the file as it was read and are not written to {out}. Evaluate "
                         f"it again once the run has finished")


def evaluate_run(args):
    """Rebuild a run's model from its checkpoint's saved configuration and evaluate it on the test split: the
    prompt learner of lmpt/train.py, or the classifier (and trained encoder) of finetune_clip/fc.py."""
    device = select_device(args.device, make_current=True)
    # absolute (a link keeps its name), as results.json records its checkpoint: the results name it from any folder
    read = file_version(run_checkpoint_path(absolute(args.checkpoint)))  # before it is read: replaced after, told
    state, checkpoint_path = read_run_checkpoint(absolute(args.checkpoint))
    out = check_results_file(absolute(args.output) if args.output else checkpoint_path.parent / "test_results.json")
    config = state["config"]
    apply_checkpoint_config(args, config, checkpoint_path)

    def same_classes(dataset):  # before the images are looked for: another dataset's are not 'missing'
        if dataset.class_names != config["class_names"]:
            raise ValueError(f"{checkpoint_path}: trained on classes {config['class_names'][:5]}… "
                             f"({len(config['class_names'])}), but --dataset {args.dataset} has "
                             f"{dataset.class_names[:5]}… ({len(dataset.class_names)})")
    dataset, splits = load_splits(args, need_val=False, training=False, check_dataset=same_classes)
    note_other_lists(config, splits, args)
    clip_file = run_backbone(config, args.pretrained_dir, checkpoint_path)

    topk = getattr(args, "topk", None)
    if config["method"] in FINETUNE_METHODS:
        logits = finetuned_logits(args, state, checkpoint_path, dataset, splits, clip_file, device)
        results = checkpoint_results(evaluate_logits(logits, splits["test"].labels, dataset.train_freq, args.thre,
                                                     args.score, topk=topk), checkpoint_path, state, args.thre,
                                     args.score)
    else:
        results = evaluate_checkpoint_prompts(args, state, checkpoint_path, dataset, splits, clip_file, device, topk)
    results.update({key: config[key] for key in RUN_IDENTITY if key in config})  # the run evaluated, by name
    results.update(checkpoint_selection(state))
    results["preprocess"] = args.preprocess
    results.update(results_data(dataset, args.data_root))  # the data evaluated
    print(format_results(results, dataset.class_names, dataset.train_freq))
    # one evaluation at a time replaces a file; a training run beside writes a new best.pt apart
    replace_results(out, results, TEST_REPLACED_KEYS, "test", compare={"checkpoint": same_checkpoint},
                    check=lambda: check_still_read(checkpoint_path, read, out))
    print(f"[test] results written to {out}")
    return results
