"""``--resume``: every file of the run folder (args.json, last.pt, best.pt, metrics.jsonl) is checked before any
work, and an edited or damaged one is refused with a message that names it, never with a traceback."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

import clip
from conftest import write_lmpt_dataset
from lmpt import evaluation, prepare, prompt_tuning, settings
from lmpt import test as test_script
from lmpt import train as train_script
from lmpt.checkpoint import load_checkpoint, read_metrics, save_torch
from lmpt.losses import DEFAULT_CSE_GAMMA, DEFAULT_CSE_MARGIN


def train_argv(data_root, checkpoint, out, cache, *extra, epochs=1):
    return ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--batch_size", "8", "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
            "--n_ctx", "4", "--cache_dir", str(cache), "--output_dir", str(out), "--optimizer", "adam",
            "--lr", "0.01", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_vit_checkpoint):
    """A data root, a finished 1-epoch LMPT run (best = last = epoch 1) and a finished 2-epoch one whose best
    epoch is its first (copied by the tests that change them)."""
    root = tmp_path_factory.mktemp("resume")
    write_lmpt_dataset(root / "data")
    one, two = root / "one", root / "two"
    train_script.main(train_argv(root / "data", tiny_vit_checkpoint, one, root / "cache"))
    evaluate, calls = prompt_tuning.evaluate_prompts, []

    def worse_each_epoch(*args, **kwargs):
        results, logits = evaluate(*args, **kwargs)
        calls.append(1)
        return {**results, "mAP": 100.0 - len(calls)}, logits
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prompt_tuning, "evaluate_prompts", worse_each_epoch)
        train_script.main(train_argv(root / "data", tiny_vit_checkpoint, two, root / "cache", epochs=2))
    last = load_checkpoint(two / "last.pt")
    assert (last["epoch"], last["best"]["epoch"], load_checkpoint(two / "best.pt")["epoch"]) == (1, 0, 0)
    return root / "data", one, two


def copy_run(run, to):
    shutil.copytree(run, to)
    return to


def resume(run, epochs):
    return train_script.main(["--resume", str(run), "--epochs", str(epochs), "--num_workers", "0"])


@pytest.fixture
def no_work(monkeypatch):
    """Fail a test whose run gets as far as CLIP and the image features."""
    def too_late(*args, **kwargs):
        raise AssertionError("the run went on to load CLIP and encode the images")
    monkeypatch.setattr(prepare, "load_clip_and_features", too_late)


def edit_json(path, **changes):
    saved = json.loads(path.read_text())
    saved.update(changes)
    path.write_text(json.dumps({k: v for k, v in saved.items() if v is not ...}))


def edit_checkpoint(path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    save_torch(path, state)


# ---------------------------------------------------------------- best.pt, checked with last.pt

def test_a_missing_best_of_an_earlier_epoch_is_refused_before_any_work(runs, tmp_path, no_work):
    _, _, two = runs
    run = copy_run(two, tmp_path / "run")
    (run / "best.pt").unlink()
    with pytest.raises(ValueError, match=f"{run / 'best.pt'}: missing, but {run / 'last.pt'} records epoch 1 as "
                                         f"the run's best .its last is epoch 2., which only best.pt holds; put the "
                                         f"run's best.pt back, or train the run again with --overwrite"):
        resume(run, 2)


def test_a_best_of_another_epoch_is_refused(runs, tmp_path, no_work):
    _, _, two = runs
    run = copy_run(two, tmp_path / "run")
    shutil.copyfile(run / "last.pt", run / "best.pt")
    with pytest.raises(ValueError, match="best.pt: holds epoch 2, but .*last.pt records epoch 1 as the run's best"):
        resume(run, 2)
    (run / "best.pt").write_bytes((run / "last.pt").read_bytes()[:300])
    with pytest.raises(ValueError, match="best.pt: cannot be read as an LMPT checkpoint; found a zip archive cut "
                                         "short .*, but .*last.pt records epoch 1"):
        resume(run, 2)


def test_a_damaged_best_of_the_last_epoch_is_written_again_from_last(runs, tmp_path, capsys):
    _, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    (run / "results.json").unlink()
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:300])
    resume(run, 1)
    assert f"[resume] {run / 'best.pt'}: cannot be read as an LMPT checkpoint" in capsys.readouterr().out
    assert load_checkpoint(run / "best.pt")["epoch"] == 0 and (run / "results.json").exists()


# ---------------------------------------------------------------- args.json, checked with last.pt

EDITED_SETTINGS = [("n_ctx", 6, "4"), ("ctx_init", "a photo of a", "''"), ("csc", False, "True"),
                   ("class_token_position", "front", "'end'"), ("m_ctx", 5, "2"), ("preprocess", "clip", "'lmpt'"),
                   ("score", "sigmoid", "'softmax'"), ("thre", 0.7, "0.5"), ("loss_function", "bce", "'dbl'"),
                   ("seed", 1, "0"), ("batch_size", 4, "8"), ("optimizer", "sgd", "'adam'"), ("lr", 0.02, "0.01"),
                   ("lam", 0.25, "0.5"), ("cseloss", "hinge", "'softmargin'"),
                   ("cse_margin", 0.25, repr(DEFAULT_CSE_MARGIN)), ("cse_gamma", 2.0, repr(DEFAULT_CSE_GAMMA))]


def test_every_setting_a_resume_compares_is_tried_edited():
    """The runs here are lmpt/train.py's: every compared setting that its parser has is tried (a setting of
    finetune_clip/fc.py alone, such as --from_scratch, is compared by the same prepare.check_settings)."""
    train_flags = {action.dest for action in train_script.build_parser()._actions}
    tried = {key for key, _, _ in EDITED_SETTINGS}
    missing = [key for key in settings.RUN_SETTINGS if key in train_flags and key not in tried]
    assert not missing, f"{missing}: add a row (flag, an edited value, the run's value as repr) to EDITED_SETTINGS"
    assert tried <= train_flags and tried <= set(settings.RUN_SETTINGS)


@pytest.mark.parametrize("key,value,saved", EDITED_SETTINGS)
def test_an_args_json_edited_away_from_last_is_refused(runs, tmp_path, no_work, key, value, saved):
    _, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    edit_json(run / "args.json", **{key: value})
    with pytest.raises(ValueError, match=f"{run / 'args.json'}: {key} {value!r} differs from {saved} in "
                                         f"{run / 'last.pt'}, the run's own; a resumed run keeps its settings "
                                         f"\\(put {saved} back in args.json\\)"):
        resume(run, 1)


def test_an_args_json_without_a_setting_takes_its_default_with_a_note(runs, tmp_path, capsys):
    _, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    edit_json(run / "args.json", m_ctx=..., csc=..., lr=...)
    args = train_script.parse_args(["--resume", str(run)])
    assert (args.m_ctx, args.csc, args.lr) == (2, True, 5e-4)  # the defaults, said
    err = " ".join(capsys.readouterr().err.split())
    assert (f"[resume] note: {run / 'args.json'} has no m_ctx, csc, lr (a run of an earlier version?); they take "
            f"their defaults: m_ctx 2, csc True, lr 0.0005") in err
    edit_json(run / "args.json", m_ctx=...)
    edit_checkpoint(run / "last.pt", lambda state: state["config"].update(m_ctx=4))
    with pytest.raises(ValueError, match="m_ctx 2 differs from 4 in .*last.pt, the run's own"):
        resume(run, 1)  # a default that is not the run's setting, where last.pt holds it


def test_a_run_is_compared_on_the_settings_its_configuration_holds(tmp_path):
    probe = {"method": "linear-probe", "preprocess": "lmpt"}  # a fine-tuning run's: no prompt settings
    args = SimpleNamespace(output_dir=tmp_path, preprocess="lmpt", n_ctx=16, score="sigmoid")
    prepare.check_settings(args, probe, tmp_path / "last.pt")
    args.preprocess = "clip"
    with pytest.raises(ValueError, match="args.json: preprocess 'clip' differs from 'lmpt' in .*last.pt"):
        prepare.check_settings(args, probe, tmp_path / "last.pt")


# ---------------------------------------------------------------- edited run files: contents checked

@pytest.mark.parametrize("key,value,expected", [
    ("pretrain_clip", None, "pretrain_clip None is not a valid --pretrain_clip (expected a value, not null)"),
    ("ctx_init", 5, "ctx_init 5 is not a valid --ctx_init (expected a string)"),
    ("skip_bad_images", "no", "skip_bad_images 'no' is not a valid --skip_bad_images (expected true or false)"),
    ("lr", None, "lr None is not a valid --lr (expected a value, not null)"),
    ("device", None, None)])  # --device defaults to None: null is its default
def test_an_args_json_value_of_the_wrong_type_is_refused(runs, tmp_path, capsys, key, value, expected):
    _, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    edit_json(run / "args.json", **{key: value})
    if expected is None:
        assert getattr(train_script.parse_args(["--resume", str(run)]), key) == value
        return
    with pytest.raises(SystemExit):
        train_script.parse_args(["--resume", str(run)])
    assert f"{run / 'args.json'}: {expected}" in " ".join(capsys.readouterr().err.split())


def test_a_last_without_what_a_resume_needs_is_refused_before_any_work(runs, tmp_path, no_work):
    _, one, _ = runs
    for key, edit, expected in (("optimizer", lambda s: s.pop("optimizer"), "no optimizer"),
                                ("best", lambda s: s.update(best={"epoch": "1", "mAP": 1.0}),
                                 "best .*: expected the record of the run's best epoch"),
                                ("epoch", lambda s: s.update(epoch="0"), "epoch '0': expected an epoch number")):
        run = copy_run(one, tmp_path / key)
        edit_checkpoint(run / "last.pt", edit)
        with pytest.raises(ValueError, match=f"{run / 'last.pt'}: .*{expected}"):
            resume(run, 1)


def test_a_checkpoint_config_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    for config, expected in (([1, 2], "config: expected a dict of the run's settings, found a list"),
                             ({"method": "lmpt", "n_ctx": 4},
                              "config: no dataset, class_names, backbone, preprocess, ctx_init, csc, "),
                             ({"method": 3}, "config: method 3: expected a string"),
                             ({"method": "linear-probe", "class_names": "dog"},
                              "config: class_names 'dog': expected a list of class names"),
                             ({"method": "linear-probe", "db_params": {"gamma": "0.3", "neg_scale": 5}},
                              "config: db_params .*: expected \\{'gamma': a number, 'neg_scale': a number\\}")):
        save_torch(path, {"model": {}, "config": config, "epoch": 0})
        with pytest.raises(ValueError, match=f"{path}: {expected}"):
            load_checkpoint(path)


def test_test_refuses_a_checkpoint_whose_config_lacks_a_setting(runs, tmp_path):
    data, one, _ = runs
    best = tmp_path / "best.pt"
    shutil.copyfile(one / "best.pt", best)
    edit_checkpoint(best, lambda s: s["config"].pop("preprocess"))
    with pytest.raises(ValueError, match=f"{best}: config: no preprocess; expected"):
        test_script.main(["--checkpoint", str(best), "--data_root", str(data), "--device", "cpu"])


def test_a_metrics_row_without_an_integer_epoch_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": "2"}\n')
    with pytest.raises(ValueError, match=f"{path}:2: epoch '2': expected an integer, the epoch's number"):
        read_metrics(path)


# ---------------------------------------------------------------- metrics.jsonl: the rows last.pt holds

def test_only_the_rows_asked_for_are_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epoch": "3", "half\n')
    assert read_metrics(path, epochs=2) == [{"epoch": 1}, {"epoch": 2}]
    with pytest.raises(ValueError, match=f"{path}:4: not valid JSON"):
        read_metrics(path, epochs=3)


def test_a_bad_metrics_row_of_an_epoch_last_holds_is_refused_before_any_work(runs, tmp_path, no_work):
    _, _, two = runs
    run = copy_run(two, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n{\"epoch\": 2,\n")
    with pytest.raises(ValueError, match=f"{run / 'metrics.jsonl'}:2: not valid JSON"):
        resume(run, 2)


def test_a_bad_metrics_row_after_last_is_dropped(runs, tmp_path):
    _, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": "2", "half written\n')
    resume(run, 1)
    assert [row["epoch"] for row in read_metrics(run / "metrics.jsonl")] == [1]


# ---------------------------------------------------------------- the CLIP file

def test_a_clip_state_dict_of_a_wrong_shape_is_named(runs, tmp_path, tiny_vit_checkpoint):
    data, _, _ = runs
    state_dict = clip.read_state_dict(tiny_vit_checkpoint)
    state_dict["visual.positional_embedding"] = state_dict["visual.positional_embedding"][:15]
    bad = tmp_path / "bad-clip.pt"
    torch.save(state_dict, bad)
    with pytest.raises(ValueError, match=f"{bad}: visual.positional_embedding has 15 rows: expected"):
        train_script.main(train_argv(data, bad, tmp_path / "run", tmp_path / "cache"))



def test_a_clip_with_nan_weights_is_refused_before_an_old_run_is_replaced(runs, tmp_path, tiny_vit_checkpoint):
    """NaN weights make every logit NaN: refused when the model is built, naming the file and tensor, so that
    --overwrite never removes a good run for one that cannot train, and zero-shot names the file too."""
    from zero_shot_clip import test as zero_shot_script
    data, one, _ = runs
    state_dict = clip.read_state_dict(tiny_vit_checkpoint)
    state_dict["visual.proj"][0, 0] = float("nan")
    bad = tmp_path / "nan-clip.pt"
    torch.save(state_dict, bad)
    run = copy_run(one, tmp_path / "run")
    files = sorted(p.name for p in run.iterdir())
    message = f"{bad}: NaN or Inf in 1 weight tensor\\(s\\): visual.proj; expected finite weights"
    with pytest.raises(ValueError, match=message):
        train_script.main(train_argv(data, bad, run, tmp_path / "cache", "--overwrite"))
    assert sorted(p.name for p in run.iterdir()) == files
    with pytest.raises(ValueError, match=message):
        zero_shot_script.main(["--dataset", "voc-lt", "--data_root", str(data), "--pretrain_clip_path", str(bad),
                               "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
                               "--output_dir", str(tmp_path / "zs")])


def best_ahead_of_last(run):
    """The run as code before ade04c2 left it when stopped between an improved epoch's best.pt and last.pt
    (written in that order then): best.pt one epoch ahead of last.pt."""
    last = load_checkpoint(run / "last.pt")
    save_torch(run / "best.pt", {**last, "epoch": last["epoch"] + 1})
    return last["epoch"] + 1


def selection_map_of(monkeypatch, value):
    """The resumed epochs' selection mAP made ``value``."""
    evaluate = prompt_tuning.evaluate_prompts
    monkeypatch.setattr(prompt_tuning, "evaluate_prompts",
                        lambda *args, **kwargs: ({**evaluate(*args, **kwargs)[0], "mAP": value}, None))


