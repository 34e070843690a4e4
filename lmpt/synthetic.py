"""The embedded synthetic benchmark ("synth-lt") and the separate pretraining corpus.

Both are drawn with PIL from a seed, so the project runs and really learns on a laptop
without COCO, VOC or OpenAI weights:

- ``generate_benchmark`` writes a long-tailed multi-label benchmark in exactly the LMPT
  formats (SPEC §2): 20 shape classes, 64×64 JPEGs with 1–4 objects of varied colour,
  size, position and rotation, partly occluded, on noisy cluttered backgrounds; training
  class counts span head (≥ 100), medium (20–99) and tail (< 20) like VOC-LT (6 / 6 / 8);
  a test split where every class has ≥ 30 positives; captions for the training images.
- ``make_corpus`` draws the image–caption corpus the tiny CLIP is pretrained on, from a
  different seed stream, with balanced classes and captions without colour words
  (colour words are a shortcut for a contrastive model, docs/EMBEDDED.md).

Every image has its own random stream derived from (seed, stream, split, index), so the
output depends only on the seed and the sizes.
"""
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .locks import folder_locked

GENERATOR_VERSION = 5
IMAGE_SIZE = 64  # the tiny CLIP's input resolution
SUPERSAMPLE = 2  # shapes are drawn at 2× and reduced, for clean edges
MAX_OBJECTS = 4
MAX_ROTATION = math.pi / 6  # tilted, not upside down: radians either way
RADIUS = (10.0, 19.0)  # object radius in pixels at 64×64 (×0.85 with 3–4 objects)
CLUTTER = (0, 4)  # background strokes per image, inclusive
PIXEL_NOISE = (2.0, 6.0)  # std of the per-pixel noise
CORPUS_OBJECTS = (0.6, 0.25, 0.1, 0.05)  # P(1, 2, 3, 4 objects) in a corpus image
CORPUS_DETAIL = 0.25  # how often corpus captions give sizes and positions
REFERENCE_TRAIN = 1200  # the default training-set size; the count profile below is given at this size
DEFAULT_TEST = 1200
STAMP_NAME = "synth_stamp.json"

# Random streams: the benchmark and the corpus never share one.
_BENCHMARK_STREAM = 0x5EED_B3
_CORPUS_STREAM = 0xC0_4B05
_SPLIT_KEYS = {"train": 1, "test": 2, "labels-train": 3, "labels-test": 4, "corpus": 5, "val": 6, "labels-val": 7}


class SyntheticError(ValueError):
    """A bad argument to the generator, or a folder that cannot hold the benchmark."""


# ---------------------------------------------------------------------------
# The classes: name (the word used in prompts), training images at REFERENCE_TRAIN,
# and the synonyms captions sometimes use instead of the name.

CLASSES = [
    # name          train  synonyms
    ("circle",        400, ("disc", "round dot")),
    ("square",         80, ("box",)),
    ("triangle",      300, ()),
    ("star",          230, ("five-pointed star",)),
    ("cross",          65, ("plus sign",)),
    ("heart",         175, ()),
    ("ring",           15, ("hoop", "donut")),
    ("arrow",         135, ("pointer",)),
    ("crescent",       50, ("moon",)),
    ("hexagon",        13, ()),
    ("diamond",       110, ("rhombus",)),
    ("pentagon",       11, ()),
    ("flower",         40, ("blossom",)),
    ("bolt",            9, ("lightning bolt",)),
    ("frame",          32, ("hollow square",)),
    ("trapezoid",       8, ()),
    ("semicircle",     25, ("half circle",)),
    ("house",           6, ("hut",)),
    ("drop",            5, ("droplet", "teardrop")),
    ("hourglass",       4, ()),
]
CLASS_NAMES = [name for name, _, _ in CLASSES]
TRAIN_PROFILE = np.array([count for _, count, _ in CLASSES])  # [C] training images per class at REFERENCE_TRAIN
SYNONYMS = {name: synonyms for name, _, synonyms in CLASSES}
# Classes whose label name is a technical word that captions never use: they say the everyday
# one, as people do (VOC's label "tvmonitor" is rarely what a caption says). The tiny CLIP thus
# never reads these label names in pretraining (but for drop: the tokenizer splits "teardrop" into
# tear + drop, the label's token; changing that is a new generator version and new tables),
# so zero-shot prompts built from them fail,
# while the images are learnt under the everyday words. Prompt tuning can correct them from
# the labels, and LMPT also from the captions. Spread over head, medium and tail.
EVERYDAY_WORD_RATE = 1.0
EVERYDAY_WORD_CLASSES = ("diamond", "arrow", "cross", "crescent", "flower", "semicircle", "ring", "drop")


