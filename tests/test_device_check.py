"""tools/device_check.py, on the CPU: the user commands run and pass, lmpt/test.py's metrics equal the run's
results.json, a resumed run equals an uninterrupted one and really resumed, the reference runs in folders of
its own, and a failed, hung or differing command is reported (exit status 1)."""
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import device_check  # noqa: E402

ONES = {key: 1.0 for key in device_check.COLUMNS}


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
    assert code == 0 and report["failed"] == [] and report["reference"] is None and report["finished"] is True
    records = {r["name"]: r for r in report["records"]}
    assert list(records) == ["lmpt", "lmpt test", "lmpt 1 epoch", "lmpt resumed", "linear-probe",
                             "linear-probe test"]
    assert all(r["exit_code"] == 0 and r["problem"] is None for r in records.values())
    for name in ("lmpt", "linear-probe"):
        run = json.loads((runs / name / "results.json").read_text())
        assert records[name]["metrics"]["mAP"] == run["mAP"]  # read from the run's own file
        test = json.loads((runs / f"{name}_test.json").read_text())  # lmpt/test.py's own file, on best.pt
        assert test["checkpoint"] == str(runs / name / "best.pt") and records[f"{name} test"]["metrics"]["mAP"] == \
            test["mAP"]
        assert records[f"{name} test"]["same_as"] == str(runs / name / "results.json")
        assert records[f"{name} test"]["difference"] == 0 and records[f"{name} test"]["equal"] is True
    resumed = records["lmpt resumed"]
    assert resumed["difference"] == 0 and resumed["epochs_difference"] == 0 and resumed["judged"] is True
    rows = [json.loads(line) for line in (runs / "lmpt_resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]  # resumed from 1 epoch to 2
    assert any(line.startswith("[resume] resuming") for line in device_check.output_lines(resumed["log"]))


def test_each_group_encodes_with_a_cache_of_its_own(cpu_check):
    _, _, runs = cpu_check
    assert sorted(p.name for p in runs.glob("cache_*")) == ["cache_linear-probe", "cache_lmpt"]
    assert all(any(p.iterdir()) for p in runs.glob("cache_*"))


def test_commands_compare_other_files(tmp_path):
    """Each comparison names two different files, those of the runs it compares; the reference's commands
    write and cache in folders of their own."""
    def commands(role, device):
        out = tmp_path / role / device / "vit"
        return out, {c["name"]: c for group in device_check.GROUPS
                     for c in device_check.steps(group, out, tmp_path / "data", tmp_path / "clip.pt", device)}
    out, checked = commands("checked", "cuda")
    assert checked["lmpt test"]["results"] == out / "lmpt_test.json" != checked["lmpt test"]["same_as"] == \
        out / "lmpt" / "results.json"
    assert checked["lmpt test"]["argv"][-2:] == ["--output", str(out / "lmpt_test.json")]
    assert checked["lmpt resumed"]["same_epochs_as"] == (out / "lmpt_resumed" / "metrics.jsonl",
                                                         out / "lmpt" / "metrics.jsonl")
    assert checked["lmpt resumed"]["resumes"] == out / "lmpt_resumed" / "metrics.jsonl"
    assert [checked[name].get("exact_on_gpu") for name in ("lmpt test", "linear-probe test", "finetune-full test",
                                                             "lmpt resumed")] == [True, True, False, False]
    _, reference = commands("reference", "cpu")
    for name, command in checked.items():
        args = dict(zip(command["argv"], command["argv"][1:]))
        other = dict(zip(reference[name]["argv"], reference[name]["argv"][1:]))
        assert args["--cache_dir"] != other["--cache_dir"] and args["--device"] == "cuda"
        assert args["--cache_dir"].startswith(str(out))


def fake_runs(monkeypatch, metrics, logs=None, after=None):
    """run_command replaced: the records of ``metrics`` in turn (each a dict, or a problem as text), each
    command's output ``logs[name]``; ``after(command)`` is called once a command has "run"."""
    metrics = iter(metrics)

    def fake_run(command, log, timeout):
        Path(log).write_text((logs or {}).get(command["name"], ""))
        value = next(metrics)
        problem = value if isinstance(value, str) else None
        if after is not None:
            after(command)
        return {"name": command["name"], "metrics": None if problem else value, "problem": problem,
                "seconds": 0.0, "exit_code": 1 if problem else 0, "log": str(log)}
    monkeypatch.setattr(device_check, "run_command", fake_run)
    monkeypatch.setattr(device_check, "write_random_clip", lambda path, config: path)
    monkeypatch.setattr(device_check, "make_benchmark_data", lambda root, *sizes: root / "coco")
    monkeypatch.setattr(device_check, "device_name", lambda device: f"a {device} device")  # no GPU asked


def test_reference_beside_each_command(tmp_path, monkeypatch):
    """With a reference each command runs again there, in a folder of its own, and the table shows its mAP."""
    out, written = tmp_path / "report.json", []

    def after(command):  # what the report file holds when the next command runs
        written.append(json.loads(out.read_text()) if out.exists() else None)
    fake_runs(monkeypatch, [ONES | {"mAP": 41.0}, ONES | {"mAP": 42.0}], after=after)
    report = device_check.device_check(tmp_path, "cpu", ("vit",), ("zero-shot",), reference="cpu", out=out)
    assert written[0] is None and written[1]["finished"] is False  # written after the first command, unfinished
    assert [r["metrics"]["mAP"] for r in written[1]["records"]] == [41.0] and written[1]["reference_records"] == []
    assert [Path(r["log"]).parent.parent for r in report["records"] + report["reference_records"]] == \
        [tmp_path / "checked" / "cpu" / "vit", tmp_path / "reference" / "cpu" / "vit"]
    table = device_check.format_report(report)
    assert "vit | zero-shot | cpu | 0.0 s | ok | 41.00 | mAP on cpu: 42.00 (Δ -1.00)" in table
    assert f"all 2 commands passed in {report['seconds']:.1f} s" in table
    assert json.loads(out.read_text())["finished"] is True


def test_difference_fails_where_judged(tmp_path, monkeypatch):
    """A test's metrics that differ from the run's fail the check on any device (the same checkpoint and
    features); a resumed run's difference fails on the CPU only, one in which metrics are null anywhere."""
    run, off = ONES | {"mAP": 50.0}, ONES | {"mAP": 50.5}
    fake_runs(monkeypatch, [run, off])
    report = device_check.device_check(tmp_path / "a", "cuda", ("vit",), ("linear-probe",))
    test = report["records"][1]
    same_as = tmp_path / "a" / "checked" / "cuda" / "vit" / "linear-probe" / "results.json"
    assert test["difference"] == 0.5 and test["equal"] is False and test["judged"] is True
    assert test["problem"] == f"differs from {same_as} (or its metrics.jsonl) by 0.5 on cuda"
    assert report["failed"] == ["vit linear-probe test on cuda"]
    assert "FAILED (1 of 2 commands): vit linear-probe test on cuda in " in device_check.format_report(report)

    fake_runs(monkeypatch, [run, off])  # full fine-tuning's test encodes the images again: shown on a GPU
    report = device_check.device_check(tmp_path / "b", "cuda", ("vit",), ("finetune-full",))
    assert report["failed"] == [] and report["records"][1]["judged"] is False
    assert "max |Δ| vs finetune-full/results.json: 0.5 (shown, not judged, on cuda)" in \
        device_check.format_report(report)

    fake_runs(monkeypatch, [run, run | {"head_mAP": None}])
    report = device_check.device_check(tmp_path / "c", "cuda", ("vit",), ("finetune-full",))
    assert report["records"][1]["difference"] == math.inf
    assert report["records"][1]["problem"].endswith("in which metrics are null, or in epochs")


def test_a_resume_that_trained_again_fails(tmp_path, monkeypatch):
    """The resumed run must say it resumed and keep the epoch row the first run wrote (a run that trained
    from the start again, with the same seed, would give equal results)."""
    said = {"lmpt resumed": "[resume] resuming /x after epoch 1 (best mAP 40.00 at epoch 1)\n"}
    row = '{"epoch": 1, "train_loss": 0.5, "test_mAP": 40.0, "seconds": %s}\n'

    def resumed_check(work, logs, rewrite=False, other_loss="0.5"):
        out = work / "checked" / "cpu" / "vit"
        for run, seconds in (("lmpt_resumed", "0.01"), ("lmpt", "0.02")):  # the 1-epoch run's and the other's
            (out / run).mkdir(parents=True)
            (out / run / "metrics.jsonl").write_text(row % seconds)
        other = (out / "lmpt" / "metrics.jsonl")
        other.write_text(other.read_text().replace('"train_loss": 0.5', f'"train_loss": {other_loss}'))

        def after(command):  # a resume that trains epoch 1 again writes its row anew (other seconds)
            if rewrite and command["name"] == "lmpt resumed":
                (out / "lmpt_resumed" / "metrics.jsonl").write_text(row % "0.03")
        fake_runs(monkeypatch, [ONES] * 4, logs, after)
        return list(device_check.check_device(work, "vit", ("lmpt",), "cpu", work, work / "c.pt"))[-1], out

    record, _ = resumed_check(tmp_path / "a", said)
    assert record["name"] == "lmpt resumed" and record["problem"] is None and record["difference"] == 0
    record, _ = resumed_check(tmp_path / "b", {})
    assert record["problem"] == "it did not say it resumed ('[resume] resuming …' is not in its output)"
    record, out = resumed_check(tmp_path / "c", said, rewrite=True)
    assert record["problem"] == (f"{out / 'lmpt_resumed' / 'metrics.jsonl'}: the rows of the epochs before the "
                                 f"resume were not kept as written")
    record, out = resumed_check(tmp_path / "d", said, other_loss="0.75")  # equal results, another epoch row
    assert record["epochs_difference"] == 0.25 and record["problem"] == (
        f"differs from {out / 'lmpt' / 'results.json'} (or its metrics.jsonl) by 0.25 on cpu")


def test_failed_and_hung_commands_are_reported(tmp_path):
    command = {"name": "broken", "argv": ["lmpt/train.py", "--data_root", str(tmp_path / "missing"), "--dataset",
                                          "coco-lt", "--epochs", "1"], "results": tmp_path / "results.json"}
    record = device_check.run_command(command, tmp_path / "log.txt")
    assert record["exit_code"] != 0 and record["problem"] == f"exit code {record['exit_code']}"
    assert record["metrics"] is None
    assert any(str(tmp_path / "missing") in line for line in device_check.output_lines(tmp_path / "log.txt"))
    hung = {"name": "hung", "argv": ["-c", "import time; print('started', flush=True); time.sleep(60)"],
            "results": tmp_path / "results.json"}
    record = device_check.run_command(hung, tmp_path / "hung.txt", timeout=3)
    assert record["exit_code"] is None and record["problem"] == "timed out after 3 s" and record["seconds"] < 30
    assert device_check.output_lines(tmp_path / "hung.txt")[-1] == "started"


def test_unfinished_results_are_a_problem(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(ONES | {"mAP": float("nan")}))
    metrics, problem = device_check.results_metrics(path)
    assert metrics is None and problem == f"{path}: mAP missing or not finite"
    path.write_text(json.dumps(ONES | {"head_mAP": None}))  # no head class
    assert device_check.results_metrics(path) == (ONES | {"head_mAP": None}, None)
    path.write_text(json.dumps({key: 1.0 for key in device_check.COLUMNS if key != "tail_mAP"}))
    assert device_check.results_metrics(path) == (None, f"{path}: tail_mAP missing or not finite")
    path.write_text(json.dumps(ONES | {"OF1": None}))
    assert device_check.results_metrics(path) == (None, f"{path}: OF1 missing or not finite")


def test_largest_difference():
    assert device_check.largest_difference(ONES, ONES | {"CF1": 0.75, "mAP": 1.5}) == 0.5
    assert device_check.largest_difference(ONES | {"head_mAP": None}, ONES | {"head_mAP": None}) == 0
    assert device_check.largest_difference(ONES | {"head_mAP": None}, ONES) == float("inf")
    assert device_check.largest_difference(None, ONES) is None


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


def test_bad_flags_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="--only 'lmpt,bogus': expected a comma-separated list of lmpt, coop"):
        device_check.main(["--only", "lmpt,bogus", "--device", "cpu"])
    with pytest.raises(SystemExit, match="--reference tpu: not a device"):
        device_check.main(["--reference", "tpu", "--device", "cpu"])
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "x").write_text("")
    with pytest.raises(SystemExit, match="not empty"):
        device_check.main(["--device", "cpu", "--work_dir", str(tmp_path / "w")])
