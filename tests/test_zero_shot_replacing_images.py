"""zero_shot_clip/test.py's 'replacing' note says when the earlier results scored another number of images."""
import re

from conftest import write_lmpt_dataset
from zero_shot_clip import test as zero_shot_script


def test_a_zero_shot_evaluation_of_fewer_images_says_so(tmp_path, tiny_vit_checkpoint, capsys):
    base = write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=6)
    out = tmp_path / "zs"
    argv = ["--dataset", "VOC", "--nb_classes", "4", "--data_root", str(tmp_path / "data"), "--pretrain_clip_path",
            str(tiny_vit_checkpoint), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
            "--output_dir", str(out), "--templates", "single"]
    zero_shot_script.main(argv)
    capsys.readouterr()
    test_list = base / "voc_lt_test.txt"
    test_list.write_text("".join(test_list.read_text().splitlines(keepends=True)[:4]))  # 4 of the 6 test images
    zero_shot_script.main(argv)
    assert re.search(r"\[zero-shot\] replacing .*results.json of an earlier evaluation \(mAP [0-9.]+; other images\)",
                     capsys.readouterr().out)
