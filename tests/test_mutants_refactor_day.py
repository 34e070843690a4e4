"""Tests that kill the mutants a mutation review of the refactor day's new and changed behaviour left alive:
compare_runs --per_class with a class without positives, longer per-class lists, its .md output and its notes'
wording; the demo's recorded device with a forwarded --device; the benchmark's CPU name; a hung git; the
pretraining check's normalisation by name; the template-length refusal with several long names; the printed
report's class counts; and a training script's main returning what its results.json holds."""
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import ROOT
from finetune_clip import fc as fc_script
from lmpt import pretrain, provenance
from lmpt import train as train_script
from lmpt.baselines import check_template_lengths
from lmpt.report import format_results

sys.path.insert(0, str(ROOT / "tools"))
import benchmark_speed as bench  # noqa: E402
import compare_runs  # noqa: E402
import demo  # noqa: E402

NAMES = ["cat", "dog", "bird", "cow"]
FREQ = [5, 300, 40, 300]


def write_run(folder, aps, **keys):
    folder.mkdir(parents=True)
    results = {"mAP": 30.0, "method": folder.name, "backbone": "ViT16", "thre": 0.5, "class_names": NAMES,
               "train_class_freq": FREQ, "group_bounds": {"head_min": 100, "medium_min": 20}, "per_class_AP": aps,
               **keys}
    (folder / "results.json").write_text(json.dumps({k: v for k, v in results.items() if v is not None}))
    return str(folder)


def table_rows(text):
    start = text.index("| class |")
    return [line for line in text[start:].splitlines()[2:] if line.startswith("|")]


def test_a_class_without_positives_in_the_second_row_has_no_difference(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0])
    b = write_run(tmp_path / "b", [1.5, None, 3.0, 4.0])
    out_md = tmp_path / "t.md"
    assert compare_runs.main([a, b, "--per_class", "--output", str(out_md)]) == 0
    printed = capsys.readouterr().out
    assert "| dog | 300 | head | 2.00 | n/a | n/a |" in table_rows(printed)
    assert "| cat | 5 | tail | 1.00 | 1.50 | +0.50 |" in table_rows(printed)
    assert out_md.read_text() == printed.split("[compare_runs] written to")[0]  # the .md is what is printed


def test_a_longer_per_class_list_is_not_cut(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0])
    b = write_run(tmp_path / "b", [1.0, 2.0, 3.0, 4.0, 5.0])
    assert compare_runs.main([a, b, "--per_class"]) == 0
    assert (f"Per-class AP not shown: row 2 ({b}/results.json) has 5 per-class APs for the 4 classes of row 1."
            in capsys.readouterr().out)


