"""class_freq.pkl derived by this project: the first derivation is said, and the repository's COCO-LT file (derived
here from coco_lt_train.txt, not a published file) carries the derived_by_lmpt mark, so an edited COCO-LT train list
derives it again instead of being refused; VOC-LT's published file stays unmarked."""
import pickle
import shutil

import numpy as np

from lmpt.data import DERIVED_KEY, REPO_ROOT, class_frequency, load_class_frequency, load_dataset, read_list

DATA = REPO_ROOT / "data"
FIELDS = ("gt_labels", "class_freq", "neg_class_freq", "condition_prob")


def test_the_first_derivation_says_which_file_from_which_list(tmp_path, capsys):
    labels = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float32)  # [N, C]
    pkl = tmp_path / "class_freq.pkl"
    load_class_frequency(pkl, labels, tmp_path / "train.txt")
    assert capsys.readouterr().out == f"[data] {pkl}: derived from {tmp_path / 'train.txt'} and saved\n"
    load_class_frequency(pkl, labels, tmp_path / "train.txt")  # loaded, same labels: nothing to say
    assert capsys.readouterr().out == ""


def test_load_dataset_says_it_derived_a_missing_class_freq(tmp_path, capsys):
    shutil.copytree(DATA / "coco", tmp_path / "coco")  # a copy: never write into the repository
    (tmp_path / "coco" / "class_freq.pkl").unlink()
    load_dataset("coco-lt", tmp_path, captions=False)
    base = tmp_path / "coco"
    assert f"[data] {base / 'class_freq.pkl'}: derived from {base / 'coco_lt_train.txt'} and saved\n" in \
        capsys.readouterr().out


def test_the_repositorys_coco_file_is_marked_derived_and_holds_the_derivation_of_its_train_list():
    with open(DATA / "coco" / "class_freq.pkl", "rb") as f:
        shipped = pickle.load(f)  # trusted: the repository's own file
    assert list(shipped) == [*FIELDS, DERIVED_KEY] and shipped[DERIVED_KEY] is True
    _, labels = read_list(DATA / "coco" / "coco_lt_train.txt", 80)
    derived = class_frequency(labels)
    assert len(shipped["gt_labels"]) == 1909
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(shipped["gt_labels"], derived["gt_labels"]))
    for key in FIELDS[1:]:
        assert shipped[key].dtype == derived[key].dtype and np.array_equal(shipped[key], derived[key])
    with open(DATA / "voc" / "class_freq.pkl", "rb") as f:
        assert DERIVED_KEY not in pickle.load(f)  # the published VOC-LT file: as published


def test_an_edited_coco_train_list_derives_the_shipped_file_again(tmp_path, capsys):
    """README's advice for a missing image (remove its train and caption lines) on COCO-LT: loaded, with the
    statistics of the edited list, derived again and said (before, the unmarked file was refused)."""
    shutil.copytree(DATA / "coco", tmp_path / "coco")
    base = tmp_path / "coco"
    for name in ("coco_lt_train.txt", "coco_lt_captions.txt"):
        lines = (base / name).read_text().splitlines(keepends=True)
        assert lines[0].startswith("train2017/000000554625.jpg ")
        (base / name).write_text("".join(lines[1:]))
    dataset = load_dataset("coco-lt", tmp_path)
    assert (f"[data] {base / 'class_freq.pkl'}: derived earlier from other labels than {base / 'coco_lt_train.txt'} "
            f"holds now; derived again") in capsys.readouterr().out
    _, labels = read_list(base / "coco_lt_train.txt", 80)
    assert len(labels) == 1908 and np.array_equal(dataset.train_freq, labels.sum(axis=0).astype(np.int64))
    saved = pickle.loads((base / "class_freq.pkl").read_bytes())
    assert saved[DERIVED_KEY] is True and np.array_equal(saved["class_freq"], dataset.train_freq)
