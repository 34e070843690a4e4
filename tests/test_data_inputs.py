"""Input files that used to be misread: a BOM before bad bytes, a malicious class_freq.pkl, one image under
two spellings, and splits that share images."""
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import write_lmpt_dataset
from lmpt import train as train_script
from lmpt.checkpoint import save_pickle
from lmpt.cli import report_errors
from lmpt.data import REPO_ROOT, DataError, class_frequency, load_class_frequency, load_dataset, read_list

DATA = REPO_ROOT / "data"


def test_a_bad_byte_after_a_bom_is_named_at_its_own_line_and_byte(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbfa 0\nb 1\n\xffc 2\n")
    with pytest.raises(DataError) as refused:
        read_list(path, 3)
    assert str(refused.value).startswith(f"{path}:3: not UTF-8 text (byte b'\\xff' cannot be decoded: ")
    path.write_bytes(b"\xef\xbb\xbfa 0\r\nb\xc3 1\r\n")  # and with CRLF endings, a truncated sequence on line 2
    with pytest.raises(DataError, match=r"list\.txt:2: not UTF-8 text \(byte b'\\xc3' cannot"):
        read_list(path, 3)


class Payload:
    """Pickles as a call of ``function(*args)``: what a malicious class_freq.pkl would run on loading."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


# (a function that writes a file, its arguments given the target, the suffix it adds to the target)
PAYLOADS = [(Path.touch, lambda target: (target,), ""), (np.save, lambda target: (target, np.zeros(1)), ".npy")]


@pytest.mark.parametrize("function, arguments, suffix", PAYLOADS, ids=["Path.touch", "numpy.save"])
def test_a_class_freq_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, function, arguments, suffix):
    pickle.loads(pickle.dumps(Payload(function, *arguments(tmp_path / "shown"))))  # an unguarded load runs it
    assert (tmp_path / f"shown{suffix}").exists()
    labels = np.eye(3, dtype=np.float32)
    fields = class_frequency(labels)
    fields["class_freq"] = Payload(function, *arguments(tmp_path / "marker"))
    pkl = tmp_path / "class_freq.pkl"
    pkl.write_bytes(pickle.dumps(fields))
    with pytest.raises(DataError) as refused:
        load_class_frequency(pkl, labels)
    wanted = f"{function.__module__}.{function.__qualname__}"
    assert str(refused.value).startswith(f"{pkl}: the pickle asks for {wanted}, which is not loaded (a pickle's "
                                         f"globals can run code); expected a dict of NumPy arrays and lists")
    assert f"delete {pkl}" in str(refused.value)
    assert not (tmp_path / f"marker{suffix}").exists()


@pytest.mark.parametrize("folder, prefix, classes", [("voc", "voc_lt", 20), ("coco", "coco_lt", 80)])
def test_the_shipped_class_freq_files_load_as_an_unrestricted_pickle_reads_them(folder, prefix, classes):
    _, labels = read_list(DATA / folder / f"{prefix}_train.txt", classes)
    loaded = load_class_frequency(DATA / folder / "class_freq.pkl", labels)
    with open(DATA / folder / "class_freq.pkl", "rb") as f:
        plain = pickle.load(f)  # trusted: the repository's own files
    assert plain.pop("derived_by_lmpt", False) is (folder == "coco")  # COCO-LT's was derived here; VOC-LT's published
    assert list(loaded) == list(plain)
    for key, value in plain.items():
        assert type(loaded[key]) is type(value)
        assert np.array_equal(np.asarray(loaded[key]), np.asarray(value))
        assert np.asarray(loaded[key]).dtype == np.asarray(value).dtype


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_class_freq_pickles_of_every_protocol_load(tmp_path, protocol):
    """What the project saves (``save_pickle``) and older protocols, NumPy scalars included."""
    labels = (np.arange(12).reshape(4, 3) % 2).astype(np.float32)
    fields = class_frequency(labels)
    fields["extra"] = [np.float64(0.5), np.int64(3), np.array([True]), {"nested": (1, "a")}]
    pkl = tmp_path / "class_freq.pkl"
    pkl.write_bytes(pickle.dumps(fields, protocol=protocol))
    loaded = load_class_frequency(pkl, labels)
    assert loaded["extra"][:2] == [0.5, 3] and loaded["extra"][3] == {"nested": (1, "a")}
    assert np.array_equal(loaded["condition_prob"], fields["condition_prob"])
    save_pickle(pkl, fields)
    assert np.array_equal(load_class_frequency(pkl, labels)["gt_labels"], fields["gt_labels"])
    if protocol <= 2:  # as NumPy 1 wrote them: the same globals under numpy.core (text opcodes: renamed in place)
        numpy1 = pickle.dumps(fields, protocol=protocol).replace(b"numpy._core", b"numpy.core")
        assert b"numpy.core.multiarray\nscalar" in numpy1
        pkl.write_bytes(numpy1)
        assert load_class_frequency(pkl, labels)["extra"][:2] == [0.5, 3]


@pytest.mark.parametrize("spelling", ["./images/train_000.jpg", "images/./train_000.jpg", "images//train_000.jpg",
                                      "images/../images/train_000.jpg"])
def test_an_image_listed_again_under_another_spelling_is_refused(tmp_path, spelling):
    base = write_lmpt_dataset(tmp_path, n_train=8, n_test=4)
    train = base / "voc_lt_train.txt"
    lines = train.read_text().splitlines()
    assert lines[0].startswith("images/train_000.jpg ")
    train.write_text("\n".join(lines[:5] + [f"{spelling} 0"] + lines[5:]) + "\n")
    with pytest.raises(DataError) as refused:
        load_dataset("voc-lt", tmp_path)
    assert str(refused.value) == (f"{train}:6: image {spelling} is listed again (first on line 1 as "
                                  f"images/train_000.jpg); expected each image once")


@pytest.mark.parametrize("folder, classes", [("voc", 20), ("coco", 80)])
def test_the_shipped_train_and_test_lists_share_no_image(folder, classes):
    """The overlap check passes the real VOC-LT and COCO-LT lists (and the datasets load whole)."""
    dataset = load_dataset(folder, DATA)
    assert len(dataset.class_names) == classes
    assert (len(dataset.train_paths), len(dataset.test_paths)) in ((1142, 4952), (1909, 5000))
    assert not {p.removeprefix("./") for p in dataset.train_paths} & {p.removeprefix("./") for p in dataset.test_paths}


def test_a_test_list_sharing_images_with_the_train_list_is_refused(tmp_path):
    base = write_lmpt_dataset(tmp_path, n_train=8, n_test=4)
    train, test = base / "voc_lt_train.txt", base / "voc_lt_test.txt"
    test.write_text(test.read_text() + "./images/train_003.jpg 3\nimages/train_005.jpg 1\n")
    with pytest.raises(DataError) as refused:
        load_dataset("voc-lt", tmp_path, training=False)
    assert str(refused.value) == (
        f"{test}: 2 of its 6 images are also in {train}:\n"
        f"  {test}:5: ./images/train_003.jpg (also {train}:4)\n"
        f"  {test}:6: images/train_005.jpg (also {train}:6)\n"
        f"expected the test split to share no image with the train split (a trained-on image would be scored as "
        f"unseen)")


def write_val_list(base, count=4):
    """A validation list of ``count`` images of its own (copies of test images under images/val_*.jpg)."""
    lines = []
    for line in (base / "voc_lt_test.txt").read_text().splitlines()[:count]:
        image, labels = line.split(" ", 1)
        shutil.copy(base / image, base / image.replace("test_", "val_"))
        lines.append(f"{image.replace('test_', 'val_')} {labels}")
    (base / "val.txt").write_text("\n".join(lines) + "\n")
    return base / "val.txt"


def test_a_val_list_sharing_images_with_the_test_or_train_list_is_refused(tmp_path):
    base = write_lmpt_dataset(tmp_path, n_train=8, n_test=8)
    val = write_val_list(base)
    assert load_dataset("voc-lt", tmp_path, val_list=val).val_paths == [f"images/val_{i:03d}.jpg" for i in range(4)]
    test, train = base / "voc_lt_test.txt", base / "voc_lt_train.txt"
    with pytest.raises(DataError) as refused:
        load_dataset("voc-lt", tmp_path, val_list=test)
    message = str(refused.value)
    assert message.startswith(f"{test}: 8 of its 8 images are also in {test} (the same file):\n"
                              f"  {test}:1: images/test_000.jpg (also {test}:1)\n")
    assert "\n  … and 3 more\nexpected a --val_list that shares no image with the test split: an epoch selected " \
           "on test images makes the test mAP optimistic (leave out --val_list to select on the test split, as " \
           "published, and be told so)" in message
    val.write_text(val.read_text() + "images/./test_002.jpg 2\n")
    with pytest.raises(DataError, match=rf"^{val}: 1 of its 5 images are also in {test}:\n  {val}:5: "
                                        rf"images/\./test_002\.jpg \(also {test}:3\)\n"):
        load_dataset("voc-lt", tmp_path, val_list=val)
    val.write_text("\n".join(train.read_text().splitlines()[2:4]) + "\n")
    with pytest.raises(DataError) as refused:
        load_dataset("voc-lt", tmp_path, val_list=val)
    assert str(refused.value) == (
        f"{val}: 2 of its 2 images are also in {train}:\n"
        f"  {val}:1: images/train_002.jpg (also {train}:3)\n"
        f"  {val}:2: images/train_003.jpg (also {train}:4)\n"
        f"expected a --val_list that shares no image with the train split: an epoch selected on images it "
        f"trained on favours overfitting")


def test_train_py_refuses_the_test_list_as_val_list_before_any_work(tmp_path, capsys, monkeypatch):
    write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=4)
    test = tmp_path / "data" / "voc" / "voc_lt_test.txt"
    (tmp_path / "x.pt").write_bytes(b"")  # found, so the data is read first
    monkeypatch.delenv("LMPT_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as stopped:
        report_errors(train_script.main, ["--data_root", str(tmp_path / "data"), "--pretrain_clip",
                                          str(tmp_path / "x.pt"), "--device", "cpu", "--output_dir",
                                          str(tmp_path / "run"), "--cache_dir", str(tmp_path / "cache"),
                                          "--val_list", str(test)])
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and "Traceback" not in err
    assert f"error: {test}: 4 of its 4 images are also in {test} (the same file):\n" in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_one_class_with_softmax_scores_is_refused_and_with_sigmoid_evaluated(tmp_path, tiny_vit_checkpoint,
                                                                           monkeypatch):
    from sklearn.metrics import average_precision_score
    from lmpt import baselines
    from zero_shot_clip import test as zero_shot_script
    root = tmp_path / "data"
    write_lmpt_dataset(root)
    labels = root / "voc" / "voc_labels.txt"
    labels.write_text(labels.read_text().splitlines()[0] + "\n")  # class 0 alone
    for name in ("voc_lt_train.txt", "voc_lt_test.txt"):  # ids of the other classes dropped
        lines = [" ".join(t for t in line.split() if not t.isdigit() or t == "0") for line in
                 (root / "voc" / name).read_text().splitlines()]
        (root / "voc" / name).write_text("\n".join(lines) + "\n")
    (root / "voc" / "class_freq.pkl").unlink(missing_ok=True)
    argv = ["--dataset", "voc-lt", "--data_root", str(root), "--pretrain_clip_path", str(tiny_vit_checkpoint),
            "--nb_classes", "1", "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
            "--output_dir", str(tmp_path / "zs")]
    with pytest.raises(ValueError, match=f"{labels}: one class; a softmax over one class scores every image 1"):
        zero_shot_script.main(argv)
    evaluate_logits, seen = baselines.evaluate_logits, {}

    def keep_logits(logits, targets, *args, **kwargs):
        seen.update(logits=np.asarray(logits, dtype=np.float64), targets=np.asarray(targets))
        return evaluate_logits(logits, targets, *args, **kwargs)
    monkeypatch.setattr(baselines, "evaluate_logits", keep_logits)
    zero_shot_script.main(argv + ["--score", "sigmoid"])
    logits, targets = seen["logits"][:, 0], seen["targets"][:, 0]  # [N]: the one class
    assert np.unique(logits).size > 1 and 0 < targets.sum() < targets.size  # a ranking, of both kinds of image
    expected = 100 * average_precision_score(targets, 1 / (1 + np.exp(-logits)))  # sigmoid: logits' ranking
    assert expected != pytest.approx(100 * targets.mean())  # what constant scores (a softmax over one class) get
    assert json.loads((tmp_path / "zs" / "results.json").read_text())["mAP"] == pytest.approx(expected)