def test_a_best_ahead_of_last_written_by_older_code_is_written_again_by_the_resumed_epoch(runs, tmp_path,
                                                                                          monkeypatch):
    _, _, two = runs  # best epoch 1 (mAP 99), last epoch 2
    run = copy_run(two, tmp_path / "run")
    ahead = best_ahead_of_last(run)
    selection_map_of(monkeypatch, 99.5)  # the epoch improves again, as a deterministic run does
    resume(run, 4)  # and epoch 4, which does not improve, trains on: the old best.pt's case ends with its epoch
    results = json.loads((run / "results.json").read_text())
    assert load_checkpoint(run / "best.pt")["epoch"] == ahead
    assert results["selected_epoch"] == results["checkpoint_epoch"] == ahead + 1


def test_a_best_ahead_of_last_that_the_resumed_epoch_does_not_select_again_is_refused(runs, tmp_path,
                                                                                      monkeypatch):
    _, _, two = runs
    run = copy_run(two, tmp_path / "run")
    best_ahead_of_last(run)
    selection_map_of(monkeypatch, 50.0)  # a nondeterministic run's epoch may not improve again
    with pytest.raises(ValueError, match=f"{run / 'best.pt'}: holds epoch 3 of the attempt that was stopped .* "
                                         f"did not select again \\(mAP 50.00; best 99.00 at epoch 1, whose state "
                                         f"nothing holds any more\\); train the run again with --overwrite"):
        resume(run, 3)
    assert not (run / "results.json").exists()  # it described epoch 1, whose state is gone
    with pytest.raises(ValueError, match=f"{run / 'best.pt'}: holds epoch 3, but .*last.pt records epoch 1"):
        resume(run, 4)  # and stays refused


