"""zero_shot_clip/test.py's 'replacing' note names exactly what differs from the earlier evaluation in the same
--output_dir: another data root (a copy of the data elsewhere), another dataset (in the same data root), nothing
for the same data root written relatively, and nothing for a key that an earlier version's results.json lacks."""
import json
import shutil

import pytest

from conftest import write_lmpt_dataset
from zero_shot_clip import test as zero_shot_script


@pytest.fixture
def zero_shot(tmp_path, tiny_vit_checkpoint, capsys):
    """``run(dataset, data_root)``: a zero-shot evaluation into one output folder -> (the 'replacing' line, or
    None; the mAP of the results.json it replaced, or None)."""
    out = tmp_path / "zs"

    def run(dataset, data_root):
        before = out / "results.json"
        old_mAP = json.loads(before.read_text())["mAP"] if before.exists() else None
        capsys.readouterr()
        zero_shot_script.main(["--dataset", dataset, "--nb_classes", "4", "--data_root", str(data_root),
                               "--pretrain_clip_path", str(tiny_vit_checkpoint), "--device", "cpu", "--num_workers",
                               "0", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out),
                               "--templates", "single"])
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[zero-shot] replacing")]
        assert len(lines) <= 1
        return (lines[0] if lines else None), old_mAP

    run.out = out
    return run


def replacing(out, mAP, differ=""):
    return f"[zero-shot] replacing {out / 'results.json'} of an earlier evaluation (mAP {mAP:.2f}{differ})"


def test_another_data_root_and_another_dataset_are_named_and_the_same_root_written_relatively_is_not(
        tmp_path, zero_shot, monkeypatch):
    root = tmp_path / "data"
    write_lmpt_dataset(root, n_train=8, n_test=6)
    write_lmpt_dataset(root, n_train=8, n_test=6, folder="coco", prefix="coco_lt", labels_name="coco_labels.txt")
    shutil.copytree(root, tmp_path / "copy")
    assert zero_shot("VOC", root) == (None, None)
    line, mAP = zero_shot("VOC", tmp_path / "copy")  # the same images in another data root
    assert line == replacing(zero_shot.out, mAP, "; other data_root")
    line, mAP = zero_shot("VOC", root)
    assert line == replacing(zero_shot.out, mAP, "; other data_root")
    monkeypatch.chdir(tmp_path)
    line, mAP = zero_shot("VOC", "data")  # the same data root, relative: nothing differs
    assert line == replacing(zero_shot.out, mAP)
    line, mAP = zero_shot("COCO", root)  # another dataset (as many images, the same class names) in the same root
    assert line == replacing(zero_shot.out, mAP, "; other dataset")
    line, mAP = zero_shot("COCO", tmp_path / "copy")
    assert line == replacing(zero_shot.out, mAP, "; other data_root")
    line, mAP = zero_shot("VOC", root)
    assert line == replacing(zero_shot.out, mAP, "; other dataset, data_root")


def test_a_key_an_earlier_results_file_lacks_is_not_named(tmp_path, zero_shot):
    write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=6)
    zero_shot("VOC", tmp_path / "data")
    results = zero_shot.out / "results.json"
    earlier = json.loads(results.read_text())
    assert earlier["images"] == 6
    del earlier["images"]  # as written before zero-shot recorded the images scored
    results.write_text(json.dumps(earlier))
    line, mAP = zero_shot("VOC", tmp_path / "data")
    assert line == replacing(zero_shot.out, mAP)
