"""Speed benchmark of the issue "Fast by design": the published LMPT loop (a) against ours (b).

    python tools/benchmark_speed.py --preset cpu   # tiny ViT, CPU, about 12 minutes on 2 cores
    python tools/benchmark_speed.py --preset gpu   # ViT-B/16-shaped random weights, COCO-LT scale, CUDA

One run generates JPEGs (COCO-like 640×480, noise + shapes) and a random CLIP
checkpoint into a temporary folder in the LMPT layout (not timed), then, each
in its own subprocess so that peak memory is per run:

- (a) ``lmpt.published_loop.train_published``: the published loop;
- (b) ``lmpt.train.main``: our pipeline, with an empty feature cache;
- the caption (CSE) loss, published [B, C, T, D] way and ours, forward + backward;
- evaluation: ``zero_shot_clip/test.py`` and ``lmpt/test.py`` on ``--eval_images``
  images (COCO-LT's 5,000 test images by default), each twice in a fresh process
  with an empty feature cache, against the machine's JPEG-decode limit on the
  same images (DataLoader alone, no model; at our worker count and one worker
  per core, before and after the scripts); the best of each counts.

It prints the wall-time ratio (a)/(b), the peak-memory ratios and whether (a)
and (b) learned the same prompts from the same initial contexts, batches and
flips (fp32 on the CPU, deterministic algorithms), and writes everything as
JSON to ``--out``. With ``--a_epochs K < --epochs``, (a) runs K epochs and its
time for all epochs is extrapolated and reported as such: setup + the first
epoch (which carries one-time start-up, e.g. CUDA's kernels) once + the mean of
the later measured epochs for each other epoch (every epoch of (a) does the
same work).
"""
import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from lmpt.provenance import code_version, cpu_name  # noqa: E402  (no torch, no lmpt import behind it)

DEFAULT_OUT = ROOT / "runs" / "benchmark_speed.json"
COCO_LABELS = ROOT / "data" / "coco" / "coco_labels.txt"

# clip.model.CLIP(**kwargs) of the benchmark models.
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
               transformer_layers=12)
TINY_VIT = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
                context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                transformer_layers=2)  # the shape of tests/tiny_clip.py's "vit"

# check: the prompt-equality run when the timed runs are not fp32 on the CPU (fp16/bf16 on CUDA, or
# (a) extrapolated): same model shape, few images, fp32 on the CPU with deterministic algorithms.
PRESETS = {
    "gpu": dict(model=VIT_B16, num_classes=80, n_train=1909, n_test=5000, batch_size=64, epochs=50, a_epochs=2,
                device="cuda", image_size=(640, 480), num_workers=None, eval_images=5000,
                check=dict(num_classes=16, n_train=32, n_test=16, batch_size=16, epochs=2)),
    "cpu": dict(model=TINY_VIT, num_classes=80, n_train=256, n_test=640, batch_size=64, epochs=20, a_epochs=None,
                device="cpu", image_size=(640, 480), num_workers=None, eval_images=5000, check=None),
    "toy": dict(model=TINY_VIT, num_classes=8, n_train=24, n_test=16, batch_size=8, epochs=2, a_epochs=None,
                device="cpu", image_size=(96, 72), num_workers=0, eval_images=16,
                check=dict(num_classes=8, n_train=16, n_test=8, batch_size=8, epochs=1)),
}

WORK_MARKER = ".lmpt_benchmark_speed"  # marks a --work_dir this script may empty

# Prompt equality: max|ctx_a − ctx_b| / max|ctx_b| must stay below this (see check_same_prompts).
PROMPT_RTOL = 1e-4


class BenchmarkError(RuntimeError):
    """A benchmark step failed (its log is named in the message)."""


# ---------------------------------------------------------------- generated data and model (not timed)

