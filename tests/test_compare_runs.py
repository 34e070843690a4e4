"""tools/compare_runs.py: one table of the runs' results files, and what differs between them; tools/demo.py's
table (shared with it through lmpt/report.py) as before; the demo's other flags go only to the scripts that have
them, and full fine-tuning is a method it runs only when asked."""
import csv
import io
import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from lmpt import test as test_script
from lmpt import train as train_script
from zero_shot_clip import test as zero_shot_script

sys.path.insert(0, str(ROOT / "tools"))
import compare_runs  # noqa: E402
import demo  # noqa: E402

SHA = "ab" * 32


def results(**keys):
    base = {"mAP": 30.0, "head_mAP": 40.0, "medium_mAP": 30.0, "tail_mAP": None, "CF1": 10.0, "OF1": 12.5,
            "per_class_AP": [30.0], "method": "coop", "backbone": "ViT16", "backbone_sha256": SHA, "thre": 0.5,
            "score": "softmax", "preprocess": "lmpt", "images": 100, "group_bounds": {"head_min": 100,
                                                                                      "medium_min": 20},
            "dataset": "voc-lt", "data_root": "/data", "class_names": ["a"], "train_class_freq": [3],
            "checkpoint": "/runs/x/best.pt", "checkpoint_epoch": 4, "selected_epoch": 4, "selection_split": "val"}
    return {**base, **keys}


def write_run(folder, name="results.json", args=None, **keys):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(results(**keys)))
    if args is not None:
        (folder / "args.json").write_text(json.dumps(args))
    return folder


