"""The verdict of tools/sweep_cse.py on whether the caption loss helps tail classes."""
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
