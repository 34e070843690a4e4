"""lmpt.api: a trained run loaded from Python scores image files as lmpt/test.py scores its test images; the
README's "Use from Python" example runs as written; what lmpt/test.py refuses, load_run refuses."""
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from finetune_clip import fc as fc_script
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.api import load_run, score_images
from lmpt.checkpoint import save_torch
from lmpt.data import DataError, load_dataset
from lmpt.metrics import evaluate, log_scores, log_threshold

METRICS = ("mAP", "head_mAP", "medium_mAP", "tail_mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_class_AP")


def as_saved(value):
    """A metric as results files hold it (NaN, a group without classes, is null)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def train_run(tmp_path, data_root, checkpoint, method):
    """A tiny run of lmpt/train.py (coop, lmpt) or finetune_clip/fc.py (linear-probe, finetune-full), tested by
    lmpt/test.py: (its folder, its test_results.json)."""
    out = tmp_path / method
    common = ["--data_root", str(data_root), "--device", "cpu", "--num_workers", "0", "--batch_size", "8",
              "--epochs", "2", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), "--thre", "0.3"]
    if method in ("coop", "lmpt"):
        train_script.main(["--dataset", "voc-lt", "--pretrain_clip", str(checkpoint), "--n_ctx", "4",
                           "--training_method", method, *common])
    else:
        fc_script.main(["--dataset", "voc-lt", "--nb_classes", "4", "--pretrain_clip_path", str(checkpoint),
                        *common, *(["--from_scratch"] if method == "finetune-full" else [])])
    test_script.main(["--checkpoint", str(out), "--device", "cpu", "--num_workers", "0",
                      "--cache_dir", str(tmp_path / "cache")])
    return out, json.loads((out / "test_results.json").read_text())


def readme_example():
    """The code block of README.md's "Use from Python" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Use from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_gives_the_metrics_of_lmpt_test(tmp_path, tiny_data_root, tiny_vit_checkpoint, capsys):
    run_dir, tested = train_run(tmp_path, tiny_data_root, tiny_vit_checkpoint, "lmpt")
    code = readme_example()
    for placeholder, value in (('"runs/voc-lt_lmpt_ViT16_seed0"', run_dir), ('"data"', tiny_data_root)):
        assert placeholder in code
        code = code.replace(placeholder, repr(str(value)))
    capsys.readouterr()
    names = {}
    exec(code, names)  # the README's calls, as written
    results, run, scores = names["results"], names["run"], names["scores"]
    for key in METRICS:
        assert as_saved(results[key]) == tested[key], key  # exactly: the same logits, ranked and thresholded alike
    assert results["CF1"] > 0 and results["OF1"] > 0  # the threshold was applied to the log-scores
    assert scores.shape == (16, 4) and scores.dtype == np.float64
    np.testing.assert_allclose(np.exp(scores).sum(1), 1.0, rtol=1e-12)  # softmax, the run's score
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == run.class_names[scores[0].argmax()]
    assert (run.method, run.epoch, run.thre, run.score, run.preprocess, run.resolution) == \
        ("lmpt", tested["checkpoint_epoch"], 0.3, "softmax", "lmpt", 32)
    assert run.checkpoint == run_dir / "best.pt" and run.class_names == ["dog", "traffic light", "cat", "boat"]
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # fp32 CLIP, as the scripts build it


@pytest.mark.parametrize("method", ["coop", "linear-probe", "finetune-full"])
def test_other_runs_score_the_test_images_as_lmpt_test_does(tmp_path, tiny_data_root, tiny_rn_checkpoint, method):
    run_dir, tested = train_run(tmp_path, tiny_data_root, tiny_rn_checkpoint, method)
    run = load_run(run_dir / "best.pt")  # a .pt file
    assert run.method == method
    assert (run.text.shape == (4, 32)) if method == "coop" else run.text is None  # a prompt run's text features
    dataset = load_dataset("voc-lt", tiny_data_root, training=False)
    files = [dataset.root / path for path in dataset.test_paths]
    scores = score_images(run, files, batch_size=5)  # several batches
    results = evaluate(scores, dataset.test_labels, dataset.train_freq, thre=log_threshold(run.thre))
    for key in METRICS:  # finetune-full: lmpt/test.py runs its encoder on uint8 pixels normalised per batch
        assert as_saved(results[key]) == pytest.approx(tested[key], abs=1e-9), key
    # one image alone scores as within the list; transform is what the images were decoded with
    alone = score_images(run, files[3:4])
    np.testing.assert_allclose(alone, scores[3:4], rtol=1e-5, atol=1e-6)
    image = run.transform(Image.open(files[3]))[None]  # [1, 3, r, r]
    with torch.no_grad():
        by_hand = log_scores(run.logits(run.image_encoder(image)), run.score)
    np.testing.assert_allclose(by_hand, scores[3:4], rtol=1e-5, atol=1e-6)


