"""tools/compare_runs.py --per_class: each class's AP in every row, most training images first, with the class's
group (by the rows' own group_bounds) and, for two rows, their difference; in .json and .csv too; rows of other
classes, or a per-class AP of another length, are said, not tabled."""
import csv
import io
import json
import sys

from conftest import ROOT
from lmpt import metrics, report

sys.path.insert(0, str(ROOT / "tools"))
import compare_runs  # noqa: E402

NAMES = ["cat", "dog", "bird", "cow"]
FREQ = [5, 300, 40, 300]


def write_run(folder, aps, **keys):
    folder.mkdir(parents=True)
    results = {"mAP": 30.0, "head_mAP": 40.0, "medium_mAP": 30.0, "tail_mAP": 5.0, "CF1": 10.0, "OF1": 12.5,
               "method": folder.name, "backbone": "ViT16", "thre": 0.5, "class_names": NAMES,
               "train_class_freq": FREQ, "group_bounds": {"head_min": 100, "medium_min": 20},
               "per_class_AP": aps, **keys}
    (folder / "results.json").write_text(json.dumps({k: v for k, v in results.items() if v is not None}))
    return str(folder)


def table_lines(out):
    """The lines of the per-class table (after its header and rule)."""
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| class |")))
    return lines[start], [line for line in lines[start + 2:] if line.startswith("|")]


def test_two_rows_give_each_class_ap_by_training_images_with_groups_and_the_difference(tmp_path, capsys):
    coop = write_run(tmp_path / "coop", [10.0, 80.0, None, 50.0])
    lmpt = write_run(tmp_path / "lmpt", [15.5, 79.0, 30.0, 50.125])
    assert compare_runs.main([coop, lmpt, "--per_class"]) == 0
    out = capsys.readouterr().out
    assert "Per-class AP of 4 classes, most training images first." in out
    header, body = table_lines(out)
    assert header == "| class | train | group | AP 1 | AP 2 | 2 − 1 |"
    assert body == ["| dog | 300 | head | 80.00 | 79.00 | -1.00 |",  # ties in training images: by class index
                    "| cow | 300 | head | 50.00 | 50.12 | +0.12 |",
                    "| bird | 40 | medium | n/a | 30.00 | n/a |",  # no positive in row 1
                    "| cat | 5 | tail | 10.00 | 15.50 | +5.50 |"]
    assert out.index("Comparable:") < out.index("| class |")  # after the runs' table and its notes
    assert compare_runs.main([coop, lmpt]) == 0
    assert "| class |" not in capsys.readouterr().out  # only when asked


def test_three_rows_have_no_difference_column_and_the_outputs_hold_the_per_class_aps(tmp_path, capsys):
    runs = [write_run(tmp_path / name, [float(i), 2.0, 3.0, 4.0]) for i, name in enumerate(("a", "b", "c"))]
    out_json, out_csv = tmp_path / "t.json", tmp_path / "t.csv"
    assert compare_runs.main([*runs, "--per_class", "--output", str(out_json)]) == 0
    header, body = table_lines(capsys.readouterr().out)
    assert header == "| class | train | group | AP 1 | AP 2 | AP 3 |"
    assert body[-1] == "| cat | 5 | tail | 0.00 | 1.00 | 2.00 |"
    written = json.loads(out_json.read_text())
    assert written["per_class"]["classes"][0] == {"class": "dog", "index": 1, "train": 300, "group": "head",
                                                  "AP": [2.0, 2.0, 2.0]}
    assert [c["class"] for c in written["per_class"]["classes"]] == ["dog", "cow", "bird", "cat"]
    assert written["per_class"]["notes"] == ["Per-class AP of 4 classes, most training images first."]
    assert [row["per_class_AP"] for row in written["rows"]] == [[float(i), 2.0, 3.0, 4.0] for i in range(3)]
    assert compare_runs.main([*runs, "--per_class", "--output", str(out_csv)]) == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [json.loads(row["per_class_AP"]) for row in rows] == [[float(i), 2.0, 3.0, 4.0] for i in range(3)]
    assert compare_runs.main([*runs, "--output", str(out_csv)]) == 0
    assert "per_class_AP" not in out_csv.read_text()  # the rows' columns as before without --per_class
    assert compare_runs.main([*runs, "--output", str(out_json)]) == 0
    assert "per_class" not in json.loads(out_json.read_text())