def test_a_best_ahead_of_last_needs_its_epoch_trained_again(runs, tmp_path, no_work):
    _, _, two = runs
    run = copy_run(two, tmp_path / "run")
    best_ahead_of_last(run)
    with pytest.raises(ValueError, match=f"{run / 'best.pt'}: holds epoch 3, after .*last.pt's .* which --epochs 2 "
                                         f"does not train again; resume with --epochs 3 or more"):
        resume(run, 2)


def test_a_best_ahead_of_a_last_that_is_the_best_is_written_again_from_last(runs, tmp_path, capsys):
    _, one, _ = runs  # best = last = epoch 1
    run = copy_run(one, tmp_path / "run")
    best_ahead_of_last(run)
    resume(run, 1)
    assert f"[resume] {run / 'best.pt'}: holds epoch 2; written again from last.pt" in capsys.readouterr().out
    assert load_checkpoint(run / "best.pt")["epoch"] == 0


def test_a_checkpoint_with_a_damaged_zip_directory_is_named(runs, tmp_path):
    _, one, _ = runs
    raw = bytearray((one / "best.pt").read_bytes())
    directory = raw.rfind(b"PK\x01\x02")  # the last central-directory entry: its signature broken
    raw[directory:directory + 4] = b"XX\x01\x02"
    bad = tmp_path / "best.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{bad}: cannot be read as an LMPT checkpoint"):
        load_checkpoint(bad)


