"""The embedded synthetic benchmark (lmpt.synthetic) and the tiny CLIP pretrained on its corpus (lmpt.pretrain)."""
import contextlib
import hashlib
import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip
from lmpt import pretrain, synthetic
from lmpt.data import available_cores, class_frequency, load_dataset, read_captions, read_labels, read_list

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import demo  # noqa: E402
from demo import PROMPT_ARGS  # noqa: E402  (the demo's prompt-tuning settings)

SMALL = dict(n_train=40, n_test=30)
# Colour words a caption of the pretraining corpus must not contain (docs/EMBEDDED.md), beyond the palette.
EXTRA_COLOUR_WORDS = {"grey", "violet", "magenta", "gold", "silver", "teal", "navy", "beige", "colour", "color",
                      "coloured", "colored"}


def digests(folder):
    """sha256 of every file under ``folder``, keyed by relative path."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_root(tmp_path_factory):
    """The benchmark at its default sizes, generated once for the module."""
    root = tmp_path_factory.mktemp("synth_default")
    synthetic.ensure_benchmark(root)
    return root


# ---------------------------------------------------------------------------
# Determinism.

def test_same_seed_gives_identical_files_and_another_seed_different_ones(tmp_path):
    a = synthetic.generate_benchmark(tmp_path / "a" / "synth", seed=3, **SMALL)
    b = synthetic.generate_benchmark(tmp_path / "b" / "synth", seed=3, **SMALL)
    c = synthetic.generate_benchmark(tmp_path / "c" / "synth", seed=4, **SMALL)
    da, db, dc = digests(a), digests(b), digests(c)
    n_images = SMALL["n_train"] + synthetic.val_size(SMALL["n_test"]) + SMALL["n_test"]
    assert len(da) == n_images + 7  # images + 6 data files + the stamp
    assert da == db
    images = [k for k in da if k.endswith(".jpg")]
    assert set(images) == {k for k in dc if k.endswith(".jpg")}
    assert sum(da[k] != dc[k] for k in images) == len(images)  # every image differs
    assert da["synth_lt_train.txt"] != dc["synth_lt_train.txt"]
    assert da["synth_lt_captions.txt"] != dc["synth_lt_captions.txt"]


def test_corpus_is_deterministic_whatever_the_worker_count_and_not_the_benchmark(default_root, monkeypatch):
    images, captions, contents = synthetic.make_corpus(24, seed=0, workers=1)
    monkeypatch.setattr(synthetic, "CORPUS_CHUNK", 5)  # 5 chunks for 2 worker processes
    again, captions_again, contents_again = synthetic.make_corpus(24, seed=0, workers=2)
    other, _, _ = synthetic.make_corpus(24, seed=1)
    assert images.shape == (24, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == captions_again and contents == contents_again
    assert not np.array_equal(images, other)
    data = load_dataset("synth-lt", default_root)
    bench = np.stack([np.asarray(Image.open(data.root / p).convert("RGB")) for p in data.train_paths[:24]])
    gaps = np.abs(images[:, None].astype(int) - bench[None].astype(int)).mean(axis=(2, 3, 4))  # [24, 24]
    assert gaps.min() > 10  # no corpus image is a benchmark image (separate random streams)


# ---------------------------------------------------------------------------
# Formats and profile.

def test_default_benchmark_parses_with_the_lmpt_readers(default_root):
    folder = default_root / "synth"
    names = read_labels(folder / "synth_labels.txt")
    assert names == synthetic.CLASS_NAMES and len(names) >= 16
    assert all(re.fullmatch(r"[a-z]+", n) for n in names)  # single prompt words
    train_paths, train_labels = read_list(folder / "synth_lt_train.txt", len(names))
    test_paths, test_labels = read_list(folder / "synth_lt_test.txt", len(names))
    captions = read_captions(folder / "synth_lt_captions.txt", train_paths)
    data = load_dataset("synth-lt", default_root)
    assert data.class_names == names and data.train_paths == train_paths and data.captions == captions
    assert np.array_equal(data.test_labels, test_labels)
    assert 1000 <= len(train_paths) <= 1500 and len(test_paths) >= 1000
    val = load_dataset("synth-lt", default_root, val_list=folder / "synth_lt_val.txt")
    assert len(val.val_paths) == synthetic.val_size(len(test_paths))
    assert not set(val.val_paths) & set(test_paths) and val.val_labels.sum(axis=0).min() >= 15
    for labels in (train_labels, test_labels):
        per_image = labels.sum(axis=1)
        assert per_image.min() >= 1 and per_image.max() <= 4
    for path in train_paths[:20] + test_paths[:20]:
        assert path.startswith(("images/train/", "images/test/")) and path.endswith(".jpg")
        with Image.open(folder / path) as image:
            assert image.format == "JPEG" and image.size == (64, 64)
    with open(folder / "class_freq.pkl", "rb") as f:
        stored = pickle.load(f)
    derived = class_frequency(train_labels)
    for key in ("class_freq", "neg_class_freq", "condition_prob"):
        assert np.array_equal(np.asarray(stored[key]), derived[key])


def test_long_tail_profile_lands_in_the_intended_groups(default_root):
    data = load_dataset("synth-lt", default_root)
    train = data.train_labels.sum(axis=0)
    test = data.test_labels.sum(axis=0)
    head, medium, tail = (train >= 100).sum(), ((train >= 20) & (train < 100)).sum(), (train < 20).sum()
    # VOC-LT's 6 / 6 / 8 out of 20 classes (SPEC §3), in proportion to the number of classes
    assert (head, medium, tail) == tuple(round(k * data.num_classes / 20) for k in (6, 6, 8))
    assert test.min() >= 30
    assert np.array_equal(train, synthetic.train_profile())  # the sampled sets hit the intended counts exactly
    # the test split is more balanced than the training split
    assert test.max() / test.min() < train.max() / train.min() / 5


def test_captions_name_the_objects(default_root):
    data = load_dataset("synth-lt", default_root)
    for caption, labels in zip(data.captions, data.train_labels):
        words = {c: (n, *synthetic.SYNONYMS[n]) for c, n in enumerate(data.class_names)}
        for c in np.flatnonzero(labels):  # every labelled class is named, by its name or a synonym
            assert any(re.search(rf"\b{w}(e?s)?\b", caption) for w in words[c]), (caption, data.class_names[c])
    assert len(set(data.captions)) > 0.6 * len(data.captions)  # varied sentences
    assert sum(any(col in c.split() for col in synthetic.COLOURS) for c in data.captions) > len(data.captions) / 3


def test_corpus_captions_have_no_colour_words_but_class_words():
    _, captions, _ = synthetic.make_corpus(200, seed=5)
    colour_words = set(synthetic.COLOURS) | EXTRA_COLOUR_WORDS
    names = [n for c in synthetic.CLASS_NAMES for n in (c, *synthetic.SYNONYMS[c])]
    for caption in captions:
        assert not set(re.findall(r"[a-z]+", caption)) & colour_words, caption
        assert any(re.search(rf"\b{n}(e?s)?\b", caption) for n in names), caption


def test_everyday_word_classes_are_never_called_by_their_label_name():
    _, captions, contents = synthetic.make_corpus(300, seed=6)
    words = [set(re.findall(r"[a-z]+", c)) for c in captions]
    for name in synthetic.EVERYDAY_WORD_CLASSES:
        assert synthetic.SYNONYMS[name] and not any(name in w or name + "s" in w for w in words), name
    class_id = synthetic.CLASS_NAMES.index("diamond")
    said = [w for w, c in zip(words, contents) if class_id in c]
    assert said and all("rhombus" in w or "rhombuses" in w for w in said)  # named by the everyday word
    assert any("circle" in w for w in words)  # other classes keep their label names


def test_sample_label_sets_hits_exact_counts():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 60, 12)
    n_images = int(counts.sum() // 2)
    sets = synthetic.sample_label_sets(counts, n_images, np.random.default_rng(1))
    assert len(sets) == n_images
    assert all(1 <= len(s) <= 4 and len(set(s)) == len(s) for s in sets)
    assert np.array_equal(np.bincount(np.concatenate(sets), minlength=12), counts)
    with pytest.raises(ValueError, match="cannot spread"):
        synthetic.sample_label_sets([1, 1], 5, rng)


def test_ensure_benchmark_reuses_a_complete_folder_and_regenerates_otherwise(tmp_path):
    folder = synthetic.ensure_benchmark(tmp_path, seed=0, **SMALL)
    stamp = folder / synthetic.STAMP_NAME
    assert json.loads(stamp.read_text())["seed"] == 0
    first = digests(folder)
    mtime = stamp.stat().st_mtime_ns
    synthetic.ensure_benchmark(tmp_path, seed=0, **SMALL)
    assert stamp.stat().st_mtime_ns == mtime  # reused, not rewritten

    victim = folder / sorted(p for p in first if p.startswith("images/test/"))[0]
    victim.unlink()
    synthetic.ensure_benchmark(tmp_path, seed=0, **SMALL)  # an image is missing -> regenerated
    assert digests(folder) == first

    synthetic.ensure_benchmark(tmp_path, seed=1, **SMALL)  # another seed -> regenerated
    assert json.loads(stamp.read_text())["seed"] == 1
    assert digests(folder)["synth_lt_train.txt"] != first["synth_lt_train.txt"]


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        synthetic.generate_benchmark(tmp_path / "synth", n_train=0)
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        synthetic.generate_benchmark(tmp_path / "synth", n_test=2.5)
    with pytest.raises(ValueError, match="n_images must be a positive integer"):
        synthetic.make_corpus(0)


# ---------------------------------------------------------------------------
# The tiny CLIP.

def test_cut_to_longest_caption_changes_no_text_feature():
    model = pretrain.build_tiny_clip(seed=1).eval()
    tokens = clip.tokenize(["a star", "two hearts and a small ring on a noisy background", "a photo of a drop"])
    cut = pretrain.cut_to_longest(tokens)
    assert cut.shape[1] < tokens.shape[1]
    with torch.no_grad():
        assert torch.allclose(model.encode_text(cut), model.encode_text(tokens), atol=1e-5)


def test_compact_vocabulary_trains_only_used_rows_and_writes_them_back():
    model = pretrain.build_tiny_clip(seed=2)
    before = model.token_embedding.weight.detach().clone()
    tokens = clip.tokenize(["a star", "two hearts"])
    vocabulary = pretrain.CompactVocabulary(model, tokens)
    remapped = vocabulary.remap(tokens)
    assert torch.equal(remapped.argmax(-1), tokens.argmax(-1))  # end-of-text stays the largest id
    with torch.no_grad():
        model.token_embedding.weight.add_(1.0)
    model = vocabulary.restore()
    used = torch.unique(tokens)
    after = model.token_embedding.weight.detach()
    assert torch.allclose(after[used], before[used] + 1)
    unused = torch.ones(len(before), dtype=torch.bool)
    unused[used] = False
    assert torch.equal(after[unused], before[unused])


@contextlib.contextmanager
def all_cores():
    """Torch threads on every core, for the suite's two longest steps: unlike the tests' tiny runs
    (one thread, conftest), pretraining and 40 epochs of prompt tuning gain from them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(available_cores())
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory):
    """The tiny CLIP pretrained once with the reduced setting: (checkpoint path, fp32 model, info)."""
    path = tmp_path_factory.mktemp("tiny_clip") / "tiny-clip-synth.pt"
    with all_cores():
        model, info = pretrain.pretrain_tiny_clip(path, log=lambda m: None, **pretrain.FAST_SETTINGS)
    return path, model, info