def test_profile(n_test=DEFAULT_TEST):
    """Test positives per class: mildly imbalanced (∝ train count^0.3), ~1.7 labels per image."""
    weights = TRAIN_PROFILE.astype(np.float64) ** 0.3
    counts = np.round(weights / weights.sum() * 1.7 * n_test).astype(np.int64)  # [C]
    return np.maximum(counts, 1)


def val_size(n_test=DEFAULT_TEST):
    """Images in the validation split (for choosing epochs and settings): half the test split's size."""
    return max(1, n_test // 2)


def train_profile(n_train=REFERENCE_TRAIN):
    """Training positives per class for ``n_train`` images (the reference profile, scaled)."""
    return np.maximum(np.round(TRAIN_PROFILE * n_train / REFERENCE_TRAIN).astype(np.int64), 1)  # [C]


# ---------------------------------------------------------------------------
# Shapes, in unit coordinates (radius about 1, y down). A shape is a list of
# (polygon, fill) with fill 255 (paint) or 0 (cut a hole), drawn in order.

def _regular(n, radius=1.0, phase=-math.pi / 2):
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _disk(cx=0.0, cy=0.0, r=1.0, n=40):
    return [(cx + x, cy + y) for x, y in _regular(n, r, 0.0)]


def _star():
    points = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * k / 5
        points.append((r * math.cos(a), r * math.sin(a)))
    return points


def _heart():
    points = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x / 16.5, -y / 16.5 + 0.1))
    return points


def _drop():
    points = []
    for k in range(40):
        t = 2 * math.pi * k / 40
        points.append((0.62 * math.sin(t) * (1 - math.cos(t)) / 1.3, -math.cos(t) * 0.95))
    return [(x, -y) for x, y in points]


SHAPES = {
    "circle": [(_disk(), 255)],
    "square": [([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)], 255)],
    "triangle": [(_regular(3, 1.05), 255)],
    "star": [(_star(), 255)],
    "cross": [([(-0.28, -1), (0.28, -1), (0.28, -0.28), (1, -0.28), (1, 0.28), (0.28, 0.28), (0.28, 1),
                (-0.28, 1), (-0.28, 0.28), (-1, 0.28), (-1, -0.28), (-0.28, -0.28)], 255)],
    "heart": [(_heart(), 255)],
    "ring": [(_disk(), 255), (_disk(r=0.58), 0)],
    "arrow": [([(-1, -0.2), (0.2, -0.2), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.2), (-1, 0.2)], 255)],
    "crescent": [(_disk(), 255), (_disk(0.45, -0.15, 0.85), 0)],
    "hexagon": [(_regular(6, 1.0, 0.0), 255)],
    "diamond": [([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)], 255)],
    "pentagon": [(_regular(5, 1.0), 255)],
    "flower": [(_disk(0.55 * math.cos(a), 0.55 * math.sin(a), 0.42, 20), 255)
               for a in (2 * math.pi * k / 6 for k in range(6))] + [(_disk(r=0.4, n=20), 255)],
    "bolt": [([(0.15, -1), (0.55, -1), (0.15, -0.15), (0.55, -0.15), (-0.35, 1), (-0.05, 0.1), (-0.45, 0.1)],
              255)],
    "frame": [([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], 255),
              ([(-0.48, -0.48), (0.48, -0.48), (0.48, 0.48), (-0.48, 0.48)], 0)],
    "trapezoid": [([(-0.45, -0.55), (0.45, -0.55), (1, 0.55), (-1, 0.55)], 255)],
    "semicircle": [([(math.cos(math.pi * k / 24), -math.sin(math.pi * k / 24) + 0.4) for k in range(25)], 255)],
    "house": [([(-0.7, 1), (-0.7, -0.1), (0, -0.95), (0.7, -0.1), (0.7, 1)], 255)],
    "drop": [(_drop(), 255)],
    "hourglass": [([(-0.75, -1), (0.75, -1), (0.12, 0), (0.75, 1), (-0.75, 1), (-0.12, 0)], 255)],
}
assert set(SHAPES) == set(CLASS_NAMES)

