"""lmpt/train.py notes, when the command line is parsed, the flags written that the run does not read: μ and λ
(--gamma, --neg_scale) with a loss that does not read them (here the plain losses; each loss in
tests/test_flags_db_read.py), and the embedding-loss flags the chosen
--cseloss does not read (``losses.CSE_LOSS_FLAGS``, checked here against the loss itself). A flag left at its
default, or one restored from a resumed run's args.json, is not noted."""
import json

import pytest
import torch

from lmpt import losses
from lmpt import train as train_script


def notes(capsys, tmp_path, *argv):
    """The '[train] note:' lines printed when ``argv`` is parsed."""
    capsys.readouterr()
    train_script.parse_args(["--output_dir", str(tmp_path / "run"), *argv])
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train] note:")]


# ---------------------------------------------------------------- --gamma / --neg_scale with a non-DB loss

def test_db_flags_with_a_plain_loss_are_noted_as_unused(capsys, tmp_path):
    assert notes(capsys, tmp_path, "--loss_function", "bce", "--gamma", "0.9", "--neg_scale", "7") == [
        "[train] note: --loss_function bce reads neither --gamma nor --neg_scale; --gamma, --neg_scale have no "
        "effect (args.json records them as given, unused)"]
    assert notes(capsys, tmp_path, "--loss_function", "asl", "--neg_scale", "7") == [
        "[train] note: --loss_function asl reads neither --gamma nor --neg_scale; --neg_scale has no effect "
        "(args.json records it as given, unused)"]
    # a method without the embedding loss still trains the classification loss: the note is the same
    assert any("--loss_function mls reads neither --gamma nor --neg_scale" in line for line in
               notes(capsys, tmp_path, "--training_method", "coop", "--loss_function", "mls", "--gamma", "1"))


@pytest.mark.parametrize("argv", [("--loss_function", "dbl", "--gamma", "0.9", "--neg_scale", "7"),
                                  ("--loss_function", "NTR-Focal", "--neg_scale", "7"),
                                  ("--loss_function", "bce"), ()])
def test_db_flags_read_or_not_given_are_not_noted(capsys, tmp_path, argv):
    assert notes(capsys, tmp_path, *argv) == []


# ---------------------------------------------------------------- embedding-loss flags the chosen --cseloss ignores

@pytest.mark.parametrize("kind", ["hinge", "nn_hinge"])
def test_cse_gamma_with_a_kind_without_class_weights_is_noted(capsys, tmp_path, kind):
    assert notes(capsys, tmp_path, "--cseloss", kind, "--cse_gamma", "3", "--cse_margin", "0.3") == [
        f"[train] note: --cseloss {kind} reads --cse_margin only; --cse_gamma has no effect (args.json records it "
        f"as given, unused)"]


@pytest.mark.parametrize("argv", [("--cseloss", "softmargin", "--cse_gamma", "3", "--cse_margin", "0.3"),
                                  ("--cseloss", "weighted", "--cse_gamma", "3"),
                                  ("--cseloss", "hinge", "--cse_margin", "0.3"),
                                  ("--cseloss", "nn_hinge")])
def test_cse_flags_read_or_not_given_are_not_noted(capsys, tmp_path, argv):
    assert notes(capsys, tmp_path, *argv) == []