@pytest.mark.slow
def test_fast_pretraining_round_trips_through_clip_load_and_beats_chance(default_root, fast_clip):
    path, model, info = fast_clip
    data = load_dataset("synth-lt", default_root)
    untrained = pretrain.zero_shot_map(pretrain.build_tiny_clip(seed=0).eval(), data)
    assert info["final_loss"] < info["first_loss"] - 0.1  # it learned something

    images = np.stack([np.asarray(Image.open(data.root / p).convert("RGB")) for p in data.test_paths[:16]])
    x = pretrain.images_to_tensor(images, normalisation=0)  # [16, 3, 64, 64]
    loaded, preprocess = clip.load(str(path), device="cpu")
    with torch.no_grad():
        expected, got = model.encode_image(x), loaded.encode_image(x)
        assert torch.allclose(got, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())
        x_pre = torch.stack([preprocess(Image.open(data.root / p)) for p in data.test_paths[:16]])
        assert torch.allclose(x_pre, x, atol=1e-5)  # clip.load's preprocessing is the one pretraining used
    meta = json.loads(pretrain.metadata_path(path).read_text())
    assert meta["settings"]["steps"] == pretrain.FAST_SETTINGS["steps"]

    features = pretrain.normalised_image_features(loaded, data.root, data.test_paths)
    zero_shot = pretrain.zero_shot_map(loaded, data, features)
    rng = np.random.default_rng(0)
    chance = max(pretrain.mean_average_precision(rng.random(data.test_labels.shape), data.test_labels)
                 for _ in range(5))  # the best of five random rankings
    assert zero_shot > max(chance, untrained) + 0.01, (zero_shot, chance, untrained)


