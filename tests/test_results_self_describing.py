"""Every results file names its data (dataset, absolute data root, class names and their training frequencies);
lmpt/test.py's test_results.json keeps how the run selected the epoch it evaluated, and reports top-k as zero-shot
does; the printed report says what was evaluated and at which threshold and score CP to OF1 were computed."""
import json

import numpy as np
import pytest

from conftest import CLASS_NAMES
from finetune_clip import fc as fc_script
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.checkpoint import load_checkpoint, save_torch
from lmpt.data import load_dataset
from lmpt.metrics import evaluate, evaluate_logits, log_scores, topk_metrics
from lmpt.report import format_results
from zero_shot_clip import test as zero_shot_script

DATA_KEYS = ("dataset", "data_root", "class_names", "train_class_freq")


def common(tmp_path, data_root, out):
    return ["--data_root", str(data_root), "--device", "cpu", "--num_workers", "0", "--batch_size", "8",
            "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out)]


def expected_data(data_root):
    freq = load_dataset("voc-lt", data_root).train_freq
    return {"dataset": "voc-lt", "data_root": str(data_root), "class_names": CLASS_NAMES,
            "train_class_freq": [int(n) for n in freq]}


def test_every_results_file_names_its_data(tmp_path, tiny_data_root, tiny_vit_checkpoint, monkeypatch):
    """results.json of lmpt/train.py, finetune_clip/fc.py and zero_shot_clip/test.py, and lmpt/test.py's
    test_results.json, record the dataset, the absolute data root (given relative here), the class names in
    per_class_AP's order and the training images of each class."""
    monkeypatch.chdir(tiny_data_root.parent)
    relative = tiny_data_root.name
    expected = expected_data(tiny_data_root)
    prompt, probe, zero = tmp_path / "coop", tmp_path / "probe", tmp_path / "zs"
    train_script.main(["--dataset", "voc-lt", "--pretrain_clip", str(tiny_vit_checkpoint), "--epochs", "1",
                       "--n_ctx", "4", "--training_method", "coop", *common(tmp_path, relative, prompt)])
    fc_script.main(["--dataset", "voc-lt", "--pretrain_clip_path", str(tiny_vit_checkpoint), "--epochs", "1",
                    *common(tmp_path, relative, probe)])
    zero_shot_script.main(["--dataset", "VOC", "--pretrain_clip_path", str(tiny_vit_checkpoint), "--templates",
                           "single", *common(tmp_path, relative, zero)])
    test_script.main(["--checkpoint", str(prompt), "--device", "cpu", "--num_workers", "0",
                      "--cache_dir", str(tmp_path / "cache")])
    for file in (prompt / "results.json", probe / "results.json", zero / "results.json",
                 prompt / "test_results.json"):
        results = json.loads(file.read_text())
        assert {key: results.get(key) for key in DATA_KEYS} == expected, file
        assert len(results["per_class_AP"]) == len(results["class_names"])


def test_test_results_keep_the_selection_and_report_top_k(tmp_path, tiny_data_root, tiny_vit_checkpoint, capsys):
    """test_results.json holds the selected_epoch, selection_split and selection_mAP of its checkpoint (the
    training run's, from the checkpoint), and lmpt/test.py's --topk metrics; the printed report names the
    method, CLIP and epoch, and the threshold and score of CP to OF1."""
    run = tmp_path / "run"
    train_script.main(["--dataset", "voc-lt", "--pretrain_clip", str(tiny_vit_checkpoint), "--epochs", "2",
                       "--n_ctx", "4", "--training_method", "coop", "--thre", "0.3",
                       *common(tmp_path, tiny_data_root, run)])
    trained = json.loads((run / "results.json").read_text())
    printed = capsys.readouterr().out
    epoch = trained["selected_epoch"]
    assert f"coop, CLIP {tiny_vit_checkpoint}, epoch {epoch} (selected on the test split)\n" in printed
    assert "CP, CR, CF1, OP, OR, OF1 at thre 0.3 (softmax scores)\n" in printed
    evaluate_again = ["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0",
                      "--cache_dir", str(tmp_path / "cache")]
    tested = test_script.main(evaluate_again + ["--thre", "0.5", "--score", "sigmoid", "--topk", "2"])
    saved = json.loads((run / "test_results.json").read_text())
    for key in ("selected_epoch", "selection_split", "selection_mAP", "checkpoint_epoch"):
        assert saved[key] == trained[key], key
    assert saved["selection_split"] == "test"
    assert {"top2_precision", "top2_recall", "top2_F1"} <= set(saved) and "top5_precision" not in saved
    assert 0 < saved["top2_recall"] <= 100 and tested["top2_F1"] == saved["top2_F1"]
    printed = capsys.readouterr().out
    assert f"coop, CLIP {tiny_vit_checkpoint}, epoch {epoch} (selected on the test split)\n" in printed
    assert "CP, CR, CF1, OP, OR, OF1 at thre 0.5 (sigmoid scores)\n" in printed
    assert f"top-2: precision {saved['top2_precision']:.2f}  recall {saved['top2_recall']:.2f}" in printed

    # a last.pt of a later epoch than the one selected (its best so far made epoch 1 here): its own epoch, and the
    # run's selection, said apart
    state = load_checkpoint(run / "last.pt")
    save_torch(tmp_path / "last.pt", {**state, "best": {"epoch": 0, "mAP": 1.0}})
    last = test_script.main(evaluate_again + ["--checkpoint", str(tmp_path / "last.pt"), "--data_root",
                                              str(tiny_data_root), "--output", str(tmp_path / "last.json")])
    assert (last["checkpoint_epoch"], last["selected_epoch"], last["selection_split"]) == (2, 1, "test")
    assert f"coop, CLIP {tiny_vit_checkpoint}, epoch 2 (the run selected epoch 1 on the test split)\n" in \
        capsys.readouterr().out
    assert "top5_precision" in last  # --topk's default, as zero-shot's


def test_evaluate_logits_gives_the_top_k_metrics_of_the_log_scores():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (30, 6))
    targets = (rng.random((30, 6)) < 0.3).astype(int)
    targets[0] = 1
    freq = np.array([150, 50, 30, 10, 5, 200])
    results = evaluate_logits(logits, targets, freq, thre=0.3, score="sigmoid", topk=3)
    top = topk_metrics(log_scores(logits, "sigmoid"), targets, 3)
    assert {k: results[f"top3_{k}"] for k in top} == top
    assert "top3_precision" not in evaluate_logits(logits, targets, freq)  # without topk, as before


