"""Reliability: bad input refused before training, runs never lost, exact resume and reproduction."""
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from conftest import write_lmpt_dataset
from finetune_clip import fc as fc_script
from lmpt import baselines, engine, prompt_tuning
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.checkpoint import read_metrics
from lmpt.data import DataError
from lmpt.engine import NonFiniteError
from zero_shot_clip import test as zero_shot_script


def train_argv(data_root, checkpoint, out, cache, *extra, epochs=3):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--batch_size", "8", "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
            "--n_ctx", "4", "--cache_dir", str(cache), "--output_dir", str(out), "--optimizer", "adam",
            "--lr", "0.01", *extra]


def comparable(results):
    return {k: v for k, v in results.items() if k != "checkpoint"}


def rewrite_line(path, n, text):
    lines = path.read_text().splitlines()
    lines[n - 1] = text
    path.write_text("\n".join(lines) + "\n")


def fresh_data(tmp_path):
    root = tmp_path / "data"
    write_lmpt_dataset(root)
    return root


# (name, how to break the data, text the error must contain)
BAD_INPUTS = [
    ("malformed id", lambda d: rewrite_line(d / "voc_lt_train.txt", 3, "images/train_002.jpg 1 x"),
     "voc_lt_train.txt:3"),
    ("id out of range", lambda d: rewrite_line(d / "voc_lt_test.txt", 2, "images/test_001.jpg 7"),
     "voc_lt_test.txt:2"),
    ("duplicate path", lambda d: rewrite_line(d / "voc_lt_train.txt", 5, "images/train_000.jpg 0"),
     "voc_lt_train.txt:5"),
    ("empty split", lambda d: (d / "voc_lt_test.txt").write_text(""), "voc_lt_test.txt"),
    ("test split without a label",
     lambda d: (d / "voc_lt_test.txt").write_text("".join(f"images/test_{i:03d}.jpg\n" for i in range(16))),
     "voc_lt_test.txt: none of its 16 images has a label"),
    ("missing images", lambda d: [os.remove(d / f"images/train_00{i}.jpg") for i in (1, 4)],
     "voc_lt_train.txt"),
    ("corrupt image", lambda d: (d / "images/train_003.jpg").write_bytes(b"not a jpeg at all"),
     "train_003.jpg"),
    ("truncated image",
     lambda d: (d / "images/test_002.jpg").write_bytes((d / "images/test_002.jpg").read_bytes()[:300]),
     "test_002.jpg"),
    ("misaligned captions", lambda d: rewrite_line(d / "voc_lt_captions.txt", 4, "images/train_009.jpg a dog"),
     "voc_lt_captions.txt:4"),
    ("labels file with a missing id", lambda d: (d / "voc_labels.txt").write_text("dog 0\ncat 1\nboat 3\n"),
     "voc_labels.txt"),
    ("class without training positive",
     lambda d: (d / "voc_labels.txt").write_text("dog 0\ntraffic light 1\ncat 2\nboat 3\nzebra 4\n"), "zebra"),
    ("class_freq.pkl of another list",
     lambda d: __import__("pickle").dump({"gt_labels": [], "class_freq": __import__("numpy").ones(4, int),
                                          "neg_class_freq": __import__("numpy").ones(4, int),
                                          "condition_prob": __import__("numpy").eye(4)},
                                         open(d / "class_freq.pkl", "wb")), "class_freq.pkl"),
]


