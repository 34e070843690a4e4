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
    named = sweep_cse.verdict(summary(12.3, 1.1), summary(11.5, 0.2), 3, "best setting: Δ 0.5, γ 0.5, λ 0.75",
                              default=summary(11.4, 0.5))
    assert "(LMPT, best setting: Δ 0.5, γ 0.5, λ 0.75)" in named
    assert named.endswith("At the default --lam 0.5, LMPT's tail mAP is 11.40 ± 0.50, -0.10 against CoOp.")


def test_finished_runs_are_reused_only_with_the_same_command_line_and_inputs(tmp_path, monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(argv)
        run_dir = Path(argv[argv.index("--output_dir") + 1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "results.json").write_text(json.dumps({"selection_split": "val", "selection_mAP": 1.0}))

    monkeypatch.setattr(sweep_cse.train_script, "main", fake_main)
    inputs = {"tiny_clip_sha256": "a", "benchmark": {"version": 1}}
    assert sweep_cse.run(tmp_path, 0, inputs, "lmpt", 0.5, 0.5, 0.5)[2] is True
    assert sweep_cse.run(tmp_path, 0, inputs, "lmpt", 0.5, 0.5, 0.5)[2] is False  # same settings: reused
    assert len(calls) == 1
    monkeypatch.chdir(tmp_path)  # the same folder spelled relatively: still the same run
    assert sweep_cse.run(Path("."), 0, inputs, "lmpt", 0.5, 0.5, 0.5)[2] is False
    monkeypatch.setattr(sweep_cse, "PROMPT_ARGS", [*sweep_cse.PROMPT_ARGS, "--lr", "0.5"])
    assert sweep_cse.run(tmp_path, 0, inputs, "lmpt", 0.5, 0.5, 0.5)[2] is True  # other prompt settings: again
    assert len(calls) == 2 and calls[1][-8:-6] == ["--lr", "0.5"]
    for other in ({**inputs, "tiny_clip_sha256": "b"}, {**inputs, "benchmark": {"version": 2}}):
        assert sweep_cse.run(tmp_path, 0, other, "lmpt", 0.5, 0.5, 0.5)[2] is True  # another CLIP or benchmark
    assert len(calls) == 4


def test_each_seed_of_a_configuration_counts_once(tmp_path, monkeypatch):
    # lam 0.5 is on the Δ × γ grid and in the lam sweep: its std is over the seeds, not over each seed twice
    def fake_run(out_dir, seed, inputs, method, margin=None, gamma=None, lam=None):
        value = 10.0 + seed + (lam or 0)
        metrics = {m: value for m in sweep_cse.METRICS}
        return sweep_cse.run_name(method, margin, gamma, lam), metrics, True

    for name in ("ensure_benchmark", "ensure_tiny_clip"):
        monkeypatch.setattr(sweep_cse, name, lambda *a, **k: None)
    monkeypatch.setattr(sweep_cse, "inputs_stamp", lambda: {})
    monkeypatch.setattr(sweep_cse, "run", fake_run)
    sweep_cse.main(["--margins", "0.5", "--gammas", "0.5", "--lams", "0.5", "0.75", "--out_dir", str(tmp_path),
                    "--doc", str(tmp_path / "SWEEP.md")])
    summary = json.loads((tmp_path / "sweep.json").read_text())["summary"]
    assert summary["lmpt_m0.5_g0.5_l0.5"]["mAP"] == [11.5, 1.0]  # seeds 0, 1, 2: mean 11.5, std 1
    assert "trained 9 runs" in (tmp_path / "SWEEP.md").read_text()  # coop, the grid point and lam 0.75


def test_the_runs_read_the_validation_list_and_tiny_clip_the_stamp_names_from_any_folder(tmp_path, monkeypatch):
    from lmpt import pretrain
    from lmpt.backbones import TINY_CHECKPOINT
    from lmpt.fileid import file_fingerprint
    shared = tmp_path / "shared"  # the folder --pretrain_clip tiny reads when $LMPT_PRETRAINED_DIR names it
    shared.mkdir()
    (shared / TINY_CHECKPOINT).write_bytes(b"the tiny CLIP the runs load")
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(shared))
    monkeypatch.setattr(sweep_cse, "ensure_tiny_clip",  # found where ensure_tiny_clip looks, not pretrained again
                        lambda pretrained_dir=None: pretrain.pretrained_folder(pretrained_dir) / TINY_CHECKPOINT)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / sweep_cse.STAMP_NAME).write_text('{"version": 7}')
    monkeypatch.setattr(sweep_cse, "ensure_benchmark", lambda root: tmp_path / "bench")
    assert sweep_cse.inputs_stamp() == {"tiny_clip_sha256": file_fingerprint(shared / TINY_CHECKPOINT),
                                        "benchmark": {"version": 7}}
    calls = []
    monkeypatch.setattr(sweep_cse.train_script, "main", lambda argv: calls.append(argv) or
                        (Path(argv[argv.index("--output_dir") + 1]) / "results.json").write_text(
                            json.dumps({"selection_split": "val", "selection_mAP": 1.0})))
    monkeypatch.chdir(tmp_path)  # not the repository root
    (tmp_path / "out" / "coop" / "seed0").mkdir(parents=True)
    sweep_cse.run(tmp_path / "out", 0, {}, "coop")
    val_list = Path(calls[0][calls[0].index("--val_list") + 1])
    assert val_list == sweep_cse.ROOT / "data" / "synth" / "synth_lt_val.txt" and val_list.is_absolute()
