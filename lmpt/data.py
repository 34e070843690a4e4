"""The data layer: list, caption, label and class-frequency files (SPEC §2),
the table of known datasets, image loading and preprocessing (SPEC §8).

Every reader refuses bad input early with one ``DataError`` naming the file,
the line and what was expected, so a long run never dies late on a typo.
Paths inside list and caption files are relative to the dataset folder
(``<data_root>/voc/``, ``<data_root>/coco/``, ``<data_root>/synth/``).
"""
import errno
import os
import pickle
import posixpath
import random
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from clip.clip import CLIP_MEAN, CLIP_STD

from .checkpoint import save_pickle, save_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT / "data"

_INT = re.compile(r"[+-]?\d+")


class DataError(ValueError):
    """Bad or missing data; the message names the file (and line) and what was expected."""


# ---------------------------------------------------------------------------
# The table of datasets: adding one is one entry (and, for the DB losses' μ and λ of its own, a row in
# losses.DB_DEFAULTS; without one it trains with VOC-LT's, said at the start of each run).

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # under the data root
    train_list: str
    test_list: str
    captions: str
    labels: str
    class_freq: str = "class_freq.pkl"
    aliases: tuple = ()
    source: str = ""  # how a user gets the files, quoted when they are missing


DATASETS = {
    "voc-lt": DatasetSpec(
        "voc-lt", "voc", "voc_lt_train.txt", "voc_lt_test.txt", "voc_lt_captions.txt", "voc_labels.txt",
        aliases=("VOC", "voc", "VOC-LT"),
        source="the list, caption and label files ship in this repository's data/voc/ (as in the published "
               "LMPT repository); the images are PASCAL VOC 2007 and 2012, unpacked as data/voc/VOCdevkit/"
               "VOC2007/JPEGImages/ and data/voc/VOCdevkit/VOC2012/JPEGImages/"),
    "coco-lt": DatasetSpec(
        "coco-lt", "coco", "coco_lt_train.txt", "coco_lt_test.txt", "coco_lt_captions.txt", "coco_labels.txt",
        aliases=("COCO", "coco", "COCO-LT"),
        source="the list, caption and label files ship in this repository's data/coco/ (as in the published "
               "LMPT repository); the images are MS-COCO 2017, unpacked as data/coco/train2017/ and "
               "data/coco/val2017/"),
    "synth-lt": DatasetSpec(
        "synth-lt", "synth", "synth_lt_train.txt", "synth_lt_test.txt", "synth_lt_captions.txt",
        "synth_labels.txt", aliases=("SYNTH", "synth"),
        source="the embedded synthetic benchmark is generated, images included, by the generator in tools/ "
               "(see README.md) into data/synth/"),
}
DEFAULT_DATASET = "voc-lt"  # the published scripts' --dataset default


def check_dataset_table(datasets):
    """At import: each ``DATASETS`` key is its spec's name, and no name or alias means two datasets (the
    first match would hide the other)."""
    owner = {}
    for key, spec in datasets.items():
        if key != spec.name:
            raise ValueError(f"DATASETS[{key!r}] is named {spec.name!r}; expected the key and the name to agree")
        for name in dict.fromkeys((spec.name, *spec.aliases)):
            if owner.setdefault(name, spec.name) != spec.name:
                raise ValueError(f"DATASETS: {name!r} names both {owner[name]} and {spec.name}; expected each "
                                 f"name and alias to mean one dataset")


check_dataset_table(DATASETS)


def dataset_names():
    """The names of ``DATASETS`` with their aliases, as the scripts' help and errors list them."""
    def listed(spec):
        aliases = [a for a in spec.aliases if a != spec.name]
        return f"{spec.name} (also {', '.join(aliases)})" if aliases else spec.name
    return ", ".join(listed(s) for s in DATASETS.values())


def dataset_folders():
    """The folders of ``DATASETS`` under ``--data_root``, as the scripts' help names them ("voc/, coco/, …")."""
    return ", ".join(f"{spec.folder}/" for spec in DATASETS.values())