COLOURS = {
    "red": (215, 35, 35), "green": (40, 170, 60), "blue": (40, 80, 215), "yellow": (240, 220, 40),
    "orange": (245, 140, 30), "purple": (140, 50, 180), "pink": (245, 130, 190), "white": (245, 245, 245),
    "black": (20, 20, 20), "brown": (120, 75, 35), "cyan": (40, 210, 220), "gray": (128, 128, 128),
}
_COLOUR_NAMES = list(COLOURS)


# ---------------------------------------------------------------------------
# Drawing one image.

def _stream(seed, stream, split, index):
    return np.random.default_rng(np.random.SeedSequence([seed, stream, _SPLIT_KEYS[split], index]))


def _background(rng, size):
    """A noisy, cluttered background: a two-colour gradient with colour blotches, and thin strokes."""
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:8, 0:8] / 7.0  # [8, 8]: drawn coarse, then smoothly enlarged
    t = np.clip(0.5 + (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle), 0, 1)[..., None]
    coarse = c0 * (1 - t) + c1 * t + rng.normal(0, rng.uniform(8, 25), (8, 8, 3))  # [8, 8, 3]
    image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    _clutter(ImageDraw.Draw(image), rng, size, int(rng.integers(CLUTTER[0], CLUTTER[1] + 1)), width=(1, 3))
    return image


def _clutter(draw, rng, size, count, width):
    """Thin random lines, arcs and dots that belong to no class."""
    for _ in range(count):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        kind = rng.integers(3)
        w = int(rng.integers(width[0], width[1] + 1)) * SUPERSAMPLE
        if kind == 0:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=w)
        elif kind == 1:
            box = [min(x0, x1), min(y0, y1), max(x0, x1) + 2, max(y0, y1) + 2]
            draw.arc(box, int(rng.integers(0, 360)), int(rng.integers(0, 360)), fill=colour, width=w)
        else:
            r = int(rng.integers(1, 3)) * SUPERSAMPLE
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)


def _place(rng, radii, size=IMAGE_SIZE, tries=40):
    """Centres for objects of the given radii (pixels); overlaps allowed, full cover not."""
    centres = []
    for r in radii:
        best, best_gap = None, -np.inf
        for _ in range(tries):
            c = rng.uniform(r * 0.7, size - r * 0.7, 2)
            gap = min((np.hypot(*(c - c2)) / (r + r2) for c2, r2 in zip(centres, radii)), default=np.inf)
            if gap >= 0.75:
                best = c
                break
            if gap > best_gap:
                best, best_gap = c, gap
        centres.append(best)
    return centres


def _pick_colour(rng, background, centre):
    """A named colour that stands out from the background near ``centre``."""
    x, y = (int(np.clip(v, 0, IMAGE_SIZE - 1)) * SUPERSAMPLE for v in centre)
    local = np.asarray(background.getpixel((x, y)), dtype=np.float64)
    order = rng.permutation(len(_COLOUR_NAMES))
    for k in order:
        name = _COLOUR_NAMES[k]
        if np.linalg.norm(np.asarray(COLOURS[name]) - local) > 90:
            return name
    return _COLOUR_NAMES[order[0]]