def test_a_finished_run_is_named_finished_when_run_again_and_when_resumed(runs, tmp_path, capsys):
    data, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    args = SimpleNamespace(output_dir=run, resume=False, overwrite=False)
    with pytest.raises(FileExistsError, match=f"{run} already holds a finished run \\(results.json\\). Extend it with "
                                              f"--resume {run} and more --epochs than it trained"):
        prepare.check_run_dir(args)
    (run / "results.json").unlink()  # stopped before its results: continued
    with pytest.raises(FileExistsError, match=f"{run} already holds a run. Continue it with --resume {run},"):
        prepare.check_run_dir(args)
    resume(run, 1)
    assert (f"[resume] {run} has trained its 1 epoch: nothing to train, its best epoch (1, mAP "
            in capsys.readouterr().out)
    assert (run / "results.json").exists()


def test_an_extended_run_stopped_before_its_new_epochs_is_not_called_finished(runs, tmp_path):
    _, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    edit_json(run / "args.json", epochs=3)  # extended to 3 epochs, stopped before the second ended
    args = SimpleNamespace(output_dir=run, resume=False, overwrite=False)
    with pytest.raises(FileExistsError, match=f"{run} already holds a run. Continue it with --resume {run},"):
        prepare.check_run_dir(args)


def test_a_resume_on_other_images_under_the_same_names_is_refused(runs, tmp_path, no_work):
    """Another --data_root may hold the run's data (a copy resumes), not other images under its list's names."""
    from PIL import Image
    data, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    other = tmp_path / "other"
    shutil.copytree(data, other)
    first = (other / "voc" / "voc_lt_train.txt").read_text().split()[0]
    Image.new("RGB", (40, 30), (1, 2, 3)).save(other / "voc" / first)  # another image, another size
    with pytest.raises(ValueError, match=f"{run / 'last.pt'}: trained on other image files \\(by size\\) under the "
                                         f"same names than --data_root {other} holds now"):
        train_script.main(["--resume", str(run), "--epochs", "1", "--num_workers", "0", "--data_root", str(other)])


