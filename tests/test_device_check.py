"""tools/device_check.py, on the CPU: the user commands run and pass, lmpt/test.py's metrics equal the run's
results.json, the CPU reference is compared beside, and a failed command is reported (exit status 1)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import device_check  # noqa: E402


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    """LMPT's and the linear probe's commands on the ResNet family, on the CPU."""
    work = tmp_path_factory.mktemp("device_check")
    out = work / "report.json"
    code = device_check.main(["--device", "cpu", "--backbones", "resnet", "--only", "lmpt,linear-probe",
                              "--work_dir", str(work / "w"), "--out", str(out)])
    return code, json.loads(out.read_text()), work / "w" / "checked" / "cpu" / "resnet"


def test_commands_pass_and_equal_where_they_must(cpu_check):
    code, report, runs = cpu_check
    assert code == 0 and report["failed"] == [] and report["reference"] is None
    records = {r["name"]: r for r in report["records"]}
    assert list(records) == ["lmpt", "lmpt test", "lmpt 1 epoch", "lmpt resumed", "linear-probe",
                             "linear-probe test"]
    assert all(r["exit_code"] == 0 and r["problem"] is None for r in records.values())
    for name in ("lmpt", "linear-probe"):
        run = json.loads((runs / name / "results.json").read_text())
        assert records[name]["metrics"]["mAP"] == run["mAP"]  # read from the run's own file
        assert records[f"{name} test"]["same_as"] == str(runs / name / "results.json")
        assert records[f"{name} test"]["difference"] == 0 and records[f"{name} test"]["equal"] is True
    resumed = records["lmpt resumed"]
    assert resumed["difference"] == 0 and resumed["epochs_difference"] == 0 and resumed["equal"] is True
    rows = [json.loads(line) for line in (runs / "lmpt_resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]  # resumed from 1 epoch to 2


def test_epochs_difference(tmp_path):
    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        return tmp_path / name
    one = {"epoch": 1, "train_loss": 0.5, "test_mAP": 40.0, "test_head_mAP": None, "seconds": 1.0}
    two = {**one, "epoch": 2, "train_loss": 0.25}
    a = write("a.jsonl", [one, two])
    assert device_check.epochs_difference(a, write("b.jsonl", [{**one, "seconds": 9.0}, two])) == 0
    assert device_check.epochs_difference(a, write("c.jsonl", [one, {**two, "train_loss": 0.5}])) == 0.25
    assert device_check.epochs_difference(a, write("d.jsonl", [one])) == float("inf")
    assert device_check.epochs_difference(a, write("e.jsonl", [one, {**two, "test_head_mAP": 1.0}])) == float("inf")


def test_reference_beside_each_command(tmp_path, monkeypatch):
    """With a reference each command runs again there, in a folder of its own, and the table shows its mAP."""
    folders = []

    def fake_run(command, log):
        folders.append(Path(log).parent)
        return {"name": command["name"], "metrics": {key: 40.0 + len(folders) for key in device_check.COLUMNS},
                "problem": None, "seconds": 0.0, "exit_code": 0}
    monkeypatch.setattr(device_check, "run_step", fake_run)
    monkeypatch.setattr(device_check, "write_random_clip", lambda path, config: path)
    report = device_check.device_check(tmp_path, "cpu", ("vit",), ("zero-shot",), reference="cpu")
    assert folders == [tmp_path / "checked" / "cpu" / "vit", tmp_path / "reference" / "cpu" / "vit"]
    table = device_check.format_report(report)
    assert "vit | zero-shot | cpu | 0.0 s | ok | 41.00 | mAP on cpu: 42.00 (Δ -1.00)" in table
    assert f"all 2 commands passed in {report['seconds']:.1f} s" in table


def test_failed_command_is_reported(tmp_path):
    step = {"name": "broken", "argv": ["lmpt/train.py", "--data_root", str(tmp_path / "missing"), "--dataset",
                                       "coco-lt", "--epochs", "1"], "results": tmp_path / "results.json"}
    record = device_check.run_step(step, tmp_path / "log.txt")
    assert record["exit_code"] != 0 and record["problem"] == f"exit code {record['exit_code']}"
    assert record["metrics"] is None
    assert any(str(tmp_path / "missing") in line for line in record["output_tail"])  # the script's own refusal


def test_unfinished_results_are_a_problem(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({key: 1.0 for key in device_check.COLUMNS} | {"mAP": float("nan")}))
    metrics, problem = device_check.read_metrics(path)
    assert metrics is None and problem == f"{path}: mAP missing or not finite"
    path.write_text(json.dumps({key: 1.0 for key in device_check.COLUMNS} | {"head_mAP": None}))  # no head class
    assert device_check.read_metrics(path) == ({key: 1.0 for key in device_check.COLUMNS} | {"head_mAP": None}, None)
    path.write_text(json.dumps({key: 1.0 for key in device_check.COLUMNS if key != "tail_mAP"}))
    assert device_check.read_metrics(path) == (None, f"{path}: tail_mAP missing or not finite")
    path.write_text(json.dumps({key: 1.0 for key in device_check.COLUMNS} | {"OF1": None}))
    assert device_check.read_metrics(path) == (None, f"{path}: OF1 missing or not finite")


def test_largest_difference():
    ones = {key: 1.0 for key in device_check.COLUMNS}
    assert device_check.largest_difference(ones, ones | {"CF1": 0.75, "mAP": 1.5}) == 0.5
    assert device_check.largest_difference(ones | {"head_mAP": None}, ones | {"head_mAP": None}) == 0
    assert device_check.largest_difference(ones | {"head_mAP": None}, ones) == float("inf")
    assert device_check.largest_difference(None, ones) is None


def test_cpu_difference_fails_the_command(tmp_path, monkeypatch):
    """On the CPU a test's metrics that differ from the run's fail the check, naming the file and how much."""
    metrics = iter([{key: 50.0 for key in device_check.COLUMNS}, {key: 50.5 for key in device_check.COLUMNS}])

    def fake_run(command, log):
        return {"name": command["name"], "metrics": next(metrics), "problem": None, "seconds": 0.0, "exit_code": 0}
    monkeypatch.setattr(device_check, "run_step", fake_run)
    monkeypatch.setattr(device_check, "write_random_clip", lambda path, config: path)
    monkeypatch.setattr(device_check, "make_benchmark_data", lambda root, *sizes: root / "coco")
    report = device_check.device_check(tmp_path, "cpu", ("vit",), ("linear-probe",))
    same_as = tmp_path / "checked" / "cpu" / "vit" / "linear-probe" / "results.json"
    test = report["records"][1]
    assert test["difference"] == 0.5 and test["equal"] is False
    assert test["problem"] == f"differs from {same_as} (or its metrics.jsonl) by 0.5 on the CPU"
    assert report["failed"] == ["vit linear-probe test on cpu"]
    assert "FAILED (1 of 2 commands): vit linear-probe test on cpu in " in device_check.format_report(report)


def test_bad_flags_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="--only 'lmpt,bogus': expected a comma-separated list of lmpt, coop"):
        device_check.main(["--only", "lmpt,bogus", "--device", "cpu"])
    with pytest.raises(SystemExit, match="--reference tpu: not a device"):
        device_check.main(["--reference", "tpu", "--device", "cpu"])
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "x").write_text("")
    with pytest.raises(SystemExit, match="not empty"):
        device_check.main(["--device", "cpu", "--work_dir", str(tmp_path / "w")])