def render_image(classes, rng):
    """Draw objects of the given class ids on a fresh background.

    Returns the 64×64 RGB image and one dict per object (class, colour, radius, centre).
    """
    size = IMAGE_SIZE * SUPERSAMPLE
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    radii = rng.uniform(*RADIUS, len(classes)) * (1.0 if len(classes) < 3 else 0.85)  # [K] pixels at 64×64
    centres = _place(rng, radii)
    objects = []
    for class_id, r, centre in zip(classes, radii, centres):
        colour = _pick_colour(rng, image, centre)
        rgb = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[colour])
        mask = Image.new("L", (size, size), 0)
        mask_draw = ImageDraw.Draw(mask)
        angle = rng.uniform(-1, 1) * MAX_ROTATION
        cos, sin = math.cos(angle), math.sin(angle)
        stretch = rng.uniform(0.88, 1.12)
        for polygon, fill in SHAPES[CLASS_NAMES[class_id]]:
            points = []
            for px, py in polygon:
                px, py = px * stretch, py / stretch
                points.append((SUPERSAMPLE * (centre[0] + r * (px * cos - py * sin)),
                               SUPERSAMPLE * (centre[1] + r * (px * sin + py * cos))))
            mask_draw.polygon(points, fill=fill)
        image.paste(rgb, (0, 0), mask)
        objects.append({"class": int(class_id), "colour": colour, "radius": float(r),
                        "centre": (float(centre[0]), float(centre[1]))})
    if rng.random() < 0.35:  # occluding strokes over the objects
        _clutter(draw, rng, size, int(rng.integers(1, 3)), width=(1, 2))
    image = image.reduce(SUPERSAMPLE)
    noise = rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)  # [64, 64, 3]
    noise *= rng.uniform(*PIXEL_NOISE)
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), objects


# ---------------------------------------------------------------------------
# Multi-label sets with exact per-class counts.

