"""README "When things go wrong" → Images: a missing image's line removed from the train list. The caption check
names the caption line of the removed image as one whose image is not in the train list (not "out of order"), and
the steps README gives (remove the caption line too; delete VOC-LT's published class_freq.pkl) load the dataset."""
import pickle
import shutil

import numpy as np
import pytest

from lmpt.data import REPO_ROOT, DataError, class_frequency, load_dataset, read_list
from lmpt.metrics import class_groups

DATA = REPO_ROOT / "data"
REMOVED = "VOCdevkit/VOC2012/JPEGImages/2008_000028.jpg"  # line 2 of voc_lt_train.txt and of voc_lt_captions.txt


def copy_voc(tmp_path):
    """A copy of the repository's VOC-LT list files (never write into the repository)."""
    shutil.copytree(DATA / "voc", tmp_path / "voc", ignore=shutil.ignore_patterns("VOCdevkit"))
    return tmp_path / "voc"


def drop_lines(path, image):
    """Remove the line of ``image`` from a list or captions file; returns its line number."""
    lines = path.read_text().splitlines(keepends=True)
    number = next(n for n, line in enumerate(lines, start=1) if line.split(None, 1)[0] == image)
    path.write_text("".join(lines[:number - 1] + lines[number:]))
    return number


def test_a_caption_of_an_image_removed_from_the_train_list_is_named_so_not_out_of_order(tmp_path):
    base = copy_voc(tmp_path)
    assert drop_lines(base / "voc_lt_train.txt", REMOVED) == 2
    with pytest.raises(DataError) as refused:
        load_dataset("voc-lt", tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{base / 'voc_lt_captions.txt'}:2: expected the caption of train image 2 "
                              f"'VOCdevkit/VOC2012/JPEGImages/2008_000043.jpg' but found '{REMOVED}' ({REMOVED} is "
                              f"not in the train list: if its line was removed there, remove this caption line too)"), \
        message
    assert "out of order" not in message


def test_the_caption_of_a_removed_last_train_line_is_named_as_not_in_the_train_list(tmp_path):
    base = copy_voc(tmp_path)
    last = (base / "voc_lt_train.txt").read_text().split()[-3]  # 'VOCdevkit/…/2010_002287.jpg 11 8'
    assert drop_lines(base / "voc_lt_train.txt", last) == 1142
    with pytest.raises(DataError) as refused:
        load_dataset("voc-lt", tmp_path)
    assert str(refused.value) == (f"{base / 'voc_lt_captions.txt'}:1142: extra line for {last!r} ({last} is not in "
                                  f"the train list: if its line was removed there, remove this caption line too); "
                                  f"expected 1141 captions, one per train image, and then the end of the file")


def test_a_caption_out_of_order_is_still_named_so(tmp_path):
    base = copy_voc(tmp_path)
    lines = (base / "voc_lt_captions.txt").read_text().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]  # both images are in the train list
    (base / "voc_lt_captions.txt").write_text("".join(lines))
    with pytest.raises(DataError, match=f"the caption of {REMOVED} is on line 3: out of order\\?"):
        load_dataset("voc-lt", tmp_path)


def test_readmes_steps_for_a_removed_train_line_load_voc_lt(tmp_path, capsys):
    """Remove the train line and the caption line, delete the published class_freq.pkl: the dataset loads, with
    the class statistics (and groups) of the edited list, derived and saved, said."""
    base = copy_voc(tmp_path)
    drop_lines(base / "voc_lt_train.txt", REMOVED)
    drop_lines(base / "voc_lt_captions.txt", REMOVED)
    pkl = base / "class_freq.pkl"
    with pytest.raises(DataError, match=f"{pkl}: class_freq .* does not match the train labels.*; delete {pkl} and "
                                        f"it will be derived again from the train list"):
        load_dataset("voc-lt", tmp_path)  # the published file carries no derived_by_lmpt mark: refused
    pkl.unlink()
    dataset = load_dataset("voc-lt", tmp_path)
    assert f"[data] {pkl}: derived from {base / 'voc_lt_train.txt'} and saved" in capsys.readouterr().out
    _, labels = read_list(base / "voc_lt_train.txt", 20)
    assert len(dataset.train_paths) == len(dataset.captions) == 1141 and REMOVED not in dataset.train_paths
    reference = class_frequency(labels)
    for key in ("class_freq", "neg_class_freq", "condition_prob"):
        assert np.array_equal(dataset.class_stats[key], reference[key])
    published = pickle.loads((DATA / "voc" / "class_freq.pkl").read_bytes())
    assert dataset.train_freq[6] == published["class_freq"][6] - 1  # 2008_000028.jpg holds class 6 (car) alone
    assert [len(g) for g in class_groups(dataset.train_freq).values()] == [6, 6, 8]  # here, the same groups
    assert pickle.loads(pkl.read_bytes())["derived_by_lmpt"] is True


def test_a_caption_path_in_another_spelling_of_its_train_line_is_that_image(tmp_path):
    """'./images/a.jpg' in the captions and 'images/a.jpg' in the train list are one image, as in the lists: the
    captions load as they are; one out of order is still named so, under its own spelling."""
    base = copy_voc(tmp_path)
    captions = base / "voc_lt_captions.txt"
    plain = load_dataset("voc-lt", tmp_path).captions
    lines = captions.read_text().splitlines(keepends=True)
    captions.write_text("".join("./" + line for line in lines))
    assert load_dataset("voc-lt", tmp_path).captions == plain
    lines[1], lines[2] = "./" + lines[2], "./" + lines[1]
    captions.write_text("".join(lines))
    with pytest.raises(DataError, match=f"the caption of {REMOVED} is on line 3: out of order\\?"):
        load_dataset("voc-lt", tmp_path)
