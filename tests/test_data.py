"""The data layer: real published files, bad inputs refused with file:line, images and transforms."""
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmpt.data import (CLIP_MEAN, CLIP_STD, DATASETS, DEFAULT_DATA_ROOT, IMAGENET_MEAN, IMAGENET_STD, REPO_ROOT,
                       BatchNormalize, DataError, DatasetSpec, ImageListDataset, build_transform,
                       check_dataset_table, check_images_exist, class_frequency, dataset_names, find_missing_images,
                       get_dataset_spec, image_stats, load_class_frequency, load_dataset, read_captions, read_labels,
                       read_list, seed_worker)

DATA = REPO_ROOT / "data"
REAL = {  # published counts (SPEC §1-§3): train, test, unlabeled test lines, head/medium/tail classes
    "voc-lt": dict(folder="voc", prefix="voc_lt", labels="voc_labels.txt", classes=20, train=1142, test=4952,
                   unlabeled_test=0, groups=(6, 6, 8)),
    "coco-lt": dict(folder="coco", prefix="coco_lt", labels="coco_labels.txt", classes=80, train=1909, test=5000,
                    unlabeled_test=48, groups=(22, 33, 25)),
}


def first_tokens(path):
    """The first space-separated token of every non-blank line, parsed independently of lmpt.data."""
    return [line.split(" ")[0] for line in Path(path).read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------
# The table of datasets.

def test_a_dataset_without_source_or_aliases_reads_cleanly_in_help_and_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "nus-lt", DatasetSpec("nus-lt", "nus", "nus_lt_train.txt", "nus_lt_test.txt",
                                                        "nus_lt_captions.txt", "nus_labels.txt"))
    assert dataset_names().endswith(", nus-lt") and "synth-lt (also SYNTH, synth)" in dataset_names()
    with pytest.raises(DataError) as err:
        load_dataset("nus-lt", tmp_path / "elsewhere")
    assert str(err.value) == (f"dataset nus-lt: folder {tmp_path / 'elsewhere' / 'nus'} does not exist; expected "
                              + ", ".join(str(tmp_path / "elsewhere" / "nus" / f)
                                          for f in ("nus_labels.txt", "nus_lt_train.txt", "nus_lt_test.txt",
                                                    "nus_lt_captions.txt")))


def test_a_name_or_alias_of_two_datasets_is_refused():
    clash = dict(DATASETS, new=DatasetSpec("new", "new", "t.txt", "s.txt", "c.txt", "l.txt", aliases=("COCO",)))
    with pytest.raises(ValueError, match="'COCO' names both coco-lt and new"):
        check_dataset_table(clash)
    with pytest.raises(ValueError, match="DATASETS\\['other'\\] is named 'new'"):
        check_dataset_table({"other": clash["new"]})
    check_dataset_table(DATASETS)  # the shipped table


# ---------------------------------------------------------------------------
# The real published files.

def test_repo_paths_point_at_this_checkout():
    assert REPO_ROOT == Path(__file__).resolve().parents[1]
    assert DEFAULT_DATA_ROOT == REPO_ROOT / "data"


def test_voc_class_freq_equals_published_file_exactly():
    published = pickle.loads((DATA / "voc" / "class_freq.pkl").read_bytes())
    _, labels = read_list(DATA / "voc" / "voc_lt_train.txt", 20)
    derived = class_frequency(labels)
    assert set(derived) == set(published)
    assert type(derived["gt_labels"]) is type(published["gt_labels"])
    assert len(derived["gt_labels"]) == len(published["gt_labels"])
    for mine, theirs in zip(derived["gt_labels"], published["gt_labels"]):
        assert type(mine) is type(theirs) and mine.dtype == theirs.dtype
        assert np.array_equal(mine, theirs)
    for key in ("class_freq", "neg_class_freq", "condition_prob"):
        assert derived[key].dtype == published[key].dtype, key
        assert derived[key].shape == published[key].shape, key
        assert np.array_equal(derived[key], published[key]), key


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_split_counts_and_groups(name):
    real = REAL[name]
    folder = DATA / real["folder"]
    classes = read_labels(folder / real["labels"])
    assert len(classes) == real["classes"]
    train_paths, train_labels = read_list(folder / f"{real['prefix']}_train.txt", len(classes))
    test_paths, test_labels = read_list(folder / f"{real['prefix']}_test.txt", len(classes))
    assert len(train_paths) == real["train"] and train_labels.shape == (real["train"], real["classes"])
    assert len(test_paths) == real["test"] and test_labels.shape == (real["test"], real["classes"])
    assert train_labels.dtype == np.float32 and set(np.unique(train_labels)) <= {0.0, 1.0}
    assert int((test_labels.sum(axis=1) == 0).sum()) == real["unlabeled_test"]
    assert train_paths == first_tokens(folder / f"{real['prefix']}_train.txt")
    # labels equal an independent parse of the ids
    lines = (folder / f"{real['prefix']}_test.txt").read_text().splitlines()
    for row, line in zip(test_labels, lines):
        assert set(np.flatnonzero(row)) == {int(t) for t in line.split()[1:]}
    n = train_labels.sum(axis=0)
    groups = (int((n >= 100).sum()), int(((n >= 20) & (n < 100)).sum()), int((n < 20).sum()))
    assert groups == real["groups"]


