"""``--resume``: every file of the run folder (args.json, last.pt, best.pt, metrics.jsonl) is checked before any
work, and an edited or damaged one is refused with a message that names it, never with a traceback."""
import json
import shutil

import pytest
import torch

import clip
from conftest import write_lmpt_dataset
from lmpt import prepare, prompt_tuning
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.checkpoint import load_checkpoint, read_metrics, save_torch


def train_argv(data_root, checkpoint, out, cache, *extra, epochs=1):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--batch_size", "8", "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
            "--n_ctx", "4", "--cache_dir", str(cache), "--output_dir", str(out), "--optimizer", "adam",
            "--lr", "0.01", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_vit_checkpoint):
    """A data root, a finished 1-epoch LMPT run (best = last = epoch 1) and a finished 2-epoch one whose best
    epoch is its first (copied by the tests that change them)."""
    root = tmp_path_factory.mktemp("resume")
    write_lmpt_dataset(root / "data")
    one, two = root / "one", root / "two"
    train_script.main(train_argv(root / "data", tiny_vit_checkpoint, one, root / "cache"))
    evaluate, calls = prompt_tuning.evaluate_prompts, []

    def worse_each_epoch(*args, **kwargs):
        results, logits = evaluate(*args, **kwargs)
        calls.append(1)
        return {**results, "mAP": 100.0 - len(calls)}, logits
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prompt_tuning, "evaluate_prompts", worse_each_epoch)
        train_script.main(train_argv(root / "data", tiny_vit_checkpoint, two, root / "cache", epochs=2))
    last = load_checkpoint(two / "last.pt")
    assert (last["epoch"], last["best"]["epoch"], load_checkpoint(two / "best.pt")["epoch"]) == (1, 0, 0)
    return root / "data", one, two


def copy_run(run, to):
    shutil.copytree(run, to)
    return to


def resume(run, epochs):
    return train_script.main(["--resume", str(run), "--epochs", str(epochs), "--num_workers", "0"])


@pytest.fixture
def no_work(monkeypatch):
    """Fail a test whose run gets as far as CLIP and the image features."""
    def too_late(*args, **kwargs):
        raise AssertionError("the run went on to load CLIP and encode the images")
    monkeypatch.setattr(prepare, "load_clip_and_features", too_late)


def edit_json(path, **changes):
    saved = json.loads(path.read_text())
    saved.update(changes)
    path.write_text(json.dumps({k: v for k, v in saved.items() if v is not ...}))


def edit_checkpoint(path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    save_torch(path, state)


# ---------------------------------------------------------------- the CLIP file

def test_a_clip_state_dict_of_a_wrong_shape_is_named(runs, tmp_path, tiny_vit_checkpoint):
    data, _, _ = runs
    state_dict = clip.read_state_dict(tiny_vit_checkpoint)
    state_dict["visual.positional_embedding"] = state_dict["visual.positional_embedding"][:15]
    bad = tmp_path / "bad-clip.pt"
    torch.save(state_dict, bad)
    with pytest.raises(ValueError, match=f"{bad}: visual.positional_embedding has 14 rows: expected"):
        train_script.main(train_argv(data, bad, tmp_path / "run", tmp_path / "cache"))