@pytest.mark.parametrize("name,breaker,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_before_training(tmp_path, tiny_vit_checkpoint, name, breaker, expected):
    data_root = fresh_data(tmp_path)
    breaker(data_root / "voc")
    out = tmp_path / "run"
    with pytest.raises(DataError) as error:
        train_script.main(train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache"))
    assert expected in str(error.value)
    assert not out.exists()  # the run folder is made only once the run has all it needs


def test_missing_images_are_reported_together(tmp_path, tiny_vit_checkpoint):
    data_root = fresh_data(tmp_path)
    for name in ("train_001", "train_004", "train_007", "test_002"):
        os.remove(data_root / "voc" / f"images/{name}.jpg")
    with pytest.raises(DataError) as error:
        train_script.main(train_argv(data_root, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache"))
    message, lists = str(error.value), data_root / "voc"
    assert "voc_lt_train.txt: 3 of 24 images are missing; " in message and "test.txt: 1 of 16" in message
    assert all(f"voc_lt_train.txt:{i + 1}: {lists / 'images'}/train_00{i}.jpg" in message for i in (1, 4, 7))
    assert f"voc_lt_test.txt:3: {lists / 'images'}/test_002.jpg" in message


def test_skip_bad_images_drops_them_and_trains(tmp_path, tiny_vit_checkpoint, capsys):
    data_root = fresh_data(tmp_path)
    (data_root / "voc" / "images/train_003.jpg").write_bytes(b"garbage")
    (data_root / "voc" / "images/test_005.jpg").write_bytes(b"garbage")
    out = tmp_path / "run"
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache", "--skip_bad_images",
                                 epochs=1))
    assert "train_003.jpg" in capsys.readouterr().out
    tested = len((data_root / "voc" / "voc_lt_test.txt").read_text().splitlines()) - 1
    assert json.loads((out / "results.json").read_text())["images"] == tested  # the images scored, said


def test_an_image_that_cannot_be_looked_up_is_unreadable_not_missing(tmp_path, tiny_vit_checkpoint, capsys):
    """An image whose path cannot be looked up (here a loop of links; a folder this user may not search is the
    same) is named with its cause during decoding, and --skip_bad_images drops it, rather than being called
    missing, with the advice to remove its line."""
    data_root = fresh_data(tmp_path)
    image = data_root / "voc" / "images/train_003.jpg"
    image.unlink()
    os.symlink(image.name, image)
    argv = train_argv(data_root, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache", epochs=1)
    with pytest.raises(DataError) as refused:
        train_script.main(argv)
    assert f"voc_lt_train.txt:4: {image}: cannot read image (OSError: [Errno 40] Too many levels" in str(refused.value)
    assert "missing" not in str(refused.value)
    train_script.main(argv + ["--skip_bad_images"])
    assert "train_003.jpg" in capsys.readouterr().out and (tmp_path / "run" / "results.json").exists()


def test_full_finetuning_refuses_or_drops_unreadable_images(tmp_path, tiny_vit_checkpoint, capsys):
    """--from_scratch decodes the images rather than extracting features: an unreadable one is still
    named with its list file and line before training, or dropped with --skip_bad_images."""
    data_root = fresh_data(tmp_path)
    (data_root / "voc" / "images/train_003.jpg").write_bytes(b"garbage")
    argv = ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip_path", str(tiny_vit_checkpoint),
            "--batch_size", "8", "--epochs", "1", "--device", "cpu", "--num_workers", "0", "--from_scratch",
            "--cache_dir", str(tmp_path / "cache")]
    with pytest.raises(DataError) as refused:
        fc_script.main(argv + ["--output_dir", str(tmp_path / "refused")])
    assert f"voc_lt_train.txt:4: {data_root / 'voc' / 'images/train_003.jpg'}: cannot read image" in str(refused.value)
    assert not (tmp_path / "refused").exists()
    fc_script.main(argv + ["--output_dir", str(tmp_path / "run"), "--skip_bad_images"])
    assert "dropping 1 unreadable image(s) (--skip_bad_images)" in capsys.readouterr().out
    assert (tmp_path / "run" / "results.json").exists()


def test_test_refuses_checkpoint_of_another_backbone_or_class_count(tmp_path, tiny_vit_checkpoint,
                                                                    tiny_rn_checkpoint):
    data_root = fresh_data(tmp_path)
    backbone = tmp_path / "pretrained" / "backbone.pt"
    backbone.parent.mkdir()
    shutil.copy(tiny_vit_checkpoint, backbone)
    out = tmp_path / "run"
    train_script.main(train_argv(data_root, backbone, out, tmp_path / "cache", epochs=1))
    common = ["--checkpoint", str(out), "--data_root", str(data_root), "--device", "cpu", "--num_workers", "0",
              "--cache_dir", str(tmp_path / "cache")]
    shutil.copy(tiny_rn_checkpoint, backbone)  # same file name, other weights
    with pytest.raises(ValueError, match="sha256"):
        test_script.main(common)
    shutil.copy(tiny_vit_checkpoint, backbone)
    (data_root / "voc" / "voc_labels.txt").write_text("dog 0\ntraffic light 1\ncat 2\n")
    (data_root / "voc" / "class_freq.pkl").unlink()
    for split in ("train", "test"):  # keep the lists valid for three classes
        path = data_root / "voc" / f"voc_lt_{split}.txt"
        path.write_text("".join(" ".join(t for t in line.split() if t != "3") + "\n"
                                for line in path.read_text().splitlines()))
    first_test_image = (data_root / "voc" / "voc_lt_test.txt").read_text().split()[0]
    (data_root / "voc" / first_test_image).unlink()  # another dataset's images are not reported as missing
    with pytest.raises(ValueError, match="trained on classes"):
        test_script.main(common)


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, tiny_vit_checkpoint, monkeypatch):
    data_root = fresh_data(tmp_path)
    build = prompt_tuning.build_classification_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss = build(*args, **kwargs)
        forward = loss.forward

        def forward_nan(logits, targets):
            calls["n"] += 1
            value = forward(logits, targets)
            return value * float("nan") if calls["n"] == 5 else value  # 3 steps an epoch: the 2nd's 2nd step
        loss.forward = forward_nan
        return loss
    monkeypatch.setattr(prompt_tuning, "build_classification_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="at epoch 2, step 2; stopping"):
        train_script.main(train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache"))
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["epoch"] == 0 and torch.isfinite(state["model"]["prompt_learner.ctx"]).all()


def test_non_finite_evaluation_stops_with_the_epoch_and_step_that_made_it(tmp_path, tiny_vit_checkpoint,
                                                                         monkeypatch):
    # The prompts of an epoch's last step are first used by the evaluation: NaN logits there are named
    # with that epoch and step (not "evaluate: scores contain NaN"), and last.pt keeps the epoch before.
    data_root = fresh_data(tmp_path)
    logits_of = prompt_tuning.prompt_logits
    calls = {"n": 0}

    def nan_on_second_evaluation(*args):
        calls["n"] += 1
        logits = logits_of(*args)
        return logits * float("nan") if calls["n"] == 2 else logits
    monkeypatch.setattr(prompt_tuning, "prompt_logits", nan_on_second_evaluation)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"^after epoch 2, step 3: NaN or Inf in the logits on the test split; "
                                             r"stopping\. The last good checkpoint"):
        train_script.main(train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache"))
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 0

    monkeypatch.setattr(baselines.LinearProbe, "forward", lambda self, features: torch.full(
        (len(features), 4), float("nan")) if not self.training else self.fc(features.float()))
    with pytest.raises(NonFiniteError, match=r"^after epoch 1, step 3: NaN or Inf in the logits on the test split"):
        fc_script.main(["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip_path",
                        str(tiny_vit_checkpoint), "--batch_size", "8", "--epochs", "1", "--device", "cpu",
                        "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
                        "--output_dir", str(tmp_path / "fc")])


def test_interrupted_run_resumes_to_identical_results(tmp_path, tiny_vit_checkpoint, monkeypatch):
    data_root = fresh_data(tmp_path)
    cache = tmp_path / "cache"
    full = tmp_path / "full"
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, full, cache, epochs=4))

    out = tmp_path / "interrupted"
    fit = prompt_tuning.fit

    def fit_killed_after_epoch_1(*args, **kwargs):  # the run is sent SIGTERM at the end of epoch 1
        kill = lambda epoch: os.kill(os.getpid(), signal.SIGTERM) if epoch == 1 else None  # noqa: E731
        return fit(*args, **dict(kwargs, on_epoch_end=kill))

    monkeypatch.setattr(prompt_tuning, "fit", fit_killed_after_epoch_1)
    with pytest.raises(SystemExit) as stopped:
        train_script.main(train_argv(data_root, tiny_vit_checkpoint, out, cache, epochs=4))
    assert stopped.value.code == 143  # 128 + SIGTERM
    monkeypatch.setattr(prompt_tuning, "fit", fit)
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 1
    assert not (out / "results.json").exists()

    resume = train_argv(data_root, tiny_vit_checkpoint, out, cache, epochs=4)
    resume[resume.index("--output_dir")] = "--resume"
    train_script.main(resume)
    assert comparable(json.loads((out / "results.json").read_text())) == \
        comparable(json.loads((full / "results.json").read_text()))
    rows = lambda d: [{k: v for k, v in json.loads(l).items() if k != "seconds"}
                      for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(out) == rows(full)
    a, b = (torch.load(d / "last.pt", weights_only=False) for d in (out, full))
    assert torch.equal(a["model"]["prompt_learner.ctx"], b["model"]["prompt_learner.ctx"])
    assert a["scheduler"] == b["scheduler"]  # the plateau scheduler's count of epochs without progress too


def stop_at_save(monkeypatch, name, nth=1):
    """Ctrl-C when the training loop is about to write its ``nth`` ``name`` (best.pt, last.pt)."""
    save, calls = engine.save_torch, []

    def save_or_stop(path, obj):
        calls.append(Path(path).name)
        if calls.count(name) == nth and Path(path).name == name:
            raise KeyboardInterrupt
        return save(path, obj)
    monkeypatch.setattr(engine, "save_torch", save_or_stop)
    return lambda: monkeypatch.setattr(engine, "save_torch", save)


def resume_argv(argv):
    argv = list(argv)
    argv[argv.index("--output_dir")] = "--resume"
    return argv


def test_a_run_stopped_between_last_and_best_gets_its_best_back_on_resume(tmp_path, tiny_vit_checkpoint,
                                                                         monkeypatch):
    data_root = fresh_data(tmp_path)
    cache = tmp_path / "cache"
    full = tmp_path / "full"
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, full, cache, epochs=1))
    out = tmp_path / "stopped"
    argv = train_argv(data_root, tiny_vit_checkpoint, out, cache, epochs=1)
    restore = stop_at_save(monkeypatch, "best.pt")  # the first epoch improves on nothing: best.pt follows
    with pytest.raises(SystemExit):
        train_script.main(argv)
    restore()
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 0 and not (out / "best.pt").exists()
    train_script.main(resume_argv(argv))  # no epoch left: best.pt comes from last.pt
    assert comparable(json.loads((out / "results.json").read_text())) == \
        comparable(json.loads((full / "results.json").read_text()))


