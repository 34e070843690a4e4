"""What README's "Extending" promises: an added dataset or loss shows up everywhere the tables are listed."""

import pytest

from finetune_clip import fc as fc_script
from lmpt import losses
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.data import DATASETS, DatasetSpec
from zero_shot_clip import test as zero_shot_script


def data_root_help(parser):
    [action] = [a for a in parser._actions if a.dest == "data_root"]
    return action.help


@pytest.mark.parametrize("script", [train_script, test_script, fc_script, zero_shot_script])
def test_the_data_root_help_names_an_added_dataset_folder(monkeypatch, script):
    folders = ", ".join(f"{spec.folder}/" for spec in DATASETS.values())  # the table's (voc/, coco/, synth/, …)
    assert data_root_help(script.build_parser()).startswith(f"folder holding {folders} (default: ")
    monkeypatch.setitem(DATASETS, "test-lt", DatasetSpec("test-lt", "added", "added_lt_train.txt",
                                                         "added_lt_test.txt", "added_lt_captions.txt",
                                                         "added_labels.txt"))
    assert data_root_help(script.build_parser()).startswith(f"folder holding {folders}, added/ (default: ")


def test_a_plain_loss_is_one_table_entry(monkeypatch):
    # the library takes the names from the two tables, and the scripts offer those names
    assert losses.CLASSIFICATION_LOSSES == (*losses._PLAIN_LOSSES, *losses._RESAMPLE_TABLE)
    for script in (train_script, fc_script):
        [action] = [a for a in script.build_parser()._actions if a.dest == "loss_function"]
        assert tuple(action.choices) == losses.CLASSIFICATION_LOSSES
    monkeypatch.setitem(losses._PLAIN_LOSSES, "l1", lambda: "the l1 loss")
    monkeypatch.setattr(losses, "CLASSIFICATION_LOSSES", (*losses._PLAIN_LOSSES, *losses._RESAMPLE_TABLE))
    assert losses.build_classification_loss("l1", [1, 2], [3, 4]) == "the l1 loss"
    with pytest.raises(ValueError, match="unknown classification loss 'l2'; expected one of bce, mls, asl, l1, dbl"):
        losses.build_classification_loss("l2", [1, 2], [3, 4])