def test_the_json_rows_hold_per_class_ap_only_with_per_class(tmp_path):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0])
    out = tmp_path / "t.json"
    assert compare_runs.main([a, "--output", str(out)]) == 0
    assert "per_class_AP" not in json.loads(out.read_text())["rows"][0]
    assert compare_runs.main([a, "--per_class", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["per_class_AP"] == [1.0, 2.0, 3.0, 4.0]


def test_the_per_class_notes_of_several_old_rows(tmp_path, capsys):
    old = [write_run(tmp_path / name, [1.0, 2.0, 3.0, 4.0], class_names=None, train_class_freq=None,
                     group_bounds=None) for name in ("o1", "o2")]
    new = write_run(tmp_path / "new", [1.0, 2.0, 3.0, 4.0])
    assert compare_runs.main([*old, new, "--per_class"]) == 0
    out = capsys.readouterr().out
    assert ("Rows 1, 2: no class_names recorded (a file of an earlier version); their APs are read in the order "
            "of row 3's classes.") in out
    bounded = write_run(tmp_path / "bounded", [1.0, 2.0, 3.0, 4.0], group_bounds={"head_min": 500, "medium_min": 30})
    bare = write_run(tmp_path / "bare", [1.0, 2.0, 3.0, 4.0], train_class_freq=None)
    assert compare_runs.main([bounded, bare, new, "--per_class"]) == 0
    assert ("train and group: those of row 1 (the rows differ in group_bounds; row 2 records no train_class_freq)."
            in capsys.readouterr().out)


def test_the_demo_records_the_device_of_its_forwarded_flag(tmp_path, monkeypatch):
    row = {"mAP": 1.0, "per_class_AP": [1.0], "seconds": 1.0}
    monkeypatch.setattr(demo, "ensure_benchmark", lambda root: None)
    monkeypatch.setattr(demo, "ensure_tiny_clip", lambda **kw: None)
    monkeypatch.setattr(demo, "run_method", lambda *a: dict(row))
    monkeypatch.setattr(demo, "plot", lambda *a: None)
    monkeypatch.setattr("lmpt.data.load_dataset", lambda *a: SimpleNamespace(class_names=["a"], train_freq=[3]))
    asked = []
    monkeypatch.setattr(demo, "select_device", lambda name: asked.append(name) or torch.device("cpu"))
    demo.main(["--out_dir", str(tmp_path), "--methods", "CoOp", "--device", "cuda:1", "--device", "cpu"])
    assert asked == ["cpu"]  # the last --device, as the scripts' argparse reads it
    assert json.loads((tmp_path / "summary.json").read_text())["device"] == "cpu"


def test_the_benchmark_names_the_cpu_with_its_torch_threads():
    assert bench.device_name("cpu", 3) == provenance.cpu_name("torch threads 3")
    assert bench.device_name("cpu", 3).endswith(" cores, torch threads 3)")


def test_a_git_that_hangs_records_no_commit(monkeypatch):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired("git", 30)
    monkeypatch.setattr(provenance.subprocess, "run", hang)
    assert provenance.code_version() == {"commit": None, "modified": None}


def test_the_pretraining_check_normalises_by_the_preprocessing_named(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")  # lossless: the pixels read back are these
        paths.append(f"{i}.png")
    model = pretrain.build_tiny_clip(seed=0).eval()
    with torch.no_grad():
        for name, index in (("clip", 0), ("lmpt", 1)):
            expected = F.normalize(model.encode_image(pretrain.images_to_tensor(images, index)).float(), dim=-1)
            assert torch.equal(pretrain.normalised_image_features(model, tmp_path, paths, name), expected)
    with pytest.raises(ValueError, match="preprocess='imagenet', expected one of clip, lmpt"):
        pretrain.normalised_image_features(model, tmp_path, paths, "imagenet")


def test_several_long_class_names_name_the_first_and_count_the_others(tmp_path):
    long = [" ".join(["very"] * 70 + [animal]) for animal in ("dog", "cat", "cow")]
    (tmp_path / "labels.txt").write_text(f"ant 0\n{long[0]} 1\n{long[1]} 2\n")
    dataset = SimpleNamespace(class_names=["ant", long[0], long[1]], root=tmp_path,
                              spec=SimpleNamespace(labels="labels.txt"))
    with pytest.raises(ValueError) as refused:
        check_template_lengths(dataset, ("a photo of a {}.",), "--templates x")
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'labels.txt'}:2: class name {long[0]!r}")
    assert "(--templates x) (and 1 more class name(s))" in message


def test_the_printed_report_counts_the_classes_of_each_group():
    text = format_results({"mAP": 1.0, "per_class_AP": [1.0] * 7}, list("abcdefg"), [500, 100, 99, 20, 19, 1, 0])
    assert "classes: head 2, medium 2, tail 3" in text.splitlines()


def as_written(results):
    """The results as results.json holds them: NaN (the mAP of a group without classes) is null there."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in results.items()}


def test_a_training_scripts_main_returns_what_its_results_file_holds(tmp_path, tiny_data_root, tiny_rn_checkpoint,
                                                                    capsys):
    common = ["--dataset", "voc-lt", "--data_root", str(tiny_data_root), "--batch_size", "8", "--epochs", "1",
              "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache")]
    run = tmp_path / "train"
    returned = train_script.main([*common, "--pretrain_clip", str(tiny_rn_checkpoint), "--output_dir", str(run)])
    assert as_written(returned) == json.loads((run / "results.json").read_text()) and returned["class_names"]
    assert f"[train] run folder: {run}" in capsys.readouterr().out
    run = tmp_path / "fc"
    returned = fc_script.main([*common, "--pretrain_clip_path", str(tiny_rn_checkpoint), "--output_dir", str(run)])
    assert as_written(returned) == json.loads((run / "results.json").read_text()) and returned["class_names"]
    assert f"[finetune] run folder: {run}" in capsys.readouterr().out