def test_an_extension_that_replaces_best_removes_the_results_of_the_old_best(tmp_path, tiny_vit_checkpoint,
                                                                            monkeypatch):
    data_root = fresh_data(tmp_path)
    out = tmp_path / "run"
    argv = train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache", epochs=1)
    train_script.main(argv)
    test_script.main(["--checkpoint", str(out), "--data_root", str(data_root), "--device", "cpu",
                      "--num_workers", "0", "--cache_dir", str(tmp_path / "cache")])
    assert (out / "results.json").exists() and (out / "test_results.json").exists()
    evaluate, calls = prompt_tuning.evaluate_prompts, []

    def improving(*args, **kwargs):  # every epoch of the extension improves
        results, logits = evaluate(*args, **kwargs)
        calls.append(1)
        return {**results, "mAP": 100.0 + len(calls)}, logits
    monkeypatch.setattr(prompt_tuning, "evaluate_prompts", improving)
    stop_at_save(monkeypatch, "best.pt", nth=1)  # the extension's epoch 2 is about to replace best.pt
    extend = resume_argv(argv)
    extend[extend.index("--epochs") + 1] = "3"
    with pytest.raises(SystemExit):
        train_script.main(extend)
    assert not (out / "results.json").exists() and not (out / "test_results.json").exists()
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 1


