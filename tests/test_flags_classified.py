"""Every flag of the training scripts is classified for ``--resume``: compared with last.pt
(``settings.RUN_SETTINGS``), free to change (``settings.RESUME_MAY_CHANGE``), where the run is
(``settings.RUN_PLACE``), or checked otherwise than as a setting of last.pt, with how
(``settings.SETTINGS_CHECKED_OTHERWISE``). A new flag in none of them (saved in args.json, but an edited value
would resume silently) fails here, naming the lists to add it to."""
import re
from pathlib import Path

import pytest

from finetune_clip import fc as fc_script
from lmpt import losses, settings
from lmpt import train as train_script
from lmpt.settings import CONFIG_KINDS, OPTIONAL_CONFIG_KINDS

README = Path(__file__).resolve().parents[1] / "README.md"

CLASSES = {"settings.RUN_SETTINGS": settings.RUN_SETTINGS, "settings.RESUME_MAY_CHANGE": settings.RESUME_MAY_CHANGE,
           "settings.RUN_PLACE": settings.RUN_PLACE,
           "settings.SETTINGS_CHECKED_OTHERWISE": tuple(settings.SETTINGS_CHECKED_OTHERWISE)}
SCRIPTS = {"lmpt/train.py": train_script.build_parser, "finetune_clip/fc.py": fc_script.build_parser}

WHAT_TO_DO = (
    "A flag that changes what is trained (batches, loss, steps, prompts, features or scores): add it to "
    "settings.TRAINING_SETTINGS (saved with the run, compared with last.pt on --resume), its kind to "
    "settings.OPTIONAL_CONFIG_KINDS, a row to EDITED_SETTINGS in tests/test_resume_checks.py and its name to "
    "README's list of compared settings under 'Resuming a run' (a flag only lmpt's embedding loss reads: also "
    "settings.CAPTION_LOSS_FLAGS and the entries of the kinds that read it in losses.CSE_LOSS_FLAGS; a flag only "
    "some other methods read: a row of settings.METHOD_ONLY_FLAGS). "
    "Where the run reads or computes (a folder, a device): settings.RESUME_MAY_CHANGE. "
    "Where the run is: settings.RUN_PLACE. "
    "Otherwise settings.SETTINGS_CHECKED_OTHERWISE, with how a resume checks it otherwise (or why it need not).")


def dests(build):
    return [action.dest for action in build()._actions if action.dest != "help"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_of_a_training_script_is_classified_for_resume(script):
    unclassified = [key for key in dests(SCRIPTS[script]) if not any(key in names for names in CLASSES.values())]
    assert not unclassified, (f"{script}: {', '.join(f'--{key}' for key in unclassified)} in none of "
                              f"{', '.join(CLASSES)}. {WHAT_TO_DO}")


def test_each_flag_is_in_one_class_and_each_class_names_flags():
    every = set().union(*(dests(build) for build in SCRIPTS.values()))
    seen = {}
    for name, keys in CLASSES.items():
        for key in keys:
            assert key not in seen, f"{key} is in both {seen[key]} and {name}; expected one"
            seen[key] = name
        stale = [key for key in keys if key not in every]
        assert not stale, f"{name}: {stale} is no flag of {', '.join(SCRIPTS)}"


def test_every_flag_checked_otherwise_says_how():
    for key, reason in settings.SETTINGS_CHECKED_OTHERWISE.items():
        assert isinstance(reason, str) and len(reason.split()) >= 3, \
            f"SETTINGS_CHECKED_OTHERWISE[{key!r}]: no reason"


def test_every_compared_setting_has_a_kind_the_checkpoint_check_knows():
    unknown = [key for key in settings.RUN_SETTINGS if key not in {**CONFIG_KINDS, **OPTIONAL_CONFIG_KINDS}]
    assert not unknown, f"{unknown}: no kind in settings.OPTIONAL_CONFIG_KINDS (or CONFIG_KINDS)"


def test_the_flags_an_embedding_loss_reads_are_noted_unused_under_coop():
    read = {key for keys in losses.CSE_LOSS_FLAGS.values() for key in keys}
    assert read <= set(settings.CAPTION_LOSS_FLAGS), \
        f"{sorted(read - set(settings.CAPTION_LOSS_FLAGS))}: not in settings.CAPTION_LOSS_FLAGS"


def test_each_method_only_flag_is_a_flag_of_lmpt_train_read_by_prompt_methods():
    flags = set(dests(train_script.build_parser))
    for what, keys, methods in settings.METHOD_ONLY_FLAGS:
        assert keys and set(keys) <= flags, f"settings.METHOD_ONLY_FLAGS, {what!r}: {set(keys) - flags} no flag"
        assert methods and set(methods) <= set(train_script.PROMPT_METHODS), \
            f"settings.METHOD_ONLY_FLAGS, {what!r}: {set(methods) - set(train_script.PROMPT_METHODS)} no method"
    assert ("the embedding loss", settings.CAPTION_LOSS_FLAGS, train_script.CAPTION_METHODS) in \
        settings.METHOD_ONLY_FLAGS


def test_the_readme_lists_every_setting_a_resume_compares():
    text = README.read_text()
    start = text.index("- **What is compared**", text.index("### Resuming a run"))
    bullet = text[start:text.index("\n- **", start + 1)]
    listed = set(re.findall(r"`([a-z_]+)`", bullet))
    missing = [key for key in settings.RUN_SETTINGS if key not in listed]
    assert not missing, f"README.md 'Resuming a run', 'What is compared': {missing} not in its list of settings"