def test_a_resume_on_a_copy_of_the_data_is_accepted(runs, tmp_path, capsys):
    data, one, _ = runs
    run = copy_run(one, tmp_path / "run")
    shutil.copytree(data, tmp_path / "copy")
    train_script.main(["--resume", str(run), "--epochs", "1", "--num_workers", "0", "--data_root",
                       str(tmp_path / "copy")])
    assert "has trained its 1 epoch: nothing to train" in capsys.readouterr().out


def test_lmpt_test_notes_a_train_or_test_list_other_than_the_runs_with_a_val_list_too(tmp_path, capsys):
    def split(name, paths, labels):
        return prepare.Split(name, tmp_path / f"{name}.txt", paths, torch.tensor(labels, dtype=torch.float32))
    splits = {"train": split("train", ["a.jpg", "b.jpg"], [[1, 0], [0, 1]]),
              "val": split("val", ["c.jpg"], [[1, 1]]), "test": split("test", ["d.jpg"], [[0, 1]])}
    config = {**prepare.data_identity(tmp_path, splits), "selection_split": "val"}
    args = SimpleNamespace(dataset="voc-lt", data_root=tmp_path)
    read = {name: splits[name] for name in ("train", "test")}  # lmpt/test.py reads no val list
    evaluation.note_other_lists(config, read, args)
    assert "not the one the run trained with" not in capsys.readouterr().out
    read["train"] = split("train", ["a.jpg", "b.jpg"], [[1, 0], [1, 1]])  # one label edited
    evaluation.note_other_lists(config, read, args)
    assert "[test] note: the train or test list of --dataset voc-lt" in capsys.readouterr().out


