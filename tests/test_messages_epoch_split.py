"""The per-epoch line of lmpt/train.py and finetune_clip/fc.py names the split its mAP is on: the split the run
selects its best epoch on (--val_list's, else the test split's), as metrics.jsonl names it (val_mAP / test_mAP)."""
import json
import re
import shutil

from conftest import write_lmpt_dataset
from finetune_clip import fc as fc_script
from lmpt import train as train_script
from test_reliability import train_argv


def val_list(tmp_path, data):
    """A validation list of copies of the test images (images of its own, as a --val_list must have)."""
    for image in (data / "voc" / "images").glob("test_*.jpg"):
        shutil.copy(image, image.with_name(image.name.replace("test_", "val_")))
    path = tmp_path / "val.txt"
    path.write_text((data / "voc" / "voc_lt_test.txt").read_text().replace("/test_", "/val_"))
    return path


def epoch_lines(out, tag):
    return [line for line in out.splitlines() if re.match(rf"\[{tag}\] epoch \d+/\d+ loss", line)]


def fc_argv(data, checkpoint, out, cache, *extra):
    return ["--dataset", "voc-lt", "--data_root", str(data), "--pretrain_clip_path", str(checkpoint),
            "--batch_size", "8", "--epochs", "2", "--device", "cpu", "--num_workers", "0",
            "--cache_dir", str(cache), "--output_dir", str(out), *extra]


def check_lines(out, tag, run, split):
    lines = epoch_lines(out, tag)
    assert len(lines) == 2, out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line, row in zip(lines, rows):  # the mAP the line shows is the row's <split>_mAP
        assert f" {split} mAP {row[f'{split}_mAP']:.2f} (best " in line, line
    assert json.loads((run / "results.json").read_text())["selection_split"] == split


def test_the_epoch_line_of_a_prompt_run_names_the_split_it_selects_on(tmp_path, tiny_vit_checkpoint, capsys):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_lmpt_dataset(data)
    train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "test-run", cache, epochs=2))
    check_lines(capsys.readouterr().out, "lmpt", tmp_path / "test-run", "test")
    train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "val-run", cache, "--val_list",
                                 str(val_list(tmp_path, data)), epochs=2))
    check_lines(capsys.readouterr().out, "lmpt", tmp_path / "val-run", "val")


def test_the_epoch_line_of_a_finetuning_run_names_the_split_it_selects_on(tmp_path, tiny_vit_checkpoint, capsys):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_lmpt_dataset(data)
    fc_script.main(fc_argv(data, tiny_vit_checkpoint, tmp_path / "test-run", cache))
    check_lines(capsys.readouterr().out, "linear-probe", tmp_path / "test-run", "test")
    fc_script.main(fc_argv(data, tiny_vit_checkpoint, tmp_path / "val-run", cache, "--val_list",
                           str(val_list(tmp_path, data))))
    check_lines(capsys.readouterr().out, "linear-probe", tmp_path / "val-run", "val")