def test_groups_follow_the_rows_own_bounds_and_a_difference_in_them_is_said(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0], group_bounds={"head_min": 500, "medium_min": 30})
    b = write_run(tmp_path / "b", [1.0, 2.0, 3.0, 4.0])
    assert compare_runs.main([a, b, "--per_class"]) == 0
    out = capsys.readouterr().out
    assert "train and group: those of row 1 (the rows differ in group_bounds)." in out
    _, body = table_lines(out)
    assert [line.split(" | ")[2] for line in body] == ["medium", "medium", "medium", "tail"]
    c = write_run(tmp_path / "c", [1.0, 2.0, 3.0, 4.0], train_class_freq=[300, 5, 40, 300])
    assert compare_runs.main([b, c, "--per_class"]) == 0
    out = capsys.readouterr().out
    assert "train and group: those of row 1 (the rows differ in train_class_freq)." in out
    assert table_lines(out)[1][0].startswith("| dog | 300 | head |")


def test_rows_of_other_classes_are_said_and_not_tabled(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0])
    b = write_run(tmp_path / "b", [1.0, 2.0, 3.0], class_names=NAMES[:3], train_class_freq=FREQ[:3])
    out_json = tmp_path / "t.json"
    assert compare_runs.main([a, b, "--per_class", "--output", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "Per-class AP not shown: the rows differ in class_names." in out and "| class |" not in out
    assert json.loads(out_json.read_text())["per_class"] == {
        "classes": None, "notes": ["Per-class AP not shown: the rows differ in class_names."]}
    assert compare_runs.main([a, b, "--per_class", "--strict"]) == 1  # the runs' table says they differ


def test_files_without_class_names_or_frequencies(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0], class_names=None, train_class_freq=None)
    assert compare_runs.main([a, "--per_class"]) == 0
    assert "Per-class AP not shown: no row records its class_names" in capsys.readouterr().out
    b = write_run(tmp_path / "b", [1.0, 2.0, 3.0, 4.0], train_class_freq=None)
    assert compare_runs.main([b, "--per_class"]) == 0
    out = capsys.readouterr().out
    assert "train and group: not recorded in any row (files of earlier versions); classes in their order." in out
    assert table_lines(out)[1] == ["| cat | ? | ? | 1.00 |", "| dog | ? | ? | 2.00 |", "| bird | ? | ? | 3.00 |",
                                   "| cow | ? | ? | 4.00 |"]


def test_a_per_class_ap_of_another_length_is_said_naming_the_file_and_the_runs_table_printed(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0])
    b = write_run(tmp_path / "b", [1.0, 2.0])
    c = write_run(tmp_path / "c", None)
    assert compare_runs.main([a, b, c, "--per_class"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| run | method |") and "| class |" not in out
    assert (f"Per-class AP not shown: row 2 ({b}/results.json) has 2 per-class APs for the 4 classes of row 1; "
            f"row 3 ({c}/results.json) has no per_class_AP for the 4 classes of row 1.") in out


def test_a_row_without_class_names_is_read_in_the_first_named_rows_order_and_said(tmp_path, capsys):
    old = write_run(tmp_path / "old", [1.0, 2.0, 3.0, 4.0], class_names=None, train_class_freq=None,
                    group_bounds=None)
    new = write_run(tmp_path / "new", [5.0, 6.0, 7.0, 8.0])
    assert compare_runs.main([old, new, "--per_class"]) == 0
    out = capsys.readouterr().out
    assert "Row 1: no class_names recorded (a file of an earlier version); its APs are read in the order of " \
           "row 2's classes." in out
    assert "train and group: those of row 2 (row 1 records no train_class_freq)." in out
    assert table_lines(out)[1][0] == "| dog | 300 | head | 2.00 | 6.00 | +4.00 |"
    short = write_run(tmp_path / "short", [1.0, 2.0, 3.0], class_names=None)  # of other classes, by its length
    assert compare_runs.main([new, short, "--per_class"]) == 0
    assert (f"Per-class AP not shown: row 2 ({short}/results.json) has 3 per-class APs for the 4 classes of row 1."
            in capsys.readouterr().out)


def test_training_images_of_another_length_are_said_naming_the_file(tmp_path, capsys):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0], train_class_freq=[5, 300, 40])
    assert compare_runs.main([a, "--per_class"]) == 0
    assert (f"Per-class AP not shown: row 1 ({a}/results.json) has 3 train_class_freq for the 4 classes of row 1."
            in capsys.readouterr().out)


def test_the_printed_report_and_the_per_class_table_list_classes_alike():
    order = metrics.classes_by_frequency(FREQ)
    assert order == [(1, "head"), (3, "head"), (2, "medium"), (0, "tail")]
    printed = report.format_results({"mAP": 1.0, "per_class_AP": [1.0, 2.0, 3.0, 4.0]}, NAMES, FREQ)
    assert [line.split()[:3] for line in printed.splitlines()[-4:]] == [
        ["dog", "300", "head"], ["cow", "300", "head"], ["bird", "40", "medium"], ["cat", "5", "tail"]]
    assert metrics.classes_by_frequency(FREQ, head_min=301, medium_min=5)[-1] == (0, "medium")
