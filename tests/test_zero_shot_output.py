"""zero_shot_clip/test.py --output writes the results to a file of its own, as lmpt/test.py --output does, and leaves
the run folder (its results.json and args.json) as it was: an evaluation at a second threshold keeps the first."""
import json

import pytest

from conftest import write_lmpt_dataset
from zero_shot_clip import test as zero_shot_script

METRICS = ("mAP", "head_mAP", "medium_mAP", "tail_mAP", "per_class_AP", "images", "top5_F1")


def argv(tmp_path, checkpoint, *extra):
    return ["--dataset", "VOC", "--nb_classes", "4", "--data_root", str(tmp_path / "data"), "--pretrain_clip_path",
            str(checkpoint), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
            "--templates", "single", *extra]


def test_a_second_threshold_keeps_the_first_evaluation(tmp_path, tiny_vit_checkpoint, capsys):
    write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=6)
    run = tmp_path / "zs"
    zero_shot_script.main(argv(tmp_path, tiny_vit_checkpoint, "--output_dir", str(run)))
    first = {name: (run / name).read_bytes() for name in ("results.json", "args.json")}
    other = run / "thre0.3.json"
    capsys.readouterr()
    zero_shot_script.main(argv(tmp_path, tiny_vit_checkpoint, "--thre", "0.3", "--output", str(other)))
    out = capsys.readouterr().out
    assert f"[zero-shot] results written to {other}" in out and "replacing" not in out
    assert {name: (run / name).read_bytes() for name in ("results.json", "args.json")} == first  # untouched
    kept, second = json.loads(first["results.json"]), json.loads(other.read_text())
    assert (kept["thre"], second["thre"]) == (0.5, 0.3)
    assert {key: second[key] for key in METRICS} == {key: kept[key] for key in METRICS}  # thresholds move CP..OF1 only
    assert sorted(p.name for p in run.iterdir()) == [".lock", "args.json", "results.json", "thre0.3.json"]
    assert zero_shot_script.parse_args(argv(tmp_path, tiny_vit_checkpoint, "--output", str(other))).output_dir is None
    # the same file again, at another threshold: replaced, saying so
    zero_shot_script.main(argv(tmp_path, tiny_vit_checkpoint, "--thre", "0.2", "--output", str(other)))
    assert f"[zero-shot] replacing {other} of an earlier evaluation" in capsys.readouterr().out
    assert json.loads(other.read_text())["thre"] == 0.2


@pytest.mark.parametrize("name", ["results.json", "args.json"])
def test_a_runs_own_file_is_refused_as_output(tmp_path, tiny_vit_checkpoint, name):
    write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=6)
    run = tmp_path / "zs"
    zero_shot_script.main(argv(tmp_path, tiny_vit_checkpoint, "--output_dir", str(run)))
    before = (run / name).read_bytes()
    with pytest.raises(FileExistsError, match=rf"--output .*{name}: a file of the run itself"):
        zero_shot_script.main(argv(tmp_path, tiny_vit_checkpoint, "--thre", "0.3", "--output", str(run / name)))
    assert (run / name).read_bytes() == before


def test_output_must_be_a_json_file(tmp_path, tiny_vit_checkpoint):
    write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=6)
    with pytest.raises(ValueError, match="expected the path of a .json file"):
        zero_shot_script.main(argv(tmp_path, tiny_vit_checkpoint, "--output", str(tmp_path / "zs.txt")))
