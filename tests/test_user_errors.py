"""User errors: one message without a traceback, given before any work, and no run lost to them."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, write_lmpt_dataset
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.checkpoint import save_torch
from lmpt.cli import report_errors, run_resumable
from lmpt.data import DataError, ImageListDataset, read_captions, read_list
from lmpt.device import select_device
from zero_shot_clip import test as zero_shot_script


def train_argv(data_root, checkpoint, out, cache, *extra, epochs=1):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--batch_size", "8", "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
            "--n_ctx", "4", "--cache_dir", str(cache), "--output_dir", str(out), "--optimizer", "adam",
            "--lr", "0.01", *extra]


def zero_shot_argv(data_root, checkpoint, out, cache):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip_path", str(checkpoint),
            "--output_dir", str(out), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vit_checkpoint):
    """A data root and a finished 1-epoch LMPT run in it (copied by the tests that change it)."""
    root = tmp_path_factory.mktemp("errors")
    write_lmpt_dataset(root / "data")
    run = root / "run"
    train_script.main(train_argv(root / "data", tiny_vit_checkpoint, run, root / "cache"))
    return root / "data", run, root / "cache"


def digests(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def copy_run(run, to):
    to.mkdir()
    for name, data in digests(run).items():
        (to / name).write_bytes(data)
    return to


# ---------------------------------------------------------------- the scripts' way of saying it

def test_a_script_prints_a_user_error_without_traceback_and_exits_1(tmp_path):
    data = tmp_path / "data"
    write_lmpt_dataset(data)
    (data / "voc" / "voc_lt_train.txt").write_text("images/train_000.jpg 0\nimages/train_001.jpg 9\n")
    argv = [sys.executable, "lmpt/train.py", "--data_root", str(data), "--pretrain_clip", str(tmp_path / "x.pt"),
            "--device", "cpu", "--output_dir", str(tmp_path / "run")]
    (tmp_path / "x.pt").write_bytes(b"")  # found, so the data is read first
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "LMPT_TRACEBACK": ""})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"train.py: error: {data / 'voc' / 'voc_lt_train.txt'}:2: label 9 ")


def test_report_errors_passes_bugs_and_asked_for_tracebacks_on(capsys, monkeypatch):
    def user_error(argv):
        raise DataError(f"list.txt:3: bad line {argv}")

    def bug(argv):
        raise KeyError("a bug")
    monkeypatch.delenv("LMPT_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as stopped:
        report_errors(user_error, ["x"])
    assert stopped.value.code == 1 and capsys.readouterr().err.endswith("error: list.txt:3: bad line ['x']\n")
    with pytest.raises(KeyError):
        report_errors(bug)
    monkeypatch.setenv("LMPT_TRACEBACK", "1")
    with pytest.raises(DataError):
        report_errors(user_error)
    assert report_errors(lambda argv: 7) == 7


@pytest.mark.parametrize("name,expected", [
    ("gpu", "--device gpu: not a device this code runs on; expected cpu, cuda or cuda:<index>"),
    ("cuda:0", "--device cuda:0: CUDA is not available"),
])
def test_bad_devices_are_named(name, expected):
    if torch.cuda.is_available():
        pytest.skip("the CUDA message is for machines without it")
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        select_device(name)
    assert select_device("cpu") == torch.device("cpu")


# ---------------------------------------------------------------- runs are never lost

def test_overwrite_keeps_the_old_run_until_the_new_one_has_all_it_needs(trained, tmp_path, tiny_vit_checkpoint):
    data, run, cache = trained
    mine = copy_run(run, tmp_path / "run")
    (mine / "my_notes.txt").write_text("mine")
    before = digests(mine)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(tiny_vit_checkpoint.read_bytes()[:3000])
    with pytest.raises(ValueError, match="a zip archive cut short"):  # read only after the data is checked
        train_script.main(train_argv(data, broken, mine, cache, "--overwrite"))
    with pytest.raises(ValueError, match="--n_ctx 73: the prompt of class 'traffic light' would be 78 tokens"):
        train_script.main(train_argv(data, tiny_vit_checkpoint, mine, cache, "--overwrite", "--n_ctx", "73"))
    assert digests(mine) == before
    train_script.main(train_argv(data, tiny_vit_checkpoint, mine, cache, "--overwrite", "--seed", "3"))
    after = digests(mine)
    assert after["my_notes.txt"] == b"mine" and after["best.pt"] != before["best.pt"]  # only run files replaced
    assert json.loads(after["args.json"])["seed"] == 3


def test_zero_shot_never_replaces_a_training_run_but_its_own_results(trained, tmp_path, tiny_vit_checkpoint):
    data, run, cache = trained
    mine = copy_run(run, tmp_path / "run")
    before = digests(mine)
    with pytest.raises(FileExistsError, match="holds a training run .*last.pt"):
        zero_shot_script.main(zero_shot_argv(data, tiny_vit_checkpoint, mine, cache))
    assert digests(mine) == before
    own = tmp_path / "zero_shot"
    zero_shot_script.main(zero_shot_argv(data, tiny_vit_checkpoint, own, cache))
    first = json.loads((own / "results.json").read_text())
    zero_shot_script.main(zero_shot_argv(data, tiny_vit_checkpoint, own, cache) + ["--thre", "0.1"])
    again = json.loads((own / "results.json").read_text())
    assert (first["thre"], again["thre"]) == (0.5, 0.1) and first["mAP"] == again["mAP"]


@pytest.mark.parametrize("where,error", [
    ("file", "--output_dir {p}: a file is there"),
    ("file/sub", "--output_dir {p}: {p.parent} is a file"),
])
def test_an_unusable_run_folder_is_refused_before_any_work(tmp_path, tiny_vit_checkpoint, where, error):
    (tmp_path / "file").write_text("")
    out = tmp_path / where
    with pytest.raises(OSError) as refused:  # the data root does not even exist: the folder is checked first
        train_script.main(train_argv(tmp_path / "no_data", tiny_vit_checkpoint, out, tmp_path / "cache"))
    assert error.format(p=out) in str(refused.value)


def test_test_refuses_to_write_over_a_runs_own_files_or_a_folder(trained, tmp_path):
    data, run, cache = trained
    common = ["--checkpoint", str(run), "--data_root", str(data), "--device", "cpu", "--num_workers", "0",
              "--cache_dir", str(cache)]
    before = digests(run)
    with pytest.raises(FileExistsError, match="a file of the run itself .results.json."):
        test_script.main(common + ["--output", str(run / "results.json")])
    with pytest.raises(IsADirectoryError, match="a folder; expected the path of a .json file"):
        test_script.main(common + ["--output", str(tmp_path)])
    assert digests(run) == before
    out = tmp_path / "elsewhere.json"
    test_script.main(common + ["--output", str(out), "--thre", "0.2"])
    assert json.loads(out.read_text())["thre"] == 0.2


def test_interrupting_an_overwrite_before_it_started_leaves_the_old_run(tmp_path, capsys):
    from lmpt.checkpoint import start_run_dir
    (tmp_path / "last.pt").write_bytes(b"")  # the old run's

    def ctrl_c(args):
        raise KeyboardInterrupt
    args = SimpleNamespace(output_dir=tmp_path, overwrite=True, resume=False)
    with pytest.raises(SystemExit):
        run_resumable(ctrl_c, args, "train")
    assert f"before the new run started: the run in {tmp_path} is as it was" in capsys.readouterr().err

    def new_epoch(args):
        start_run_dir(args)  # the old run's files go
        (tmp_path / "last.pt").write_bytes(b"1")  # the new run's first epoch
        raise KeyboardInterrupt
    with pytest.raises(SystemExit):
        run_resumable(new_epoch, args, "train")
    assert f"--resume {tmp_path}" in capsys.readouterr().err


# ---------------------------------------------------------------- flags and files

def test_skip_bad_images_refuses_a_split_left_empty(tmp_path, tiny_vit_checkpoint):
    data = tmp_path / "data"
    write_lmpt_dataset(data, n_test=4)
    for i in range(4):
        (data / "voc" / f"images/test_{i:03d}.jpg").write_bytes(b"broken")
    with pytest.raises(DataError, match="voc_lt_test.txt: no image left after --skip_bad_images dropped"):
        train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache",
                                     "--skip_bad_images"))
    assert not (tmp_path / "run").exists()


def test_unreadable_images_of_every_split_are_refused_together_with_their_lines(tmp_path, tiny_vit_checkpoint):
    data = tmp_path / "data"
    write_lmpt_dataset(data)
    for name in ("train_005", "test_003"):
        (data / "voc" / f"images/{name}.jpg").write_bytes(b"broken")
    with pytest.raises(DataError) as refused:
        train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache"))
    message = str(refused.value)
    assert message.startswith("2 image(s) cannot be read")
    assert f"voc_lt_train.txt:6: {data / 'voc' / 'images'}/train_005.jpg: cannot read image" in message
    assert f"voc_lt_test.txt:4: {data / 'voc' / 'images'}/test_003.jpg: cannot read image" in message


def test_sixteen_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path):
    ramp = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)  # [H, W]
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    (tmp_path / "deep.png").rename(tmp_path / "deep.jpg")  # named as the lists name images
    Image.fromarray((ramp // 257).astype(np.uint8)).save(tmp_path / "eight.png")
    dataset = ImageListDataset(tmp_path, ["deep.jpg", "eight.png"], transform=None)
    deep, eight = dataset[0][0], dataset[1][0]  # [3, H, W] in [0, 1]
    assert deep.shape == (3, 48, 64) and (deep - eight).abs().max() <= 1 / 255 + 1e-6
    assert 0.45 < deep.mean() < 0.55  # convert("RGB") alone gave about 254/255


def test_text_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_bytes("images/a.jpg 0\nimages/caf\xe9.jpg 1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"list.txt:2: not UTF-8 text \(byte b'\\xe9' cannot be decoded"):
        read_list(bad, 2)
    captions = tmp_path / "captions.txt"  # a tab between path and caption, as spreadsheets write it
    captions.write_text("images/a.jpg\ta dog on a sofa\nimages/b.jpg  two  cats\n")
    assert read_captions(captions, ["images/a.jpg", "images/b.jpg"]) == ["a dog on a sofa", "two  cats"]


def test_damaged_checkpoints_are_named_for_what_they_are(tmp_path, tiny_vit_checkpoint):
    import clip
    from lmpt.checkpoint import load_checkpoint
    empty, cut, run_cut = tmp_path / "empty.pt", tmp_path / "cut.pt", tmp_path / "best.pt"
    empty.write_bytes(b"")
    cut.write_bytes(tiny_vit_checkpoint.read_bytes()[:5000])
    save_torch(run_cut, {"model": {"ctx": torch.zeros(4, 8)}, "config": {}, "epoch": 1})
    run_cut.write_bytes(run_cut.read_bytes()[:200])
    for path, found in ((empty, "an empty file"), (cut, "a zip archive cut short")):
        with pytest.raises(clip.model.CheckpointFormatError, match=f"found {found}"):
            clip.read_state_dict(path)
    for path, found in ((empty, "an empty file"), (run_cut, "a zip archive cut short")):
        with pytest.raises(ValueError, match=f"cannot be read as an LMPT checkpoint; found {found}"):
            load_checkpoint(path)


def test_a_checkpoint_with_bytes_changed_inside_is_refused_before_it_vouches_for_features(tmp_path,
                                                                                          tiny_vit_checkpoint):
    import clip
    data = tmp_path / "data"
    write_lmpt_dataset(data)
    rot = tmp_path / "rot.pt"
    raw = bytearray(tiny_vit_checkpoint.read_bytes())
    middle = len(raw) // 3  # inside a tensor's bytes
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    rot.write_bytes(bytes(raw))
    clip.read_state_dict(rot)  # torch.load reads it without noticing
    with pytest.raises(clip.model.CheckpointFormatError,
                       match=f"^{rot}: damaged: the archive's member .+ fails its CRC check"):
        zero_shot_script.main(zero_shot_argv(data, rot, tmp_path / "zero_shot", tmp_path / "cache"))
    side = rot.with_name(".rot.pt.lmpt.json")  # no sha256 on record (its resolution may be): refused next time too
    assert "sha256" not in (json.loads(side.read_text())["facts"] if side.exists() else {})
    assert not list((tmp_path / "cache").glob("*.pt"))  # and no features


def test_only_lmpt_training_needs_the_captions(tmp_path, tiny_vit_checkpoint):
    from finetune_clip import fc as fc_script
    data = tmp_path / "data"
    write_lmpt_dataset(data)
    (data / "voc" / "voc_lt_captions.txt").unlink()
    train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "coop", tmp_path / "cache",
                                 "--training_method", "coop"))
    fc_script.main(["--data_root", str(data), "--pretrain_clip_path", str(tiny_vit_checkpoint), "--epochs", "1",
                    "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
                    "--output_dir", str(tmp_path / "probe")])
    assert (tmp_path / "coop" / "results.json").exists() and (tmp_path / "probe" / "results.json").exists()
    with pytest.raises(DataError, match="voc_lt_captions.txt"):
        train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "lmpt", tmp_path / "cache"))


def test_evaluations_need_neither_captions_nor_a_positive_of_every_class(tmp_path, tiny_vit_checkpoint):
    data = tmp_path / "data"
    write_lmpt_dataset(data)
    lists = data / "voc"
    (lists / "voc_lt_captions.txt").unlink()
    (lists / "voc_labels.txt").write_text("dog 0\ntraffic light 1\ncat 2\nboat 3\nzebra 4\n")  # no zebra anywhere
    (lists / "class_freq.pkl").unlink(missing_ok=True)
    (lists / "images/train_002.jpg").unlink()  # a training image: not needed to evaluate
    out = tmp_path / "zero_shot"
    zero_shot_script.main(zero_shot_argv(data, tiny_vit_checkpoint, out, tmp_path / "cache"))
    results = json.loads((out / "results.json").read_text())
    assert len(results["per_class_AP"]) == 5 and results["classes_without_positives"] == [4]
    with pytest.raises(DataError, match="voc_lt_captions.txt"):  # training still needs them
        train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache"))


# ---------------------------------------------------------------- resuming, and what a run records

def test_a_resume_that_does_not_fit_is_refused_before_anything_is_written(trained, tmp_path, tiny_vit_checkpoint):
    data, run, cache = trained
    mine = copy_run(run, tmp_path / "run")
    resume = ["--resume", str(mine), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache)]
    state = torch.load(mine / "last.pt", weights_only=True)
    state["epoch"] = 4  # as if 5 epochs were done
    torch.save(state, mine / "last.pt")
    before = digests(mine)
    with pytest.raises(ValueError, match="has trained 5 epochs already; expected --epochs 5 or more"):
        train_script.main(resume + ["--epochs", "3"])
    renamed = tmp_path / "renamed"
    write_lmpt_dataset(renamed)
    labels = renamed / "voc" / "voc_labels.txt"
    labels.write_text(labels.read_text().replace("boat", "ship"))
    with pytest.raises(ValueError, match="a resumed run keeps its classes"):
        train_script.main(resume + ["--epochs", "6", "--data_root", str(renamed)])
    relabelled = tmp_path / "relabelled"  # the same classes, one training image's labels changed
    write_lmpt_dataset(relabelled)
    train_list = relabelled / "voc" / "voc_lt_train.txt"
    lines = train_list.read_text().splitlines()
    lines[0] = lines[0].split()[0] + " 0 1 2"
    train_list.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"trained on other image lists or labels than --dataset voc-lt gives now "
                                         f"\\(--data_root {relabelled}\\); a resumed run keeps its data"):
        train_script.main(resume + ["--epochs", "6", "--data_root", str(relabelled)])
    from finetune_clip import fc as fc_script
    with pytest.raises(ValueError, match="a lmpt run; this script continues linear-probe runs"):
        fc_script.main(resume + ["--epochs", "6", "--pretrain_clip_path", str(tiny_vit_checkpoint)])
    assert digests(mine) == before  # args.json included
    moved = tmp_path / "moved"  # the same data in another folder: resumed
    shutil.copytree(data, moved)
    train_script.main(resume + ["--epochs", "5", "--data_root", str(moved)])
    assert (mine / "results.json").exists()


def test_a_bad_args_json_is_named(trained, tmp_path, capsys):
    _, run, _ = trained
    for content, expected in (("3", "holds a int; expected the args.json a run wrote"),
                              (None, "lr 'abc' is not a valid --lr (expected a number, got 'abc')"),
                              ("{\"optimizer\": \"rmsprop\"}", "optimizer 'rmsprop' is not one of")):
        mine = copy_run(run, tmp_path / f"run{len(list(tmp_path.iterdir()))}")
        if content is None:
            saved = json.loads((mine / "args.json").read_text())
            content = json.dumps({**saved, "lr": "abc"})
        (mine / "args.json").write_text(content)
        with pytest.raises(SystemExit):
            train_script.parse_args(["--resume", str(mine)])
        assert expected in capsys.readouterr().err


def test_an_args_json_value_passes_through_its_flags_type(trained, tmp_path):
    """A restored value is what its flag's type makes of it, as if typed: a JSON integer for --lr resumes as
    the float ``--lr 1`` gives."""
    _, run, _ = trained
    mine = copy_run(run, tmp_path / "run")
    saved = json.loads((mine / "args.json").read_text())
    (mine / "args.json").write_text(json.dumps({**saved, "lr": 1}))
    restored = train_script.parse_args(["--resume", str(mine)]).lr
    typed = train_script.parse_args(["--lr", "1", "--output_dir", str(tmp_path / "other")]).lr
    assert (type(restored), restored) == (type(typed), typed) == (float, 1.0)


def test_a_bad_metrics_line_is_named(tmp_path):
    from lmpt.checkpoint import read_metrics
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch" 1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_a_run_of_a_relative_backbone_path_is_tested_and_resumed_from_anywhere(tmp_path, tiny_vit_checkpoint,
                                                                             tiny_rn_checkpoint, monkeypatch):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    for folder in ("models", "blobs", "moved"):
        (tmp_path / folder).mkdir()
    (tmp_path / "blobs" / "sha256-abc").write_bytes(tiny_vit_checkpoint.read_bytes())
    (tmp_path / "models" / "mine.pt").symlink_to(tmp_path / "blobs" / "sha256-abc")  # as a download cache does
    monkeypatch.chdir(tmp_path)
    train_script.main(train_argv(data, "models/mine.pt", run, cache))
    saved = json.loads((run / "args.json").read_text())
    assert saved["pretrain_clip"] == str(tmp_path / "models" / "mine.pt")  # absolute, the link's own name
    assert torch.load(run / "best.pt", weights_only=True)["config"]["backbone_file"] == "mine.pt"
    monkeypatch.chdir(ROOT)
    evaluate = ["--checkpoint", str(run), "--data_root", str(data), "--device", "cpu", "--num_workers", "0",
                "--cache_dir", str(cache)]
    test_script.main(evaluate)
    first = json.loads((run / "test_results.json").read_text())
    (tmp_path / "models" / "mine.pt").rename(tmp_path / "moved" / "mine.pt")  # the file moves
    test_script.main(evaluate + ["--pretrained_dir", str(tmp_path / "moved")])  # found there by its name
    assert json.loads((run / "test_results.json").read_text())["mAP"] == first["mAP"]
    resume = ["--resume", str(run), "--epochs", "2", "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache)]
    (tmp_path / "other.pt").write_bytes(tiny_rn_checkpoint.read_bytes())
    with pytest.raises(ValueError, match="sha256"):  # the flag may change, the weights may not
        train_script.main(resume + ["--pretrain_clip", str(tmp_path / "other.pt")])
    train_script.main(resume + ["--pretrain_clip", str(tmp_path / "moved" / "mine.pt")])
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_a_resume_takes_a_setting_however_it_is_spelled(tmp_path, tiny_vit_checkpoint, monkeypatch, capsys):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    (tmp_path / "home" / "models").mkdir(parents=True)
    (tmp_path / "home" / "models" / "mine.pt").write_bytes(tiny_vit_checkpoint.read_bytes())
    for image in (data / "voc" / "images").glob("test_*.jpg"):  # a validation split of its own images
        shutil.copy(image, image.with_name(image.name.replace("test_", "val_")))
    (tmp_path / "val.txt").write_text((data / "voc" / "voc_lt_test.txt").read_text().replace("/test_", "/val_"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    train_script.main(train_argv(data, "~/models/mine.pt", run, cache, "--val_list", "val.txt"))  # as typed
    saved = json.loads((run / "args.json").read_text())
    assert saved["pretrain_clip"] == str(tmp_path / "home" / "models" / "mine.pt")  # '~' expanded
    assert saved["val_list"] == str(tmp_path / "val.txt")  # absolute: named from any folder
    monkeypatch.chdir(ROOT)
    resume = ["--resume", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache)]
    with pytest.raises(SystemExit):  # another file is another setting
        train_script.main(resume + ["--epochs", "2", "--val_list", str(data / "voc" / "voc_lt_test.txt")])
    assert "--val_list" in capsys.readouterr().err.split("differs from the run's own")[0]
    train_script.main(resume + ["--epochs", "2", "--dataset", "VOC", "--val_list", str(tmp_path / "val.txt")])
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_more_places_are_checked_before_any_work(trained, tmp_path, tiny_vit_checkpoint, capsys):
    data, run, cache = trained
    (tmp_path / "a_file").write_text("")
    with pytest.raises(FileExistsError, match="--cache_dir .*a_file: a file is there"):
        train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "a_file"))
    with pytest.raises(ValueError, match="--output .*results.txt: expected the path of a .json file"):
        test_script.main(["--checkpoint", str(run), "--data_root", str(data), "--output",
                          str(tmp_path / "results.txt")])
    with pytest.raises(ValueError, match="--device meta: not a device this code runs on"):
        select_device("meta")
    results_only = tmp_path / "zero_shot"
    results_only.mkdir()
    (results_only / "results.json").write_text("{}")
    with pytest.raises(FileExistsError) as refused:
        train_script.main(train_argv(data, tiny_vit_checkpoint, results_only, cache))
    assert "already holds results" in str(refused.value) and "--resume" not in str(refused.value)
    zero_shot_script.main(zero_shot_argv(data, tiny_vit_checkpoint, tmp_path / "zs", cache) + ["--topk", "6"])
    assert "--topk 6 is more than the 4 classes of --dataset voc-lt" in capsys.readouterr().out


def test_skip_bad_images_refuses_a_class_left_without_training_positive(tmp_path, tiny_vit_checkpoint):
    data = tmp_path / "data"
    write_lmpt_dataset(data)
    lists = data / "voc"
    for line in (lists / "voc_lt_train.txt").read_text().splitlines():
        path, *ids = line.split()
        if "3" in ids:  # every training image of 'boat'
            (lists / path).write_bytes(b"broken")
    with pytest.raises(DataError, match="no training image of class.es. 3 'boat' left after --skip_bad_images"):
        train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache",
                                     "--skip_bad_images"))


def test_a_class_in_every_training_image_is_refused_by_the_ntr_losses_before_any_work(tmp_path, tiny_vit_checkpoint):
    data = tmp_path / "data"
    write_lmpt_dataset(data)
    train_list = data / "voc" / "voc_lt_train.txt"
    rows = [line.split() for line in train_list.read_text().splitlines()]
    train_list.write_text("".join(" ".join([path, *sorted(set(ids) | {"0"}, key=int)]) + "\n" for path, *ids in rows))
    (data / "voc" / "class_freq.pkl").unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"voc_lt_train.txt: class\(es\) 0 'dog' in every training image; "
                                         r"--loss_function dbl's negative-tolerant regularisation .* Use a loss "
                                         r"without it \(bce, mls, asl, FL, CBloss, R-BCE-Focal\)"):
        train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache"))
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
    train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache",
                                 "--loss_function", "bce"))  # a loss without it trains
    assert (tmp_path / "run" / "results.json").exists()


def test_float_greyscale_in_unit_range_is_scaled(tmp_path):
    from lmpt.data import to_rgb
    ramp = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    rgb = np.asarray(to_rgb(Image.fromarray(ramp, mode="F")))  # [H, W, 3]
    assert rgb.shape == (48, 64, 3) and np.abs(rgb[..., 0] - np.rint(ramp * 255)).max() <= 1


def test_report_errors_on_ctrl_c_and_a_traceback_switched_off(capsys, monkeypatch):
    def ctrl_c(argv):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as stopped:
        report_errors(ctrl_c)
    assert stopped.value.code == 130 and capsys.readouterr().err.endswith(": interrupted\n")
    monkeypatch.setenv("LMPT_TRACEBACK", "0")
    with pytest.raises(SystemExit):
        report_errors(lambda argv: select_device("gpu"))


def test_a_checkpoint_of_ones_own_is_one_backbones_entry(tmp_path, tiny_vit_checkpoint, monkeypatch):
    """A short name for a local file is one BACKBONES entry (its file name): resolved in --pretrained_dir,
    offered in --help, and named with where to put it when missing; OpenAI's names stay OpenAI's."""
    from lmpt import backbones
    monkeypatch.setitem(backbones.BACKBONES, "mine", "my-clip.pt")
    with pytest.raises(FileNotFoundError, match=f"backbone mine: checkpoint {tmp_path / 'my-clip.pt'} not found; "
                                                f"place my-clip.pt there, or pass --pretrained_dir"):
        backbones.resolve_backbone("mine", tmp_path)
    shutil.copy(tiny_vit_checkpoint, tmp_path / "my-clip.pt")
    assert backbones.resolve_backbone("mine", tmp_path) == tmp_path / "my-clip.pt"
    assert backbones.backbone_file("tiny") == "tiny-clip-synth.pt" and backbones.backbone_file("ViT16") == "ViT-B-16.pt"
    import clip
    assert "mine" not in clip.available_models()
    assert "mine (files in --pretrained_dir)" in " ".join(train_script.build_parser().format_help().split())
