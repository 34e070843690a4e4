"""End to end: train.py / test.py / zero-shot / fine-tune on a tiny random CLIP and generated JPEGs."""
import argparse
import json
import shutil

import pytest
import torch

from conftest import write_lmpt_dataset
from lmpt import baselines, evaluation, prompt_tuning
from lmpt import train as train_script
from lmpt import test as test_script
from lmpt.checkpoint import load_checkpoint
from lmpt.data import load_dataset
from lmpt.losses import CLASSIFICATION_LOSSES, CSE_LOSSES
from zero_shot_clip import test as zero_shot_script
from finetune_clip import fc as fc_script

RESULT_KEYS = {"mAP", "head_mAP", "medium_mAP", "tail_mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_class_AP"}


def run_train(tmp_path, data_root, checkpoint, *extra, name="run", epochs=2):
    out = tmp_path / name
    argv = ["--dataset", "voc-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--batch_size", "8", "--epochs", str(epochs), "--device", "cpu", "--num_workers", "0",
            "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), "--n_ctx", "4", *extra]
    train_script.main(argv)
    return out


def read_json(path):
    return json.loads(path.read_text())


def record_kernel_loads(monkeypatch, module):
    """The calls of ``module.load_kernels``, run here as on CUDA (on the CPU): [(rows, dim, what fn returned)]."""
    calls = []
    monkeypatch.setattr(module, "load_kernels",
                        lambda fn, rows, dim, device: calls.append((rows, dim, fn(torch.zeros(rows, dim)))))
    return calls


def assert_loads_the_evaluation_logits(calls, data_root, classes=4):
    """One load, beside the encoding, of [N, C] logits at the evaluation's shape (N test images)."""
    [(rows, dim, logits)] = calls
    assert rows == len(load_dataset("voc-lt", data_root).test_paths) and dim > 0
    assert logits.shape == (rows, classes) and logits.dtype == torch.float32


def test_lmpt_train_then_test_reproduces(tmp_path, tiny_data_root, tiny_vit_checkpoint, capsys, monkeypatch):
    out = run_train(tmp_path, tiny_data_root, tiny_vit_checkpoint, "--training_method", "lmpt", "--thre", "0.3")
    kernel_loads = record_kernel_loads(monkeypatch, prompt_tuning)
    for name in ("args.json", "metrics.jsonl", "results.json", "best.pt", "last.pt"):
        assert (out / name).exists(), name
    results = read_json(out / "results.json")
    assert RESULT_KEYS <= set(results)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # counted from 1, as the progress bar and messages count
    best_row = max(rows, key=lambda r: r["selection_mAP"])
    assert results["selected_epoch"] == best_row["epoch"] == rows[-1]["best_epoch"]
    assert all(r["train_cse_loss"] > 0 for r in rows)
    # The published test command's flags (another ctx_init) are accepted; the learner comes from the checkpoint.
    test_script.main(["--checkpoint", str(out), "--data_root", str(tiny_data_root), "--device", "cpu",
                      "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"), "--ctx_init", "a photo of a",
                      "--pretrained_dir", str(tiny_vit_checkpoint.parent), "--training_method", "coop",
                      "--pretrain_clip", "ViT16"])
    tested = read_json(out / "test_results.json")
    for key in RESULT_KEYS | {"method", "backbone", "backbone_file", "backbone_sha256", "checkpoint_epoch"}:
        assert tested[key] == results[key], key
    assert_loads_the_evaluation_logits(kernel_loads, tiny_data_root)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[test] note:")]
    assert [note.split()[2] for note in notes] == ["--ctx_init", "--pretrain_clip", "--training_method"]
    assert f"trained with {str(tiny_vit_checkpoint)!r}" in notes[1] and "trained with 'lmpt'" in notes[2]