def test_labels_files_parse_crlf_and_names_with_spaces():
    raw = (DATA / "coco" / "coco_labels.txt").read_bytes()
    assert b"\r\n" in raw  # the file really has CRLF endings
    coco = read_labels(DATA / "coco" / "coco_labels.txt")
    assert len(coco) == 80 and coco[9] == "traffic light"
    assert "traffic light 9" in raw.decode()
    voc = read_labels(DATA / "voc" / "voc_labels.txt")
    assert len(voc) == 20 and voc[0] == "aeroplane" and voc[19] == "tvmonitor"
    for name in coco + voc:
        assert name == name.strip() and "\r" not in name and not name[-1].isdigit()


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_captions_align_with_train_lists(name):
    real = REAL[name]
    folder = DATA / real["folder"]
    paths, _ = read_list(folder / f"{real['prefix']}_train.txt", real["classes"])
    captions = read_captions(folder / f"{real['prefix']}_captions.txt", paths)
    assert len(captions) == len(paths)
    lines = [l for l in (folder / f"{real['prefix']}_captions.txt").read_text().splitlines() if l.strip()]
    assert [l.split(" ")[0] for l in lines] == paths
    assert captions == [l.split(" ", 1)[1].strip() for l in lines]


def test_load_real_voc_uses_published_pkl():
    dataset = load_dataset("VOC")
    assert dataset.spec is DATASETS["voc-lt"] and dataset.root == DATA / "voc"
    assert dataset.num_classes == 20 and len(dataset.captions) == len(dataset.train_paths) == 1142
    assert dataset.val_paths is None and dataset.val_labels is None
    published = pickle.loads((DATA / "voc" / "class_freq.pkl").read_bytes())
    assert np.array_equal(dataset.train_freq, published["class_freq"])


def test_load_real_coco_derives_and_saves_class_freq(tmp_path):
    shutil.copytree(DATA / "coco", tmp_path / "coco")  # a copy: never write into the repository
    committed = pickle.loads((DATA / "coco" / "class_freq.pkl").read_bytes())
    (tmp_path / "coco" / "class_freq.pkl").unlink()
    dataset = load_dataset("coco-lt", tmp_path)
    saved = pickle.loads((tmp_path / "coco" / "class_freq.pkl").read_bytes())
    for key in ("class_freq", "neg_class_freq", "condition_prob"):  # the committed file is the derived one
        assert np.array_equal(saved[key], committed[key])
    assert np.array_equal(saved["class_freq"], dataset.train_labels.sum(axis=0).astype(np.int64))
    assert np.array_equal(saved["neg_class_freq"], 1909 - saved["class_freq"])
    assert len(dataset.test_paths) == 5000 and dataset.class_names[9] == "traffic light"
    assert load_dataset("COCO-LT", tmp_path).train_freq.tolist() == saved["class_freq"].tolist()


# ---------------------------------------------------------------------------
# Dataset table.

def test_dataset_spec_aliases_case_sensitive():
    for name, spec in DATASETS.items():
        assert get_dataset_spec(name) is spec
        for alias in spec.aliases:
            assert get_dataset_spec(alias) is spec
    assert get_dataset_spec("VOC-LT").folder == "voc" and get_dataset_spec("COCO").folder == "coco"
    assert get_dataset_spec("synth").train_list == "synth_lt_train.txt"
    with pytest.raises(DataError, match="voc-lt.*coco-lt.*synth-lt"):
        get_dataset_spec("Voc")