def test_a_kind_that_reads_no_flag_notes_each_given(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(losses.CSE_LOSS_FLAGS, "nn_hinge", ())  # train.py holds the same dict
    assert notes(capsys, tmp_path, "--cseloss", "nn_hinge", "--cse_margin", "0.3", "--cse_gamma", "3") == [
        "[train] note: --cseloss nn_hinge reads none of --cse_margin, --cse_gamma; --cse_margin, --cse_gamma have "
        "no effect (args.json records them as given, unused)"]


def test_under_coop_the_method_note_alone_names_the_embedding_loss_flags(capsys, tmp_path):
    assert notes(capsys, tmp_path, "--training_method", "coop", "--cseloss", "hinge", "--cse_gamma", "3") == [
        "[train] note: --training_method coop trains without the embedding loss; --cseloss, --cse_gamma have no "
        "effect"]


def test_a_flag_a_new_method_alone_reads_is_noted_under_the_others(capsys, tmp_path, monkeypatch):
    """A row of settings.METHOD_ONLY_FLAGS (here a new method's own flag) is noted under every other method,
    beside the embedding loss's row, and not under the method that reads it."""
    build = train_script.build_parser

    def with_sym_flag():
        parser = build()
        parser.add_argument("--sym_weight", type=float, default=1.0)
        return parser

    monkeypatch.setattr(train_script, "PROMPT_METHODS", ("coop", "lmpt", "lmpt-sym"))
    monkeypatch.setattr(train_script, "build_parser", with_sym_flag)
    monkeypatch.setattr(train_script, "METHOD_ONLY_FLAGS",
                        (*train_script.METHOD_ONLY_FLAGS, ("the symmetric term", ("sym_weight",), ("lmpt-sym",))))
    assert notes(capsys, tmp_path, "--training_method", "coop", "--sym_weight", "2", "--lam", "0.3") == [
        "[train] note: --training_method coop trains without the embedding loss; --lam has no effect",
        "[train] note: --training_method coop trains without the symmetric term; --sym_weight has no effect"]
    assert notes(capsys, tmp_path, "--training_method", "lmpt", "--sym_weight", "2") == [
        "[train] note: --training_method lmpt trains without the symmetric term; --sym_weight has no effect"]
    assert notes(capsys, tmp_path, "--training_method", "lmpt-sym", "--sym_weight", "2") == []


def test_a_resume_notes_nothing_its_args_json_holds(capsys, tmp_path):
    run = tmp_path / "run"
    args = train_script.parse_args(["--output_dir", str(run), "--loss_function", "bce", "--gamma", "0.9",
                                    "--cseloss", "hinge", "--cse_gamma", "3"])
    run.mkdir()
    saved = {key: str(value) if hasattr(value, "is_absolute") else value for key, value in vars(args).items()}
    (run / "args.json").write_text(json.dumps({**saved, "resume": None}))
    capsys.readouterr()
    restored = train_script.parse_args(["--resume", str(run)])
    assert (restored.gamma, restored.cse_gamma) == (0.9, 3.0)
    assert "[train] note:" not in capsys.readouterr().out


# ---------------------------------------------------------------- the table says what each kind reads

@pytest.mark.parametrize("kind", losses.CSE_LOSSES)
def test_each_cse_kind_reads_exactly_the_flags_its_entry_names(kind):
    """Changing a flag's value changes the loss of a kind iff ``CSE_LOSS_FLAGS`` says the kind reads it (margins
    of 1.3 and more above distances of about 1, so the negatives' hinges are active; counts unequal, so class
    weights differ)."""
    torch.manual_seed(0)
    captions, prompts = torch.randn(6, 12, 8), torch.randn(4, 12, 8)  # [B, L, D], [C, L, D]
    targets = (torch.rand(6, 4) < 0.4).float()  # [B, C]
    freq = [1.0, 3.0, 9.0, 27.0]

    def loss(margin=3.0, gamma=0.5):
        return losses.build_cse_loss(kind, freq, margin=margin, gamma=gamma, m_ctx=2)(captions, prompts, targets)

    changes = {"cse_margin": not torch.equal(loss(margin=3.0), loss(margin=4.0)),
               "cse_gamma": not torch.equal(loss(gamma=0.5), loss(gamma=2.0))}
    assert {key for key, changed in changes.items() if changed} == set(losses.CSE_LOSS_FLAGS[kind])


def test_every_cse_kind_says_what_it_reads():
    missing = [kind for kind in losses.CSE_LOSSES if kind not in losses.CSE_LOSS_FLAGS]
    assert not missing, f"{missing}: no entry in lmpt.losses.CSE_LOSS_FLAGS; expected the flags each reads"
    stale = [kind for kind in losses.CSE_LOSS_FLAGS if kind not in losses.CSE_LOSSES]
    assert not stale, f"lmpt.losses.CSE_LOSS_FLAGS: {stale} not in CSE_LOSSES"