def test_other_spellings_of_the_trained_settings_are_not_noted(capsys):
    config = {"method": "lmpt", "dataset": "voc-lt", "class_names": ["dog"], "n_ctx": 16, "ctx_init": "a_photo_of_a",
              "csc": True, "class_token_position": "end", "preprocess": "lmpt", "score": "softmax", "thre": 0.5,
              "backbone": "ViT16"}
    for ctx_init, backbone, noted in (("a photo of a", "ViT-B/16", []),
                                      ("a photo", "RN50", ["ctx_init", "pretrain_clip"])):
        args = argparse.Namespace(n_ctx=None, ctx_init=ctx_init, csc=None, class_token_position=None, dataset=None,
                                  preprocess=None, score=None, thre=None, pretrain_clip=backbone,
                                  training_method="lmpt", given={"ctx_init", "pretrain_clip", "training_method"})
        evaluation.apply_checkpoint_config(args, config, "best.pt")
        notes = [line.split()[2] for line in capsys.readouterr().out.splitlines() if line.startswith("[test] note:")]
        assert notes == [f"--{flag}" for flag in noted]
    assert test_script.parse_args(["--no-csc"]).csc is False and test_script.parse_args([]).csc is None
    assert test_script.parse_args(["--csc", "false"]).csc is False


@pytest.mark.parametrize("given, noted", [(2, None), (4, 2), (None, None)])
def test_n_ctx_is_compared_with_the_context_a_ctx_init_made(given, noted, capsys):
    # Trained with --ctx_init 'a photo' and the default --n_ctx: its two words are the context vectors.
    config = {"method": "lmpt", "dataset": "voc-lt", "class_names": ["dog"], "n_ctx": 4, "ctx_init": "a photo",
              "csc": True, "class_token_position": "end", "preprocess": "lmpt", "score": "softmax", "thre": 0.5}
    args = argparse.Namespace(n_ctx=given, ctx_init=None, csc=None, class_token_position=None, dataset=None,
                              preprocess=None, score=None, thre=None)
    evaluation.apply_checkpoint_config(args, config, "best.pt")
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[test] note:")]
    assert notes == ([] if noted is None else [f"[test] note: --n_ctx {given} ignored; the checkpoint was trained "
                                               f"with {noted} and the prompt learner is rebuilt from it"])


def spy(monkeypatch, module, name):
    """Record the positional arguments of ``module.name`` (the losses a script builds) as it is called."""
    real, calls = getattr(module, name), []
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs))
    return calls


@pytest.mark.parametrize("loss", CLASSIFICATION_LOSSES)
def test_every_classification_loss_trains(tmp_path, tiny_data_root, tiny_vit_checkpoint, loss, monkeypatch):
    built = spy(monkeypatch, prompt_tuning, "build_classification_loss")
    out = run_train(tmp_path, tiny_data_root, tiny_vit_checkpoint, "--training_method", "coop",
                    "--loss_function", loss, epochs=1)
    assert [args[0] for args in built] == [loss]  # the flag's loss is the one trained with
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert torch.isfinite(torch.tensor(row["train_loss"]))
    assert "train_cse_loss" not in row and row["train_loss"] == row["train_cls_loss"]  # CoOp: no caption loss


@pytest.mark.parametrize("cse", CSE_LOSSES)
def test_every_cse_loss_trains(tmp_path, tiny_data_root, tiny_vit_checkpoint, cse, monkeypatch):
    built = spy(monkeypatch, prompt_tuning, "build_cse_loss")
    out = run_train(tmp_path, tiny_data_root, tiny_vit_checkpoint, "--cseloss", cse, "--lam", "0.3", epochs=1)
    assert [args[0] for args in built] == [cse]
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train_cse_loss"] >= 0 and torch.isfinite(torch.tensor(row["train_loss"]))
    # L = lam · L_cls + (1 − lam) · L_cse, per step and so in the epoch's means
    assert row["train_loss"] == pytest.approx(0.3 * row["train_cls_loss"] + 0.7 * row["train_cse_loss"], rel=1e-6)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("csc", ["true", "false"])