def test_metrics_of_a_run_that_counted_epochs_from_0_are_renumbered(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "best_epoch": 0}\n{"epoch": 1, "best_epoch": 0}\n')
    assert read_metrics(path) == [{"epoch": 1, "best_epoch": 1}, {"epoch": 2, "best_epoch": 1}]
    path.write_text('{"epoch": 1, "best_epoch": 1}\n')
    assert read_metrics(path) == [{"epoch": 1, "best_epoch": 1}]


def test_existing_run_is_not_overwritten(tmp_path, tiny_vit_checkpoint):
    data_root = fresh_data(tmp_path)
    out = tmp_path / "run"
    argv = train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache", epochs=1)
    train_script.main(argv)
    with pytest.raises(FileExistsError, match="--resume"):
        train_script.main(argv)
    train_script.main(argv + ["--overwrite"])


def test_same_seed_same_results_with_loader_workers(tmp_path, tiny_vit_checkpoint):
    data_root = fresh_data(tmp_path)
    results = []
    for i, workers in enumerate(("0", "2")):
        out = tmp_path / f"run{i}"
        argv = train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / f"cache{i}", epochs=2)
        argv[argv.index("--num_workers") + 1] = workers
        train_script.main(argv)
        results.append(comparable(json.loads((out / "results.json").read_text())))
    assert results[0] == results[1]


