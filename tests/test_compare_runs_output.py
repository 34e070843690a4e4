"""tools/compare_runs.py: --output never replaces a run's own file (as lmpt/test.py's --output does not) nor one of
the files it compares; a test_results.json of an earlier version that evaluated last.pt is not marked as selected on
the test split; a key no row records is said; a run given as "." is labelled by its folder's name; its flags are
read only as written."""
import json
import sys

import pytest

from conftest import ROOT
from test_compare_runs import results, write_run

sys.path.insert(0, str(ROOT / "tools"))
import compare_runs  # noqa: E402


@pytest.mark.parametrize("output, message", [
    ("a/results.json", "--output a/results.json: a file of the run itself (results.json); expected another name"),
    ("a/args.json", "--output a/args.json: a file of the run itself (args.json)"),
    ("b/test_results.json", "--output b/test_results.json: a file of the run itself (test_results.json)"),
    ("other.json", "--output other.json: the file of row 3, one of the files compared"),
    ("./sub/../other.json", "the file of row 3, one of the files compared"),
    ("a", "--output a: expected a file ending in .md, .csv, .json"),
])
def test_an_output_over_a_runs_file_or_an_input_is_refused_and_the_file_kept(tmp_path, monkeypatch, capsys, output,
                                                                             message):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "a", args={"dataset": "voc-lt"})
    write_run(tmp_path / "b", name="test_results.json")
    (tmp_path / "sub").mkdir()
    (tmp_path / "other.json").write_text(json.dumps(results(thre=0.3)))  # as lmpt/test.py --output other.json
    before = {path: path.read_bytes() for path in tmp_path.rglob("*.json")}
    with pytest.raises(SystemExit) as stopped:
        compare_runs.main(["a", "b/test_results.json", "other.json", "--output", output])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*.json")} == before


def test_an_output_folder_is_refused_for_every_format(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "a")
    for name in ("t.md", "t.csv", "t.json"):
        (tmp_path / name).mkdir()
        with pytest.raises(SystemExit):
            compare_runs.main(["a", "--output", name])
        assert f"--output {name}: a folder" in capsys.readouterr().err


def test_another_json_output_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "a")
    assert compare_runs.main(["a", "--output", "a/table.json"]) == 0
    assert json.loads((tmp_path / "a" / "table.json").read_text())["rows"][0]["run"] == "a"


def old_test_results(**keys):
    """A test_results.json as lmpt/test.py wrote it before it recorded the run's selection."""
    saved = results(**keys)
    for key in ("selected_epoch", "selection_split", "class_names", "train_class_freq"):
        del saved[key]
    return saved


def test_an_older_evaluation_of_last_pt_is_not_marked_selected_on_test(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"dataset": "voc-lt", "data_root": "/data", "val_list": None}))
    (run / "results.json").write_text(json.dumps(old_test_results(checkpoint="/r/old/best.pt", checkpoint_epoch=12)))
    (run / "test_results.json").write_text(json.dumps(old_test_results(checkpoint="/r/old/last.pt",
                                                                       checkpoint_epoch=50)))
    compare_runs.main([str(run), str(run / "test_results.json")])
    out = capsys.readouterr().out
    assert "| old | coop | ViT16 | 12 (on test) |" in out  # best.pt: the epoch its run selected
    assert "| old/test_results.json | coop | ViT16 | 50 | 30.00 |" in out  # last.pt: not known to be
    assert "(on test): the epoch of row 1 was selected on the test split" in out
    assert ("Not marked (on test): row 2 evaluated a checkpoint of a run that selected on the test split, but its "
            "file does not record which epoch the run selected") in out
    compare_runs.main([str(run), str(run / "test_results.json"), "--output", str(tmp_path / "t.json")])
    assert [row["selected_on_test"] for row in json.loads((tmp_path / "t.json").read_text())["rows"]] == [True, False]


def test_a_key_that_no_row_records_is_said(tmp_path, capsys):
    for name in ("a", "b"):
        saved = results()
        del saved["class_names"], saved["train_class_freq"]
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(saved))
    compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert ("Comparable: the rows have the same dataset, data_root, images, thre, score, preprocess, backbone_sha256, "
            "group_bounds.\n- not recorded in any row (files of earlier versions), not checked: class_names, "
            "train_class_freq\n") in out
    assert json.loads((tmp_path / "t.json").read_text())["not_recorded_in_any_row"] == ["class_names",
                                                                                      "train_class_freq"]
    compare_runs.main([str(tmp_path / "a")])
    assert "not recorded in any row" in capsys.readouterr().out  # one row too


def test_a_run_given_as_dot_is_labelled_by_its_folder(tmp_path, monkeypatch, capsys):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b")
    monkeypatch.chdir(tmp_path / "a")
    compare_runs.main([".", "../b", "results.json", "../a/../b/results.json"])
    rows = [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines()[2:6]]
    assert rows == ["| a", "| b", "| a", "| b"]


@pytest.mark.parametrize("argv, unrecognised", [(["--test"], "--test"), (["--str"], "--str"),
                                                (["--out", "t.md"], "--out t.md")])
def test_an_abbreviated_flag_is_refused(tmp_path, monkeypatch, capsys, argv, unrecognised):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "a")
    with pytest.raises(SystemExit) as stopped:
        compare_runs.main(["a", *argv])
    assert stopped.value.code == 2 and f"unrecognized arguments: {unrecognised}" in capsys.readouterr().err
    assert not (tmp_path / "t.md").exists()
