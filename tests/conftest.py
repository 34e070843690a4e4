"""Shared fixtures: a tiny random CLIP checkpoint and a tiny image dataset in the LMPT layout."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
torch.set_num_threads(1)  # tiny models: thread start-up costs more than it saves on 2 shared cores

CLASS_NAMES = ["dog", "traffic light", "cat", "boat"]


def write_lmpt_dataset(root, n_train=24, n_test=16, seed=0, folder="voc", prefix="voc_lt", labels_name="voc_labels.txt"):
    """A few dozen random JPEGs with list, caption and labels files in the LMPT formats.

    Every class has training positives; images get a colour cast per class so that
    there is something to learn.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / folder
    (base / "images").mkdir(parents=True, exist_ok=True)
    colours = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [200, 200, 40]])

    def make_split(name, n):
        lines, captions = [], []
        for i in range(n):
            labels = sorted({i % len(CLASS_NAMES), *rng.choice(len(CLASS_NAMES), rng.integers(0, 2), replace=False)})
            pixels = rng.integers(0, 60, (40, 48, 3)) + colours[labels].mean(0)
            path = f"images/{name}_{i:03d}.jpg"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(base / path, quality=90)
            lines.append(path + "".join(f" {c}" for c in labels))
            captions.append(f"{path} a picture of " + " and ".join(f"a {CLASS_NAMES[c]}" for c in labels))
        return lines, captions

    train, captions = make_split("train", n_train)
    test, _ = make_split("test", n_test)
    (base / f"{prefix}_train.txt").write_text("\n".join(train) + "\n")
    (base / f"{prefix}_test.txt").write_text("\n".join(test) + "\n")
    (base / f"{prefix}_captions.txt").write_text("\n".join(captions) + "\n")
    (base / labels_name).write_text("".join(f"{n} {i}\r\n" for i, n in enumerate(CLASS_NAMES)))
    return base


@pytest.fixture(scope="session")
def tiny_vit_checkpoint(tmp_path_factory):
    from tiny_clip import write_tiny_clip
    return write_tiny_clip(tmp_path_factory.mktemp("pretrained") / "tiny-vit.pt", arch="vit", fmt="torchscript")


@pytest.fixture(scope="session")
def tiny_rn_checkpoint(tmp_path_factory):
    from tiny_clip import write_tiny_clip
    return write_tiny_clip(tmp_path_factory.mktemp("pretrained") / "tiny-rn.pt", arch="resnet", fmt="state_dict")


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_lmpt_dataset(root)
    return root


@pytest.fixture(scope="session")
def finished_coop_run(tmp_path_factory, tiny_vit_checkpoint):
    """A finished 1-epoch CoOp run on the tiny dataset and its feature cache (copied by the tests that change
    it): (run folder, cache folder)."""
    from lmpt import train as train_script
    root = tmp_path_factory.mktemp("finished")
    write_lmpt_dataset(root / "data")
    train_script.main(["--dataset", "voc-lt", "--data_root", str(root / "data"), "--pretrain_clip",
                       str(tiny_vit_checkpoint), "--batch_size", "8", "--epochs", "1", "--device", "cpu",
                       "--num_workers", "0", "--n_ctx", "4", "--cache_dir", str(root / "cache"), "--output_dir",
                       str(root / "run"), "--optimizer", "adam", "--lr", "0.01", "--training_method", "coop"])
    return root / "run", root / "cache"