@pytest.mark.parametrize("ctx_init", ["", "a photo of a"])
def test_prompt_variants_train_and_reload(tmp_path, tiny_data_root, tiny_rn_checkpoint, position, csc, ctx_init):
    out = run_train(tmp_path, tiny_data_root, tiny_rn_checkpoint, "--class_token_position", position,
                    "--csc", csc, "--ctx_init", ctx_init, "--optimizer", "adam", "--lr", "0.01", epochs=1)
    state = torch.load(out / "best.pt", weights_only=False)
    ctx = state["model"]["prompt_learner.ctx"]
    n_ctx = len(ctx_init.split()) if ctx_init else 4
    assert ctx.shape[:-1] == ((4, n_ctx) if csc == "true" else (n_ctx,))
    assert state["config"]["class_token_position"] == position
    results = read_json(out / "results.json")
    tested = test_script.evaluate_run(test_script.parse_args(
        ["--checkpoint", str(out), "--data_root", str(tiny_data_root), "--device", "cpu", "--num_workers", "0",
         "--cache_dir", str(tmp_path / "cache"), "--pretrained_dir", str(tiny_rn_checkpoint.parent)]))
    assert tested["mAP"] == results["mAP"]


def test_zero_shot_writes_results(tmp_path, tiny_data_root, tiny_vit_checkpoint, monkeypatch, capsys):
    out = tmp_path / "zs"
    kernel_loads = record_kernel_loads(monkeypatch, baselines)
    argv = ["--dataset", "VOC", "--nb_classes", "4", "--data_root", str(tiny_data_root), "--pretrain_clip_path",
            str(tiny_vit_checkpoint), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
            "--output_dir", str(out), "--templates", "single"]
    zero_shot_script.main(argv)
    results = read_json(out / "results.json")
    assert RESULT_KEYS <= set(results) and "top5_precision" in results and results["method"] == "zero-shot"
    assert (results["templates"], results["preprocess"], results["score"]) == ("single", "lmpt", "softmax")
    assert_loads_the_evaluation_logits(kernel_loads, tiny_data_root)
    assert "replacing" not in capsys.readouterr().out
    zero_shot_script.main(argv + ["--thre", "0.3", "--score", "sigmoid"])  # the same folder: its results replaced
    assert (f"[zero-shot] replacing {out / 'results.json'} of an earlier evaluation (mAP {results['mAP']:.2f}; "
            f"other score, thre)") in capsys.readouterr().out
    (out / "args.json").unlink()  # the results alone still say what they were
    zero_shot_script.main(argv)
    assert "earlier evaluation (mAP" in capsys.readouterr().out.split("other score, thre)")[0]
    monkeypatch.chdir(tiny_data_root.parent)  # the same data root written relatively: not another one
    relative = [tiny_data_root.name if a == str(tiny_data_root) else a for a in argv]
    zero_shot_script.main(relative)
    assert read_json(out / "args.json")["data_root"] == str(tiny_data_root)  # recorded absolute
    assert "earlier evaluation (mAP" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    zero_shot_script.main(argv)
    assert f"(mAP {results['mAP']:.2f})" in capsys.readouterr().out  # nothing differs


