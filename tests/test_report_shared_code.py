"""One piece of code: a metric is shown by lmpt/report.py's metric_cell in the printed report and in every table;
tools/sweep_cse.py's tables are report.markdown_table's (the kept docs/SWEEP.md tables, rebuilt from their own
figures, are what it builds); the split that selected a run's epoch is decided by prepare.selection_split_name, for
a training run and for tools/compare_runs.py reading an older run's args.json."""
import json
import re
import sys

import pytest
import torch

from conftest import ROOT
from lmpt import prepare, report

sys.path.insert(0, str(ROOT / "tools"))
import compare_runs  # noqa: E402
import sweep_cse  # noqa: E402


def test_the_printed_report_shows_metrics_as_the_tables_do():
    results = {"mAP": 12.345, "head_mAP": None, "medium_mAP": float("nan"), "tail_mAP": 1.0, "per_class_AP": [5.0]}
    text = report.format_results(results, ["a"], [3])
    assert "  12.35      n/a      n/a     1.00" in text and text.endswith("5.00")


def kept_tables():
    """The tables of docs/SWEEP.md, each as (its text, {configuration: {metric: (mean, std)}}, the order)."""
    text = (ROOT / "docs" / "SWEEP.md").read_text()
    tables = re.findall(r"^\| configuration \|.*?(?=\n\n)", text, re.S | re.M)
    parsed = []
    for table in tables:
        lines = table.splitlines()
        header = [cell.strip() for cell in lines[0].strip("|").split("|")][1:]
        assert tuple(header) == sweep_cse.METRICS
        summary, order = {}, []
        for line in lines[2:]:
            name, *cells = [cell.strip() for cell in line.strip("|").split("|")]
            summary[name] = {m: tuple(float(v) for v in cell.split(" ± ")) for m, cell in zip(header, cells)}
            order.append(name)
        parsed.append((table, summary, order))
    return parsed


def test_the_sweeps_tables_are_report_markdown_tables_and_the_kept_ones_unchanged(monkeypatch):
    kept = kept_tables()
    assert len(kept) == 2
    for table, summary, order in kept:
        assert sweep_cse.table(summary, order) == table
    built = []
    monkeypatch.setattr(sweep_cse, "markdown_table", lambda header, rows: built.append((header, rows)) or "")
    sweep_cse.table(kept[0][1], kept[0][2][:1])
    assert built == [(["configuration", *sweep_cse.METRICS], [["coop", *(f"{v:.2f} ± {s:.2f}" for v, s in
                                                                          kept[0][1]["coop"].values())]])]


@pytest.mark.parametrize("val_list, split", [(None, "test"), ("", "test"), ("/data/voc/voc_lt_val.txt", "val")])
def test_the_selection_split_is_decided_in_one_place(tmp_path, val_list, split):
    assert prepare.selection_split_name(val_list) == split
    splits = {"train": "train split", "test": "test split", **({"val": "val split"} if val_list else {})}
    training = prepare.Training(torch.device("cpu"), None, None, splits, None)
    assert training.select_split == f"{split} split"
    assert compare_runs.selection_split_name is prepare.selection_split_name  # not a copy of the rule
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"mAP": 1.0, "checkpoint": "/r/best.pt"}))  # an earlier version's
    (run / "args.json").write_text(json.dumps({"val_list": val_list}))
    row = compare_runs.read_row(run)
    assert row["results"]["selection_split"] == split and row["from_args"] == ["selection_split"]
