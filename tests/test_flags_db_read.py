"""μ (--gamma) and λ (--neg_scale) are read per classification loss as its ``_RESAMPLE_TABLE`` row says
(``losses.db_flags_read``: μ by the re-balanced weights, λ by the negative-tolerant regularisation, neither by the
plain losses), checked here against the loss itself; lmpt/train.py notes each given flag the chosen loss does not
read, and a run names only the values its loss reads."""
import pytest
import torch

from lmpt import losses
from lmpt import train as train_script
from test_flags_noted_unused import notes
from test_reliability import fresh_data, train_argv


@pytest.mark.parametrize("name", losses.CLASSIFICATION_LOSSES)
def test_each_loss_reads_exactly_the_db_flags_db_flags_read_names(name):
    """Changing μ (resp. λ) changes the loss value iff ``db_flags_read`` says the loss reads it (ratios r_ic in
    (0, 1] around both μ, counts unequal, every class with images with and without it)."""
    torch.manual_seed(0)
    logits = torch.randn(8, 4, dtype=torch.float64)  # [B, C]
    targets = (torch.rand(8, 4) < 0.4).double()  # [B, C]
    targets[:, 0] = 1  # every row has a positive: its re-balanced weights depend on μ
    freq, neg_freq = [30.0, 3.0, 9.0, 27.0], [2.0, 29.0, 23.0, 5.0]

    def loss(gamma=0.3, neg_scale=5.0):
        return losses.build_classification_loss(name, freq, neg_freq, gamma=gamma, neg_scale=neg_scale)(logits,
                                                                                                         targets)

    changes = {"gamma": not torch.equal(loss(gamma=0.3), loss(gamma=0.9)),
               "neg_scale": not torch.equal(loss(neg_scale=5.0), loss(neg_scale=2.0))}
    assert {key for key, changed in changes.items() if changed} == set(losses.db_flags_read(name))
    assert set(losses.db_flags_read(name)) <= set(losses.DB_LOSS_FLAGS)


def test_the_table_rows_read_what_resample_loss_uses():
    assert {name: losses.db_flags_read(name) for name in losses.CLASSIFICATION_LOSSES} == {
        'bce': (), 'mls': (), 'asl': (), 'dbl': ('gamma', 'neg_scale'), 'DBloss': ('gamma', 'neg_scale'),
        'DBloss-noFocal': ('gamma', 'neg_scale'), 'FL': (), 'CBloss': (), 'CBloss-ntr': ('neg_scale',),
        'R-BCE-Focal': ('gamma',), 'NTR-Focal': ('neg_scale',)}


@pytest.mark.parametrize("name", losses.CLASSIFICATION_LOSSES)
def test_each_given_db_flag_the_loss_does_not_read_is_noted(capsys, tmp_path, name):
    read = losses.db_flags_read(name)
    unused = [key for key in losses.DB_LOSS_FLAGS if key not in read]
    got = notes(capsys, tmp_path, "--loss_function", name, "--gamma", "0.9", "--neg_scale", "7")
    if not unused:
        assert got == []
        return
    reads = f"reads {', '.join(f'--{key}' for key in read)} only" if read else "reads neither --gamma nor --neg_scale"
    flags = ', '.join(f'--{key}' for key in unused)
    assert got == [f"[train] note: --loss_function {name} {reads}; {flags} "
                   f"{'has' if len(unused) == 1 else 'have'} no effect (args.json records "
                   f"{'it' if len(unused) == 1 else 'them'} as given, unused)"]


def test_focal_and_class_balanced_losses_note_both(capsys, tmp_path):
    for name in ("FL", "CBloss"):
        assert notes(capsys, tmp_path, "--loss_function", name, "--gamma", "0.9", "--neg_scale", "7") == [
            f"[train] note: --loss_function {name} reads neither --gamma nor --neg_scale; --gamma, --neg_scale have "
            f"no effect (args.json records them as given, unused)"]
    assert notes(capsys, tmp_path, "--loss_function", "NTR-Focal", "--gamma", "0.9") == [
        "[train] note: --loss_function NTR-Focal reads --neg_scale only; --gamma has no effect (args.json records it "
        "as given, unused)"]
    assert notes(capsys, tmp_path, "--loss_function", "R-BCE-Focal", "--gamma", "0.9") == []


def test_a_run_names_only_the_db_values_its_loss_reads(tmp_path, tiny_vit_checkpoint, capsys):
    data_root = fresh_data(tmp_path)
    runs = (("NTR-Focal", ("--neg_scale", "2"), "[train] NTR-Focal: λ = 2 (--neg_scale)"),
            ("R-BCE-Focal", ("--neg_scale", "2"), "[train] R-BCE-Focal: μ = 0.3 (voc-lt's defaults)"),
            ("FL", ("--gamma", "0.9"), None))
    for name, extra, said in runs:
        capsys.readouterr()
        train_script.main(train_argv(data_root, tiny_vit_checkpoint, tmp_path / name, tmp_path / "cache",
                                     "--loss_function", name, *extra, epochs=1))
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"[train] {name}:")]
        assert lines == ([said] if said else [])
