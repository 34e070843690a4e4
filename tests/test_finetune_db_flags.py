"""finetune_clip/fc.py takes --gamma (μ) and --neg_scale (λ) of the DB loss as lmpt/train.py does (same help and
defaults: the dataset's when not given), trains with them, records the values used in args.json, and notes those
its loss does not read; a run of an earlier version, whose args.json lacks them, still resumes, with the μ and λ
its last.pt saved."""
import json

import pytest

from finetune_clip import fc as fc_script
from lmpt import train as train_script
from lmpt.checkpoint import load_checkpoint


def fc_argv(tmp_path, data_root, checkpoint, *extra):
    return ["--dataset", "voc-lt", "--nb_classes", "4", "--data_root", str(data_root), "--pretrain_clip_path",
            str(checkpoint), "--device", "cpu", "--num_workers", "0", "--batch_size", "8",
            "--cache_dir", str(tmp_path / "cache"), *extra]


def read_json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("flag", ["gamma", "neg_scale"])
def test_the_flags_mean_what_they_mean_in_train(flag):
    def action(build):
        return next(a for a in build()._actions if a.dest == flag)
    ours, theirs = action(fc_script.build_parser), action(train_script.build_parser)
    assert (ours.option_strings, ours.help, ours.default, ours.type.__name__) == \
        (theirs.option_strings, theirs.help, theirs.default, theirs.type.__name__)


def test_given_values_train_and_are_recorded(tmp_path, tiny_data_root, tiny_rn_checkpoint, capsys):
    run = tmp_path / "given"
    fc_script.main(fc_argv(tmp_path, tiny_data_root, tiny_rn_checkpoint, "--epochs", "1", "--output_dir", str(run),
                           "--gamma", "0.2", "--neg_scale", "2.0"))
    assert "[finetune] dbl: μ = 0.2, λ = 2 (--gamma and --neg_scale)" in capsys.readouterr().out
    saved = read_json(run / "args.json")
    assert (saved["gamma"], saved["neg_scale"]) == (0.2, 2.0)
    assert load_checkpoint(run / "last.pt")["config"]["db_params"] == {"gamma": 0.2, "neg_scale": 2.0}


def test_without_them_the_datasets_defaults_are_recorded(tmp_path, tiny_data_root, tiny_rn_checkpoint):
    run = tmp_path / "default"
    fc_script.main(fc_argv(tmp_path, tiny_data_root, tiny_rn_checkpoint, "--epochs", "1", "--output_dir", str(run)))
    saved = read_json(run / "args.json")
    assert (saved["gamma"], saved["neg_scale"]) == (0.3, 5.0)  # voc-lt's μ and λ


def test_a_flag_the_loss_does_not_read_is_noted(tmp_path, capsys):
    fc_script.parse_args(["--loss_function", "bce", "--gamma", "0.9", "--output_dir", str(tmp_path / "run")])
    assert ("[finetune] note: --loss_function bce reads neither --gamma nor --neg_scale; --gamma has no effect "
            "(args.json records it as given, unused)") in capsys.readouterr().out.splitlines()
    fc_script.parse_args(["--gamma", "0.9", "--neg_scale", "3", "--output_dir", str(tmp_path / "run")])
    assert "note" not in capsys.readouterr().out  # dbl reads both


def test_a_run_whose_args_json_lacks_them_resumes_with_its_own(tmp_path, tiny_data_root, tiny_rn_checkpoint,
                                                              capsys):
    run = tmp_path / "old"
    fc_script.main(fc_argv(tmp_path, tiny_data_root, tiny_rn_checkpoint, "--epochs", "1", "--output_dir", str(run),
                           "--gamma", "0.2", "--neg_scale", "2.0"))
    saved = read_json(run / "args.json")
    del saved["gamma"], saved["neg_scale"]  # as fc.py wrote it before it had the flags
    (run / "args.json").write_text(json.dumps(saved))
    capsys.readouterr()
    fc_script.main(fc_argv(tmp_path, tiny_data_root, tiny_rn_checkpoint, "--epochs", "2", "--resume", str(run)))
    captured = capsys.readouterr()
    assert "has no neg_scale, gamma (a run of an earlier version?)" in captured.err
    assert ("[finetune] dbl: μ = 0.2, λ = 2 (the run's own, from its last.pt; voc-lt's defaults would now give "
            "μ = 0.3, λ = 5)") in captured.out
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1 and state["config"]["db_params"] == {"gamma": 0.2, "neg_scale": 2.0}
    resumed = read_json(run / "args.json")
    assert (resumed["gamma"], resumed["neg_scale"]) == (0.2, 2.0)  # recorded now, as the loss used them
