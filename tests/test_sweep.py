"""tools/sweep_cse.py: the verdict on whether the caption loss helps tail classes, and the reuse of finished runs."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import sweep_cse  # noqa: E402


def summary(tail_mean, tail_std, total=25.0):
    return {"tail_mAP": (tail_mean, tail_std), "mAP": (total, 0.5)}


def test_verdict_weighs_the_difference_against_the_seed_spread():
    within = sweep_cse.verdict(summary(12.3, 1.1), summary(11.5, 0.2), n_seeds=3)
    assert "no clear effect" in within and "+0.80" in within
    helps = sweep_cse.verdict(summary(15.0, 0.3), summary(11.5, 0.2), n_seeds=3)
    assert "helps tail classes" in helps
    hurts = sweep_cse.verdict(summary(9.0, 0.3), summary(11.5, 0.2), n_seeds=3)
    assert "hurts tail classes" in hurts


def test_finished_runs_are_reused_only_with_the_same_command_line(tmp_path, monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(argv)
        run_dir = Path(argv[argv.index("--output_dir") + 1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "results.json").write_text(json.dumps({"selection_split": "val", "selection_mAP": 1.0}))

    monkeypatch.setattr(sweep_cse.train_script, "main", fake_main)
    assert sweep_cse.run(tmp_path, 0, "lmpt", 0.5, 0.5, 0.5)[2] is True
    assert sweep_cse.run(tmp_path, 0, "lmpt", 0.5, 0.5, 0.5)[2] is False  # same settings: reused
    assert len(calls) == 1
    monkeypatch.chdir(tmp_path)  # the same folder spelled relatively: still the same run
    assert sweep_cse.run(Path("."), 0, "lmpt", 0.5, 0.5, 0.5)[2] is False
    monkeypatch.setattr(sweep_cse, "PROMPT_ARGS", [*sweep_cse.PROMPT_ARGS, "--lr", "0.5"])
    assert sweep_cse.run(tmp_path, 0, "lmpt", 0.5, 0.5, 0.5)[2] is True  # other prompt settings: trained again
    assert len(calls) == 2 and calls[1][-8:-6] == ["--lr", "0.5"]