def test_a_run_of_the_previous_version_without_the_data_hashes_resumes_and_is_tested(runs, tmp_path, capsys):
    """A last.pt written before images_sha256 and split_sha256 were saved: resumed on the hashes it holds, and
    lmpt/test.py compares its lists together (splits_sha256) as before."""
    data, _, two = runs
    run = copy_run(two, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        edit_checkpoint(run / name, lambda state: [state["config"].pop(key) for key in ("images_sha256",
                                                                                        "split_sha256")])
    resume(run, 3)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2 and "images_sha256" in load_checkpoint(run / "last.pt")[
        "config"]  # the resumed epochs save them
    config = {key: value for key, value in load_checkpoint(run / "best.pt")["config"].items()
              if key not in ("images_sha256", "split_sha256")}
    args = SimpleNamespace(dataset="voc-lt", data_root=data)
    _, splits = prepare.load_splits(SimpleNamespace(dataset="voc-lt", data_root=data, cache_dir=tmp_path / "c",
                                                    score="softmax"), need_val=False, training=False)
    evaluation.note_other_lists(config, splits, args)
    assert "not the one the run trained with" not in capsys.readouterr().out
    splits["test"].labels[0] = 1 - splits["test"].labels[0]
    evaluation.note_other_lists(config, splits, args)
    assert "[test] note: the train or test list of --dataset voc-lt" in capsys.readouterr().out


# ---------------------------------------------------------------- the precision, noted

def test_a_resume_in_another_precision_is_noted(runs, tmp_path, capsys):
    """A run records the precision it computes in; a resume on a device of another (a run trained under a GPU's
    bf16 autocast, resumed on the CPU) says that its metrics will differ from an uninterrupted run's, and its
    checkpoints then record the new one. A resume in the same precision, or of a run that recorded none (an
    earlier version's), says nothing of it."""
    _, one, _ = runs
    assert load_checkpoint(one / "last.pt")["config"]["precision"] == "cpu-fp32"
    run = copy_run(one, tmp_path / "run")
    edit_checkpoint(run / "last.pt", lambda state: state["config"].update(precision="cuda-bf16"))
    resume(run, 2)
    assert (f"[resume] note: {run / 'last.pt'} trained in cuda-bf16, and this resume on --device cpu runs in "
            f"cpu-fp32: its image features and training compute in cpu-fp32 from here on, so its metrics will "
            f"differ from an uninterrupted run's (resume on a device of cuda-bf16 to keep its precision)") in \
        capsys.readouterr().out
    assert load_checkpoint(run / "last.pt")["config"]["precision"] == "cpu-fp32"
    for edit in (lambda state: None, lambda state: state["config"].pop("precision")):
        run = copy_run(one, tmp_path / f"run{len(list(tmp_path.iterdir()))}")
        edit_checkpoint(run / "last.pt", edit)
        resume(run, 2)
        assert "trained in" not in capsys.readouterr().out


def test_a_run_records_the_precision_its_device_computes_in(runs, tmp_path, tiny_vit_checkpoint, monkeypatch):
    """The configuration's precision follows the device's autocast (lmpt.device.use_autocast: bf16 on a GPU with
    native bf16; forced here, on the CPU, for the record alone)."""
    from lmpt import device as device_module
    data, _, _ = runs
    monkeypatch.setattr(device_module, "use_autocast", lambda device: True)
    train_script.main(train_argv(data, tiny_vit_checkpoint, tmp_path / "run", tmp_path / "cache"))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["precision"] == "cpu-bf16"


def test_a_new_last_pt_removes_the_evaluation_of_the_last_pt_it_replaces(tmp_path):
    """lmpt/test.py --checkpoint <run>/last.pt writes <run>/test_results.json; an extended run's next epoch
    replaces that last.pt, so the file would describe a checkpoint the folder no longer holds (compare_runs
    --test_results would show it as the run): removed then, as the evaluations of a replaced best.pt are. One of
    best.pt stays while best.pt does (here from a folder since moved: the file names are what count)."""
    from lmpt import engine
    run = tmp_path / "run"
    run.mkdir()
    for checkpoint, kept in (("last.pt", False), ("best.pt", True)):
        (run / "test_results.json").write_text(json.dumps({"checkpoint": str(tmp_path / "moved" / checkpoint)}))
        (run / "results.json").write_text("{}")
        engine._write_epoch(run, [{"epoch": 1}], {"epoch": 0}, improved=False)
        assert (run / "test_results.json").exists() is kept and (run / "results.json").exists()
        assert torch.load(run / "last.pt") == {"epoch": 0} and not (run / "best.pt").exists()
    engine._write_epoch(run, [{"epoch": 1}, {"epoch": 2}], {"epoch": 1}, improved=True)
    assert not (run / "test_results.json").exists() and not (run / "results.json").exists()
    assert torch.load(run / "best.pt") == {"epoch": 1}