def test_rows_that_agree_are_said_comparable(tmp_path, capsys):
    a = write_run(tmp_path / "coop")
    b = write_run(tmp_path / "zs", method="zero-shot", templates="single", checkpoint_epoch=None,
                  selected_epoch=None, selection_split=None, mAP=21.537)
    for key in ("checkpoint", "checkpoint_epoch", "selected_epoch", "selection_split"):
        data = json.loads((b / "results.json").read_text())
        del data[key]
        (b / "results.json").write_text(json.dumps(data))
    assert compare_runs.main([str(a), str(b / "results.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| run | method | CLIP | epoch | mAP | head_mAP | medium_mAP | tail_mAP | CF1 | OF1 |\n"
                          "|---|---|---|---|---|---|---|---|---|---|\n"
                          "| coop | coop | ViT16 | 4 | 30.00 | 40.00 | 30.00 | n/a | 10.00 | 12.50 |\n"
                          "| zs | zero-shot (single) | ViT16 | - | 21.54 | 40.00 | 30.00 | n/a | 10.00 | 12.50 |\n")
    assert ("Comparable: the rows have the same dataset, data_root, images, thre, score, preprocess, "
            "backbone_sha256, group_bounds, class_names, train_class_freq.") in out
    assert "NOT comparable" not in out and "(on test)" not in out


def test_what_differs_is_named_with_its_rows_and_a_test_selection_is_flagged(tmp_path, capsys):
    a = write_run(tmp_path / "lmpt", thre=0.3)
    b = write_run(tmp_path / "probe", method="linear-probe", backbone="RN50", backbone_sha256="cd" * 32,
                  selection_split="test", data_root="/other")
    c = write_run(tmp_path / "coop", name="test_results.json", thre=0.3)
    assert compare_runs.main([str(a), str(b), str(c / "test_results.json"), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "| probe | linear-probe | RN50 | 4 (on test) | 30.00 |" in out
    assert "| coop/test_results.json | coop | ViT16 | 4 |" in out
    assert "NOT comparable: the rows differ in data_root, thre, backbone_sha256." in out
    assert "- thre: 0.3 (rows 1, 3); 0.5 (row 2)" in out
    assert "- backbone_sha256: abababababab (rows 1, 3); cdcdcdcdcdcd (row 2)" in out
    assert "- data_root: /data (rows 1, 3); /other (row 2)" in out
    assert "(on test): the epoch of row 2 was selected on the test split" in out
    assert compare_runs.main([str(a), str(c / "test_results.json"), "--strict"]) == 0  # nothing differs


def test_a_folder_gives_its_test_results_when_asked_and_older_files_read_args_json(tmp_path, capsys):
    old = results()
    for key in ("dataset", "data_root", "class_names", "train_class_freq", "selection_split"):
        del old[key]
    run = tmp_path / "old"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(old))
    (run / "args.json").write_text(json.dumps({"dataset": "VOC", "data_root": "/data", "val_list": None}))
    write_run(run, name="test_results.json", thre=0.3)
    new = write_run(tmp_path / "new")
    compare_runs.main([str(run), str(new)])
    out = capsys.readouterr().out
    assert "| old | coop | ViT16 | 4 (on test) |" in out  # no --val_list in its args.json: selected on test
    assert "Row 1: dataset, data_root, selection_split read from the args.json of its run" in out
    assert "- class_names: not recorded in row 1 (a file of an earlier version), not checked there" in out
    assert "NOT comparable" not in out  # its args.json's dataset is the alias of voc-lt
    compare_runs.main([str(run), str(new), "--test_results"])
    out = capsys.readouterr().out
    assert "| old/test_results.json | coop |" in out and "- thre: 0.3 (row 1); 0.5 (row 2)" in out


def test_the_comparison_is_written_as_its_suffix_says(tmp_path, capsys):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", thre=0.3, selection_split="test")
    compare_runs.main([str(a), str(b), "--output", str(tmp_path / "t.md")])
    printed = capsys.readouterr().out
    assert printed.startswith((tmp_path / "t.md").read_text())
    assert printed.endswith(f"[compare_runs] written to {tmp_path / 't.md'}\n")
    compare_runs.main([str(a), str(b), "--output", str(tmp_path / "t.csv")])
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert [(r["run"], float(r["mAP"]), r["thre"], r["selected_on_test"]) for r in rows] == [
        ("a", 30.0, "0.5", "False"), ("b", 30.0, "0.3", "True")]
    assert json.loads(rows[0]["class_names"]) == ["a"]
    compare_runs.main([str(a), str(b), "--output", str(tmp_path / "t.json")])
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["comparable"] is False and saved["differ"] == {"thre": [{"value": 0.5, "rows": [1]},
                                                                          {"value": 0.3, "rows": [2]}]}
    assert [r["selected_on_test"] for r in saved["rows"]] == [False, True] and saved["rows"][1]["epoch"] == 4
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))  # written atomically, no leftovers


@pytest.mark.parametrize("argv, message", [
    (["missing"], "missing: no such file or folder"),
    (["empty"], "empty: no results.json here; expected the folder of a finished run"),
    (["only_tested"], "only_tested: no results.json here (it has a test_results.json: pass --test_results"),
    (["args/args.json"], "args.json: no mAP; expected a results file"),
    (["a", "--output", "t.txt"], "--output t.txt: expected a file ending in .md, .csv, .json"),
    (["text"], "results.json: mAP '68.1' is not a number; expected each metric a number or null"),
    (["na", "--per_class"], "results.json: per_class_AP 'n/a' is not a number"),
])
def test_what_cannot_be_read_is_refused_by_name(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "only_tested", name="test_results.json")
    write_run(tmp_path / "args", args={"dataset": "voc-lt"})
    write_run(tmp_path / "text", mAP="68.1")  # hand-edited, or written by another tool
    write_run(tmp_path / "na", per_class_AP=[30.0, "n/a"])
    with pytest.raises(SystemExit) as stopped:
        compare_runs.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_real_runs_compare_as_their_files_say(tmp_path, tiny_data_root, tiny_vit_checkpoint, capsys):
    """A zero-shot run, a CoOp run and lmpt/test.py's evaluation of it at another threshold: the rows name their
    method and epoch, and only the threshold differs (the same data, CLIP, images and groups)."""
    common = ["--dataset", "voc-lt", "--data_root", str(tiny_data_root), "--device", "cpu", "--num_workers", "0",
              "--batch_size", "8", "--cache_dir", str(tmp_path / "cache")]
    zero_shot_script.main([*common, "--pretrain_clip_path", str(tiny_vit_checkpoint), "--templates", "single",
                           "--output_dir", str(tmp_path / "zs")])
    run = tmp_path / "coop"
    train_script.main([*common, "--pretrain_clip", str(tiny_vit_checkpoint), "--training_method", "coop",
                       "--n_ctx", "4", "--epochs", "1", "--output_dir", str(run)])
    test_script.main(["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--thre", "0.3",
                      "--cache_dir", str(tmp_path / "cache")])
    capsys.readouterr()
    assert compare_runs.main([str(tmp_path / "zs"), str(run), str(run / "test_results.json"), "--strict"]) == 1
    out = capsys.readouterr().out
    assert f"| zs | zero-shot (single) | {tiny_vit_checkpoint} | - |" in out
    assert f"| coop | coop | {tiny_vit_checkpoint} | 1 (on test) |" in out
    assert f"| coop/test_results.json | coop | {tiny_vit_checkpoint} | 1 (on test) |" in out
    assert "NOT comparable: the rows differ in thre.\n- thre: 0.5 (rows 1, 2); 0.3 (row 3)\n" in out


def test_the_demo_table_is_the_one_kept_in_docs():
    """lmpt/report.py builds tools/demo.py's table: the kept summary.json files give their summary.md tables."""
    kept = sorted((ROOT / "docs" / "demo").rglob("summary.json"))
    assert len(kept) == 3
    for summary in kept:
        rows = json.loads(summary.read_text())["rows"]
        markdown = (summary.parent / "summary.md").read_text()
        assert markdown.startswith(demo.table(rows) + "\n\nTotal demo time: "), summary


def test_the_demo_passes_other_flags_only_to_the_scripts_that_have_them(capsys):
    scripts = ["zero_shot_clip/test.py", "finetune_clip/fc.py", "lmpt/train.py"]
    forwarded = demo.forwarded_flags(["--epochs", "5", "--thre=0.3", "--cse_margin", "-0.5"], scripts, pytest.fail)
    assert forwarded == {"zero_shot_clip/test.py": ["--thre=0.3"],
                         "finetune_clip/fc.py": ["--epochs", "5", "--thre=0.3"],
                         "lmpt/train.py": ["--epochs", "5", "--thre=0.3", "--cse_margin", "-0.5"]}
    printed = capsys.readouterr().out
    assert "[demo] --epochs 5: passed to finetune_clip/fc.py, lmpt/train.py only; zero_shot_clip/test.py has no " \
        "--epochs" in printed
    for extra, message in ((["--epoch", "5"], "--epoch: none of the methods' scripts"),
                           (["--dataset", "voc-lt"], "--dataset: set by the demo itself"),
                           (["--from_scratch"], "--from_scratch: set by the demo itself"),
                           (["5"], "argument '5': a value without a flag")):
        with pytest.raises(SystemExit) as refused:
            demo.main([*extra, "--methods", "CoOp"])
        assert refused.value.code == 2 and message in capsys.readouterr().err


def test_full_finetuning_is_a_demo_method_only_when_asked(monkeypatch):
    assert "full fine-tuning" in demo.METHODS and "full fine-tuning" not in demo.DEFAULT_METHODS
    assert demo.METHODS["full fine-tuning"][:4] == ["finetune_clip/fc.py", "--pretrain_clip_path", demo.BACKBONE,
                                                    "--from_scratch"]
    ran = []
    monkeypatch.setattr(demo, "ensure_benchmark", lambda root: None)
    monkeypatch.setattr(demo, "ensure_tiny_clip", lambda **kw: Path("tiny.pt"))
    monkeypatch.setattr(demo, "run_method", lambda name, argv, out_dir, seed, extra, backbone: ran.append(
        (name, extra)) or {})
    monkeypatch.setattr("lmpt.data.load_dataset", lambda *a, **kw: sys.exit())  # stop after the runs
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "3"])
    assert [name for name, _ in ran] == ["zero-shot CLIP", "linear probe", "CoOp", "LMPT"]  # the default: as before
    assert [extra for _, extra in ran] == [[], ["--epochs", "3"], ["--epochs", "3"], ["--epochs", "3"]]
    ran.clear()
    with pytest.raises(SystemExit):
        demo.main(["--methods", "full fine-tuning"])
    assert ran == [("full fine-tuning", [])]
