"""Input files that used to be misread: a BOM before bad bytes, a malicious class_freq.pkl, one image under
two spellings, and splits that share images."""
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import write_lmpt_dataset
from lmpt.checkpoint import save_pickle
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
