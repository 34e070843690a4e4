"""lmpt/train.py notes an --n_ctx written beside a non-empty --ctx_init (SPEC §5: the init's token count is the
number of context vectors, so --n_ctx has no effect), as it notes its other flags without effect; an --n_ctx equal to
that count, one with an empty or '_'-only init (random contexts), and one restored by --resume are not noted."""
import json

import pytest

from lmpt import train as train_script
from lmpt.models import prompt_texts


def notes(capsys, tmp_path, *argv):
    """The '[train] note:' lines printed when ``argv`` is parsed."""
    capsys.readouterr()
    train_script.parse_args(["--output_dir", str(tmp_path / "run"), *argv])
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train] note:")]


def test_n_ctx_beside_a_word_init_is_noted_with_the_count_used(capsys, tmp_path):
    assert notes(capsys, tmp_path, "--ctx_init", "a photo of a", "--n_ctx", "8") == [
        "[train] note: --ctx_init 'a photo of a' sets the number of context vectors (its 4 tokens); --n_ctx 8 has "
        "no effect (args.json records it as given, unused)"]
    count = prompt_texts([], 16, "a_high-resolution_photo_of")[0]  # 'high-resolution' is three tokens
    assert notes(capsys, tmp_path, "--ctx_init", "a_high-resolution_photo_of", "--n_ctx", "16") == [
        f"[train] note: --ctx_init 'a_high-resolution_photo_of' sets the number of context vectors (its {count} "
        f"tokens); --n_ctx 16 has no effect (args.json records it as given, unused)"]


@pytest.mark.parametrize("argv", [("--ctx_init", "a photo of a", "--n_ctx", "4"),  # the count itself
                                  ("--ctx_init", "", "--n_ctx", "8"),  # the published command: random contexts
                                  ("--ctx_init", "___", "--n_ctx", "8"),  # '_' only: random too
                                  ("--ctx_init", "a photo of a"),  # --n_ctx not written
                                  ("--n_ctx", "8")])
def test_n_ctx_read_or_not_given_is_not_noted(capsys, tmp_path, argv):
    assert notes(capsys, tmp_path, *argv) == []


def test_an_n_ctx_restored_from_a_resumed_run_is_not_noted(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = vars(train_script.build_parser().parse_args([]))
    saved.update(ctx_init="a photo of a", n_ctx=8, output_dir=str(run))
    (run / "args.json").write_text(json.dumps({k: (str(v) if hasattr(v, "as_posix") else v)
                                               for k, v in saved.items()}))
    capsys.readouterr()
    args = train_script.parse_args(["--resume", str(run)])
    assert (args.ctx_init, args.n_ctx) == ("a photo of a", 8)
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train] note:")]
