"""What each flag of the training scripts (lmpt/train.py, finetune_clip/fc.py) is to a run, and the kind of each
setting a run's configuration saves: the tables a new flag goes in.

Each flag is in one of four: compared with last.pt on --resume (``RUN_SETTINGS``; ``TRAINING_SETTINGS`` are
those of how the run trains), free to change on --resume (``RESUME_MAY_CHANGE``), where the run is
(``RUN_PLACE``), or checked otherwise than as a setting of last.pt, with how (``SETTINGS_CHECKED_OTHERWISE``);
tests/test_flags_classified.py checks that each is. The kinds (``CONFIG_KINDS``, ``OPTIONAL_CONFIG_KINDS``) are
what ``checkpoint.load_checkpoint`` checks a configuration against. ``METHOD_ONLY_FLAGS``: the flags only some
prompt methods read (``CAPTION_LOSS_FLAGS``: those of the methods that read captions), which lmpt/train.py notes
as without effect under the others. Imports nothing from lmpt but its table of methods.
"""
from .methods import CAPTION_METHODS


def is_int(value):
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    """An int (not a bool) or a float."""
    return is_int(value) or isinstance(value, float)


# the flags of how a run trains (its batches, loss and steps), saved in its configuration by prepare.Training.run_config
TRAINING_SETTINGS = ("seed", "batch_size", "optimizer", "lr", "lam", "cseloss", "cse_margin", "cse_gamma",
                     "from_scratch")
# the settings of a run's configuration that its model, features, training and scores depend on
# (prompt_tuning.train and baselines.finetune save those of them they use): a resumed run's args.json must not
# contradict them (a flag it lacks takes its default, which prepare.check_settings compares too)
RUN_SETTINGS = ("n_ctx", "ctx_init", "csc", "class_token_position", "m_ctx", "preprocess", "score", "thre",
                "loss_function", *TRAINING_SETTINGS)
# the flags of the training scripts (lmpt/train.py, finetune_clip/fc.py) that args.json records but a resume does
# not compare with last.pt as settings, each with how it is checked otherwise (or why it need not be); every other
# flag is in RUN_SETTINGS, RESUME_MAY_CHANGE or RUN_PLACE (tests/test_flags_classified.py checks that each
# is in one of the four)
SETTINGS_CHECKED_OTHERWISE = {
    "dataset": "compared by what it names: last.pt's classes, image lists and labels, and image files "
               "(prepare.check_resumable)",
    "val_list": "compared by the file it names (cli.restore_run_args; the run's own moves with a new --data_root) "
                "and by what it holds: the image lists and labels (splits_sha256, prepare.check_resumable)",
    "training_method": "compared as the method last.pt names (prepare.check_resumable's methods)",
    "gamma": "μ of the DB loss's re-balanced weights, read by the losses that have them (losses.db_flags_read): a "
             "resume trains with the μ and λ its last.pt saved (its configuration's db_params; "
             "prepare.start_training says so when args.json would give others)",
    "neg_scale": "λ of the DB loss's negative-tolerant regularisation, read by the losses that have it "
                 "(losses.db_flags_read): a resume trains with the λ its last.pt saved, as gamma",
    "nb_classes": "a check of the labels file's length; trains nothing else",
    "skip_bad_images": "trains on the same images: without it an unreadable image refuses the run, and the image "
                       "files are compared (images_sha256, prepare.check_resumable)",
}
# Any flag outside RESUME_MAY_CHANGE and RUN_PLACE written with --resume must repeat the run's value
# (cli.restore_run_args).
# where the run reads and computes; the CLIP file may move (its sha256 is compared: prepare.check_resumable)
RESUME_MAY_CHANGE = ("epochs", "device", "num_workers", "data_root", "pretrained_dir", "cache_dir", "pretrain_clip",
                     "pretrain_clip_path")
RUN_PLACE = ("resume", "output_dir", "overwrite")  # where the run is, not how it trains
CAPTION_LOSS_FLAGS = ("cseloss", "cse_margin", "cse_gamma", "m_ctx", "lam")  # what only methods.CAPTION_METHODS use
# (what they set, flags, the methods that read them): flags only some prompt methods read. lmpt/train.py notes those
# written under another --training_method as without effect; a flag that a new method alone reads is a row here.
METHOD_ONLY_FLAGS = (("the embedding loss", CAPTION_LOSS_FLAGS, CAPTION_METHODS),)

_TEXT = (lambda v: isinstance(v, str), "a string")
_INT = (is_int, "an integer")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_NUMBER = (is_number, "a number")
_NAMES = (lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v), "a list of class names")
_DB = (lambda v: isinstance(v, dict) and set(v) == {"gamma", "neg_scale"} and all(map(_NUMBER[0], v.values())),
       "{'gamma': a number, 'neg_scale': a number}")
_HASHES = (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(h, str) for k, h in v.items()),
           "{split name: a sha256}")
# the settings of a run's configuration (prompt_tuning.train, baselines.finetune) that are read back, and their kinds
CONFIG_KINDS = {"method": _TEXT, "dataset": _TEXT, "class_names": _NAMES, "backbone": _TEXT, "preprocess": _TEXT,
                "n_ctx": _INT, "ctx_init": _TEXT, "csc": _BOOL, "class_token_position": _TEXT, "m_ctx": _INT,
                "score": _TEXT, "thre": _NUMBER}
# not in the configurations of older runs
OPTIONAL_CONFIG_KINDS = {"backbone_file": _TEXT, "backbone_sha256": _TEXT, "splits_sha256": _TEXT,
                         "selection_split": _TEXT, "db_params": _DB, "loss_function": _TEXT, "seed": _INT,
                         "batch_size": _INT, "optimizer": _TEXT, "lr": _NUMBER, "lam": _NUMBER, "cseloss": _TEXT,
                         "cse_margin": _NUMBER, "cse_gamma": _NUMBER, "from_scratch": _BOOL, "images_sha256": _TEXT,
                         "split_sha256": _HASHES, "precision": _TEXT}
