"""Review findings: --resume given a file or with --overwrite, a checkpoint that is no torch.save archive, the run
folder of a resumed run recorded absolute, the DB loss's μ trained with (not only printed), and $LMPT_CACHE_DIR
named as itself."""
import json
import shutil

import pytest

from conftest import write_lmpt_dataset
from finetune_clip import fc as fc_script
from lmpt import test as test_script
from lmpt import train as train_script


def train_argv(data_root, checkpoint, out, cache, *extra):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--batch_size", "8", "--epochs", "1", "--device", "cpu", "--num_workers", "0", "--n_ctx", "4",
            "--cache_dir", str(cache), "--output_dir", str(out), "--optimizer", "adam", "--lr", "0.01", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vit_checkpoint):
    """A folder holding a data root and a finished 1-epoch LMPT run, ``run``, written from that folder with a
    relative --output_dir and --gamma 0.1 (copied by the tests that change it)."""
    root = tmp_path_factory.mktemp("review_s20")
    write_lmpt_dataset(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        train_script.main(train_argv(root / "data", tiny_vit_checkpoint, "run", root / "cache", "--gamma", "0.1"))
    return root


def read_json(path):
    return json.loads(path.read_text())


def train_losses(run):
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def refused_at_parse_time(parse_args, argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_resume_of_a_file_names_the_run_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "last.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for parse_args in (train_script.parse_args, fc_script.parse_args):
        err = refused_at_parse_time(parse_args, ["--resume", "runs/x/last.pt"], capsys)
        assert "--resume runs/x/last.pt: a file; --resume takes the run folder (runs/x)" in err
        assert "Errno" not in err
        err = refused_at_parse_time(parse_args, ["--resume", "runs/x/last.pt/deeper"], capsys)  # below a file
        assert "--resume runs/x/last.pt/deeper: no args.json there; expected the folder of an interrupted run" in err


def test_resume_with_overwrite_is_refused_at_parse_time(trained, capsys):
    for parse_args in (train_script.parse_args, fc_script.parse_args):
        err = refused_at_parse_time(parse_args, ["--resume", str(trained / "run"), "--overwrite"], capsys)
        assert "--overwrite replaces a run, --resume continues it; pass one" in err


def test_resume_into_another_output_dir_is_refused_at_parse_time(trained, tmp_path, monkeypatch, capsys):
    """--resume A --output_dir B would extend A in place and never make B: refused, saying how to branch a run;
    the run's own folder, in any spelling, is no other folder."""
    run = trained / "run"
    for parse_args in (train_script.parse_args, fc_script.parse_args):
        err = refused_at_parse_time(parse_args, ["--resume", str(run), "--output_dir", str(tmp_path / "b")], capsys)
        assert (f"--resume {run} with --output_dir {tmp_path / 'b'}: a resumed run continues in its own folder; "
                f"leave --output_dir out") in " ".join(err.split())
        assert not (tmp_path / "b").exists()
    monkeypatch.chdir(trained)
    args = train_script.parse_args(["--resume", str(run), "--output_dir", "run/", "--epochs", "3"])
    assert (args.output_dir, args.resume, args.epochs) == (run, True, 3)
    (tmp_path / "link").symlink_to(trained)  # the run's folder through a link: the same folder
    args = train_script.parse_args(["--resume", str(run), "--output_dir", str(tmp_path / "link" / "run")])
    assert args.output_dir == run


def test_a_file_that_is_no_torch_save_archive_is_named_shortly(trained):
    run = trained / "run"
    for wrong in (run / "results.json", run / "metrics.jsonl"):
        with pytest.raises(ValueError) as refused:
            test_script.main(["--checkpoint", str(wrong), "--data_root", str(trained / "data"), "--device", "cpu"])
        assert str(refused.value) == (f"{wrong}: not a run checkpoint (not a torch.save archive); expected best.pt "
                                      f"or last.pt of a run folder")


def test_a_resumed_run_records_its_folder_absolute_as_a_fresh_one(trained, monkeypatch):
    run = trained / "run"
    assert read_json(run / "args.json")["output_dir"] == str(run)  # fresh, from a relative --output_dir
    assert read_json(run / "results.json")["checkpoint"] == str(run / "best.pt")
    (trained / "elsewhere").mkdir()
    shutil.copytree(run, trained / "elsewhere" / "copy")
    monkeypatch.chdir(trained)
    train_script.main(["--resume", "elsewhere/copy", "--epochs", "2", "--num_workers", "0"])
    copy = trained / "elsewhere" / "copy"
    assert read_json(copy / "args.json")["output_dir"] == str(copy)
    assert read_json(copy / "results.json")["checkpoint"] == str(copy / "best.pt")


def test_the_db_loss_trains_with_the_mu_it_is_given(trained, tiny_vit_checkpoint, monkeypatch):
    monkeypatch.chdir(trained)
    for gamma, name in (("0.9", "other"), ("0.1", "same")):
        train_script.main(train_argv(trained / "data", tiny_vit_checkpoint, name, trained / "cache", "--gamma", gamma))
    first = train_losses(trained / "run")
    assert train_losses(trained / "other") != first  # another μ, another loss
    assert train_losses(trained / "same") == first  # the same μ, the same loss


def test_an_unusable_lmpt_cache_dir_is_named_as_the_variable_not_the_flag(tmp_path, monkeypatch):
    from types import SimpleNamespace
    from lmpt import prepare
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("LMPT_CACHE_DIR", str(tmp_path / "a_file"))
    monkeypatch.setattr(prepare, "DEFAULT_CACHE_DIR", tmp_path / "a_file")  # as read at import from the variable
    with pytest.raises(FileExistsError, match=r"^\$LMPT_CACHE_DIR .*a_file: a file is there"):
        prepare.load_splits(SimpleNamespace(cache_dir=None))
    with pytest.raises(FileExistsError, match=r"^--cache_dir .*a_file: a file is there"):
        prepare.load_splits(SimpleNamespace(cache_dir=tmp_path / "a_file"))


def test_an_empty_lmpt_cache_dir_is_unset_not_the_current_folder(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    code = "from lmpt.features import DEFAULT_CACHE_DIR; print(DEFAULT_CACHE_DIR)"
    env = {**os.environ, "LMPT_CACHE_DIR": "", "PYTHONPATH": str(root)}
    shown = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert shown == str(root / ".cache" / "features")