def sample_label_sets(counts, n_images, rng, max_labels=MAX_OBJECTS):
    """``n_images`` label sets (1..max_labels distinct classes each) with exactly ``counts[c]`` holding c.

    Each image gets one "primary" label from the shuffled multiset of instances; the
    remaining instances go to random images that lack the class and have room.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not n_images <= total <= n_images * max_labels:
        raise SyntheticError(f"cannot spread {total} labels over {n_images} images with 1..{max_labels} "
                             f"labels each; expected n_images <= sum(counts) <= {max_labels} * n_images")
    if counts.max() > n_images:
        raise SyntheticError(f"a class has {counts.max()} positives but there are only {n_images} images")
    instances = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    sets = [{int(c)} for c in instances[:n_images]]
    # A class may need to hold its primaries plus extras; extras of head classes go first so they find room.
    extras = sorted((int(c) for c in instances[n_images:]), key=lambda c: -counts[c])
    for c in extras:
        for _ in range(200):
            i = int(rng.integers(n_images))
            if c not in sets[i] and len(sets[i]) < max_labels:
                break
        else:
            free = [i for i in rng.permutation(n_images) if c not in sets[i] and len(sets[i]) < max_labels]
            if not free:
                raise SyntheticError(f"no room left for another label {c}; lower the counts")
            i = int(free[0])
        sets[i].add(c)
    return [sorted(s) for s in sets]


def _objects_for(labels, rng):
    """Object class ids for one label set: one per label, sometimes a second of a class (≤ 4 in all)."""
    objects = list(labels)
    while len(objects) < MAX_OBJECTS and rng.random() < 0.3:
        objects.append(objects[int(rng.integers(len(objects)))])
    return [objects[k] for k in rng.permutation(len(objects))]


# ---------------------------------------------------------------------------
# Captions.

_NUMBERS = {2: "two", 3: "three", 4: "four"}
_BACKGROUNDS = ("noisy", "cluttered", "busy", "grainy", "messy", "speckled")


def _plural(noun):
    head, _, last = noun.rpartition(" ")
    if last.endswith(("s", "x", "sh", "ch")):
        last += "es"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _article(phrase):
    return "an" if phrase[0] in "aeiou" or phrase.startswith("hour") else "a"


def _size_word(radius):
    if radius < 11:
        return "small"
    if radius > 15:
        return "large"
    return ""


def _position_phrase(centre):
    x, y = centre
    row = "top" if y < 22 else "bottom" if y > 42 else ""
    col = "left" if x < 22 else "right" if x > 42 else ""
    if row and col:
        return f"in the {row} {col}"
    if row:
        return f"at the {row}"
    if col:
        return f"on the {col}"
    return "in the middle"


def _noun(class_id, rng, synonym_rate):
    name = CLASS_NAMES[class_id]
    if name in EVERYDAY_WORD_CLASSES:
        synonym_rate = EVERYDAY_WORD_RATE
    if SYNONYMS[name] and rng.random() < synonym_rate:
        return SYNONYMS[name][int(rng.integers(len(SYNONYMS[name])))]
    return name


def _object_phrases(objects, rng, colours, synonym_rate, detail_rate):
    """One noun phrase per class present, in order of first appearance."""
    groups = {}
    for obj in objects:
        groups.setdefault(obj["class"], []).append(obj)
    phrases = []
    for class_id, group in groups.items():
        noun = _noun(class_id, rng, synonym_rate)
        group_colours = {o["colour"] for o in group}
        colour = group[0]["colour"] if colours and len(group_colours) == 1 else ""
        if len(group) == 1:
            obj = group[0]
            size = _size_word(obj["radius"]) if rng.random() < detail_rate else ""
            words = " ".join(w for w in (size, colour, noun) if w)
            phrase = f"{_article(words)} {words}"
            if rng.random() < detail_rate * 0.6 and len(groups) <= 2:
                phrase += " " + _position_phrase(obj["centre"])
        else:
            words = " ".join(w for w in (_NUMBERS[len(group)], colour, _plural(noun)) if w)
            phrase = words
        phrases.append(phrase)
    return phrases


def _join(phrases):
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_caption(objects, rng, colours=True):
    """A natural sentence naming the objects (class words, counts, sometimes colours, sizes, positions)."""
    use_colour = colours and rng.random() < 0.75
    detail_rate = 0.3 if colours else CORPUS_DETAIL
    phrases = _object_phrases(objects, rng, use_colour, synonym_rate=0.15, detail_rate=detail_rate)
    objs = _join(phrases)
    background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    templates = (
        "{objs}", "{objs} on a {bg} background", "a picture of {objs}", "a photo of {objs}",
        "an image with {objs}", "{objs} drawn on a {bg} background", "a {bg} image showing {objs}",
        "{objs} against a {bg} background",
    )
    caption = templates[int(rng.integers(len(templates)))].format(objs=objs, bg=background)
    return caption + "." if rng.random() < 0.5 else caption


# ---------------------------------------------------------------------------
# The benchmark on disk.

def _check_sizes(**sizes):
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise SyntheticError(f"{name} must be a positive integer, got {value!r}")


def _write_split(out_dir, split, label_sets, seed, jpeg_quality=90):
    """Render and save one split; returns its list's rows (image path, class ids) and the rendered objects
    per image."""
    rows, all_objects = [], []
    folder = out_dir / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    for index, labels in enumerate(label_sets):
        rng = _stream(seed, _BENCHMARK_STREAM, split, index)
        image, objects = render_image(_objects_for(labels, rng), rng)
        relative = f"images/{split}/{split}_{index:05d}.jpg"
        image.save(out_dir / relative, quality=jpeg_quality)
        rows.append((relative, labels))
        all_objects.append((relative, objects, rng))
    return rows, all_objects


def _stamp(seed, n_train, n_test):
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed), "n_train": int(n_train),
            "n_test": int(n_test), "classes": CLASS_NAMES}


def generate_benchmark(out_dir, seed=0, n_train=None, n_test=None):
    """Write the synth-lt benchmark into ``out_dir`` (the dataset folder, e.g. ``data/synth``).

    Files: images/{train,val,test}/*.jpg, synth_lt_train.txt, synth_lt_val.txt, synth_lt_test.txt,
    synth_lt_captions.txt, synth_labels.txt, class_freq.pkl and the stamp synth_stamp.json
    (written last, so a folder with a stamp is complete). Returns ``out_dir`` as a Path.
    The head / medium / tail profile holds at the default sizes (1,200 / 1,200 images). The
    validation split (``val_size(n_test)`` images, the test split's class profile, its own
    random stream) is for choosing epochs and settings (``--val_list``), so the test split
    stays unseen.
    """
    from .checkpoint import save_text  # here: drawing images needs only PIL and NumPy (and make_corpus's
    from .data import DATASETS, write_dataset  # worker processes import this module alone)

    n_train = REFERENCE_TRAIN if n_train is None else n_train
    n_test = DEFAULT_TEST if n_test is None else n_test
    _check_sizes(n_train=n_train, n_test=n_test)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STAMP_NAME).unlink(missing_ok=True)
    for split in ("train", "val", "test"):
        shutil.rmtree(out_dir / "images" / split, ignore_errors=True)

    train_counts = np.minimum(train_profile(n_train), n_train)
    test_counts = np.minimum(test_profile(n_test), n_test)
    train_sets = sample_label_sets(train_counts, n_train, _stream(seed, _BENCHMARK_STREAM, "labels-train", 0))
    test_sets = sample_label_sets(test_counts, n_test, _stream(seed, _BENCHMARK_STREAM, "labels-test", 0))
    n_val = val_size(n_test)
    val_counts = np.minimum(test_profile(n_val), n_val)
    val_sets = sample_label_sets(val_counts, n_val, _stream(seed, _BENCHMARK_STREAM, "labels-val", 0))

    train_rows, train_objects = _write_split(out_dir, "train", train_sets, seed)
    test_rows, _ = _write_split(out_dir, "test", test_sets, seed)
    val_rows, _ = _write_split(out_dir, "val", val_sets, seed)
    captions = [(path, make_caption(objects, rng)) for path, objects, rng in train_objects]
    spec = DATASETS["synth-lt"]
    write_dataset(out_dir, spec, CLASS_NAMES, {spec.train_list: train_rows, spec.test_list: test_rows,
                                               "synth_lt_val.txt": val_rows}, captions)
    save_text(out_dir / STAMP_NAME, json.dumps(_stamp(seed, n_train, n_test), indent=1) + "\n")
    return out_dir


def benchmark_is_complete(out_dir, seed=0, n_train=None, n_test=None):
    """True when ``out_dir`` holds a finished benchmark of this generator version, seed and sizes."""
    out_dir = Path(out_dir)
    n_train = REFERENCE_TRAIN if n_train is None else n_train
    n_test = DEFAULT_TEST if n_test is None else n_test
    try:
        stamp = json.loads((out_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp != _stamp(seed, n_train, n_test):
        return False
    names = ("synth_lt_train.txt", "synth_lt_val.txt", "synth_lt_test.txt", "synth_lt_captions.txt",
             "synth_labels.txt", "class_freq.pkl")
    if not all((out_dir / n).is_file() for n in names):
        return False
    for list_name, expected in (("synth_lt_train.txt", n_train), ("synth_lt_val.txt", val_size(n_test)),
                                ("synth_lt_test.txt", n_test)):
        paths = [line.split(" ", 1)[0] for line in (out_dir / list_name).read_text().splitlines() if line]
        if len(paths) != expected or not all((out_dir / p).is_file() for p in paths):
            return False
    return True


def generation_locked(out_dir):
    """``out_dir`` held while one process generates a benchmark there (``locks.folder_locked``), said when
    another does."""
    return folder_locked(out_dir, f"[synthetic] waiting for another process generating {out_dir}")


def ensure_benchmark(data_root, seed=0, n_train=None, n_test=None):
    """``<data_root>/synth``, generated unless a complete benchmark with these settings is there. One process
    generates at a time (``locks.folder_locked``): a second one started meanwhile waits, then finds it complete."""
    out_dir = Path(data_root) / "synth"
    if benchmark_is_complete(out_dir, seed, n_train, n_test):
        return out_dir
    with generation_locked(out_dir):
        if not benchmark_is_complete(out_dir, seed, n_train, n_test):
            generate_benchmark(out_dir, seed, n_train, n_test)
    return out_dir


# ---------------------------------------------------------------------------
# The pretraining corpus (kept in memory; a file copy is optional).

def _jpeg_roundtrip(image, quality):
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


CORPUS_CHUNK = 500  # corpus items a worker process draws at a time


def corpus_item(seed, index):
    """One corpus image (uint8 [64, 64, 3]), its colour-free caption and its content (sorted class ids)."""
    rng = _stream(seed, _CORPUS_STREAM, "corpus", index)
    n_objects = int(rng.choice([1, 2, 3, 4], p=CORPUS_OBJECTS))
    classes = rng.integers(0, len(CLASS_NAMES), n_objects)  # balanced classes, repeats allowed
    image, objects = render_image(classes, rng)
    image = _jpeg_roundtrip(image, rng.integers(75, 96))  # the benchmark's images are JPEGs too
    return np.asarray(image, dtype=np.uint8), make_caption(objects, rng, colours=False), tuple(sorted(classes))


def corpus_items(seed, start, stop):
    """Corpus items ``start``..``stop - 1``: (images uint8 [n, 64, 64, 3], captions [n], contents [n])."""
    items = [corpus_item(seed, index) for index in range(start, stop)]
    images = np.stack([image for image, _, _ in items])
    return images, [caption for _, caption, _ in items], [content for _, _, content in items]


def make_corpus(n_images, seed=0, workers=None):
    """The pretraining corpus in memory: images uint8 [N, 64, 64, 3], captions [N] and contents [N].

    A content is the sorted tuple of the object class ids (with repeats): captions with the
    same content say the same thing in other words. Every item has its own random stream, so
    ``workers`` processes (default: one per core) draw the same corpus as one.
    """
    from .data import available_cores
    _check_sizes(n_images=n_images)
    bounds = [(start, min(start + CORPUS_CHUNK, n_images)) for start in range(0, n_images, CORPUS_CHUNK)]
    workers = min(available_cores() if workers is None else workers, len(bounds))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(corpus_items, [seed] * len(bounds), *zip(*bounds)))
    else:
        parts = [corpus_items(seed, start, stop) for start, stop in bounds]
    images = np.concatenate([images for images, _, _ in parts])  # [N, 64, 64, 3]
    return images, [c for _, captions, _ in parts for c in captions], [c for _, _, contents in parts for c in contents]


def generate_corpus(out_dir, n_images, seed=0):
    """Save the corpus as ``corpus_<seed>_<n>.npz`` (images) + ``.txt`` (captions) in ``out_dir``.

    Returns the .npz path. Pretraining draws the corpus in memory (``make_corpus``); this
    file copy is for inspection.
    """
    from .checkpoint import save_text
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, captions, _ = make_corpus(n_images, seed)
    stem = out_dir / f"corpus_{seed}_{n_images}"
    tmp = stem.with_name(stem.name + f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, images=images)
    os.replace(tmp, stem.with_suffix(".npz"))
    save_text(stem.with_suffix(".txt"), "\n".join(captions) + "\n")
    return stem.with_suffix(".npz")