def test_the_report_says_what_it_evaluated_only_when_the_results_say_it():
    rng = np.random.default_rng(1)
    scores, targets = rng.random((12, 3)), (rng.random((12, 3)) < 0.5).astype(int)
    targets[0] = 1
    freq = np.array([150, 30, 5])
    plain = evaluate(scores, targets, freq)
    lines = format_results(plain, ["a", "b", "c"], freq).splitlines()
    assert lines[0].split()[:2] == ["total", "head"]  # an evaluation that names nothing: the table first
    assert not any(line.startswith("CP, CR") for line in lines)
    named = {**plain, "method": "lmpt", "backbone": "ViT16", "checkpoint_epoch": 7, "selected_epoch": 7,
             "selection_split": "val", "thre": 0.5, "score": "softmax"}
    lines = format_results(named, ["a", "b", "c"], freq).splitlines()
    assert lines[0] == "lmpt, CLIP ViT16, epoch 7 (selected on the val split)"
    assert lines[1].split()[:2] == ["total", "head"] and lines[3] == "CP, CR, CF1, OP, OR, OF1 at thre 0.5 " \
        "(softmax scores)"
    zero_shot = {**plain, "method": "zero-shot", "backbone": "RN50", "thre": 0.3, "score": "softmax"}
    assert format_results(zero_shot, ["a", "b", "c"], freq).splitlines()[0] == "zero-shot, CLIP RN50"


@pytest.mark.parametrize("old_keys", [("dataset", "data_root"), ()])
def test_zero_shot_replacing_an_earlier_file_compares_the_data_it_records(tmp_path, tiny_data_root,
                                                                         tiny_vit_checkpoint, capsys, old_keys):
    """A zero-shot evaluation replacing its results says when their data root differs, from results.json alone
    (no args.json); an earlier version's results.json without dataset and data_root is still replaced, and they
    are not said to differ."""
    out = tmp_path / "zs"
    argv = ["--dataset", "voc-lt", "--pretrain_clip_path", str(tiny_vit_checkpoint), "--templates", "single",
            *common(tmp_path, tiny_data_root, out)]
    zero_shot_script.main(argv)
    saved = json.loads((out / "results.json").read_text())
    (out / "args.json").unlink()
    saved["data_root"] = str(tmp_path / "elsewhere")
    for key in old_keys:
        del saved[key]
    (out / "results.json").write_text(json.dumps(saved))
    capsys.readouterr()
    zero_shot_script.main(argv)
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[zero-shot] replacing")]
    assert note == [f"[zero-shot] replacing {out / 'results.json'} of an earlier evaluation (mAP {saved['mAP']:.2f}"
                    + ("" if old_keys else "; other data_root") + ")"]