def synthetic_photo(seed, width, height, noise=16.0):
    """A photo-like RGB image: smooth colour field, random shapes, blur and sensor-like noise."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        w, h = int(rng.integers(width // 10 + 1, width // 2 + 2)), int(rng.integers(height // 10 + 1, height // 2 + 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.polygon([(x0 + int(rng.integers(0, w)), y0 + int(rng.integers(0, h)))
                          for _ in range(int(rng.integers(3, 7)))], fill=colour)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)  # [H, W, 3]
    pixels += rng.normal(0.0, noise, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_photo(job):
    path, seed, width, height = job
    synthetic_photo(seed, width, height).save(path, "JPEG", quality=90)


def _long_tailed_labels(rng, n, num_classes, first_positive):
    """[n] label lists, class c drawn with weight (c + 1)^-1.2; row i < C first gets class i (a positive each)."""
    p = (np.arange(num_classes) + 1.0) ** -1.2
    p /= p.sum()
    rows = []
    for i in range(n):
        labels = set(rng.choice(num_classes, size=int(rng.integers(1, 4)), replace=False, p=p).tolist())
        if first_positive and i < num_classes:
            labels.add(i)
        rows.append(sorted(labels))
    return rows


def make_benchmark_data(data_root, num_classes, n_train, n_test, image_size=(640, 480), seed=0, processes=None):
    """JPEGs and list, caption, label and class-frequency files of a 'coco-lt' dataset under ``data_root/coco``.

    Class names are COCO's (the first ``num_classes`` of data/coco/coco_labels.txt); labels are long-tailed
    and every class has a training positive. Returns the dataset folder.
    """
    from lmpt.data import DATASETS, read_labels, write_dataset
    names = read_labels(COCO_LABELS)
    if not 1 <= num_classes <= len(names):
        raise ValueError(f"num_classes {num_classes}: expected 1..{len(names)} (the classes of {COCO_LABELS})")
    if n_train < num_classes:
        raise ValueError(f"n_train {n_train}: expected at least num_classes = {num_classes} "
                         f"(every class needs a training positive)")
    names = names[:num_classes]
    base = Path(data_root) / "coco"
    rng = np.random.default_rng(seed)
    splits = {"train": ("train2017", _long_tailed_labels(rng, n_train, num_classes, True)),
              "test": ("val2017", _long_tailed_labels(rng, n_test, num_classes, False))}
    jobs, lines = [], {}
    width, height = image_size
    for split, (folder, rows) in splits.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        offset = 0 if split == "train" else n_train
        paths = [f"{folder}/{offset + i:012d}.jpg" for i in range(len(rows))]
        jobs += [(base / p, seed * 1_000_003 + offset + i, width, height) for i, p in enumerate(paths)]
        lines[split] = (paths, rows)
    processes = processes or min(16, os.cpu_count() or 1)
    if processes == 1 or len(jobs) < 64:
        for job in jobs:
            _write_photo(job)
    else:  # fork: the children only run PIL and NumPy
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_write_photo, jobs, chunksize=8)

    def caption(row, i):
        objects = " and ".join(f"a {names[c]}" for c in row)
        return f"a photo of {objects} seen from the side in picture number {i}"

    spec = DATASETS["coco-lt"]
    train = list(zip(*lines["train"]))  # [(path, class ids)]
    return write_dataset(base, spec, names, {spec.train_list: train, spec.test_list: list(zip(*lines["test"]))},
                         [(path, caption(ids, i)) for i, (path, ids) in enumerate(train)])


def write_random_clip(path, config, seed=0):
    """A randomly initialised ``clip.model.CLIP(**config)`` in OpenAI's released format (fp16 TorchScript)."""
    import clip
    from clip.model import CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**config)
    return Path(clip.save_checkpoint(model, path, fmt="torchscript"))


def train_argv(data_root, checkpoint, run_dir, cache_dir, epochs, batch_size, device, num_workers, seed=0):
    """The ``lmpt/train.py`` command line shared by (a) and (b): the published LMPT settings on 'coco-lt'."""
    return ["--dataset", "coco-lt", "--data_root", str(data_root), "--pretrain_clip", str(checkpoint),
            "--training_method", "lmpt", "--epochs", str(epochs), "--batch_size", str(batch_size),
            "--device", device, "--num_workers", str(num_workers), "--cache_dir", str(cache_dir),
            "--output_dir", str(run_dir), "--seed", str(seed), "--n_ctx", "16", "--m_ctx", "2", "--lr", "5e-4",
            "--loss_function", "dbl", "--cseloss", "softmargin", "--optimizer", "sgd", "--lam", "0.5"]


# ---------------------------------------------------------------- measurements (each in a subprocess)