def test_corrupt_feature_cache_is_rebuilt(tmp_path, tiny_vit_checkpoint, capsys):
    data_root = fresh_data(tmp_path)
    cache = tmp_path / "cache"
    first = tmp_path / "a"
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, first, cache, epochs=1))
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 2  # train and test features
    train_file, test_file = files  # (in either order) one cut short, one whose features changed silently
    train_file.write_bytes(train_file.read_bytes()[: train_file.stat().st_size // 2])
    blob = torch.load(test_file, weights_only=True)
    blob["features"][0, 0, 0] += 1  # the file reads, its checksum no longer fits
    torch.save(blob, test_file)
    capsys.readouterr()
    second = tmp_path / "b"
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, second, cache, epochs=1))
    assert capsys.readouterr().out.count("corrupt or stale; rebuilding") == 2
    assert comparable(json.loads((first / "results.json").read_text())) == \
        comparable(json.loads((second / "results.json").read_text()))


def test_a_write_that_fails_half_way_leaves_the_old_file_whole(tmp_path):
    from clip.checkpoint import atomic_write
    path = tmp_path / "results.json"
    atomic_write(path, lambda f: f.write(b'{"mAP": 1}'))

    def half_then_fail(f):
        f.write(b'{"mA')
        f.flush()
        assert path.read_bytes() == b'{"mAP": 1}'  # a reader meanwhile sees the old file
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b'{"mAP": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C likewise
        atomic_write(path, lambda f: (f.write(b"x"), (_ for _ in ()).throw(KeyboardInterrupt)))
    assert path.read_bytes() == b'{"mAP": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_atomic_writes_give_new_files_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; results and checkpoints must be readable like any new file."""
    import os
    import clip
    from clip.checkpoint import new_file_mode
    from lmpt.checkpoint import save_json

    umask = os.umask(0o022)
    os.umask(umask)
    assert new_file_mode() == 0o666 & ~umask
    save_json(tmp_path / "results.json", {"mAP": 1.0})
    model = clip.model.CLIP(8, 32, 1, 64, 16, 77, 64, 16, 2, 1)
    clip.save_checkpoint(model, tmp_path / "model.pt", fmt="state_dict")
    for name in ("results.json", "model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == new_file_mode(), name


@pytest.mark.parametrize("script,flag,value,expected", [
    (train_script, "--epochs", "0", "argument --epochs: expected an integer >= 1, got 0"),
    (train_script, "--m_ctx", "77", "argument --m_ctx: expected an integer in 0..76, got 77"),
    (train_script, "--n_ctx", "0", "argument --n_ctx: expected an integer in 1..75, got 0"),
    (train_script, "--n_ctx", "76", "argument --n_ctx: expected an integer in 1..75, got 76"),
    (train_script, "--lr", "nan", "argument --lr: expected a finite number > 0, got nan"),
    (train_script, "--batch_size", "0", "argument --batch_size: expected an integer >= 1, got 0"),
    (train_script, "--num_workers", "-1", "argument --num_workers: expected an integer >= 0, got -1"),
    (test_script, "--batch_size", "x", "argument --batch_size: expected an integer, got 'x'"),
    (fc_script, "--nb_classes", "0", "argument --nb_classes: expected an integer >= 1, got 0"),
    (zero_shot_script, "--nb_classes", "-3", "argument --nb_classes: expected an integer >= 1, got -3"),
    (train_script, "--thre", "1.5", "argument --thre: expected a finite number in [0, 1], got 1.5"),
    (test_script, "--thre", "nan", "argument --thre: expected a finite number in [0, 1], got nan"),
    (zero_shot_script, "--thre", "-0.5", "argument --thre: expected a finite number in [0, 1], got -0.5"),
    (fc_script, "--thre", "2", "argument --thre: expected a finite number in [0, 1], got 2"),
    (train_script, "--lam", "-1", "argument --lam: expected a finite number in [0, 1], got -1"),
    (train_script, "--cse_margin", "-1", "argument --cse_margin: expected a finite number >= 0, got -1"),
    (train_script, "--cse_gamma", "nan", "argument --cse_gamma: expected a finite number, got nan"),
    (train_script, "--neg_scale", "0", "argument --neg_scale: expected a finite number > 0, got 0"),
    (train_script, "--gamma", "inf", "argument --gamma: expected a finite number, got inf"),
    (zero_shot_script, "--topk", "0", "argument --topk: expected an integer >= 1, got 0"),
    (train_script, "--seed", "4294967296", "argument --seed: expected an integer in 0..4294967295, got 4294967296"),
])
def test_out_of_range_flags_are_refused_when_parsed(capsys, script, flag, value, expected):
    with pytest.raises(SystemExit) as exit_:
        script.parse_args([flag, value])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err
    script.parse_args([flag, {"--lr": "0.1", "--num_workers": "0"}.get(flag, "1")])  # in range: accepted


@pytest.mark.parametrize("script", [train_script, test_script, zero_shot_script, fc_script])
def test_every_script_lists_the_datasets_of_the_table_and_their_aliases(script):
    from lmpt.data import DATASETS
    help_text = " ".join(script.build_parser().format_help().split())
    for spec in DATASETS.values():
        assert spec.name in help_text and all(alias in help_text for alias in spec.aliases), spec.name


def test_resume_keeps_the_runs_own_settings(tmp_path, tiny_vit_checkpoint, capsys):
    """``--resume DIR`` alone continues with DIR/args.json's settings, not the defaults: extending a
    1-epoch run with non-default settings to 2 epochs equals a 2-epoch run; a conflicting flag is refused."""
    data_root = fresh_data(tmp_path)
    cache = tmp_path / "cache"
    settings = ["--lam", "0.9", "--m_ctx", "4", "--class_token_position", "front", "--loss_function", "bce",
                "--batch_size", "6"]
    full, out = tmp_path / "full", tmp_path / "extended"
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, full, cache, *settings, epochs=2))
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, out, cache, *settings, epochs=1))

    train_script.main(["--resume", str(out), "--epochs", "2", "--num_workers", "0"])
    saved = json.loads((out / "args.json").read_text())
    assert (saved["lam"], saved["m_ctx"], saved["class_token_position"], saved["loss_function"],
            saved["batch_size"], saved["epochs"], saved["resume"]) == (0.9, 4, "front", "bce", 6, 2, True)
    assert comparable(json.loads((out / "results.json").read_text())) == \
        comparable(json.loads((full / "results.json").read_text()))

    with pytest.raises(SystemExit) as refused:
        train_script.parse_args(["--resume", str(out), "--lam", "0.5"])
    assert refused.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--lam 0.5 differs from the run's own 0.9" in err
    assert "--cache_dir, --pretrain_clip may change)" in err and "pretrain_clip_path" not in err
    assert train_script.parse_args(["--resume", str(out), "--lam", "0.9"]).lam == 0.9  # the same value: fine
    with pytest.raises(SystemExit):
        train_script.parse_args(["--resume", str(tmp_path / "nowhere")])
    assert "no args.json there" in capsys.readouterr().err