@pytest.mark.slow
def test_coop_and_lmpt_learn_and_beat_zero_shot_through_the_user_scripts(tmp_path, default_root, fast_clip):
    """The demo's path on the reduced setting (``tools/demo.py --fast``): zero-shot above chance; CoOp and
    LMPT, from random contexts and selected on the val split, improve on their first epoch, beat zero-shot,
    and learn from the labels the classes whose label names the tiny CLIP never read, which zero-shot
    misses (``synthetic.EVERYDAY_WORD_CLASSES``). The figures measured are in README "The tiny CLIP": the
    reduced model, pretrained in bf16, differs between CPU types, and so do the margins.
    """
    from lmpt import train as train_script
    from zero_shot_clip import test as zero_shot_script

    path = fast_clip[0]
    common = ["--dataset", "synth-lt", "--data_root", str(default_root), "--device", "cpu", "--num_workers", "0",
              "--cache_dir", str(tmp_path / "cache")]
    zero_shot_script.main([*common, "--pretrain_clip_path", str(path), "--templates", "single",
                           "--output_dir", str(tmp_path / "zero_shot")])
    zero_shot = json.loads((tmp_path / "zero_shot" / "results.json").read_text())
    chance = 100 * float(load_dataset("synth-lt", default_root).test_labels.mean())
    assert zero_shot["mAP"] > chance + 2, (zero_shot["mAP"], chance)
    names = load_dataset("synth-lt", default_root).class_names

    def everyday_word_map(results):  # mean AP of the classes whose label names pretraining never read
        return np.mean([results["per_class_AP"][names.index(c)] for c in synthetic.EVERYDAY_WORD_CLASSES])
    val_list = str(default_root / "synth" / "synth_lt_val.txt")
    for method in ("coop", "lmpt"):
        out = tmp_path / method
        with all_cores():
            train_script.main([*common, "--pretrain_clip", str(path), "--training_method", method, *PROMPT_ARGS,
                               "--val_list", val_list, "--output_dir", str(out)])
        results = json.loads((out / "results.json").read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        print(f"[learning] chance {chance:.2f}, zero-shot {zero_shot['mAP']:.2f}, {method} {results['mAP']:.2f} "
              f"(val: first epoch {rows[0]['selection_mAP']:.2f}, selected {results['selection_mAP']:.2f}); "
              f"classes of unread label names: zero-shot {everyday_word_map(zero_shot):.2f}, "
              f"{method} {everyday_word_map(results):.2f}")
        assert results["selection_split"] == "val"
        assert results["selection_mAP"] > rows[0]["selection_mAP"] + 1, (method, [r["selection_mAP"] for r in rows])
        assert results["mAP"] > zero_shot["mAP"] + 1, (method, results["mAP"], zero_shot["mAP"])
        assert everyday_word_map(results) > everyday_word_map(zero_shot) + 5, method


def test_demo_fast_runs_every_method_on_the_reduced_checkpoint(tmp_path, monkeypatch):
    """``tools/demo.py --fast``: the tests' tiny CLIP (FAST_SETTINGS, its own file) replaces 'tiny' in every
    method's command line, and the table goes to runs/demo_fast unless --out_dir says otherwise."""
    fast_path = tmp_path / "pretrained" / pretrain.FAST_CHECKPOINT_NAME
    asked, commands = [], []
    monkeypatch.setattr(demo, "ensure_benchmark", lambda root: None)
    monkeypatch.setattr(demo, "ensure_tiny_clip", lambda folder=None, **kw: asked.append(kw) or fast_path)

    def fake_run(cmd, cwd, check):
        commands.append(cmd)
        out = Path(cmd[cmd.index("--output_dir") + 1])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"mAP": 1.0}))

    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    rows = {name: demo.run_method(name, argv, tmp_path / "runs", 0, [], str(fast_path))
            for name, argv in demo.METHODS.items()}
    assert set(rows) == set(demo.METHODS) and len(commands) == len(demo.METHODS)
    for cmd in commands:
        assert demo.BACKBONE not in cmd and str(fast_path) in cmd
    monkeypatch.setattr(demo, "run_method", lambda *a: (_ for _ in ()).throw(SystemExit("stop")))
    with pytest.raises(SystemExit, match="stop"):
        demo.main(["--fast"])
    assert asked == [dict(name=pretrain.FAST_CHECKPOINT_NAME, **pretrain.FAST_SETTINGS)]
    seen = []  # a relative --out_dir is taken from where demo.py is run (the scripts run from the repository)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "run_method", lambda name, argv, out_dir, *a: seen.append(out_dir) or sys.exit())
    monkeypatch.setattr(demo, "ensure_tiny_clip", lambda **kw: fast_path)
    with pytest.raises(SystemExit):
        demo.main(["--out_dir", "mine", "--methods", "CoOp"])
    assert seen == [tmp_path / "mine"]