@pytest.mark.parametrize("script", [zero_shot_script, fc_script], ids=["zero-shot", "fine-tune"])
def test_a_wrong_class_count_is_named_before_the_images_are_looked_for(tmp_path, tiny_vit_checkpoint, script):
    # The seed's zero-shot command, read as argparse reads it, asks COCO for 20 classes: that is the error,
    # not the 5,000 images of a dataset that is not there.
    write_lmpt_dataset(tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "voc" / "images")
    with pytest.raises(ValueError, match="nb_classes 20 .*voc_labels.txt"):
        script.main(["--dataset", "VOC", "--nb_classes", "20", "--data_root", str(tmp_path / "data"),
                     "--pretrain_clip_path", str(tiny_vit_checkpoint), "--device", "cpu", "--num_workers", "0",
                     "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("from_scratch", [False, True])
def test_finetune_writes_results(tmp_path, tiny_data_root, tiny_rn_checkpoint, from_scratch, capsys):
    out = tmp_path / "fc"
    fc_script.main(["--dataset", "voc-lt", "--nb_classes", "4", "--data_root", str(tiny_data_root),
                    "--pretrain_clip_path", str(tiny_rn_checkpoint), "--device", "cpu", "--num_workers", "0",
                    "--batch_size", "8", "--epochs", "2", "--cache_dir", str(tmp_path / "cache"),
                    "--output_dir", str(out), *(["--from_scratch"] if from_scratch else [])])
    results = read_json(out / "results.json")
    assert RESULT_KEYS <= set(results)
    assert results["method"] == ("finetune-full" if from_scratch else "linear-probe")
    assert results["selection_split"] == "test"  # no --val_list: selected on test, as published, and said so
    assert "[finetune] no --val_list: selecting the best epoch on the TEST split" in capsys.readouterr().out
    state = torch.load(out / "best.pt", weights_only=False)
    assert "fc.weight" in state["model"]
    assert any(k.startswith("visual.") for k in state["model"]) == from_scratch
    assert any(k.endswith(".running_var") for k in state["model"]) == from_scratch  # batch-norm statistics


def test_full_finetuning_decodes_each_image_once_and_extracts_no_features(tmp_path, tiny_data_root,
                                                                          tiny_rn_checkpoint, monkeypatch):
    """--from_scratch trains the encoder, so frozen features would be of no use and each epoch would have
    to decode the images again: every image is decoded once, and each use normalises it from memory."""
    from lmpt import data as data_module
    decoded = []
    get_item = data_module.ImageListDataset.__getitem__
    monkeypatch.setattr(data_module.ImageListDataset, "__getitem__",
                        lambda self, i: decoded.append(self.paths[i]) or get_item(self, i))
    fc_script.main(["--dataset", "voc-lt", "--nb_classes", "4", "--data_root", str(tiny_data_root),
                    "--pretrain_clip_path", str(tiny_rn_checkpoint), "--device", "cpu", "--num_workers", "0",
                    "--batch_size", "8", "--epochs", "3", "--cache_dir", str(tmp_path / "cache"),
                    "--output_dir", str(tmp_path / "fc"), "--from_scratch"])
    dataset = load_dataset("voc-lt", tiny_data_root)
    assert sorted(decoded) == sorted(dataset.train_paths + dataset.test_paths)  # once each, for 3 epochs
    assert not list((tmp_path / "cache").glob("*.pt"))  # no frozen features
    assert read_json(tmp_path / "fc" / "results.json")["mAP"] >= 0


def test_trained_batch_norm_statistics_are_saved_and_restored():
    """Full fine-tuning moves a ResNet's batch-norm running statistics with its weights: a checkpoint keeps
    them and loading it restores them; a frozen encoder's are neither saved nor needed."""
    from tiny_clip import make_tiny_clip
    from lmpt.baselines import LinearProbe
    from lmpt.engine import load_trainable_state, trainable_state

    def probe(train_encoder, seed):
        visual = make_tiny_clip("resnet", seed=seed).float().visual
        return LinearProbe(visual, visual.output_dim, 3, train_encoder)
    trained = probe(True, 0).train()
    size = trained.visual.input_resolution
    trained.forward_images(torch.randn(4, 3, size, size))  # a training-mode forward moves the statistics
    state = trainable_state(trained)
    running = [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert running and all(state[k].abs().sum() > 0 for k in running if k.endswith("num_batches_tracked"))
    fresh = probe(True, 1)
    assert not all(torch.equal(fresh.state_dict()[k], state[k]) for k in running)
    load_trainable_state(fresh, state, "best.pt")
    assert all(torch.equal(fresh.state_dict()[k], state[k]) for k in state)
    assert not any("running" in k for k in trainable_state(probe(False, 0)))


def test_zero_shot_logits_are_100_times_the_cosine():
    features, weights = torch.randn(5, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    weights = weights / weights.norm(dim=-1, keepdim=True)  # the classifier's rows are unit vectors
    cosine = torch.tensor([[float(f @ w / f.norm()) for w in weights] for f in features], dtype=torch.float64)
    torch.testing.assert_close(baselines.zero_shot_logits(features, weights), 100 * cosine)


def test_zero_shot_classifier_in_chunks_equals_one_class_at_a_time(tiny_vit_checkpoint):
    """Encoding all prompts in chunks gives each class the mean of its own normalised template embeddings."""
    import clip
    import torch.nn.functional as F
    from lmpt.baselines import zero_shot_classifier
    from lmpt.templates import TEMPLATES

    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    names, templates = ["dog", "potted_plant", "tv monitor"], TEMPLATES["imagenet80"][:5]
    lengths = []  # the sequence length of each chunk the text transformer ran over
    model.transformer.register_forward_hook(lambda module, inputs, output: lengths.append(inputs[0].shape[0]))
    got = zero_shot_classifier(model, names, templates, torch.device("cpu"), chunk=4)  # chunks across classes
    # the 15 prompts ordered by length, in chunks of 4: each chunk as long as its own longest prompt
    ends = sorted(int(n) + 1 for n in clip.tokenize([t.format(n.replace("_", " ")) for n in names
                                                     for t in templates]).argmax(-1))
    assert lengths == [max(ends[i:i + 4]) for i in range(0, 15, 4)]
    with torch.no_grad():
        expected = torch.stack([F.normalize(F.normalize(model.encode_text(clip.tokenize(
            [t.format(n.replace("_", " ")) for t in templates])).float(), dim=-1).mean(0), dim=-1) for n in names])
    assert got.shape == (3, model.text_projection.shape[1])
    assert torch.allclose(got, expected, atol=1e-5)


FREEZE_CHECK = """
import gc, importlib, json
import lmpt.cli as cli
counts = {}
for name in ("lmpt.train", "lmpt.test", "zero_shot_clip.test", "finetune_clip.fc"):
    gc.unfreeze()
    cli._FROZEN = False
    main = importlib.import_module(name).main
    before = gc.get_freeze_count()
    try:
        main(["--no_such_flag"])  # refused by argparse, after the freeze
    except SystemExit:
        pass
    counts[name] = [before, gc.get_freeze_count()]
frozen = gc.get_freeze_count()
kept = [[] for _ in range(1000)]
cli.freeze_imported_objects()  # once per process: these stay collectable
counts["again"] = [frozen, gc.get_freeze_count()]
print(json.dumps(counts))
"""


def test_every_script_freezes_the_imported_objects_first():
    """Each script's main() takes the imported modules' objects out of the garbage collector's scans
    (gc.freeze), once per process, before any work."""
    import subprocess
    import sys
    from lmpt.data import REPO_ROOT
    proc = subprocess.run([sys.executable, "-c", FREEZE_CHECK], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("lmpt.train", "lmpt.test", "zero_shot_clip.test", "finetune_clip.fc"):
        before, after = counts[name]
        assert before == 0 and after > 50_000, (name, counts[name])  # torch's objects among them
    assert counts["again"][0] == counts["again"][1]


def test_default_run_folders_name_a_dataset_alias_as_its_dataset():
    """train.py --dataset VOC and test.py --dataset voc-lt (or the reverse) use the same default run folder."""
    from lmpt.cli import default_run_dir
    trained = train_script.parse_args(["--dataset", "VOC"]).output_dir
    tested = test_script.parse_args(["--dataset", "voc-lt"]).checkpoint
    assert trained == tested == default_run_dir("voc-lt", "lmpt", "ViT16", 0)
    assert zero_shot_script.parse_args(["--dataset", "COCO"]).output_dir.name == "coco-lt_zero-shot_RN50_seed0"
    assert zero_shot_script.parse_args(["--templates", "single"]).output_dir.name == \
        "voc-lt_zero-shot-single_RN50_seed0"  # the other templates' results beside, not over, the default's


def test_default_run_folders_name_a_backbone_by_its_short_name_and_a_file_by_its_stem(tmp_path):
    """ViT-B/16 and ViT16 share a folder (not '16', as Path('ViT-B/16').stem gave); a path gives its stem;
    each baseline's folder carries its method's name."""
    for backbone, tag in (("ViT-B/16", "ViT16"), ("ViT16", "ViT16"), ("ViT-L/14@336px", "ViT14@336"),
                          ("RN50", "RN50"), (str(tmp_path / "my-clip.pt"), "my-clip")):
        trained = train_script.parse_args(["--pretrain_clip", backbone, "--seed", "3"]).output_dir
        tested = test_script.parse_args(["--pretrain_clip", backbone, "--seed", "3"]).checkpoint
        assert trained == tested and trained.name == f"voc-lt_lmpt_{tag}_seed3", backbone
        zero_shot = zero_shot_script.parse_args(["--pretrain_clip_path", backbone]).output_dir
        assert zero_shot.name == f"voc-lt_zero-shot_{tag}_seed0", backbone
    assert fc_script.parse_args([]).output_dir.name == "voc-lt_linear-probe_ViT16_seed0"
    assert fc_script.parse_args(["--from_scratch"]).output_dir.name == "voc-lt_finetune-full_ViT16_seed0"


def test_every_training_run_writes_one_results_schema(tmp_path, tiny_data_root, tiny_vit_checkpoint):
    """LMPT, CoOp and the fine-tuning baseline name the run (method, CLIP) and its selection (epoch, split,
    its mAP, the checkpoint evaluated) with the same keys (tools/sweep_cse.py reads selection_mAP of any)."""
    from finetune_clip import fc as fc_script
    lmpt_dir = run_train(tmp_path, tiny_data_root, tiny_vit_checkpoint, "--training_method", "lmpt")
    lmpt_run = read_json(lmpt_dir / "results.json")
    fc_run = tmp_path / "probe"
    fc_script.main(["--dataset", "voc-lt", "--data_root", str(tiny_data_root), "--pretrain_clip_path",
                    str(tiny_vit_checkpoint), "--batch_size", "8", "--epochs", "2", "--device", "cpu",
                    "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(fc_run)])
    probe = read_json(fc_run / "results.json")
    run_keys = {"method", "backbone", "backbone_file", "backbone_sha256", "selected_epoch", "selection_split",
                "selection_mAP", "checkpoint", "checkpoint_epoch", "thre", "score", "preprocess"}
    assert run_keys <= set(lmpt_run) and run_keys <= set(probe)
    assert (lmpt_run["method"], probe["method"]) == ("lmpt", "linear-probe")
    assert probe["checkpoint"] == str(fc_run / "best.pt") and probe["checkpoint_epoch"] == probe["selected_epoch"]
    assert lmpt_run["backbone_sha256"] == probe["backbone_sha256"]
    for run_dir, results in ((lmpt_dir, lmpt_run), (fc_run, probe)):  # the selection is the one metrics.jsonl logs
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        selected = rows[results["selected_epoch"] - 1]
        assert selected["epoch"] == results["selected_epoch"] == selected["best_epoch"] == rows[-1]["best_epoch"]
        assert results["selection_mAP"] == selected["selection_mAP"] == max(r["selection_mAP"] for r in rows)
    config = load_checkpoint(fc_run / "last.pt")["config"]  # how it trained, which a resume compares
    assert {k: config[k] for k in ("selection_split", "seed", "batch_size", "lr", "from_scratch")} == {
        "selection_split": "test", "seed": 0, "batch_size": 8, "lr": 1e-4, "from_scratch": False}


def test_the_test_split_is_the_training_runs_own_by_default(tmp_path, tiny_data_root, tiny_vit_checkpoint, capsys):
    """lmpt/test.py on a run trained with its own --data_root tests that data, not the repository's data/, and
    says so; --data_root written tests elsewhere."""
    run = run_train(tmp_path, tiny_data_root, tiny_vit_checkpoint)
    trained = json.loads((run / "results.json").read_text())
    argv = ["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(tmp_path / "c")]
    results = test_script.main(argv + ["--output", str(tmp_path / "own.json")])
    assert results["mAP"] == pytest.approx(trained["mAP"], abs=1e-3)
    assert results["preprocess"] == trained["preprocess"] == "lmpt"
    out = capsys.readouterr().out
    assert f"[test] --data_root {tiny_data_root}: the training run's ({run / 'args.json'})" in out
    assert "not the one the run trained with" not in out
    other = tmp_path / "other"
    shutil.copytree(tiny_data_root, other)
    test_list = other / "voc" / "voc_lt_test.txt"
    test_list.write_text("".join(test_list.read_text().splitlines(keepends=True)[:-4]))  # a shorter test split
    elsewhere = test_script.main(argv + ["--data_root", str(other), "--output", str(tmp_path / "other.json")])
    out = capsys.readouterr().out
    assert elsewhere["mAP"] != trained["mAP"] and "the training run's" not in out
    assert (f"[test] note: the train or test list of --dataset voc-lt in --data_root {other} is not the one the run "
            f"trained with") in out
    clip_features = test_script.main(argv + ["--preprocess", "clip", "--output", str(tmp_path / "clip.json")])
    assert "[test] note: --preprocess clip: the run trained on images of 'lmpt' preprocessing; its prompts are " \
        "evaluated on images of another" in capsys.readouterr().out
    assert clip_features["preprocess"] == "clip"


def test_a_training_runs_data_root_is_recorded_absolute_and_read_where_it_is(tmp_path, monkeypatch, capsys):
    from lmpt.data import DEFAULT_DATA_ROOT
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata").mkdir()
    args = train_script.parse_args(["--data_root", "mydata", "--output_dir", "run"])
    assert args.data_root == tmp_path / "mydata" and args.output_dir == tmp_path / "run"
    run = tmp_path / "run"
    run.mkdir()
    for saved, expected in ((str(tmp_path / "mydata"), tmp_path / "mydata"),
                            (str(DEFAULT_DATA_ROOT), DEFAULT_DATA_ROOT),
                            (str(tmp_path / "moved"), DEFAULT_DATA_ROOT)):  # a run copied from elsewhere
        (run / "args.json").write_text(json.dumps({"data_root": saved}))
        assert evaluation.training_data_root(run) == expected
    assert (f"[test] the training run's --data_root {tmp_path / 'moved'} ({run / 'args.json'}) is not here; "
            f"testing on {DEFAULT_DATA_ROOT}") in capsys.readouterr().out
    (run / "args.json").unlink()  # a checkpoint copied alone
    assert evaluation.training_data_root(run) == DEFAULT_DATA_ROOT


class NamedGPUMadeCurrent(Exception):
    """Raised by a mocked ``torch.cuda.set_device``: the script made the GPU it was given current, and stopped."""


def test_a_gpu_named_by_index_becomes_the_scripts_current_gpu(tmp_path, tiny_data_root, tiny_vit_checkpoint,
                                                              finished_coop_run, monkeypatch):
    """--device cuda:1: every script makes cuda:1 the current GPU before its GPU work, so that the DataLoader's
    pinned-memory thread (which works on the GPU current when the loader starts) opens no context on cuda:0.
    cuda and cuda:0 (current already) change nothing; the Python API leaves its caller's current GPU alone."""
    from lmpt.device import select_device
    made = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # two GPUs, as far as the scripts can tell
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", made.append)
    assert select_device("cuda:1") == torch.device("cuda:1") and made == []  # the API's call
    for name in ("cuda", "cuda:0", "cpu"):
        select_device(name, make_current=True)
    assert made == []
    assert select_device("cuda:1", make_current=True) == torch.device("cuda:1") and made == [1]

    def refuse(index):
        raise NamedGPUMadeCurrent(index)
    monkeypatch.setattr(torch.cuda, "set_device", refuse)
    data = ["--data_root", str(tiny_data_root), "--cache_dir", str(tmp_path / "cache"), "--num_workers", "0"]
    run, _ = finished_coop_run
    scripts = {
        train_script: ["--dataset", "voc-lt", "--pretrain_clip", str(tiny_vit_checkpoint), "--n_ctx", "4",
                       "--output_dir", str(tmp_path / "train"), *data],
        fc_script: ["--dataset", "voc-lt", "--nb_classes", "4", "--pretrain_clip_path", str(tiny_vit_checkpoint),
                    "--output_dir", str(tmp_path / "fc"), *data],
        zero_shot_script: ["--dataset", "VOC", "--nb_classes", "4", "--pretrain_clip_path", str(tiny_vit_checkpoint),
                           "--output_dir", str(tmp_path / "zs"), "--templates", "single", *data],
        test_script: ["--checkpoint", str(run), *data],
    }
    for script, argv in scripts.items():
        with pytest.raises(NamedGPUMadeCurrent, match="^1$"):
            script.main([*argv, "--device", "cuda:1"])
        assert not (tmp_path / "cache").exists()  # stopped before any image was decoded