def test_a_resume_keeps_the_db_loss_of_its_run_when_the_defaults_change(tmp_path, tiny_vit_checkpoint, monkeypatch,
                                                                        capsys):
    """μ and λ of the DB loss are saved with the run: a DB_DEFAULTS row edited between a run and its resume
    (a new dataset's defaults, say) does not change the loss of the resumed epochs."""
    from lmpt import losses
    data_root = fresh_data(tmp_path)
    argv = lambda out, epochs: ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip_path",  # noqa
                                str(tiny_vit_checkpoint), "--batch_size", "8", "--epochs", str(epochs), "--device",
                                "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"), "--output_dir",
                                str(out)]
    full, out = tmp_path / "full", tmp_path / "extended"
    fc_script.main(argv(full, 2))
    fc_script.main(argv(out, 1))
    assert "[finetune] dbl: μ = 0.3, λ = 5 (voc-lt's defaults)" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=False)["config"]["db_params"] == {"gamma": 0.3, "neg_scale": 5.0}

    monkeypatch.setitem(losses.DB_DEFAULTS, "voc-lt", dict(gamma=1.5, neg_scale=1.0))
    # args.json records the μ and λ used (fc.py's --gamma/--neg_scale), which a resume would restore before the
    # defaults are consulted; without them, as a run of fc.py before it had the flags, the new defaults are what
    # the flags give, and the run's last.pt must still win
    saved = json.loads((out / "args.json").read_text())
    del saved["gamma"], saved["neg_scale"]
    (out / "args.json").write_text(json.dumps(saved))
    fc_script.main(["--resume", str(out), "--epochs", "2", "--num_workers", "0"])
    assert ("[finetune] dbl: μ = 0.3, λ = 5 (the run's own, from its last.pt; voc-lt's defaults would now give "
            "μ = 1.5, λ = 1)") in capsys.readouterr().out
    rows = lambda d: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                      for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(out) == rows(full)