def test_ensure_tiny_clip_uses_the_cache_when_settings_match(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(path, log=print, **settings):
        calls.append(settings)
        model = pretrain.build_tiny_clip(seed=0)
        pretrain.save_tiny_clip(model, path, {"settings": pretrain._normalised(settings),
                                              "generator_version": synthetic.GENERATOR_VERSION,
                                              "architecture": pretrain.architecture_record()})
        return model, {}

    monkeypatch.setattr(pretrain, "pretrain_tiny_clip", fake_pretrain)
    path = pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=5)
    assert path.is_file() and len(calls) == 1
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=5)
    assert len(calls) == 1  # cached
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=6)
    assert len(calls) == 2  # other settings -> pretrained again
    monkeypatch.setattr(pretrain, "TINY_CLIP", dict(pretrain.TINY_CLIP, vision_width=32))
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=6)
    assert len(calls) == 3  # another architecture -> pretrained again
    raw = bytearray(path.read_bytes())  # bytes changed inside the cached file (same size): pretrained again
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=6)
    assert len(calls) == 4
    path.write_bytes(path.read_bytes()[:1000])  # cut short: pretrained again
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=6)
    assert len(calls) == 5
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=6)
    assert len(calls) == 5  # and cached
    record = pretrain.metadata_path(path)  # a record from before sha256s were kept: the file is read instead
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "sha256"}))
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=6)
    assert len(calls) == 5
    path.write_bytes(path.read_bytes()[:1000])
    pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, steps=6)
    assert len(calls) == 6
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path / "elsewhere"))
    assert pretrain.ensure_tiny_clip(log=lambda m: None, steps=6).parent == tmp_path / "elsewhere"  # as the scripts
    with pytest.raises(ValueError, match="unknown setting"):
        pretrain.ensure_tiny_clip(tmp_path, log=lambda m: None, step=6)