def test_missing_dataset_folder_says_where_files_go(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("voc-lt", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "voc" / "voc_lt_train.txt") in message and "VOCdevkit" in message
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "voc_labels.txt").write_text("a 0\n")
    with pytest.raises(DataError, match="missing in .*voc_lt_train.txt"):
        load_dataset("voc-lt", tmp_path)


# ---------------------------------------------------------------------------
# A tiny dataset in the synth-lt layout, and bad variants of each file.

NAMES = ["cat", "traffic light", "boat"]
TRAIN = ["img/a.jpg 0 1", "img/b.jpg 1", "img/c.jpg 2 0", "img/d.jpg 0"]
TEST = ["img/e.jpg 2", "img/f.jpg", "img/g.jpg 1 2"]


def captions_for(lines):
    return [f"{line.split()[0]} a photo number {i} of things" for i, line in enumerate(lines)]


def write_tiny(root, train=TRAIN, test=TEST, labels=None, captions=None):
    base = Path(root) / "synth"
    base.mkdir(parents=True, exist_ok=True)
    labels = labels if labels is not None else [f"{n} {i}" for i, n in enumerate(NAMES)]
    captions = captions if captions is not None else captions_for(train)
    for name, lines in [("synth_lt_train.txt", train), ("synth_lt_test.txt", test),
                        ("synth_labels.txt", labels), ("synth_lt_captions.txt", captions)]:
        (base / name).write_text("".join(line + "\n" for line in lines))
    return base


def test_tiny_dataset_loads_with_blank_lines_crlf_and_trailing_spaces(tmp_path):
    train = ["img/a.jpg 0 1 ", "", "img/b.jpg 1\r", "img/c.jpg 2 0", "img/d.jpg 0"]
    base = write_tiny(tmp_path, train=train, labels=["cat 0\r", "boat 2 ", "traffic light 1"],
                      captions=captions_for(TRAIN))
    val = tmp_path / "my_val.txt"
    val.write_text("img/v.jpg 2\nimg/w.jpg\n")
    dataset = load_dataset("synth", tmp_path, val_list=val)
    assert dataset.root == base and dataset.class_names == NAMES
    assert dataset.train_paths == [line.split()[0] for line in TRAIN]
    expected = np.zeros((4, 3), np.float32)
    for i, line in enumerate(TRAIN):
        expected[i, [int(t) for t in line.split()[1:]]] = 1
    assert np.array_equal(dataset.train_labels, expected)
    assert dataset.test_labels[1].sum() == 0  # an unlabeled line is a zero row
    assert dataset.captions == [c.split(" ", 1)[1] for c in captions_for(TRAIN)]
    assert dataset.val_paths == ["img/v.jpg", "img/w.jpg"]
    assert np.array_equal(dataset.val_labels, np.array([[0, 0, 1], [0, 0, 0]], np.float32))
    assert dataset.train_freq.tolist() == expected.sum(0).astype(int).tolist()


def test_files_with_cr_only_line_endings_read_as_with_lf(tmp_path):
    """Classic Mac OS line endings (CR alone): every file of a dataset reads as its LF twin, errors
    name the same lines."""
    write_tiny(tmp_path / "lf")
    lf = load_dataset("synth", tmp_path / "lf")
    base = write_tiny(tmp_path / "cr")
    for name in ("synth_lt_train.txt", "synth_lt_test.txt", "synth_labels.txt", "synth_lt_captions.txt"):
        path = base / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
        assert b"\n" not in path.read_bytes()
    cr = load_dataset("synth", tmp_path / "cr")
    assert cr.class_names == lf.class_names and cr.captions == lf.captions
    assert cr.train_paths == lf.train_paths and cr.test_paths == lf.test_paths
    assert np.array_equal(cr.train_labels, lf.train_labels) and np.array_equal(cr.test_labels, lf.test_labels)
    (base / "synth_lt_train.txt").write_bytes(b"img/a.jpg 0\rimg/b.jpg seven\r")
    with pytest.raises(DataError, match=r"synth_lt_train\.txt:2: label 'seven'"):
        read_list(base / "synth_lt_train.txt", 3)
    (base / "synth_lt_train.txt").write_bytes(b"img/a.jpg 0\rimg/b.jpg 1\rimg/\xff.jpg 2\r")
    with pytest.raises(DataError, match=r"synth_lt_train\.txt:3: not UTF-8"):
        read_list(base / "synth_lt_train.txt", 3)