def test_a_prompt_run_records_the_db_loss_it_trained_with(tmp_path, tiny_vit_checkpoint, capsys):
    data_root = fresh_data(tmp_path)
    out = tmp_path / "run"
    train_script.main(train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache", "--neg_scale", "2",
                                 epochs=1))
    assert "[train] dbl: μ = 0.3, λ = 2 (--neg_scale; the other from voc-lt's defaults)" in capsys.readouterr().out
    saved = json.loads((out / "args.json").read_text())
    assert (saved["gamma"], saved["neg_scale"]) == (0.3, 2.0)
    assert torch.load(out / "best.pt", weights_only=False)["config"]["db_params"] == {"gamma": 0.3, "neg_scale": 2.0}


def test_finetune_resume_restores_its_settings(tmp_path, tiny_vit_checkpoint):
    from finetune_clip import fc as fc_script
    from lmpt.checkpoint import save_args
    run = tmp_path / "probe"
    first = fc_script.parse_args(["--dataset", "coco-lt", "--pretrain_clip_path", str(tiny_vit_checkpoint),
                                  "--lr", "0.003", "--epochs", "3", "--from_scratch", "--output_dir", str(run)])
    save_args(run, first)
    again = fc_script.parse_args(["--resume", str(run), "--epochs", "5"])
    assert (again.dataset, again.lr, again.from_scratch, again.epochs, again.output_dir, again.resume) == \
        ("coco-lt", 0.003, True, 5, run, True)
    assert again.pretrain_clip_path == str(tiny_vit_checkpoint)


def test_interrupt_message_says_whether_there_is_anything_to_resume(tmp_path, capsys):
    from types import SimpleNamespace
    from lmpt.cli import run_resumable

    def ctrl_c(args):
        raise KeyboardInterrupt

    def sigterm(args):  # as before the first epoch, while images are decoded
        os.kill(os.getpid(), signal.SIGTERM)
    args = SimpleNamespace(output_dir=tmp_path)
    for has_epoch, interrupted in ((False, ctrl_c), (False, sigterm), (True, ctrl_c), (True, sigterm)):
        if has_epoch:
            (tmp_path / "last.pt").write_bytes(b"")
        with pytest.raises(SystemExit) as stopped:
            run_resumable(interrupted, args, "train")
        assert stopped.value.code == (130 if interrupted is ctrl_c else 143)  # 128 + SIGINT, 128 + SIGTERM
        err = capsys.readouterr().err
        assert (f"--resume {tmp_path}" in err) == has_epoch and ("nothing to resume" in err) != has_epoch