@pytest.mark.parametrize("native", [True, False])
def test_pretraining_uses_bf16_autocast_where_the_cpu_has_it_natively(tmp_path, monkeypatch, native):
    """bf16 autocast by default only on a CPU with oneDNN's bf16 kernels (AVX-512, AMX); on one without them it is
    emulated, several times slower than fp32. The record names the precision used, so a checkpoint pretrained
    with bf16 is the default's on such a CPU only; asked for explicitly, either is used anywhere."""
    autocasts = []
    autocast = torch.autocast

    def recorded(device_type, dtype=None, enabled=True, **kwargs):
        autocasts.append(enabled)
        return autocast(device_type, dtype=dtype, enabled=enabled, **kwargs)
    monkeypatch.setattr(pretrain, "native_bf16", lambda: native)
    monkeypatch.setattr(torch, "autocast", recorded)
    tiny = dict(steps=2, batch_size=4, corpus_size=16, warmup_steps=1)
    _, info = pretrain.pretrain_tiny_clip(tmp_path / "default.pt", log=lambda m: None, **tiny)
    assert autocasts == [native] * 2 and info["settings"]["bf16"] is native
    assert pretrain.DEFAULT_SETTINGS["bf16"] is None and pretrain.resolved_bf16(None) is native
    assert pretrain.cached_tiny_clip(tmp_path / "default.pt", dict(pretrain.DEFAULT_SETTINGS, **tiny))
    assert not pretrain.cached_tiny_clip(tmp_path / "default.pt", dict(pretrain.DEFAULT_SETTINGS, **tiny,
                                                                       bf16=not native), log=lambda m: None)
    autocasts.clear()
    pretrain.pretrain_tiny_clip(None, log=lambda m: None, **tiny, bf16=not native)
    assert autocasts == [not native] * 2


def test_pretraining_the_fast_tiny_clip_leaves_the_demos_checkpoint_alone(tmp_path, monkeypatch):
    from lmpt.backbones import TINY_CHECKPOINT
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
    import pretrain_tiny_clip as tool
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path))
    written = []

    def stop(path, **kw):
        written.append(Path(path))
        raise SystemExit
    monkeypatch.setattr(tool, "pretrain_tiny_clip", stop)
    for argv in (["--fast"], [], ["--fast", "--out", str(tmp_path / "mine.pt")]):
        with pytest.raises(SystemExit):
            tool.main(argv)
    assert written == [tmp_path / pretrain.FAST_CHECKPOINT_NAME, tmp_path / TINY_CHECKPOINT,
                       tmp_path / "mine.pt"]