def peak_memory(device):
    """GPU max_memory_allocated on CUDA, else this process's peak RSS; bytes."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def set_deterministic(on):
    torch.use_deterministic_algorithms(on)
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def run_published(argv, precision=None, plan_seed=None):
    """(a): the published loop -> {'seconds', 'init_ctx', 'ctx', per-epoch seconds}."""
    from lmpt.published_loop import train_published
    from lmpt.train import parse_args
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = train_published(args, precision=precision, plan_seed=plan_seed)
    out["seconds"] = time.perf_counter() - t0
    return out


def run_ours(argv):
    """(b): ``lmpt.train.main`` -> {'seconds', 'ctx' (last epoch), per-epoch seconds}."""
    from lmpt.checkpoint import load_checkpoint, read_metrics
    from lmpt.train import main, parse_args
    run_dir = parse_args(argv).output_dir
    t0 = time.perf_counter()
    main(argv)
    seconds = time.perf_counter() - t0
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    return {"seconds": seconds, "ctx": load_checkpoint(Path(run_dir) / "last.pt")["model"]["prompt_learner.ctx"],
            "epoch_seconds": [r["seconds"] for r in rows], "mAP": [r["selection_mAP"] for r in rows]}


def cse_inputs(batch, num_classes, length, dim, device, seed=0):
    """Caption embeddings [B, 77, D], prompts [C, 77, D] (a leaf that wants grad), targets [B, C], class counts."""
    g = torch.Generator().manual_seed(seed)
    captions = torch.randn(batch, length, dim, generator=g).to(device)  # [B, L, D]
    prompts = torch.randn(num_classes, length, dim, generator=g).to(device).requires_grad_()  # [C, L, D]
    targets = (torch.rand(batch, num_classes, generator=g) < 0.1).float().to(device)  # [B, C]
    class_freq = torch.randint(1, 1000, (num_classes,), generator=g).tolist()
    return captions, prompts, targets, class_freq


def cse_step(kind, captions, prompts, targets, class_freq, m_ctx, margin=None, gamma=None):
    """Forward + backward of the softmargin CSE loss, 'published' or 'ours' -> (loss, grad of prompts)."""
    from lmpt.losses import DEFAULT_CSE_GAMMA, DEFAULT_CSE_MARGIN, build_cse_loss
    from lmpt.published_loop import published_cse_loss
    margin = DEFAULT_CSE_MARGIN if margin is None else margin
    gamma = DEFAULT_CSE_GAMMA if gamma is None else gamma
    prompts.grad = None
    if kind == "published":
        loss = published_cse_loss(captions, prompts, targets, class_freq, margin, gamma, m_ctx)
    elif kind == "ours":
        loss = build_cse_loss("softmargin", class_freq, margin, gamma, m_ctx).to(prompts.device)(
            captions, prompts, targets)
    else:
        raise ValueError(f"cse_step: kind {kind!r}, expected 'published' or 'ours'")
    loss.backward()
    return loss.detach(), prompts.grad.detach()


def cse_largest_intermediate(kind, batch, num_classes, length, dim, m_ctx, itemsize=4):
    """Bytes of the largest tensor each CSE computation materialises, from the shapes (not measured)."""
    steps = length - m_ctx
    if kind == "published":
        return batch * num_classes * steps * dim * itemsize  # the [B, C, T, D] product inside cosine_similarity
    return max(batch, num_classes) * steps * dim * itemsize  # normalised [B, T, D] / [C, T, D]


class LiveTensorBytes:
    """Peak bytes of tensor storages alive at once while it is active, above the tensors named at entry.

    A ``TorchDispatchMode`` sees every op's outputs (the backward's too); each new storage counts
    until it is freed. Device-independent: on the CPU it resolves what the process RSS cannot
    (allocator reuse), on CUDA it leaves out the library workspaces that max_memory_allocated counts.
    """

    def __init__(self, *known):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        tracker._add(t.untyped_storage())
                return out

        self.mode = Mode()
        self.live, self.current, self.peak = {}, 0, 0
        self.known = {t.untyped_storage().data_ptr() for t in known if isinstance(t, torch.Tensor)}

    def _add(self, storage):
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self.live or key in self.known:
            return
        self.live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)

        def release(key=key, size=size):
            if self.live.pop(key, None) is not None:
                self.current -= size
        weakref.finalize(storage, release)

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def run_cse_memory(kind, batch, num_classes, length, dim, m_ctx, device):
    """Peak memory of one CSE forward + backward above its inputs, measured two ways.

    ``peak_bytes``: GPU max_memory_allocated on CUDA, else the growth of the RSS high-water mark of this
    fresh process; both after a warm-up call at a tiny shape, so that what a process allocates once at its
    first call (cuBLAS's workspace; on the CPU about 170 MiB of libraries and thread pools) is not counted
    as the loss's. ``live_tensor_peak_bytes``: the tensors alive at once (LiveTensorBytes).
    """
    on_gpu = torch.device(device).type == "cuda"
    cse_step(kind, *cse_inputs(2, 2, length, 8, device, seed=1), m_ctx)  # the once-per-process costs
    inputs = cse_inputs(batch, num_classes, length, dim, device)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = peak_memory(device)
    t0 = time.perf_counter()
    loss, _ = cse_step(kind, *inputs, m_ctx)
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = peak_memory(device) - before
    with LiveTensorBytes(*inputs) as live:
        cse_step(kind, *inputs, m_ctx)
    return {"peak_bytes": peak, "live_tensor_peak_bytes": live.peak, "loss": loss.item(), "seconds": seconds,
            "largest_intermediate_bytes": cse_largest_intermediate(kind, batch, num_classes, length, dim, m_ctx)}


def cpu_seconds():
    """(CPU seconds of this process, all threads; of its children that have been waited for, e.g. the
    loader workers of an exhausted DataLoader), user + system."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@contextmanager
def resources_used():
    """{'main_cpu_seconds', 'workers_cpu_seconds', 'workers_shutdown_seconds'} of the block, filled when it
    ends: the CPU of this process and of its loader workers, and the time DataLoaders spent shutting their
    workers down (joining them; feature extraction does so in a thread beside what follows,
    ``lmpt.features.close_in_background``). The workers' CPU counts once they are joined: join the
    closing loaders (``wait_for_closing_loaders``) before the block ends."""
    from torch.utils.data import dataloader
    cls = dataloader._MultiProcessingDataLoaderIter
    shutdown, used = cls._shutdown_workers, {"workers_shutdown_seconds": 0.0}

    def timed(self):
        t0 = time.perf_counter()
        try:
            return shutdown(self)
        finally:
            used["workers_shutdown_seconds"] += time.perf_counter() - t0
    cls._shutdown_workers = timed
    start = cpu_seconds()
    try:
        yield used
    finally:
        cls._shutdown_workers = shutdown
        now = cpu_seconds()
        used.update(main_cpu_seconds=now[0] - start[0], workers_cpu_seconds=now[1] - start[1])


def decode_limit(root, paths, preprocess, resolution, batch_size, num_workers, device, passes=2):
    """(images/s of decoding + preprocessing alone, with feature extraction's DataLoader; what it used,
    ``resources_used``) of the best of ``passes`` passes (the first one also pays one-time costs). A pass
    is timed until its last batch arrives: as in feature extraction, the workers' shutdown follows it."""
    from lmpt.features import decoding_loader, every_batch
    loader = decoding_loader(root, paths, preprocess, resolution, batch_size, num_workers, device)
    best, best_used = 0.0, None
    for _ in range(passes):
        with resources_used() as used:
            t0 = time.perf_counter()
            batches = iter(loader)  # the workers start here, as they start in the scripts' timed runs
            count = sum(images.shape[0] for images, _, _ in every_batch(batches))
            rate = count / (time.perf_counter() - t0)
            next(batches, None)  # the workers' shutdown
        if rate > best:
            best, best_used = rate, used
    return best, best_used


def run_decode_limit(data_root, resolution, batch_size, worker_counts, device):
    """The machine's JPEG-decode limit on the evaluation images: the best over ``worker_counts``. The
    process is prepared as the scripts prepare theirs (imported objects frozen), so that the limit's
    workers run as theirs do."""
    from lmpt.cli import freeze_imported_objects
    from lmpt.data import load_dataset
    freeze_imported_objects()
    dataset = load_dataset("coco-lt", data_root)
    runs = {str(n): decode_limit(dataset.root, dataset.test_paths, "lmpt", resolution, batch_size, n, device)
            for n in worker_counts}
    by_workers = {n: rate for n, (rate, _) in runs.items()}
    return {"images": len(dataset.test_paths), "by_workers": by_workers, "images_per_s": max(by_workers.values()),
            "cpu_by_workers": {n: cpu for n, (_, cpu) in runs.items()}}


EVAL_SCRIPTS = {"zero_shot": "zero_shot_clip.test", "test": "lmpt.test"}  # timed from main(argv), imports excluded


def run_script(script, argv):
    """One evaluation script's ``main(argv)`` in this (fresh) process -> {'seconds', and where they went}.

    ``before_decoding``: from the call to the loader workers' start; ``decoding``: from there until the
    last split's features are encoded, of which ``model_build`` until the model was ready to encode (the
    workers decode meanwhile); ``after``: the rest (the text side if not done yet, metrics, files, and the
    loader workers' shutdown where it outlasts them).
    """
    import importlib
    from lmpt.features import FeatureJob, wait_for_closing_loaders
    main = importlib.import_module(EVAL_SCRIPTS[script]).main
    marks = {}
    start, result = FeatureJob.start, FeatureJob.result

    def timed_start(job):
        marks.setdefault("start", time.perf_counter())
        return start(job)

    def timed_result(job, visual):
        marks.setdefault("model", time.perf_counter())
        try:
            return result(job, visual)
        finally:
            marks["encoded"] = time.perf_counter()
    FeatureJob.start, FeatureJob.result = timed_start, timed_result
    try:
        with resources_used() as used:
            t0 = time.perf_counter()
            main(argv)
            wait_for_closing_loaders()  # as the process would wait at exit
            t1 = time.perf_counter()
    finally:
        FeatureJob.start, FeatureJob.result = start, result
    return {**used, "seconds": t1 - t0,
            "before_decoding": marks["start"] - t0, "decoding": marks["encoded"] - marks["start"],
            "model_build": marks["model"] - marks["start"], "after": t1 - marks["encoded"]}


def measure_eval(cfg, work, data_root, checkpoint, repeats=2):
    """Zero-shot CLIP and ``lmpt/test.py``, each ``repeats`` times in a fresh process with an empty feature
    cache (the best counts), against the JPEG-decode limit of the machine on the same images, measured before
    and after them (the better counts). The page cache is warm for all. The scripts run with
    ``cfg["num_workers"]`` loader workers, and again with each of ``cfg["eval_workers"]`` (reported apart)."""
    from lmpt.data import available_cores
    device, workers, batch = cfg["device"], cfg["num_workers"], cfg["batch_size"]
    counts = [workers] + [n for n in cfg.get("eval_workers") or () if n != workers]
    resolution = cfg["model"]["image_resolution"]
    # prompts for test.py: lmpt/train.py, 1 epoch on a small dataset of the same classes (not timed)
    prompt_data = make_benchmark_data(work / "prompts_data", cfg["num_classes"], cfg["num_classes"], 8, (64, 48))
    prompts = work / "prompts_run"
    run_worker({"kind": "ours", "device": device, "threads": cfg["threads"],
                "argv": train_argv(prompt_data.parent, checkpoint, prompts, work / "prompts_cache", 1, batch, device,
                                   0)}, work, "eval_prompts")
    limit_spec = {"kind": "decode_limit", "device": device, "threads": cfg["threads"],
                  "args": [str(data_root.parent), resolution, max(batch, 64), sorted({*counts, available_cores()}),
                           device]}
    before = run_worker(limit_spec, work, "eval_decode_limit_before")

    def argv(script, n):
        common = ["--dataset", "coco-lt", "--data_root", str(data_root.parent), "--device", device, "--num_workers",
                  str(n), "--batch_size", str(batch), "--cache_dir", str(work / f"eval_cache_{script}")]
        if script == "zero_shot":
            return common + ["--pretrain_clip_path", str(checkpoint), "--output_dir", str(work / "eval_zero_shot")]
        return common + ["--checkpoint", str(prompts), "--output", str(work / "eval_test.json")]
    runs = {(n, script): [] for n in counts for script in EVAL_SCRIPTS}
    for attempt in range(repeats):  # interleaved, each from an empty cache: the best counts, as for the limit
        for n, script in runs:
            shutil.rmtree(work / f"eval_cache_{script}", ignore_errors=True)
            runs[n, script].append(run_worker({"kind": "script", "script": script, "argv": argv(script, n),
                                               "device": device, "threads": cfg["threads"]},
                                              work, f"eval_{script}_{n}w_{attempt}"))
    after = run_worker(limit_spec, work, "eval_decode_limit_after")  # a shared machine drifts: the best of both
    by_workers = {n: max(before["by_workers"][n], after["by_workers"][n]) for n in before["by_workers"]}
    limit = max(by_workers.values())
    limit_cpu = {n: max(before, after, key=lambda run: run["by_workers"][n])["cpu_by_workers"][n]
                 for n in before["by_workers"]}  # of the better of the two at each worker count
    out = {"images": before["images"], "decode_limit_images_per_s": limit, "decode_limit_by_workers": by_workers,
           "decode_limit_cpu_by_workers": limit_cpu,
           "decode_limit_before_after": [before["images_per_s"], after["images_per_s"]], "num_workers": workers,
           "other_workers": {}}
    for (n, script), each in runs.items():
        best = min(each, key=lambda run: run["seconds"])
        rate = out["images"] / best["seconds"]
        result = {**best, "seconds_each": [run["seconds"] for run in each], "images_per_s": rate,
                  "ratio": rate / limit}
        if n == workers:
            out[script] = result
        else:
            out["other_workers"].setdefault(str(n), {})[script] = result
    return out


def worker(spec_path, result_path):
    """Subprocess entry: run one measurement described by a JSON spec, write a JSON (+ .pt) result."""
    spec = json.loads(Path(spec_path).read_text())
    device = spec["device"]
    set_deterministic(spec.get("deterministic", False))
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kind = spec["kind"]
    if kind == "published":
        out = run_published(spec["argv"], spec.get("precision"), spec.get("plan_seed"))
    elif kind == "ours":
        if spec.get("profile"):
            import cProfile
            import pstats
            profiler = cProfile.Profile()
            out = profiler.runcall(run_ours, spec["argv"])
            with open(spec["profile"], "w") as f:
                pstats.Stats(profiler, stream=f).sort_stats("cumulative").print_stats(40)
        else:
            out = run_ours(spec["argv"])
    elif kind == "cse":
        out = run_cse_memory(spec["which"], *spec["shape"], device)
    elif kind == "decode_limit":
        out = run_decode_limit(*spec["args"])
    elif kind == "script":
        out = run_script(spec["script"], spec["argv"])
    else:
        raise ValueError(f"{spec_path}: unknown kind {kind!r}")
    if kind in ("published", "ours"):
        out["peak_memory_bytes"] = peak_memory(device)
        out["rss_after_imports_bytes"] = rss_start
        out["children_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        torch.save({k: out.pop(k) for k in ("ctx", "init_ctx") if k in out}, str(result_path) + ".pt")
    Path(result_path).write_text(json.dumps(out))


def run_worker(spec, work_dir, name, timeout=None):
    """Run ``worker`` in a fresh Python process; returns its result (contexts loaded back when present)."""
    work_dir = Path(work_dir)
    spec_path, result_path, log_path = (work_dir / f"{name}.{ext}" for ext in ("spec.json", "result.json", "log"))
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path),
                               str(result_path)], stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise BenchmarkError(f"benchmark step {name!r} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    out = json.loads(result_path.read_text())
    tensors = Path(str(result_path) + ".pt")
    if tensors.exists():
        out.update(torch.load(tensors, weights_only=True))
    return out


# ---------------------------------------------------------------- comparison and report

def check_same_prompts(ctx_a, ctx_b, init_ctx=None, rtol=PROMPT_RTOL):
    """Compare the final contexts of (a) and (b).

    rel = max|a − b| / max|b|. Both loops compute the same fp32 function in different orders
    (image batches of B vs 2B, a cosine via [B, C, T, D] vs a matmul, mean vs sum/T), so they
    differ by float32 rounding (ε ≈ 1.2e-7) carried through the steps (measured: rel ≈ 1e-7 after
    80 steps); ``rtol`` = 1e-4 leaves ~1000 ε of room, while a loop that draws other batches or
    flips ends ≈ 1e-2 of the scale away (the control in tests/test_benchmark_speed.py).
    """
    a, b = ctx_a.double(), ctx_b.double()
    if a.shape != b.shape:
        raise ValueError(f"contexts of (a) and (b) differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item()
    out = {"max_abs_diff": diff, "scale": scale, "rel_diff": diff / scale, "rtol": rtol,
           "passed": diff / scale <= rtol}
    if init_ctx is not None:
        moved = (b - init_ctx.double()).abs().max().item()
        out.update({"max_abs_moved": moved, "diff_over_moved": diff / moved if moved > 0 else math.inf})
    return out


def resolve_config(args):
    cfg = dict(PRESETS[args.preset])
    cfg["threads"] = None
    for key in ("epochs", "a_epochs", "n_train", "n_test", "eval_images", "batch_size", "device", "num_workers",
                "threads"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if cfg["device"] in (None, "auto"):
        cfg["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(cfg["device"]).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--preset {args.preset} runs on CUDA, which this machine lacks; pass --device cpu "
                         f"(slow with ViT-B/16 weights) or use --preset cpu")
    if cfg["num_workers"] is None:
        from lmpt.cli import default_workers
        cfg["num_workers"] = default_workers()
    cfg["a_epochs"] = min(cfg["a_epochs"] or cfg["epochs"], cfg["epochs"])
    try:
        cfg["eval_workers"] = [int(n) for n in args.eval_workers.split(",") if n.strip()]
    except ValueError:
        raise SystemExit(f"--eval_workers {args.eval_workers!r}: expected comma-separated worker counts") from None
    if any(n < 0 for n in cfg["eval_workers"]):
        raise SystemExit(f"--eval_workers {args.eval_workers!r}: worker counts are >= 0")
    if args.check_model == "tiny" and cfg.get("check"):
        cfg["check"] = {**cfg["check"], "model": TINY_VIT}
    return cfg


def generate(work, name, model, num_classes, n_train, n_test, image_size):
    """The benchmark's images and label files and a random checkpoint (not timed) -> (data_root, checkpoint)."""
    t0 = time.perf_counter()
    data_root = make_benchmark_data(work / f"{name}_data", num_classes, n_train, n_test, image_size)
    checkpoint = write_random_clip(work / f"{name}_pretrained" / "clip.pt", model)
    print(f"[bench] {name}: generated {n_train} + {n_test} images and a checkpoint in "
          f"{time.perf_counter() - t0:.1f}s (not timed) under {work}", flush=True)
    return data_root, checkpoint


def run_pair(work, name, model, num_classes, n_train, n_test, batch_size, epochs, a_epochs, device, num_workers,
             deterministic, threads=None, precision=None, profile=None, image_size=(640, 480)):
    """Generate data and a checkpoint, then run (a) and (b) in subprocesses -> (a, b, data_root, checkpoint)."""
    data_root, checkpoint = generate(work, name, model, num_classes, n_train, n_test, image_size)
    common = dict(data_root=data_root.parent, checkpoint=checkpoint, batch_size=batch_size, device=device)
    spec = {"device": device, "deterministic": deterministic, "threads": threads}
    spec_a = {**spec, "kind": "published", "precision": precision,
              "argv": train_argv(**common, run_dir=work / f"{name}_run_a", cache_dir=work / f"{name}_cache_a",
                                 epochs=a_epochs, num_workers=0)}
    spec_b = {**spec, "kind": "ours", "profile": profile,
              "argv": train_argv(**common, run_dir=work / f"{name}_run_b", cache_dir=work / f"{name}_cache_b",
                                 epochs=epochs, num_workers=num_workers)}
    a = run_worker(spec_a, work, f"{name}_a")
    print(f"[bench] {name} (a) published loop: {a['seconds']:.1f}s for {a_epochs} epoch(s)", flush=True)
    b = run_worker(spec_b, work, f"{name}_b")
    print(f"[bench] {name} (b) ours: {b['seconds']:.1f}s for {epochs} epoch(s)", flush=True)
    return a, b, data_root, checkpoint


def summarise_pair(a, b, epochs):
    """Wall times (extrapolating (a) when it ran fewer epochs) and peak memory of (a) and (b)."""
    a_epochs = len(a["train_seconds"])
    a_epoch = [t + e for t, e in zip(a["train_seconds"], a["eval_seconds"])]  # seconds per epoch
    steady = a_epoch[1:] or a_epoch  # the later epochs, without the first one's start-up
    a_total = (a["seconds"] if a_epochs == epochs
               else a["setup_seconds"] + a_epoch[0] + (epochs - 1) * sum(steady) / len(steady))
    return {"a": {"seconds": a_total, "seconds_measured": a["seconds"], "epochs_measured": a_epochs,
                  "epoch_seconds": a_epoch,
                  "extrapolated": a_epochs != epochs, "setup_seconds": a["setup_seconds"],
                  "train_seconds_per_epoch": sum(a["train_seconds"]) / a_epochs,
                  "eval_seconds_per_epoch": sum(a["eval_seconds"]) / a_epochs, "precision": a["precision"],
                  "peak_memory_bytes": a["peak_memory_bytes"], "rss_after_imports_bytes": a["rss_after_imports_bytes"]},
            "b": {"seconds": b["seconds"], "epochs": epochs, "epoch_seconds_mean": sum(b["epoch_seconds"]) / epochs,
                  "setup_and_final_seconds": b["seconds"] - sum(b["epoch_seconds"]),
                  "peak_memory_bytes": b["peak_memory_bytes"], "rss_after_imports_bytes": b["rss_after_imports_bytes"],
                  "workers_peak_rss_bytes": b["children_peak_rss_bytes"]},
            "wall_ratio": a_total / b["seconds"],
            "memory_ratio": a["peak_memory_bytes"] / b["peak_memory_bytes"]}


def measure_cse(cfg, work):
    """Peak memory of the CSE loss, published vs ours, at the configuration's (B, C, T, D)."""
    device, model = cfg["device"], cfg["model"]
    on_gpu = torch.device(device).type == "cuda"
    floor = 1 if on_gpu else 2**20  # RSS growth under 1 MiB is not resolved (small blocks reuse the heap)
    shape = [cfg["batch_size"], cfg["num_classes"], model["context_length"], model["transformer_width"], 2]
    cse = {which: run_worker({"kind": "cse", "which": which, "shape": shape, "device": device,
                              "threads": cfg["threads"]}, work, f"cse_{which}")
           for which in ("published", "ours")}
    return {"shape": dict(zip(("B", "C", "L", "D", "m_ctx"), shape)), "dtype": "float32",
            "memory_kind": ("GPU max_memory_allocated above the inputs" if on_gpu else
                            "peak RSS growth of a fresh process (high-water mark)"),
            **cse,
            "measured_ratio": (cse["published"]["peak_bytes"] / max(cse["ours"]["peak_bytes"], floor)
                               if cse["published"]["peak_bytes"] >= floor else None),  # None: not resolved
            "ours_below_resolution": cse["ours"]["peak_bytes"] < floor,
            "live_tensor_ratio": (cse["published"]["live_tensor_peak_bytes"]
                                  / max(cse["ours"]["live_tensor_peak_bytes"], 1)),
            "intermediate_ratio": (cse["published"]["largest_intermediate_bytes"]
                                   / cse["ours"]["largest_intermediate_bytes"]),
            "loss_abs_diff": abs(cse["published"]["loss"] - cse["ours"]["loss"])}


PARTS = ("pair", "cse", "eval")  # (a) vs (b) with the prompt check; the CSE memory; evaluation throughput


def benchmark(cfg, work, profile=None, parts=PARTS):
    """The measurements ``parts`` of one configuration -> report dict."""
    work = Path(work)
    device, epochs = cfg["device"], cfg["epochs"]
    deterministic = torch.device(device).type == "cpu"
    report = {"config": {k: v for k, v in cfg.items() if k != "check"}, "parts": list(parts),
              "cpu_count": os.cpu_count(), "torch": torch.__version__}
    if "pair" in parts:
        a, b, data_root, checkpoint = run_pair(
            work, "timed", cfg["model"], cfg["num_classes"], cfg["n_train"], cfg["n_test"], cfg["batch_size"],
            epochs, cfg["a_epochs"], device, cfg["num_workers"], deterministic, cfg["threads"], profile=profile,
            image_size=cfg["image_size"])
        report.update(summarise_pair(a, b, epochs))
        report["memory_kind"] = "GPU max_memory_allocated" if device.startswith("cuda") else "peak RSS (RUSAGE_SELF)"
        report["prompts"] = compare_prompts(cfg, work, a, b, deterministic)
    if "cse" in parts:
        report["cse"] = measure_cse(cfg, work)
    if "eval" in parts:
        if "pair" not in parts or cfg["n_test"] != cfg["eval_images"]:  # evaluation images of their own
            data_root, checkpoint = generate(work, "eval", cfg["model"], cfg["num_classes"], cfg["num_classes"],
                                             cfg["eval_images"], cfg["image_size"])
        report["eval"] = measure_eval(cfg, work, data_root, checkpoint)
    report["device_name"] = device_name(device, cfg["threads"])  # last: the parent forks data generators earlier
    return report


def compare_prompts(cfg, work, a, b, deterministic):
    """Same prompts? From the timed runs when they are fp32 on the CPU and complete, else a separate pair."""
    if deterministic and cfg["a_epochs"] == cfg["epochs"]:
        return {"source": "the timed runs (fp32, CPU, deterministic)",
                **check_same_prompts(a["ctx"], b["ctx"], a["init_ctx"])}
    # the timed runs ran in fp16 (a) / bf16 autocast (b), or (a) was cut short: a separate fp32 CPU pair
    check = cfg["check"] or dict(num_classes=16, n_train=32, n_test=16, batch_size=16, epochs=2)
    ca, cb, _, _ = run_pair(work, "check", check.get("model", cfg["model"]), check["num_classes"],
                            check["n_train"], check["n_test"], check["batch_size"], check["epochs"],
                            check["epochs"], "cpu", min(2, cfg["num_workers"]), True, cfg["threads"],
                            precision="fp32", image_size=cfg["image_size"])
    source = {k: v for k, v in check.items() if k != "model"}
    return {"source": f"a separate fp32 CPU pair, deterministic, {source}, "
                      f"model width {check.get('model', cfg['model'])['vision_width']}",
            **check_same_prompts(ca["ctx"], cb["ctx"], ca["init_ctx"])}


def device_name(device, threads=None):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    threads = threads or torch.get_num_threads()
    return cpu_name(f"torch threads {threads}")


def _mib(n):
    return f"{n / 2**20:,.1f} MiB"


def format_report(r):
    """The report as the lines the script prints (the parts that ran)."""
    cfg = r["config"]
    lines = [f"device: {r['device_name']}; torch {r['torch']}",
             f"config: {cfg['n_train']} train / {cfg['n_test']} test images, {cfg['num_classes']} classes, batch "
             f"{cfg['batch_size']}, {cfg['epochs']} epochs, CLIP widths vision {cfg['model']['vision_width']} / text "
             f"{cfg['model']['transformer_width']}, (b) loader workers {cfg['num_workers']}; parts: "
             f"{', '.join(r['parts'])}"]
    if "a" in r:
        a, b, p = r["a"], r["b"], r["prompts"]
        a_note = (f" (extrapolated from {a['epochs_measured']} measured epoch(s): {a['seconds_measured']:.1f}s)"
                  if a["extrapolated"] else "")
        memory = (f"peak memory ({r['memory_kind']}): (a) {_mib(a['peak_memory_bytes'])}, "
                  f"(b) {_mib(b['peak_memory_bytes'])}, ratio {r['memory_ratio']:.2f}x")
        if not r["memory_kind"].startswith("GPU"):
            memory += (f"; above the RSS after imports: (a) "
                       f"{_mib(a['peak_memory_bytes'] - a['rss_after_imports_bytes'])}, (b) "
                       f"{_mib(b['peak_memory_bytes'] - b['rss_after_imports_bytes'])}")
        lines += [
            f"(a) published loop: {a['seconds']:.1f}s{a_note}; per epoch train {a['train_seconds_per_epoch']:.2f}s + "
            f"eval {a['eval_seconds_per_epoch']:.2f}s; setup {a['setup_seconds']:.1f}s; {a['precision']}",
            f"(b) ours: {b['seconds']:.1f}s; per epoch {b['epoch_seconds_mean']:.2f}s; setup + feature extraction + "
            f"final evaluation {b['setup_and_final_seconds']:.1f}s",
            f"wall-time ratio (a)/(b): {r['wall_ratio']:.1f}x",
            memory,
            f"prompts ({p['source']}): max|ctx_a - ctx_b| {p['max_abs_diff']:.2e} / max|ctx| {p['scale']:.3g} = "
            f"{p['rel_diff']:.2e}, tolerance {p['rtol']:.0e}: {'PASS' if p['passed'] else 'FAIL'} (training moved "
            f"the contexts by up to {p.get('max_abs_moved', float('nan')):.2e})"]
    if "cse" in r:
        c = r["cse"]
        shape = c["shape"]
        cse_ratio = ("not resolved (both below 1 MiB)" if c["measured_ratio"] is None else
                     f"{'>= ' if c['ours_below_resolution'] else ''}{c['measured_ratio']:.0f}x")
        lines.append(
            f"CSE loss fwd+bwd, B={shape['B']} C={shape['C']} T={shape['L'] - shape['m_ctx']} D={shape['D']}: "
            f"live tensors at once: published {_mib(c['published']['live_tensor_peak_bytes'])}, ours "
            f"{_mib(c['ours']['live_tensor_peak_bytes'])}, ratio {c['live_tensor_ratio']:.0f}x; "
            f"{c['memory_kind']}: published {_mib(c['published']['peak_bytes'])}, ours "
            f"{_mib(c['ours']['peak_bytes'])}, ratio {cse_ratio}; largest intermediate from the shapes "
            f"{_mib(c['published']['largest_intermediate_bytes'])} vs "
            f"{_mib(c['ours']['largest_intermediate_bytes'])} ({c['intermediate_ratio']:.0f}x); "
            f"|loss difference| {c['loss_abs_diff']:.1e}")
    if "eval" in r:
        e = r["eval"]
        limits = ", ".join(f"{v:.0f} with {k} workers" for k, v in e["decode_limit_by_workers"].items())
        lines.append(f"evaluation of {e['images']} images, empty feature cache, {e['num_workers']} loader workers; "
                     f"JPEG-decode limit {e['decode_limit_images_per_s']:.0f} images/s ({limits}; the better of "
                     f"{' and '.join(f'{v:.0f}' for v in e['decode_limit_before_after'])}, measured before and after):")
        names = (("zero_shot", "zero_shot_clip/test.py"), ("test", "lmpt/test.py"))
        lines += [f"  {name}: {format_eval_run(e[script])}" for script, name in names]
        for n, other in e.get("other_workers", {}).items():
            lines += [f"  {name} with {n} workers: {format_eval_run(other[script])}" for script, name in names]
        if "decode_limit_cpu_by_workers" in e:
            lines.append("  the decode limit's best pass: CPU seconds of the main process / of its workers, and "
                         "the workers' shutdown: " + ", ".join(
                             f"{cpu['main_cpu_seconds']:.2f} / {cpu['workers_cpu_seconds']:.2f}, "
                             f"{cpu['workers_shutdown_seconds']:.2f}s with {n} workers"
                             for n, cpu in e["decode_limit_cpu_by_workers"].items()))
    return "\n".join(lines)


def format_eval_run(run):
    return (f"{run['seconds']:.2f}s (best of {', '.join(f'{t:.2f}' for t in run['seconds_each'])}), "
            f"{run['images_per_s']:.0f} images/s, {run['ratio']:.2f} of the limit (target >= 0.8); before decoding "
            f"{run['before_decoding']:.2f}s, decoding and encoding {run['decoding']:.2f}s (the model ready after "
            f"{run['model_build']:.2f}s of it), after {run['after']:.2f}s"
            + (f"; CPU seconds: main process {run['main_cpu_seconds']:.2f}, loader workers "
               f"{run['workers_cpu_seconds']:.2f}; the workers' shutdown {run['workers_shutdown_seconds']:.2f}s"
               if "main_cpu_seconds" in run else ""))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    for key in ("epochs", "a_epochs", "n_train", "n_test", "eval_images", "batch_size", "num_workers"):
        p.add_argument(f"--{key}", type=int, default=None, help="override the preset's value")
    p.add_argument("--device", default=None, help="override the preset's device (cuda, cpu)")
    p.add_argument("--eval_workers", default="",
                   help="comma-separated loader-worker counts to run the evaluation scripts with as well "
                        "(reported apart from the headline figures, which use --num_workers)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of every measured process (default: torch's; 1 avoids OpenMP stalls on a "
                        "CPU shared with other jobs)")
    p.add_argument("--check_model", choices=("preset", "tiny"), default="preset",
                   help="model of the separate prompt-equality run (GPU preset): the preset's shape or a tiny ViT")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report")
    p.add_argument("--work_dir", type=Path, default=None, help="keep generated data and logs here (default: temp)")
    p.add_argument("--profile", action="store_true", help="cProfile (b) into <work_dir>/timed_b.profile.txt")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return None
    parts = tuple(part.strip() for part in args.only.split(",") if part.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise SystemExit(f"--only {args.only!r}: expected a comma-separated subset of {', '.join(PARTS)}")
    cfg = resolve_config(args)
    keep = args.work_dir is not None
    if args.profile and not keep:
        raise SystemExit("--profile writes <work_dir>/timed_b.profile.txt: pass --work_dir too")
    work = Path(args.work_dir) if keep else Path(tempfile.mkdtemp(prefix="lmpt_bench_"))
    if keep and work.exists() and any(work.iterdir()):
        if not (work / WORK_MARKER).exists():
            raise SystemExit(f"--work_dir {work}: the folder holds files that this script did not write; "
                             f"expected a new or empty folder, or one of an earlier benchmark run")
        shutil.rmtree(work)  # an earlier benchmark's folder: start afresh (empty caches)
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).write_text("written by tools/benchmark_speed.py; deleted by its next run here\n")
    try:
        profile = str(work / "timed_b.profile.txt") if args.profile else None
        report = benchmark(cfg, work, profile=profile, parts=parts)
        report["command"] = "python tools/benchmark_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        report["code"] = code_version()  # the commit measured (and whether tracked files were modified)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    from lmpt.checkpoint import save_json
    save_json(args.out, report)
    print(format_report(report))
    print(f"[bench] report written to {args.out}")
    return report


if __name__ == "__main__":
    main()