def test_missing_clip_checkpoint_is_refused_before_the_run_folder(tmp_path, monkeypatch):
    from zero_shot_clip import test as zero_shot_script
    data_root = fresh_data(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError) as missing:
        train_script.main(train_argv(data_root, "ViT16", out, tmp_path / "cache") +
                          ["--pretrained_dir", str(tmp_path / "empty")])
    assert f"{tmp_path / 'empty' / 'ViT-B-16.pt'} not found" in str(missing.value)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        zero_shot_script.main(["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip_path",
                               str(tmp_path / "RN50.pt"), "--output_dir", str(out), "--device", "cpu"])
    monkeypatch.chdir(tmp_path)  # as the published commands: a relative path, here or beside the script
    with pytest.raises(FileNotFoundError, match=r"RN50.pth \(the scripts look for a relative path from the current "
                                                r"folder, then from the script's own folder\)"):
        zero_shot_script.main(["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip_path",
                               "../pretrained/RN50.pth", "--output_dir", str(out), "--device", "cpu"])
    assert not out.exists()
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path / "shared"))  # the scripts' default folder
    assert train_script.parse_args([]).pretrained_dir == tmp_path / "shared"


def test_test_refuses_what_is_not_a_run_checkpoint(tmp_path, tiny_vit_checkpoint):
    data_root = fresh_data(tmp_path)
    for wrong, expected in ((tiny_vit_checkpoint, "a TorchScript archive"),  # a CLIP checkpoint
                            (tmp_path / "weights.pt", "not a checkpoint of lmpt/train.py")):  # a bare state dict
        if wrong.name == "weights.pt":
            torch.save({"ctx": torch.zeros(2)}, wrong)
        with pytest.raises(ValueError, match=expected) as error:
            test_script.main(["--checkpoint", str(wrong), "--dataset", "voc-lt", "--data_root", str(data_root)])
        assert str(wrong) in str(error.value)


def test_metrics_rows_log_the_learning_rate_each_epoch_trained_with(tmp_path):
    from lmpt.engine import build_scheduler, fit
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([model.w], lr=1.0)
    used = {}

    def batch_loss(index, flips, epoch, step):
        used[epoch] = optimizer.param_groups[0]["lr"]
        return (model.w ** 2).sum(), {}
    fit(model, batch_loss, lambda: (1.0, {}), optimizer, build_scheduler(optimizer), tmp_path, 9, 4, 4, 0, {})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in rows] == [used[e] for e in range(9)]
    assert used[0] == 1.0 and used[8] < 1.0  # the plateau scheduler lowered it after 6 epochs without progress


def test_atomic_writes_sync_the_file_then_the_folder_that_names_it(tmp_path, monkeypatch):
    import os
    import stat
    from lmpt.checkpoint import save_json

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd)) or real_fsync(fd))
    save_json(tmp_path / "results.json", {"mAP": 1.0})
    assert [stat.S_ISDIR(s.st_mode) for s in synced] == [False, True]
    assert synced[1].st_ino == tmp_path.stat().st_ino and not list(tmp_path.glob(".*.tmp"))


def test_the_caption_methods_table_decides_captions_and_the_embedding_loss(tmp_path, tiny_vit_checkpoint, monkeypatch,
                                                                          capsys):
    """A method listed in CAPTION_METHODS reads the captions and trains with the embedding loss (a new
    caption-based method is one entry there), and the embedding-loss flags of a method without it are noted."""
    data_root = fresh_data(tmp_path)
    coop = lambda out, *extra: train_argv(data_root, tiny_vit_checkpoint, out, tmp_path / "cache",  # noqa: E731
                                          "--training_method", "coop", *extra, epochs=1)
    train_script.main(coop(tmp_path / "plain", "--lam", "0.25"))
    assert ("[train] note: --training_method coop trains without the embedding loss; --lam has no effect"
            in capsys.readouterr().out)
    assert "train_cse_loss" not in read_metrics(tmp_path / "plain" / "metrics.jsonl")[0]
    monkeypatch.setattr(prompt_tuning, "CAPTION_METHODS", ("lmpt", "coop"))
    train_script.main(coop(tmp_path / "with_captions"))
    assert "train_cse_loss" in read_metrics(tmp_path / "with_captions" / "metrics.jsonl")[0]
