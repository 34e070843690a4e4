"""lmpt/test.py evaluates the runs of finetune_clip/fc.py too (the linear probe on the cached features, full
fine-tuning with its trained encoder), at another threshold without training again."""
import json

import pytest
import torch

from finetune_clip import fc as fc_script
from lmpt import baselines
from lmpt import test as test_script
from lmpt.checkpoint import save_torch

METRICS = ("mAP", "head_mAP", "medium_mAP", "tail_mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_class_AP")


def read_json(path):
    return json.loads(path.read_text())


def fc_run(tmp_path, data_root, checkpoint, name, *extra):
    out = tmp_path / name
    fc_script.main(["--dataset", "voc-lt", "--nb_classes", "4", "--data_root", str(data_root),
                    "--pretrain_clip_path", str(checkpoint), "--device", "cpu", "--num_workers", "0",
                    "--batch_size", "8", "--epochs", "2", "--cache_dir", str(tmp_path / "cache"),
                    "--output_dir", str(out), *extra])
    return out


def evaluation_argv(run, tmp_path, *extra):
    return ["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir",
            str(tmp_path / "cache"), *extra]


@pytest.mark.parametrize("from_scratch", [False, True], ids=["linear-probe", "finetune-full"])
def test_a_fine_tuning_run_is_evaluated_as_its_training_evaluated_it(tmp_path, tiny_data_root, tiny_rn_checkpoint,
                                                                     from_scratch, capsys, monkeypatch):
    run = fc_run(tmp_path, tiny_data_root, tiny_rn_checkpoint, "fc", *(["--from_scratch"] if from_scratch else []))
    trained = read_json(run / "results.json")
    capsys.readouterr()
    batch_sizes = []  # full fine-tuning's encoder runs in batches of the run's --batch_size (8), as in training
    pixel_inputs = baselines.pixel_inputs
    monkeypatch.setattr(baselines, "pixel_inputs", lambda *a: batch_sizes.append(a[3]) or pixel_inputs(*a))
    test_script.main(evaluation_argv(run, tmp_path))  # --data_root, --thre, --score, --batch_size: the run's
    assert batch_sizes == ([8] if from_scratch else [])
    tested = read_json(run / "test_results.json")
    for key in METRICS:
        assert tested[key] == pytest.approx(trained[key], abs=1e-9), key
    assert {k: tested[k] for k in ("method", "thre", "score", "checkpoint_epoch", "images")} == \
        {k: trained[k] for k in ("method", "thre", "score", "checkpoint_epoch", "images")}
    assert tested["method"] == ("finetune-full" if from_scratch else "linear-probe")
    # full fine-tuning's encoder trained: its features are never cached (the cache holds CLIP's own)
    assert bool(list((tmp_path / "cache").glob("*.pt"))) != from_scratch


def test_a_linear_probe_at_another_threshold_equals_a_run_trained_with_it(tmp_path, tiny_data_root,
                                                                         tiny_rn_checkpoint, capsys):
    """The threshold moves CP/CR/CF1/OP/OR/OF1 only; lmpt/test.py --thre gives what the same run trained
    with that --thre reports, without training again."""
    default = fc_run(tmp_path, tiny_data_root, tiny_rn_checkpoint, "default")
    reference = read_json(fc_run(tmp_path, tiny_data_root, tiny_rn_checkpoint, "thre", "--thre", "0.2")
                          / "results.json")
    test_script.main(evaluation_argv(default, tmp_path, "--thre", "0.2", "--n_ctx", "4"))
    tested = read_json(default / "test_results.json")
    assert "--n_ctx ignored; a linear-probe run (finetune_clip/fc.py) has no prompts" in capsys.readouterr().out
    for key in METRICS:
        assert tested[key] == pytest.approx(reference[key], abs=1e-9), key
    assert tested["thre"] == 0.2
    before = read_json(default / "results.json")
    assert tested["mAP"] == pytest.approx(before["mAP"], abs=1e-9)
    assert any(tested[k] != before[k] for k in ("CP", "CR", "OP", "OR"))  # the threshold was applied


def test_another_preprocessing_is_noted_for_a_classifier(tmp_path, tiny_data_root, tiny_rn_checkpoint, capsys):
    run = fc_run(tmp_path, tiny_data_root, tiny_rn_checkpoint, "fc")
    capsys.readouterr()
    tested = test_script.main(evaluation_argv(run, tmp_path, "--preprocess", "clip"))
    assert ("[test] note: --preprocess clip: the run trained on images of 'lmpt' preprocessing; its classifier is "
            "evaluated on images of another") in capsys.readouterr().out
    assert tested["preprocess"] == "clip"


def test_other_checkpoints_are_refused_by_name(tmp_path, tiny_data_root):
    other = tmp_path / "other" / "best.pt"
    other.parent.mkdir()
    save_torch(other, {"model": {}, "epoch": 1, "config": {"method": "my-method"}})
    with pytest.raises(ValueError, match="a my-method checkpoint; lmpt/test.py evaluates the runs of lmpt/train.py "
                                         r"\(coop, lmpt\) and finetune_clip/fc.py \(linear-probe, finetune-full\)"):
        test_script.main(["--checkpoint", str(other), "--data_root", str(tiny_data_root), "--device", "cpu"])
    save_torch(other, {"model": {"fc.weight": torch.zeros(4, 8)}, "epoch": 1,
                       "config": {"method": "linear-probe", "dataset": "voc-lt"}})
    with pytest.raises(ValueError, match=r"best.pt: config: no class_names, backbone, preprocess, score, thre; a "
                                         r"linear-probe run of an earlier version, which lmpt/test.py cannot"):
        test_script.main(["--checkpoint", str(other), "--data_root", str(tiny_data_root), "--device", "cpu"])


def test_the_default_run_folder_of_a_fine_tuning_method_is_fc_pys():
    for method, flags in (("linear-probe", []), ("finetune-full", ["--from_scratch"])):
        tested = test_script.parse_args(["--training_method", method, "--pretrain_clip", "RN50", "--seed", "2"])
        trained = fc_script.parse_args(["--pretrain_clip_path", "RN50", "--seed", "2", *flags])
        assert tested.checkpoint == trained.output_dir and trained.output_dir.name == f"voc-lt_{method}_RN50_seed2"