def test_captions_keep_unicode_separators_and_ignore_bom(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("\ufeffimg/a.jpg one\u2028line\nimg/b.jpg caf\u00e9 two \r\n", encoding="utf-8")
    assert read_captions(path, ["img/a.jpg", "img/b.jpg"]) == ["one\u2028line", "caf\u00e9 two"]


def pkl_from_other_labels(base):
    other = np.eye(3, dtype=np.float32)  # 3 images, one class each: not the train list
    (base / "class_freq.pkl").write_bytes(pickle.dumps(class_frequency(other)))


# (case id, keyword arguments of write_tiny, a hook on the folder, the file that must be named,
#  the line that must be named or None, a fragment of what was wrong)
BAD = [
    ("list-empty-path", dict(train=["img/a.jpg 0 1", " 1 2"] + TRAIN[1:]), None,
     "synth_lt_train.txt", 2, "empty image path"),
    ("list-non-integer", dict(train=TRAIN[:2] + ["img/c.jpg 2 x"] + TRAIN[3:]), None,
     "synth_lt_train.txt", 3, "not an integer"),
    ("list-float-id", dict(test=["img/e.jpg 1.0"]), None, "synth_lt_test.txt", 1, "not an integer"),
    ("list-out-of-range", dict(test=TEST[:2] + ["img/g.jpg 1 3"]), None, "synth_lt_test.txt", 3, "out of range"),
    ("list-negative", dict(test=["img/e.jpg -1"]), None, "synth_lt_test.txt", 1, "out of range"),
    ("list-duplicate", dict(train=TRAIN + ["img/b.jpg 2"]), None, "synth_lt_train.txt", 5, "first on line 2"),
    ("list-empty", dict(test=["", ""]), None, "synth_lt_test.txt", None, "empty split"),
    ("labels-missing-id", dict(labels=["cat 0", "traffic light 1", "boat 3"]), None,
     "synth_labels.txt", 3, "[2] are missing"),
    ("labels-duplicate-id", dict(labels=["cat 0", "traffic light 1", "boat 1"]), None,
     "synth_labels.txt", 3, "already given on line 2"),
    ("labels-no-id", dict(labels=["cat 0", "traffic light", "boat 2"]), None,
     "synth_labels.txt", 2, "expected '<class name> <integer id>'"),
    ("captions-missing", dict(captions=[c for i, c in enumerate(captions_for(TRAIN)) if i != 1]), None,
     "synth_lt_captions.txt", 2, "caption of img/b.jpg missing?"),
    ("captions-extra", dict(captions=captions_for(TRAIN) + ["img/z.jpg another"]), None,
     "synth_lt_captions.txt", 5, "extra line"),
    ("captions-misaligned", dict(captions=[captions_for(TRAIN)[i] for i in (0, 2, 1, 3)]), None,
     "synth_lt_captions.txt", 2, "found 'img/c.jpg' (the caption of img/b.jpg is on line 3: out of order?)"),
    ("captions-repeated", dict(captions=[captions_for(TRAIN)[i] for i in (0, 0, 2, 3)]), None,
     "synth_lt_captions.txt", 2, "found 'img/a.jpg' (a repeated line?)"),
    ("captions-stranger", dict(captions=captions_for(TRAIN)[:2] + ["img/z.jpg a caption"] + captions_for(TRAIN)[3:]),
     None, "synth_lt_captions.txt", 3,
     "found 'img/z.jpg' (img/z.jpg is not in the train list: a typo in its path?)"),  # as many lines as images
    ("captions-short", dict(captions=captions_for(TRAIN)[:3]), None,
     "synth_lt_captions.txt", 4, "first missing: img/d.jpg"),
    ("captions-empty-caption", dict(captions=captions_for(TRAIN)[:3] + ["img/d.jpg"]), None,
     "synth_lt_captions.txt", 4, "empty caption"),
    ("class-freq-mismatch", {}, pkl_from_other_labels, "class_freq.pkl", None, "does not match"),
    ("class-without-positive", dict(train=["img/a.jpg 0 1", "img/b.jpg 1", "img/c.jpg 0", "img/d.jpg 0"]), None,
     "synth_lt_train.txt", None, "no training image of class(es) 2 'boat'"),
]


@pytest.mark.parametrize("case, files, hook, named_file, line, what", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_naming_file_and_line(tmp_path, case, files, hook, named_file, line, what):
    base = write_tiny(tmp_path, **files)
    if hook:
        hook(base)
    with pytest.raises(DataError) as err:
        load_dataset("synth-lt", tmp_path)
    message = str(err.value)
    where = str(base / named_file) + (f":{line}:" if line is not None else "")
    assert where in message, message
    assert what in message, message
    assert "expected" in message or "delete" in message, message


def test_class_freq_mismatch_suggests_deleting(tmp_path):
    base = write_tiny(tmp_path)
    pkl_from_other_labels(base)
    with pytest.raises(DataError, match="delete .*class_freq.pkl"):
        load_dataset("synth-lt", tmp_path)
    (base / "class_freq.pkl").unlink()
    assert load_dataset("synth-lt", tmp_path).train_freq.tolist() == [3, 2, 1]


def test_load_class_frequency_writes_then_loads(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = (rng.random((30, 5)) < 0.3).astype(np.float32)  # [N, C]
    labels[:, 4] = 0  # a class without positives must not divide by zero
    path = tmp_path / "class_freq.pkl"
    first = load_class_frequency(path, labels)
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["class_freq.pkl"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # a new file's usual permissions, not mkstemp's 0600
    saved = pickle.loads(path.read_bytes())
    for key in ("class_freq", "neg_class_freq", "condition_prob"):
        assert np.array_equal(saved[key], first[key])
    assert all(np.array_equal(a, b) for a, b in zip(saved["gt_labels"], first["gt_labels"]))
    # reference computed here, pair by pair
    n = labels.sum(0)
    assert first["class_freq"].tolist() == n.astype(int).tolist()
    assert first["neg_class_freq"].tolist() == (30 - n).astype(int).tolist()
    for i in range(4):
        for j in range(5):
            both = np.sum((labels[:, i] == 1) & (labels[:, j] == 1))
            assert first["condition_prob"][i, j] == both / n[i]
    assert np.all(first["condition_prob"][4] == 0) and np.isfinite(first["condition_prob"]).all()
    # present: loaded, not recomputed (a marker added to the file survives)
    saved["marker"] = "loaded from disk"
    path.write_bytes(pickle.dumps(saved))
    assert load_class_frequency(path, labels)["marker"] == "loaded from disk"
    # the train list edited: the file derived here is derived again, said; one of another origin is refused
    labels[0, 0] = 1 - labels[0, 0]
    again = load_class_frequency(path, labels, "train.txt")
    assert f"[data] {path}: derived earlier from other labels than train.txt holds now; derived again" in \
        capsys.readouterr().out
    assert again["class_freq"].tolist() == labels.sum(0).astype(int).tolist() and "marker" not in again
    assert pickle.loads(path.read_bytes())["class_freq"].tolist() == again["class_freq"].tolist()
    labels[0, 0] = 1 - labels[0, 0]
    path.write_bytes(pickle.dumps(class_frequency(labels[1:])))  # a file of one's own (no DERIVED_KEY)
    with pytest.raises(DataError, match="class_freq .* does not match"):
        load_class_frequency(path, labels)


def test_read_list_matches_independent_parse(tmp_path):
    lines = ["x/1.jpg 3 0", "x/2.jpg", "x/3.jpg 1 2 3 "]
    path = tmp_path / "list.txt"
    path.write_text("\r\n".join(lines) + "\r\n")
    paths, labels = read_list(path, 4)
    assert paths == ["x/1.jpg", "x/2.jpg", "x/3.jpg"]
    assert labels.dtype == np.float32 and labels.shape == (3, 4)
    assert labels.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]]


# ---------------------------------------------------------------------------
# Images.

def write_images(folder, count, size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = f"img/{i}.jpg"
        (folder / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / path)
        paths.append(path)
    return paths


def test_missing_images_reported_all_at_once(tmp_path):
    present = write_images(tmp_path, 2)
    (tmp_path / "img/folder.jpg").mkdir()  # a folder is not an image file
    missing = [f"img/missing_{i}.jpg" for i in range(6)] + ["img/folder.jpg"]
    paths = [present[0]] + missing + [present[1]]
    assert find_missing_images(tmp_path, paths) == missing
    stats = image_stats(tmp_path, paths)
    assert [st is None for st in stats] == [False] + [True] * 7 + [False]
    assert stats[-1].st_size == (tmp_path / present[1]).stat().st_size > 0
    list_file, other_list = tmp_path / "my_list.txt", tmp_path / "other_list.txt"
    list_file.write_text("".join(f"{p} 0\n" for p in paths))
    other_list.write_text(f"{present[0]} 1\n\nimg/gone.jpg 0\n")
    with pytest.raises(DataError) as err:  # both lists' missing images in one error, with their lines
        check_images_exist(tmp_path, [(list_file, paths), (other_list, [present[0], "img/gone.jpg"])], show=8)
    message = str(err.value)
    assert f"{list_file}: 7 of 9 images are missing; {other_list}: 1 of 2 images are missing" in message
    assert all(f"{list_file}:{i + 2}: {tmp_path / m}" in message for i, m in enumerate(missing))
    assert f"{other_list}:3: {tmp_path / 'img/gone.jpg'}" in message
    with pytest.raises(DataError, match="2 more"):
        check_images_exist(tmp_path, [(list_file, paths)])
    check_images_exist(tmp_path, [(list_file, present)])  # nothing missing: no error


def test_an_image_that_cannot_be_looked_up_is_not_missing(tmp_path, monkeypatch):
    """A file behind a folder this user may not search (``chmod -R 644``), or a loop of links, is there: not
    reported missing (with the advice to remove its line) but left to decoding, which says why it cannot be
    read, and which --skip_bad_images may drop."""
    present = write_images(tmp_path, 2)
    os.symlink("loop.jpg", tmp_path / "img/loop.jpg")  # stat: 'Too many levels of symbolic links'
    (tmp_path / "img/locked").mkdir()
    paths = [*present, "img/loop.jpg", "img/locked/a.jpg", "img/gone.jpg", "img/" + "x" * 300 + ".jpg"]
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # the folder's x bit taken away (root could search it anyway)
        if "locked" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)
    monkeypatch.setattr(os, "stat", stat)
    assert find_missing_images(tmp_path, paths) == ["img/gone.jpg", paths[-1]]  # a name too long cannot be there
    assert [st is None for st in image_stats(tmp_path, paths)] == [False, False, True, True, True, True]


def test_bad_images_listed_with_tolerate_errors_and_refused_without(tmp_path):
    paths = write_images(tmp_path, 1)
    good_bytes = (tmp_path / paths[0]).read_bytes()
    (tmp_path / "img/truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 2])
    (tmp_path / "img/corrupt.jpg").write_bytes(b"this is not a jpeg" * 10)
    paths += ["img/truncated.jpg", "img/corrupt.jpg"]
    transform = build_transform("lmpt", 16)
    dataset = ImageListDataset(tmp_path, paths, transform, tolerate_errors=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, worker_init_fn=seed_worker)
    images, index, errors = next(iter(loader))
    assert images.shape == (3, 3, 16, 16) and index.tolist() == [0, 1, 2]
    reference = transform(Image.open(tmp_path / paths[0]).convert("RGB"))
    assert torch.equal(images[0], reference) and errors[0] == ""
    for k, name in ((1, "truncated.jpg"), (2, "corrupt.jpg")):
        assert str(tmp_path / "img" / name) in errors[k]
        assert torch.count_nonzero(images[k]) == 0
    strict = ImageListDataset(tmp_path, paths, transform)
    image, i = strict[0]
    assert torch.equal(image, reference) and i == 0
    for k, name in ((1, "truncated.jpg"), (2, "corrupt.jpg")):
        with pytest.raises(DataError, match=name):
            strict[k]


# ---------------------------------------------------------------------------
# Transforms.

def normalise(array, mean, std):
    """HWC uint8 -> CHW float normalised, computed here without torchvision."""
    x = torch.from_numpy(np.asarray(array, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_normalisation_constants_are_published_values():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    grey = Image.new("RGB", (50, 20), (128, 128, 128))
    for kind, mean, std in (("lmpt", IMAGENET_MEAN, IMAGENET_STD), ("clip", CLIP_MEAN, CLIP_STD)):
        out = build_transform(kind, 8)(grey)
        expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
        assert torch.allclose(out, expected[:, None, None].expand(3, 8, 8), atol=1e-6)


def test_lmpt_squashes_and_clip_crops():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (30, 60, 3), dtype=np.uint8))  # 60 wide, 30 high
    lmpt = build_transform("lmpt", 24)(image)
    assert lmpt.shape == (3, 24, 24)
    squashed = image.resize((24, 24), Image.BILINEAR)
    assert torch.allclose(lmpt, normalise(squashed, IMAGENET_MEAN, IMAGENET_STD), atol=1e-5)
    clip = build_transform("clip", 24)(image)
    assert clip.shape == (3, 24, 24)
    cropped = image.resize((48, 24), Image.BICUBIC).crop((12, 0, 36, 24))
    assert torch.allclose(clip, normalise(cropped, CLIP_MEAN, CLIP_STD), atol=1e-5)
    assert not torch.allclose(normalise(squashed, CLIP_MEAN, CLIP_STD), clip, atol=1e-2)
    for kind in ("clip", "lmpt"):
        grey = build_transform(kind, 24)(image.convert("L"))  # converted to RGB
        assert torch.allclose(grey, build_transform(kind, 24)(image.convert("L").convert("RGB")), atol=1e-6)
    with pytest.raises(ValueError, match="lmpt"):
        build_transform("imagenet", 24)
    assert "0x" not in repr(build_transform("clip", 24))  # the feature cache's key: no object addresses


def test_a_preprocessing_kind_without_resize_steps_is_refused(monkeypatch):
    import lmpt.data
    monkeypatch.setitem(lmpt.data.NORMALIZATION, "bicubic-squash", (CLIP_MEAN, CLIP_STD))
    with pytest.raises(ValueError, match="'bicubic-squash' has no resize steps in lmpt.data._resize_steps"):
        build_transform("bicubic-squash", 24)


def test_uint8_pixels_then_batch_normalize_equal_the_float_transform_bit_for_bit():
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)) for i in range(4)]
    for kind in ("lmpt", "clip"):
        pixels = torch.stack([build_transform(kind, 24, normalize=False)(im) for im in images])  # [4, 3, 24, 24]
        assert pixels.dtype == torch.uint8 and pixels.shape == (4, 3, 24, 24)
        reference = torch.stack([build_transform(kind, 24)(im) for im in images])
        assert torch.equal(BatchNormalize(kind)(pixels), reference)
    with pytest.raises(TypeError, match="uint8"):
        BatchNormalize("lmpt")(reference)
    with pytest.raises(ValueError, match="lmpt"):
        BatchNormalize("imagenet")


def test_seed_worker_follows_torch_seed():
    def draws(seed):
        torch.manual_seed(seed)
        seed_worker(0)
        return np.random.rand(), random.random()

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)


def test_default_workers_leave_the_main_process_a_core_on_larger_machines():
    from lmpt.cli import default_workers
    assert [default_workers(cores) for cores in (1, 2, 4, 5, 8, 16, 17, 64)] == [1, 2, 4, 4, 7, 15, 16, 16]


def test_a_validation_list_not_found_points_to_one_in_the_dataset_folder(tmp_path, monkeypatch):
    from conftest import write_lmpt_dataset
    base = write_lmpt_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"voc_lt_val.txt: validation list not found; expected a file in the list "
                                        r"format '<relative/path.jpg> <id> …', paths relative to .*voc$"):
        load_dataset("voc-lt", tmp_path / "data", tmp_path / "voc_lt_val.txt")
    shutil.copy(base / "voc_lt_test.txt", base / "voc_lt_val.txt")  # where the published tree keeps it
    with pytest.raises(DataError, match=f"the dataset folder has {base / 'voc_lt_val.txt'}: pass that path"):
        load_dataset("voc-lt", tmp_path / "data", tmp_path / "voc_lt_val.txt")