def test_what_is_no_run_is_refused_as_lmpt_test_refuses_it(tmp_path, tiny_data_root, tiny_vit_checkpoint):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/best.pt: no checkpoint here; expected a run folder written "
                                                r"by lmpt/train.py"):
        load_run(empty)
    with pytest.raises(ValueError, match="a TorchScript archive \\(a CLIP backbone\\?\\), not a run checkpoint"):
        load_run(tiny_vit_checkpoint)
    other = tmp_path / "other" / "best.pt"
    other.parent.mkdir()
    save_torch(other, {"model": {}, "epoch": 1, "config": {"method": "my-method"}})
    with pytest.raises(ValueError, match="a my-method checkpoint; lmpt/test.py evaluates the runs of lmpt/train.py "
                                         r"\(coop, lmpt\) and finetune_clip/fc.py \(linear-probe, finetune-full\)"):
        load_run(other.parent)
    save_torch(other, {"model": {}, "epoch": 1, "config": {"method": "linear-probe", "dataset": "voc-lt"}})
    with pytest.raises(ValueError, match="config: no class_names, backbone, preprocess, score, thre; a linear-probe "
                                         "run of an earlier version"):
        load_run(other)


def test_unreadable_images_are_named_all_at_once(tmp_path, tiny_data_root, tiny_vit_checkpoint):
    run_dir, _ = train_run(tmp_path, tiny_data_root, tiny_vit_checkpoint, "coop")
    run = load_run(run_dir)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    good = next((tiny_data_root / "voc" / "images").glob("test_*.jpg"))
    with pytest.raises(DataError, match=r"2 image\(s\) cannot be read:\n  .*broken.jpg: cannot read image.*\n  "
                                        r".*missing.jpg: cannot read image"):
        score_images(run, [good, broken, tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match="no image files given"):
        score_images(run, [])


def test_a_run_trained_with_its_own_pretrained_dir_is_tested_and_loaded_without_the_flag(
        tmp_path, tiny_data_root, tiny_vit_checkpoint, monkeypatch, capsys):
    """--pretrain_clip ViT16 --pretrained_dir /x: lmpt/test.py and load_run find the CLIP file in the run's own
    folder (its args.json, said), as a --resume does, when the folder they are given (the default) lacks it; a
    folder given that holds it comes first; a checkpoint copied without its args.json names the folder looked in."""
    import shutil
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(tiny_vit_checkpoint, mine / "ViT-B-16.pt")
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path / "empty"))  # the default folder, without the file
    run = tmp_path / "run"
    train_script.main(["--dataset", "voc-lt", "--data_root", str(tiny_data_root), "--pretrain_clip", "ViT16",
                       "--pretrained_dir", str(mine), "--n_ctx", "4", "--epochs", "1", "--batch_size", "8",
                       "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
                       "--output_dir", str(run)])
    capsys.readouterr()
    said = (f"[test] CLIP file {mine / 'ViT-B-16.pt'}: in the training run's --pretrained_dir {mine} "
            f"({run / 'args.json'})")
    test_script.main(["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir",
                      str(tmp_path / "cache")])
    assert said in capsys.readouterr().out
    tested = json.loads((run / "test_results.json").read_text())
    assert tested["mAP"] == json.loads((run / "results.json").read_text())["mAP"]
    load_run(run)
    assert said in capsys.readouterr().out
    other = tmp_path / "other"
    shutil.copytree(mine, other)
    load_run(run, pretrained_dir=other)  # the folder given holds it: used, nothing said
    assert "CLIP file" not in capsys.readouterr().out
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "best.pt", alone / "best.pt")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'empty' / 'ViT-B-16.pt'} not found"):
        load_run(alone)
    (tmp_path / "empty").mkdir()  # another file of that name in the folder given: the run's own is found
    (tmp_path / "empty" / "ViT-B-16.pt").write_bytes(b"another CLIP")
    capsys.readouterr()
    load_run(run)
    assert said in capsys.readouterr().out
    with pytest.raises(ValueError, match="has sha256"):  # without the run's own, the file found is refused
        load_run(alone)