def get_dataset_spec(name):
    """The ``DatasetSpec`` for a name or alias (case-sensitive as listed)."""
    for spec in DATASETS.values():
        if name == spec.name or name in spec.aliases:
            return spec
    raise DataError(f"unknown dataset {name!r}; expected one of: {dataset_names()}")


def dataset_name(value):
    """A ``--dataset`` value by its dataset's name (the alias ``VOC`` is ``voc-lt``); an unknown name as it
    is (refused, with the known ones, when the dataset is read)."""
    try:
        return get_dataset_spec(value).name
    except DataError:
        return str(value)


# ---------------------------------------------------------------------------
# File readers.

def _read_lines(path):
    """[(line number, text without line ending and trailing spaces)] of a text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    # lines end in "\n" (or "\r\n"); a file without any "\n" but with "\r" has the classic Mac OS endings
    ending = "\r" if b"\r" in data and b"\n" not in data else "\n"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        body = e.object  # the bytes after any BOM, which "utf-8-sig" skips: e.start counts in these
        line = body[:e.start].count(ending.encode()) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {body[e.start:e.start + 1]!r} cannot be "
                        f"decoded: {e.reason}); expected a UTF-8 text file") from None
    # split on the line ending only: str.splitlines would also break captions at rare Unicode separators
    return [(n, line.rstrip()) for n, line in enumerate(text.split(ending), start=1)]


def label_line(path, name):
    """The line of a labels file that names class ``name`` ('?' if none does), to name it in an error."""
    return next((n for n, line in _read_lines(path) if " ".join(line.split()[:-1]) == name), "?")


def read_labels(path):
    """Class names ordered by id from ``<class name> <id>`` lines; ids must be 0..C-1, each once."""
    names_by_id, line_of_id, line_of_name = {}, {}, {}
    for n, line in _read_lines(path):
        if not line.strip():
            continue
        tokens = line.split()
        if len(tokens) < 2 or not _INT.fullmatch(tokens[-1]):
            raise DataError(f"{path}:{n}: cannot parse {line!r}; expected '<class name> <integer id>'")
        name, class_id = " ".join(tokens[:-1]), int(tokens[-1])
        if class_id in line_of_id:
            raise DataError(f"{path}:{n}: id {class_id} already given on line {line_of_id[class_id]}; "
                            f"expected each id once")
        if name in line_of_name:
            raise DataError(f"{path}:{n}: class name {name!r} already given on line {line_of_name[name]}; "
                            f"expected each class once")
        names_by_id[class_id], line_of_id[class_id], line_of_name[name] = name, n, n
    if not names_by_id:
        raise DataError(f"{path}: no classes; expected lines '<class name> <id>'")
    num_classes = len(names_by_id)
    wrong = sorted(set(names_by_id) ^ set(range(num_classes)))
    if wrong:
        missing = sorted(set(range(num_classes)) - set(names_by_id))
        extra = sorted(set(names_by_id) - set(range(num_classes)))
        lines = ", ".join(f"line {line_of_id[i]} has id {i}" for i in extra)
        raise DataError(f"{path}:{line_of_id[extra[0]]}: {num_classes} classes but ids {missing} are missing "
                        f"({lines}); expected ids exactly 0..{num_classes - 1}, each once")
    return [names_by_id[i] for i in range(num_classes)]


def read_list(path, num_classes):
    """``<relative/path.jpg> <id> <id> …`` lines -> (paths, labels [N, C] float32 0/1).

    A line may carry no label (a zero row); blank lines are skipped. An image listed twice, also under two
    spellings of its path (compared ``posixpath.normpath``-ed), is refused.
    """
    paths, rows, line_of_path = [], [], {}
    for n, line in _read_lines(path):
        if not line.strip():
            continue
        if line[0].isspace():
            raise DataError(f"{path}:{n}: line starts with a space (empty image path) in {line!r}; "
                            f"expected '<relative/path.jpg> <id> <id> …'")
        image, *ids = line.split()
        row = []
        for token in ids:
            if not _INT.fullmatch(token):
                raise DataError(f"{path}:{n}: label {token!r} of {image} is not an integer; "
                                f"expected class ids in 0..{num_classes - 1}")
            class_id = int(token)
            if not 0 <= class_id < num_classes:
                raise DataError(f"{path}:{n}: label {class_id} of {image} is out of range; "
                                f"expected class ids in 0..{num_classes - 1} ({num_classes} classes)")
            row.append(class_id)
        key = posixpath.normpath(image)  # images/a.jpg, ./images/a.jpg and images//a.jpg are one image
        if key in line_of_path:
            first_line, first = line_of_path[key]
            spelled = f" as {first}" if first != image else ""
            raise DataError(f"{path}:{n}: image {image} is listed again (first on line {first_line}{spelled}); "
                            f"expected each image once")
        line_of_path[key] = n, image
        paths.append(image)
        rows.append(row)
    if not paths:
        raise DataError(f"{path}: empty split (no image lines); expected '<relative/path.jpg> <id> <id> …' lines")
    labels = np.zeros((len(paths), num_classes), dtype=np.float32)  # [N, C]
    for i, row in enumerate(rows):
        labels[i, row] = 1.0
    return paths, labels


def _not_in_train_list_hint(image, extra_lines):
    """The hint for a caption line of ``image``, which the train list does not hold: with more caption lines than
    train images (``extra_lines``), its train line was removed (as README's advice on missing images says);
    else most likely a typo in its path."""
    if extra_lines > 0:
        return f" ({image} is not in the train list: if its line was removed there, remove this caption line too)"
    return f" ({image} is not in the train list: a typo in its path?)"


def _caption_order_hint(lines, i, image, train_paths):
    """Why the caption line ``lines[i]`` names ``image`` where the train list has ``train_paths[i]``. A caption
    of an image absent from the train list is named so first: the captions after it are then one line late,
    which is not an order to fix."""
    expected, norm = train_paths[i], posixpath.normpath
    if norm(image) not in {norm(p) for p in train_paths}:
        return _not_in_train_list_hint(image, len(lines) - len(train_paths))
    later = next((n for n, line in lines[i + 1:] if norm(line.split(None, 1)[0]) == norm(expected)), None)
    if later is not None:
        return f" (the caption of {expected} is on line {later}: out of order?)"
    if i + 1 < len(train_paths) and norm(image) == norm(train_paths[i + 1]):
        return f" (is the caption of {expected} missing?)"
    if i > 0 and norm(image) == norm(train_paths[i - 1]):
        return " (a repeated line?)"
    return ""


def read_captions(path, train_paths):
    """``<relative/path.jpg> <caption…>`` lines, one per train image in train order -> captions. A path is
    its train line's in any spelling of it (``images/a.jpg``, ``./images/a.jpg``: one image, as in the lists)."""
    lines = [(n, line) for n, line in _read_lines(path) if line.strip()]
    norm = posixpath.normpath
    captions = []
    for i, (n, line) in enumerate(lines):
        image, caption = (line.split(None, 1) + [""])[:2]  # the path, then the caption after any blank
        if i >= len(train_paths):
            stranger = norm(image) not in {norm(p) for p in train_paths}
            hint = _not_in_train_list_hint(image, len(lines) - len(train_paths)) if stranger else ""
            raise DataError(f"{path}:{n}: extra line for {image!r}{hint}; expected {len(train_paths)} captions, "
                            f"one per train image, and then the end of the file")
        expected = train_paths[i]
        if norm(image) != norm(expected):
            hint = _caption_order_hint(lines, i, image, train_paths)
            raise DataError(f"{path}:{n}: expected the caption of train image {i + 1} {expected!r} "
                            f"but found {image!r}{hint}; captions must follow the train list's order")
        if not caption.strip():
            raise DataError(f"{path}:{n}: empty caption for {image}; expected '<relative/path.jpg> <caption…>'")
        captions.append(caption.strip())
    if len(captions) < len(train_paths):
        after = lines[-1][0] if lines else 0
        raise DataError(f"{path}:{after + 1}: the file ends after {len(captions)} captions; expected "
                        f"{len(train_paths)}, one per train image (first missing: {train_paths[len(captions)]})")
    return captions


# ---------------------------------------------------------------------------
# Class statistics (the Distribution-Balanced loss's class_freq.pkl).

def class_frequency(labels):
    """The four fields of the published ``class_freq.pkl``, derived from labels [N, C] 0/1."""
    gt = np.asarray(labels).astype(np.int64)  # [N, C]
    if gt.ndim != 2:
        raise ValueError(f"labels must be [N, C], got shape {gt.shape}")
    class_freq = gt.sum(axis=0)  # [C]
    neg_class_freq = gt.shape[0] - class_freq  # [C]
    co_occurrence = gt.T @ gt  # [C, C]: images holding both i and j
    condition_prob = np.zeros(co_occurrence.shape, dtype=np.float64)  # [C, C]: P(j | i); 0 where n_i = 0
    np.divide(co_occurrence, class_freq[:, None], out=condition_prob, where=class_freq[:, None] > 0)
    return {
        "gt_labels": [row.copy() for row in gt],  # a list of [C] int64 rows, as published
        "class_freq": class_freq,
        "neg_class_freq": neg_class_freq,
        "condition_prob": condition_prob,
    }


def write_dataset(folder, spec, class_names, lists, captions):
    """Write a dataset in the format :func:`load_dataset` reads, each file atomically, into ``folder``: the
    image lists ``lists`` ({file name: [(image path, [class ids])]}, among them ``spec.train_list``), the
    captions of ``spec.captions`` ([(image path, caption)]), ``spec.labels`` (``<name> <id>`` per class) and
    the train list's ``class_freq.pkl``. Returns ``folder`` (a Path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in lists.items():
        save_text(folder / name, "".join(path + "".join(f" {c}" for c in ids) + "\n" for path, ids in rows))
    save_text(folder / spec.captions, "".join(f"{path} {caption}\n" for path, caption in captions))
    save_text(folder / spec.labels, "".join(f"{name} {i}\n" for i, name in enumerate(class_names)))
    labels = np.zeros((len(lists[spec.train_list]), len(class_names)), dtype=np.float32)  # [N, C]
    for i, (_, ids) in enumerate(lists[spec.train_list]):
        labels[i, list(ids)] = 1
    save_pickle(folder / "class_freq.pkl", class_frequency(labels))
    return folder


def _save_pickle_atomically(obj, path):
    """Write with the project's one atomic writer (temporary file, sync, rename, a new file's usual
    permissions); warn (not fail) on a read-only folder. Returns whether the file was saved."""
    try:
        save_pickle(path, obj)
    except OSError as e:
        warnings.warn(f"{path}: could not save the class frequencies ({e}); using them unsaved")
        return False
    return True


# The globals that a pickled dict of NumPy arrays, NumPy scalars and lists needs (protocols 0-5, written by
# NumPy 1 or 2): none of them runs code of the file's choosing.
SAFE_PICKLE_GLOBALS = frozenset(
    [(f"{core}.multiarray", name) for core in ("numpy.core", "numpy._core") for name in ("_reconstruct", "scalar")]
    + [("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
       ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")])


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside ``SAFE_PICKLE_GLOBALS``; the message is its ``module.name``."""


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays, nothing else: any other global (``os.system``, a class whose
    ``__setstate__`` runs code, …) is refused before it is imported."""

    def find_class(self, module, name):
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


DERIVED_KEY = "derived_by_lmpt"  # in a class_freq.pkl this code derived (and may derive again), beside the four


def load_class_frequency(pkl_path, labels, train_list=None):
    """Load ``class_freq.pkl`` and check it against ``labels`` (of ``train_list``, as messages name it); derive
    and save it, said, when absent. One that this code derived (``DERIVED_KEY``; the repository's COCO-LT file
    too) is derived again, said, when the train list has changed since; any other (the published VOC-LT one, a
    file of one's own) is refused when it disagrees."""
    pkl_path = Path(pkl_path)
    derived = class_frequency(labels)
    if not pkl_path.exists():
        if _save_pickle_atomically({**derived, DERIVED_KEY: True}, pkl_path):
            print(f"[data] {pkl_path}: derived from {train_list or 'the train list'} and saved")
        return derived
    advice = f"delete {pkl_path} and it will be derived again from the train list"
    try:
        with open(pkl_path, "rb") as f:
            loaded = ArrayUnpickler(f).load()
    except RefusedGlobal as e:
        raise DataError(f"{pkl_path}: the pickle asks for {e}, which is not loaded (a pickle's globals can run "
                        f"code); expected a dict of NumPy arrays and lists, as class_freq.pkl holds; "
                        f"{advice}") from None
    except Exception as e:  # any unpickling failure means the same thing to the user
        raise DataError(f"{pkl_path}: cannot be read as a pickle ({type(e).__name__}: {e}); {advice}") from e
    missing = [k for k in derived if not isinstance(loaded, dict) or k not in loaded]
    if missing:
        raise DataError(f"{pkl_path}: missing field(s) {missing}; expected a dict with "
                        f"{list(derived)}; {advice}")
    for key in ("class_freq", "neg_class_freq"):
        value = np.asarray(loaded[key])
        if value.shape != derived[key].shape or not np.array_equal(value, derived[key]):
            if loaded.get(DERIVED_KEY) is True:
                print(f"[data] {pkl_path}: derived earlier from other labels than {train_list or 'the train list'} "
                      f"holds now; derived again")
                _save_pickle_atomically({**derived, DERIVED_KEY: True}, pkl_path)
                return derived
            raise DataError(f"{pkl_path}: {key} {value.tolist()} does not match the train labels, which give "
                            f"{derived[key].tolist()} (a file from another split or dataset?); {advice}")
    loaded.pop(DERIVED_KEY, None)  # the statistics alone, as a derivation returns them
    return loaded


# ---------------------------------------------------------------------------
# A whole dataset, read and validated.

@dataclass
class LTDataset:
    spec: DatasetSpec
    root: Path  # the dataset folder; list paths are relative to it
    class_names: list
    train_paths: list
    train_labels: np.ndarray  # [N_train, C] float32 0/1
    test_paths: list
    test_labels: np.ndarray  # [N_test, C]
    captions: list  # aligned with train_paths; None when not read (load_dataset(captions=False))
    class_stats: dict  # the fields of class_freq.pkl: class_freq, neg_class_freq, … ([C] arrays)
    val_paths: list = None
    val_labels: np.ndarray = None  # [N_val, C]

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def train_freq(self):
        """Training images of each class, [C] (``class_freq`` of class_freq.pkl)."""
        return self.class_stats["class_freq"]

    @property
    def neg_freq(self):
        """Training images without each class, [C] (``neg_class_freq`` of class_freq.pkl)."""
        return self.class_stats["neg_class_freq"]


def check_every_class_trained(labels, class_names, list_file, when=""):
    """Refuse training labels [N, C] (NumPy or torch) with a class of no positive (``when``: what left it so):
    the DB loss and the class-aware margin divide by its frequency."""
    counts = np.asarray(labels).sum(axis=0)  # [C]
    empty = [f"{i} {class_names[i]!r}" for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{list_file}: no training image of class(es) {', '.join(empty)}{when}; expected every "
                        f"class to have at least one positive (no method learns a class it never sees; the DB "
                        f"loss and the class-aware margin divide by its frequency)")


def load_dataset(name, data_root=DEFAULT_DATA_ROOT, val_list=None, training=True, captions=None):
    """Read and validate a dataset's labels, lists, captions and class frequencies. Without ``training``
    (an evaluation) a class without a training image is allowed (it counts as a tail class); the train
    list still gives the class frequencies. The captions are read when ``captions`` (default: when
    ``training``); else ``LTDataset.captions`` is None."""
    captions = training if captions is None else captions
    spec = get_dataset_spec(name)
    root = Path(data_root) / spec.folder
    required = [spec.labels, spec.train_list, spec.test_list] + ([spec.captions] if captions else [])
    missing = [f for f in required if not (root / f).is_file()]
    if missing:
        where = f"folder {root} does not exist" if not root.is_dir() else f"missing in {root}: {', '.join(missing)}"
        expected = ", ".join(str(Path(data_root) / spec.folder / f) for f in required)
        raise DataError(f"dataset {spec.name}: {where}; expected {expected}" + (f"; {spec.source}" if spec.source
                                                                                else ""))
    if val_list is not None and not Path(val_list).is_file():
        beside = root / Path(val_list).name  # where the published tree keeps voc_lt_val.txt
        hint = f"; the dataset folder has {beside}: pass that path (or its name alone, which the scripts look " \
               f"up there when the current folder has no such file)" if beside.is_file() else ""
        raise DataError(f"{val_list}: validation list not found; expected a file in the list format "
                        f"'<relative/path.jpg> <id> …', paths relative to {root}{hint}")

    class_names = read_labels(root / spec.labels)
    num_classes = len(class_names)
    train_file, test_file = root / spec.train_list, root / spec.test_list
    train_paths, train_labels = read_list(train_file, num_classes)
    test_paths, test_labels = read_list(test_file, num_classes)
    check_disjoint(test_file, test_paths, train_file, train_paths,
                   "expected the test split to share no image with the train split (a trained-on image would be "
                   "scored as unseen)")
    val_paths = val_labels = None
    if val_list is not None:
        val_paths, val_labels = read_list(val_list, num_classes)
        check_disjoint(val_list, val_paths, test_file, test_paths,
                       "expected a --val_list that shares no image with the test split: an epoch selected on test "
                       "images makes the test mAP optimistic (leave out --val_list to select on the test split, as "
                       "published, and be told so)")
        check_disjoint(val_list, val_paths, train_file, train_paths,
                       "expected a --val_list that shares no image with the train split: an epoch selected on "
                       "images it trained on favours overfitting")
    captions = read_captions(root / spec.captions, train_paths) if captions else None

    if training:
        check_every_class_trained(train_labels, class_names, root / spec.train_list)
    class_stats = load_class_frequency(root / spec.class_freq, train_labels, root / spec.train_list)
    return LTDataset(spec, root, class_names, train_paths, train_labels, test_paths, test_labels,
                     captions, class_stats, val_paths, val_labels)


def image_stats(root, paths):
    """``os.stat`` of each path relative to ``root``, None where there is no file: one system call per
    image, on strings (building a ``Path`` per image cost more than the call), shared by the existence
    check and the feature cache's key."""
    root = os.fspath(root)
    stats = []
    for p in paths:
        try:
            st = os.stat(os.path.join(root, p))
        except (OSError, ValueError):
            st = None
        stats.append(st if st is not None and stat.S_ISREG(st.st_mode) else None)
    return stats


def _absent(path):
    """Whether there is no image file at ``path``: nothing there, or not a regular file. A file that cannot be
    looked up for another cause (a folder on its way this user may not search, a loop of links) is not absent:
    decoding finds it unreadable and says why, and ``--skip_bad_images`` can drop it."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return True
    except OSError as error:  # a name longer than the file system allows cannot be there either
        return error.errno == errno.ENAMETOOLONG


def find_missing_images(root, paths):
    """The paths (relative to ``root``) where there is no image file (``_absent``)."""
    root = os.fspath(root)
    return [p for p, st in zip(paths, image_stats(root, paths)) if st is None and _absent(os.path.join(root, p))]


def line_numbers(list_file):
    """{image path: its line} of a list file (read again only to name lines in an error)."""
    return {line.split()[0]: n for n, line in _read_lines(list_file) if line.strip()}


def check_disjoint(first, first_paths, second, second_paths, expected, show=5):
    """Refuse the images of list file ``first`` that list file ``second`` also holds (``first_paths``,
    ``second_paths``: their paths, compared ``posixpath.normpath``-ed), each named with its two lines;
    ``expected`` ends the message."""
    in_second = {posixpath.normpath(p): p for p in second_paths}
    shared = [p for p in first_paths if posixpath.normpath(p) in in_second]
    if not shared:
        return
    line_first, line_second = line_numbers(first), line_numbers(second)
    found = [f"{first}:{line_first.get(p, '?')}: {p} (also {second}:"
             f"{line_second.get(in_second[posixpath.normpath(p)], '?')})" for p in shared]
    same = " (the same file)" if Path(first).resolve() == Path(second).resolve() else ""
    raise DataError(f"{first}: {len(shared)} of its {len(first_paths)} images are also in {second}{same}:\n"
                    f"{listing(found, show)}\n{expected}")


def listing(lines, show):
    """The first ``show`` of ``lines``, indented one per line, and how many more there are."""
    more = f"\n  … and {len(lines) - show} more" if len(lines) > show else ""
    return "  " + "\n  ".join(lines[:show]) + more


def check_images_exist(root, lists, show=5):
    """Refuse, all at once, the images of ``lists`` ([(list file, paths)]) that are not on disk, each named
    with its list file and line."""
    counts, found = [], []
    for list_file, paths in lists:
        missing = find_missing_images(root, paths)
        if missing:
            line_of = line_numbers(list_file)
            counts.append(f"{list_file}: {len(missing)} of {len(paths)} images are missing")
            found += [f"{list_file}:{line_of.get(p, '?')}: {Path(root) / p}" for p in missing]
    if found:
        raise DataError(f"{'; '.join(counts)} under {root}:\n{listing(found, show)}\n"
                        f"expected each listed path to be an image file relative to {root} (--skip_bad_images "
                        f"drops unreadable images, not missing ones: remove their lines)")


# ---------------------------------------------------------------------------
# Preprocessing and image loading.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Preprocessing kinds: (mean, std) of the normalisation, and the resize steps (``_resize_steps``).
NORMALIZATION = {"lmpt": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}
PREPROCESS_KINDS = tuple(NORMALIZATION)


def _normalization(kind):
    """(mean, std) of a preprocessing kind; ValueError naming the known kinds."""
    if kind not in NORMALIZATION:
        raise ValueError(f"unknown preprocessing {kind!r}; expected one of {PREPROCESS_KINDS}")
    return NORMALIZATION[kind]


class ToRGB:
    """PIL image -> RGB (``to_rgb``); an RGB image, as ``ImageListDataset`` gives every image, is passed on
    as it is (no copy per decoded image). A class, so that a transform holding it pickles to loader workers
    and its ``repr`` is the same in every process."""

    def __call__(self, image):
        return image if image.mode == "RGB" else to_rgb(image)

    def __repr__(self):
        return "ToRGB()"


def _resize_steps(kind, resolution):
    """A PIL image -> a resolution × resolution RGB image. ``lmpt``: squash (the published LMPT
    transform); ``clip``: bicubic resize of the short side + centre crop (OpenAI's ``preprocess``)."""
    if kind == "lmpt":
        return [T.Resize((resolution, resolution)), ToRGB()]
    if kind == "clip":
        return [T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(resolution), ToRGB()]
    raise ValueError(f"preprocessing {kind!r} has no resize steps in lmpt.data._resize_steps; expected one of "
                     f"lmpt, clip")


def build_transform(kind, resolution, normalize=True):
    """PIL image -> [3, r, r] tensor: ``_resize_steps`` + the kind's statistics.

    No random flip here: training flips decoded tensors (``lmpt.engine.epoch_plan`` picks each view).
    ``normalize=False`` stops at the uint8 pixels ([3, r, r], a quarter of the bytes to pass between
    processes); ``BatchNormalize(kind)`` then finishes the job on a batch, on any device. The feature
    cache keys on the transform's ``repr`` (``lmpt.features.cache_key``), so an edited step misses it.
    """
    stats = _normalization(kind)
    tail = [T.ToTensor(), T.Normalize(*stats)] if normalize else [T.PILToTensor()]
    return T.Compose(_resize_steps(kind, resolution) + tail)


class BatchNormalize:
    """uint8 images [B, 3, H, W] -> float32 [B, 3, H, W], the same operations as ``ToTensor`` + ``Normalize``
    (so the same values, bit for bit), run wherever the batch is: on the GPU, after a 4× smaller copy."""

    def __init__(self, kind):
        self.kind, self.stats = kind, _normalization(kind)
        self._stats = {}  # device -> (mean, std) [3, 1, 1], copied there once

    def __call__(self, images):
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchNormalize({self.kind!r}) expects uint8 images, got {images.dtype}")
        if images.device not in self._stats:
            self._stats[images.device] = tuple(torch.tensor(v, dtype=torch.float32).view(-1, 1, 1).to(images.device)
                                               for v in self.stats)
        mean, std = self._stats[images.device]
        return images.to(torch.float32).div(255).sub_(mean).div_(std)


class ImageListDataset(torch.utils.data.Dataset):
    """Images of a list file -> ``(image, index)``, or ``(image, index, error)`` with ``tolerate_errors``.

    With ``tolerate_errors`` an unreadable image becomes a zero tensor and a message naming the file,
    so one pass lists every bad image; without it, it raises ``DataError``.
    """

    def __init__(self, root, paths, transform, tolerate_errors=False):
        self.root = Path(root)
        self.paths = list(paths)
        self.transform = transform if transform is not None else T.ToTensor()
        self.tolerate_errors = tolerate_errors
        self._blank = None  # zero tensor shaped like the transform's output, made on first need

    def __len__(self):
        return len(self.paths)

    def _open(self, path):
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated or corrupt file fails here
            return to_rgb(image)

    def _blank_like_output(self):
        if self._blank is None:
            self._blank = torch.zeros_like(self.transform(Image.new("RGB", (256, 256))))
        return self._blank.clone()

    def __getitem__(self, index):
        path = self.root / self.paths[index]
        try:
            image = self._open(path)
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
            message = f"{path}: cannot read image ({type(e).__name__}: {e})"
            if not self.tolerate_errors:
                raise DataError(f"{message}; expected a readable image file") from e
            return self._blank_like_output(), index, message
        tensor = self.transform(image)
        return (tensor, index, "") if self.tolerate_errors else (tensor, index)


def to_rgb(image):
    """An RGB copy of a PIL image. 16-bit greyscale (modes ``I;16…``, and ``I`` holding values above 255,
    as Pillow opens 16-bit PNG and TIFF files) is scaled to 8 bits first: ``convert("RGB")`` would clip
    every value above 255 to white. Floating-point greyscale (mode ``F``) in [0, 1] is scaled to 0..255
    (``convert`` would make it black); other values are clipped to 0..255."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)  # [H, W]
        if image.mode == "F" and values.max(initial=0) <= 1:
            values = values * 255  # floating-point intensities in [0, 1]
        elif image.mode != "F" and (image.mode != "I" or values.max(initial=0) > 255):
            values = values / 257  # 0..65535 -> 0..255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))  # mode L
    return image.convert("RGB")


def available_cores():
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def seed_worker(worker_id):
    """``worker_init_fn`` for DataLoader: seed NumPy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
