"""lmpt.api on a run trained with ``--score sigmoid --preprocess clip``: score_images gives the log-sigmoid of the
logits of CLIP-preprocessed images, so the metrics of the run's test images equal its test_results.json (the
other api tests train with the defaults, softmax and lmpt preprocessing). load_run's model is in eval mode."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.api import load_run, score_images
from lmpt.data import build_transform, load_dataset
from lmpt.metrics import evaluate, log_threshold


def as_saved(value):
    """A metric as results files hold it (NaN, a group without classes, is null)."""
    return None if isinstance(value, float) and math.isnan(value) else value


METRICS = ("mAP", "head_mAP", "medium_mAP", "tail_mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_class_AP")


@pytest.fixture(scope="module")
def sigmoid_clip_run(tmp_path_factory, tiny_data_root, tiny_vit_checkpoint):
    """A tiny coop run trained with --score sigmoid --preprocess clip and tested by lmpt/test.py:
    (its folder, its test_results.json)."""
    tmp = tmp_path_factory.mktemp("api_sigmoid")
    out, cache = tmp / "run", str(tmp / "cache")
    train_script.main(["--dataset", "voc-lt", "--data_root", str(tiny_data_root), "--pretrain_clip",
                       str(tiny_vit_checkpoint), "--n_ctx", "4", "--training_method", "coop", "--device", "cpu",
                       "--num_workers", "0", "--batch_size", "8", "--epochs", "1", "--cache_dir", cache,
                       "--output_dir", str(out), "--thre", "0.5", "--score", "sigmoid", "--preprocess", "clip"])
    test_script.main(["--checkpoint", str(out), "--device", "cpu", "--num_workers", "0", "--cache_dir", cache])
    return out, json.loads((out / "test_results.json").read_text())


def test_a_sigmoid_run_on_clip_preprocessing_scores_as_lmpt_test_does(sigmoid_clip_run, tiny_data_root):
    run_dir, tested = sigmoid_clip_run
    run = load_run(run_dir)
    assert (run.score, run.preprocess, run.thre) == ("sigmoid", "clip", 0.5)
    dataset = load_dataset("voc-lt", tiny_data_root, training=False)
    files = [dataset.root / path for path in dataset.test_paths]
    scores = score_images(run, files, batch_size=5)  # [N, C]
    assert scores.shape == (16, 4) and scores.dtype == np.float64
    # log-sigmoid per class: every score below 1, their sum over the classes not 1 (as a softmax's would be)
    assert (scores < 0).all()
    assert not np.allclose(np.exp(scores).sum(1), 1.0, atol=1e-3)
    with torch.no_grad():
        image = torch.stack([run.transform(Image.open(f)) for f in files])  # [N, 3, r, r], CLIP's preprocessing
        logits = run.logits(run.image_encoder(image)).double()  # [N, C]
    np.testing.assert_allclose(scores, torch.nn.functional.logsigmoid(logits).numpy(), rtol=1e-5, atol=1e-6)
    results = evaluate(scores, dataset.test_labels, dataset.train_freq, thre=log_threshold(run.thre))
    for key in METRICS:
        assert as_saved(results[key]) == pytest.approx(tested[key], abs=1e-9), key
    assert 0 < results["OR"] < 100  # the threshold on the scores decides some labels


def test_the_transform_is_clips_and_the_model_is_in_eval_mode(sigmoid_clip_run):
    run = load_run(sigmoid_clip_run[0])
    assert repr(run.transform) == repr(build_transform("clip", run.resolution))
    assert repr(run.transform) != repr(build_transform("lmpt", run.resolution))
    assert not run.model.training
    assert not any(module.training for module in run.model.modules())
