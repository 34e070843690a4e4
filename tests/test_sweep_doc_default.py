"""tools/sweep_cse.py writes its tables to SWEEP.md in --out_dir unless --doc names another file, so a quick look
never replaces the committed docs/SWEEP.md; the write-up names the --doc it was printed with (docs/SWEEP.md is
kept as printed, before --doc had another default)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sweep_cse  # noqa: E402


def fake_sweep(monkeypatch):
    def fake_run(out_dir, seed, inputs, method, margin=None, gamma=None, lam=None):
        metrics = {m: 10.0 + seed for m in sweep_cse.METRICS}
        return sweep_cse.run_name(method, margin, gamma, lam), metrics, True

    for name in ("ensure_benchmark", "ensure_tiny_clip"):
        monkeypatch.setattr(sweep_cse, name, lambda *a, **k: None)
    monkeypatch.setattr(sweep_cse, "inputs_stamp", lambda: {})
    monkeypatch.setattr(sweep_cse, "run", fake_run)
    written = []
    save_text = sweep_cse.save_text
    monkeypatch.setattr(sweep_cse, "save_text", lambda path, text: written.append(Path(path)) or save_text(path, text))
    return written


def test_a_quick_look_writes_its_tables_beside_its_runs(tmp_path, monkeypatch):
    written = fake_sweep(monkeypatch)
    monkeypatch.setattr(sweep_cse, "ROOT", tmp_path / "repo")  # a default under the repository lands here instead
    sweep_cse.main(["--seeds", "0", "--margins", "0.5", "--gammas", "1", "--lams", "0.5", "--out_dir", str(tmp_path)])
    assert written == [tmp_path / "SWEEP.md"]
    assert not (tmp_path / "repo" / "docs" / "SWEEP.md").exists()
    doc = (tmp_path / "SWEEP.md").read_text()
    assert f"Printed by `python tools/sweep_cse.py --doc {tmp_path / 'SWEEP.md'}`" in doc


def test_doc_names_the_file_written(tmp_path, monkeypatch):
    written = fake_sweep(monkeypatch)
    sweep_cse.main(["--seeds", "0", "--margins", "0.5", "--gammas", "1", "--lams", "0.5", "--out_dir",
                    str(tmp_path / "runs"), "--doc", str(tmp_path / "doc.md")])
    assert written == [tmp_path / "doc.md"] and not (tmp_path / "runs" / "SWEEP.md").exists()


def test_readme_names_the_command_that_writes_the_committed_write_up():
    # docs/SWEEP.md is kept as printed (by the command without --doc, which wrote it then); README gives today's
    assert "Printed by `python tools/sweep_cse.py` " in (ROOT / "docs" / "SWEEP.md").read_text()
    assert "`python tools/sweep_cse.py --doc docs/SWEEP.md`" in (ROOT / "README.md").read_text()
