"""What every script does before its own work: load and check the dataset's splits (images, labels,
bad images), the frozen CLIP and the cached image features (or decoded pixels), the caption token
embeddings; the training scripts' first steps (``start_training``), the checks of a ``--resume``, and their
last (``finish_run``: results.json, which names its data with ``results_data``)."""
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

import clip

from .backbones import backbone_identity, check_backbone, resolve_backbone
from .checkpoint import check_run_dir, check_writable_dir, load_checkpoint, read_metrics, save_json
from .data import (DataError, check_every_class_trained, check_images_exist, image_stats, line_numbers,
                   listing, load_dataset)
from .device import precision_name, select_device, use_autocast
from .engine import check_best, seed_everything
from .losses import check_negatives, db_params, db_params_text
from .features import DEFAULT_CACHE_DIR, FeatureJob, decode_pixels, remember_resolution, remembered_resolution
from .fileid import file_fingerprint
from .models import freeze
from .paths import absolute
from .report import format_results
from .settings import RUN_SETTINGS, TRAINING_SETTINGS

CAPTION_CHARS = 75  # captions are cut to their first 75 characters, as published


def load_clip_and_features(args, dataset, splits, clip_file, device, names=("train", "test", "val"), beside=None):
    """The frozen CLIP in eval mode, with ``split.features`` filled for the splits ``names``.

    Returns (model, what ``beside(model)`` returned, or None). The first
    run on a dataset is decode-bound, so the work is ordered around the decoding:

    1. start the loader workers of the first split missing from the cache. The cache key
       needs the checkpoint's sha256 and input resolution: when both are on record (beside
       the checkpoint, from any earlier run with it), the workers start at once; else the
       checkpoint is read first, hashing it in a thread, and both are recorded;
    2. read the checkpoint, and build the model on the device (CUDA's start-up included)
       while they decode;
    3. run ``beside(model)`` in a thread while the images are encoded (zero-shot builds its
       text classifier there, lmpt/test.py its prompts), then encode split after split.

    The weights stay fp32; on CUDA with native bf16 the encoders run under bf16
    autocast (``use_autocast``), elsewhere in fp32. Unreadable images are
    refused or dropped (``--skip_bad_images``).
    """
    clip_file = Path(clip_file)  # resolved by the caller (backbones.resolve_backbone or find_backbone)
    cache_dir = Path(args.cache_dir or DEFAULT_CACHE_DIR)
    autocast = use_autocast(device)

    def start_jobs(resolution):
        jobs = {name: FeatureJob(clip_file, dataset.root, splits[name].paths, resolution, args.preprocess, device,
                                 max(args.batch_size, 64), args.num_workers, cache_dir, f"encoding {name} images",
                                 autocast, mirrors=name == "train")
                for name in names if name in splits}
        for job in jobs.values():
            if job.cached is None:
                job.start()
                break
        return jobs

    resolution = remembered_resolution(clip_file)
    jobs = start_jobs(resolution) if resolution is not None else None  # a CLIP file seen before: decode now
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
        hashed = pool.submit(file_fingerprint, clip_file)  # memoised for the cache keys and the run's records
        state_dict = clip.read_state_dict(clip_file)
    hashed.result()  # a file that changed while read, or failed its CRC check, is refused here
    try:
        actual = clip.infer_config(state_dict)["image_resolution"]
    except ValueError as error:  # a state dict that does not fit CLIP's shapes, named as from_state_dict names it
        raise type(error)(f"{clip_file}: {error}") from None
    if actual != resolution:
        if jobs is not None:  # a record that does not fit the file: decode again at the right size
            print(f"[features] {clip_file}: resolution {resolution} on record, but the file has {actual}; "
                  f"decoding again")
        jobs = None  # stops any workers started
        remember_resolution(clip_file, actual)
        jobs = start_jobs(actual)
    clip_model = load_clip(clip_file, device, state_dict)
    del state_dict
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside-encoding") as pool:
        extra = pool.submit(beside, clip_model) if beside is not None else None
        encoded = {name: job.result(clip_model.visual) for name, job in jobs.items()}
        keep_readable(splits, encoded, "features", args.skip_bad_images, dataset.class_names)
        return clip_model, extra.result() if extra is not None else None


def check_finite_weights(model, source):
    """``model``, or ValueError naming ``source`` and the tensors that hold NaN or Inf (a damaged or diverged
    checkpoint: every logit would be NaN, found only after the run started). One device sync."""
    named = [(name, t) for name, t in model.state_dict().items() if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist() if named else []  # [T] bools
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    if bad:
        raise ValueError(f"{source}: NaN or Inf in {len(bad)} weight tensor(s): {', '.join(bad[:5])}"
                         f"{', …' if len(bad) > 5 else ''}; expected finite weights (a damaged checkpoint, or one "
                         f"saved after training diverged)")
    return model


def load_clip(clip_file, device, state_dict=None):
    """The frozen CLIP of a checkpoint file, in eval mode on ``device``, its weights in fp32 on every device (not
    ``clip.load``, which gives fp16 weights on CUDA) and refused where not finite (``check_finite_weights``).

    The one way the scripts and ``lmpt.api`` build CLIP. ``state_dict``: the file's weights when already read
    (``clip.read_state_dict(clip_file)``; ``load_clip_and_features`` reads them while the images decode), else
    read here."""
    clip_file = Path(clip_file)
    if state_dict is None:
        state_dict = clip.read_state_dict(clip_file)
    return check_finite_weights(freeze(clip.from_state_dict(state_dict, device, fp16=False, source=clip_file)),
                                clip_file)


def load_clip_and_pixels(args, dataset, splits, clip_file, device):
    """The CLIP model in eval mode, with ``split.pixels`` [N, 3, r, r] uint8 of every split, decoded once.

    For full fine-tuning, whose image encoder changes at every step, so that frozen features would be
    of no use: its epochs normalise these on the device (``BatchNormalize``) instead of decoding the
    JPEGs again. Unreadable images are refused or dropped (``--skip_bad_images``), as for features.
    """
    clip_model = load_clip(clip_file, device)
    resolution = clip_model.visual.input_resolution
    decoded = {name: decode_pixels(dataset.root, split.paths, args.preprocess, resolution, max(args.batch_size, 64),
                                   args.num_workers, device, f"decoding {name} images")
               for name, split in splits.items()}
    keep_readable(splits, decoded, "pixels", args.skip_bad_images, dataset.class_names)
    return clip_model


def keep_readable(splits, decoded, attribute, skip_bad, class_names):
    """Set ``split.<attribute>`` from ``decoded`` {name: (tensor [N, …], errors {index: message})}, keeping
    the readable images' rows (and labels, paths): the unreadable ones are refused all at once, or with
    ``skip_bad`` dropped, as long as every split stays usable."""
    report_bad_images([(splits[name], errors) for name, (_, errors) in decoded.items() if errors], skip_bad)
    for name, (tensor, errors) in decoded.items():
        split = splits[name]
        kept = [i for i in range(len(split.paths)) if i not in errors]
        index = torch.as_tensor(kept, dtype=torch.long)
        setattr(split, attribute, tensor[index])
        split.labels, split.kept = split.labels[index], kept
        split.paths = [split.paths[i] for i in kept]
        if errors:
            check_usable(split, " after --skip_bad_images dropped its unreadable images", class_names)


def report_bad_images(bad, skip_bad=False, show=20):
    """The unreadable images of every split decoded (``bad``: [(split, {index: message})]), each named with
    its list file and line: refused all at once, or with ``skip_bad`` reported as dropped."""
    if not bad:
        return
    found = []
    for split, errors in bad:
        line_of = line_numbers(split.list_file)
        found += [f"{split.list_file}:{line_of.get(split.paths[i], '?')}: {errors[i]}" for i in sorted(errors)]
    if not skip_bad:
        raise DataError(f"{len(found)} image(s) cannot be read:\n{listing(found, show)}\n"
                        f"Fix or remove them, or pass --skip_bad_images to drop them from the run.")
    print(f"[data] dropping {len(found)} unreadable image(s) (--skip_bad_images):\n{listing(found, show)}")


@dataclass
class Split:
    """One list file's images, labels and frozen features."""
    name: str
    list_file: Path
    paths: list
    labels: torch.Tensor  # [N, C] float 0/1
    features: torch.Tensor = None  # [N, V, E]: unflipped view (and, in the train split, the mirrored one)
    pixels: torch.Tensor = None  # [N, 3, r, r] uint8: the decoded images, for full fine-tuning
    kept: list = field(default_factory=list)  # indices into the list file (bad images dropped)


def load_splits(args, need_val=True, training=True, captions=None, check_dataset=None):
    """The dataset (validated, then ``check_dataset(dataset)``) and its train/test(/val) splits; the image
    files of the splits used (all when ``training``, else the test split alone) are checked to exist, and
    the feature cache's folder to be writable, before any work starts. ``captions``: read the captions
    (default: when ``training``)."""
    check_writable_dir(args.cache_dir or DEFAULT_CACHE_DIR,
                       "--cache_dir" if args.cache_dir or not os.environ.get("LMPT_CACHE_DIR") else "$LMPT_CACHE_DIR")
    dataset = load_dataset(args.dataset, args.data_root, getattr(args, "val_list", None) if need_val else None,
                           training=training, captions=captions)
    if len(dataset.class_names) == 1 and getattr(args, "score", None) == "softmax":
        raise DataError(f"{dataset.root / dataset.spec.labels}: one class; a softmax over one class scores every "
                        f"image 1, so mAP would be the positive rate whatever the model; expected --score sigmoid "
                        f"(or two classes or more)")
    if check_dataset is not None:  # what the flags ask of the dataset, before its thousands of images
        check_dataset(dataset)
    check = ("train", "test", "val") if training else ("test",)
    spec = dataset.spec
    splits = {
        "train": Split("train", dataset.root / spec.train_list, dataset.train_paths,
                       torch.as_tensor(dataset.train_labels, dtype=torch.float32)),
        "test": Split("test", dataset.root / spec.test_list, dataset.test_paths,
                      torch.as_tensor(dataset.test_labels, dtype=torch.float32)),
    }
    if getattr(dataset, "val_paths", None) is not None:
        splits["val"] = Split("val", Path(args.val_list), dataset.val_paths,
                              torch.as_tensor(dataset.val_labels, dtype=torch.float32))
    # every missing image of every split used, before any work
    check_images_exist(dataset.root, [(splits[n].list_file, splits[n].paths) for n in check if n in splits])
    for split in splits.values():
        check_usable(split)
    return dataset, splits


def check_usable(split, when="", class_names=None):
    """Refuse a split without images, an evaluation split without any label (mAP averages over the
    classes with a positive, so it would be undefined), or, given ``class_names``, a training split
    left without a positive of some class; ``when`` says what left it so."""
    if not split.paths:
        raise DataError(f"{split.list_file}: no image left{when}; expected readable images")
    if split.name == "train" and class_names is not None:
        check_every_class_trained(split.labels, class_names, split.list_file, f" left{when}")
    if split.name != "train" and not split.labels.any():
        raise DataError(f"{split.list_file}: none of its {len(split.paths)} images has a label{when}, so mAP is "
                        f"undefined on it; expected '<relative/path.jpg> <id> <id> …' lines with ids")


@torch.no_grad()
def caption_token_embeddings(clip_model, captions):
    """Frozen token embeddings of the captions (before positional embedding) -> [N, 77, D]."""
    tokens = clip.tokenize([c[:CAPTION_CHARS] for c in captions], truncate=True)  # [N, 77]
    embedding = clip_model.token_embedding
    return embedding(tokens.to(embedding.weight.device)).float()


@dataclass
class Training:
    """What a training script has once ``start_training`` has checked and loaded everything."""
    device: torch.device
    clip_file: Path  # the CLIP checkpoint file
    dataset: object  # lmpt.data.LTDataset
    splits: dict  # name -> Split, with cached features (or, for full fine-tuning, decoded pixels)
    clip_model: torch.nn.Module  # frozen, eval mode
    identity: dict = field(default_factory=dict)  # the data as listed and stored (``data_identity``), saved
    db_params: dict = field(default_factory=dict)  # μ and λ of a DB-family loss (``losses.db_params``), or {}

    def run_config(self, args, method, backbone, **settings):
        """The configuration a training run saves with its checkpoints: what names it (method, dataset,
        classes, CLIP), how its features, loss and scores were made, how it trained (``TRAINING_SETTINGS``:
        those of the script's flags), the split that selects its best epoch, and the method's own ``settings``."""
        return {"method": method, "dataset": self.dataset.spec.name, "class_names": self.dataset.class_names,
                **settings, "preprocess": args.preprocess, "score": args.score, "thre": args.thre,
                "loss_function": args.loss_function, **self.identity,
                **({"db_params": self.db_params} if self.db_params else {}),
                **{key: getattr(args, key) for key in TRAINING_SETTINGS if hasattr(args, key)},
                "selection_split": self.select_split.name, "precision": precision_name(self.device),
                **backbone_identity(backbone, self.clip_file)}

    @property
    def select_split(self):
        """The split the best epoch is selected on: val when given, else test (as published)."""
        return self.splits[selection_split_name("val" in self.splits)]


def selection_split_name(val_list):
    """The name of the split a training run selects its best epoch on: ``val`` when it has a --val_list
    (``val_list``: its value, or whether it has one), else ``test``, as published. ``Training.select_split``
    decides by it, and tools/compare_runs.py for a run whose results file does not record its split."""
    return "val" if val_list else "test"


def splits_identity(splits):
    """sha256 of the splits' image lists and labels as listed (before unreadable images are dropped): what
    a resumed run must train and select on again."""
    h = hashlib.sha256()
    for name in sorted(splits):
        split = splits[name]
        h.update(f"{name}\0{len(split.paths)}\0".encode() + "\0".join(split.paths).encode())
        h.update(split.labels.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def images_identity(root, splits):
    """sha256 of the splits' image files by path and size (a copy in another --data_root keeps it; other
    images under the same names almost never do)."""
    h = hashlib.sha256()
    for name in sorted(splits):
        for path, st in zip(splits[name].paths, image_stats(root, splits[name].paths)):
            h.update(f"{name}\0{path}\0{st.st_size if st else -1}\n".encode())
    return h.hexdigest()


def data_identity(root, splits):
    """What a training run records of its data: the splits as listed together (``splits_sha256``, which a
    resume compares) and one by one (``split_sha256``, which lmpt/test.py compares for train and test), and
    the image files (``images_sha256``, which a resume compares)."""
    return {"splits_sha256": splits_identity(splits),
            "split_sha256": {name: splits_identity({name: split}) for name, split in splits.items()},
            "images_sha256": images_identity(root, splits)}


def start_training(args, tag, backbone, methods, captions=False, check_dataset=None, pixels=False):
    """Every training script's first steps, in order, before anything is written: seed, device, the CLIP
    file, the run folder check, the splits (``check_dataset(dataset)`` before their images), the
    classification loss's needs (``losses.check_negatives``), the ``--resume`` check (a run of
    ``methods``), then CLIP and the cached features (with ``pixels``, the decoded images instead: an
    encoder that trains). Says so, before the features, when the test split will select the epoch."""
    seed_everything(args.seed)
    device = select_device(args.device, make_current=True)
    clip_file = resolve_backbone(backbone, args.pretrained_dir)
    check_run_dir(args)
    dataset, splits = load_splits(args, captions=captions, check_dataset=check_dataset)
    check_negatives(args.loss_function, dataset.neg_freq, dataset.class_names, dataset.root / dataset.spec.train_list)
    identity = data_identity(dataset.root, splits)
    loss_params, source = db_params(args.loss_function, dataset.spec.name, getattr(args, "gamma", None),
                                    getattr(args, "neg_scale", None))
    if args.resume:
        saved = check_resumable(args, methods, dataset.class_names, clip_file, identity, device).get("db_params")
        if saved is not None and loss_params:  # the run keeps its own, also where a DB_DEFAULTS row changed since
            now = db_params_text(args.loss_function, loss_params)
            if db_params_text(args.loss_function, saved) != now:
                source = f"the run's own, from its last.pt; {source} would now give {now}"
            else:
                source = "the run's own, from its last.pt"
            loss_params = saved
    read = db_params_text(args.loss_function, loss_params)  # the values the loss reads: μ, λ, both or none
    if read:
        print(f"[{tag}] {args.loss_function}: {read} ({source})")
    for key, value in loss_params.items():
        if hasattr(args, key):  # the script's own flags (lmpt/train.py): args.json records the values used
            setattr(args, key, value)
    if "val" not in splits:
        print(f"[{tag}] no --val_list: selecting the best epoch on the TEST split, as the published code "
              "did; its test mAP is optimistic. Pass --val_list for an honest selection.")
    if pixels:
        clip_model = load_clip_and_pixels(args, dataset, splits, clip_file, device)
    else:
        clip_model, _ = load_clip_and_features(args, dataset, splits, clip_file, device)
    return Training(device, clip_file, dataset, splits, clip_model, identity, loss_params)


def results_data(dataset, data_root):
    """What every results file records of the data it evaluated, so that it names its benchmark without the
    run's args.json: the dataset's name, the absolute data root, the class names (in the order of
    ``per_class_AP``) and the training images of each class (which set the head/medium/tail groups)."""
    return {"dataset": dataset.spec.name, "data_root": str(absolute(data_root)),
            "class_names": list(dataset.class_names), "train_class_freq": [int(n) for n in dataset.train_freq]}


def finish_run(run_dir, results, dataset, data_root, tag):
    """The end of a training run: its ``results.json`` (``results`` with ``results_data``), written atomically,
    then the printed report and the run folder (``[tag] run folder: …``). Returns what was written."""
    results = {**results, **results_data(dataset, data_root)}  # the data evaluated: the file names its benchmark
    save_json(Path(run_dir) / "results.json", results)
    print(format_results(results, dataset.class_names, dataset.train_freq))
    print(f"[{tag}] run folder: {run_dir}")
    return results


def selection_row(split, results):
    """The per-epoch metrics of the selection split, named after it (``val_mAP``, ``val_tail_mAP``, …)."""
    return {f"{split.name}_{k}": results[k] for k in ("mAP", "head_mAP", "medium_mAP", "tail_mAP")}


def check_settings(args, config, last):
    """Refuse a run whose args.json (restored in ``args``) has a setting other than its ``last.pt``
    (``config``, the configuration saved there): an edited args.json would resume on other settings."""
    for key in RUN_SETTINGS:
        if key in config and hasattr(args, key) and getattr(args, key) != config[key]:
            args_file = Path(args.output_dir) / "args.json"
            raise ValueError(f"{args_file}: {key} {getattr(args, key)!r} differs from {config[key]!r} in {last}, "
                             f"the run's own; a resumed run keeps its settings (put {config[key]!r} back in "
                             f"args.json)")


def check_resumable(args, methods, class_names, clip_file, identity, device):
    """``--resume``, before anything is written: the run's ``last.pt`` must be a run this script continues
    (``methods``), on the same classes, image lists and labels, and image files (``data_identity``, for runs
    that saved it), the same CLIP file and settings (``check_settings``), and ``--epochs`` at least its epochs
    done; the rows of those epochs in ``metrics.jsonl`` must read, and ``best.pt`` hold the best epoch
    (``engine.check_best``). A resume on a ``device`` of another precision than the run's is noted.
    Returns its saved configuration."""
    last = Path(args.output_dir) / "last.pt"
    state = load_checkpoint(last, resume=True, mmap=True)  # checked here, read into memory by fit
    config = state["config"]
    if config.get("method") not in methods:
        raise ValueError(f"{last}: a {config.get('method')} run; this script continues {' or '.join(methods)} "
                         f"runs")
    if config.get("class_names") != list(class_names):
        raise ValueError(f"{last}: trained on the classes {config.get('class_names')}, but --dataset "
                         f"{args.dataset} now has {list(class_names)}; a resumed run keeps its classes")
    identity = identity or {}
    splits_sha256, images_sha256 = identity.get("splits_sha256"), identity.get("images_sha256")
    if splits_sha256 is not None and config.get("splits_sha256", splits_sha256) != splits_sha256:
        raise ValueError(f"{last}: trained on other image lists or labels than --dataset {args.dataset} gives now "
                         f"(--data_root {args.data_root}"
                         f"{', --val_list ' + str(args.val_list) if getattr(args, 'val_list', None) else ''}); "
                         f"a resumed run keeps its data")
    if images_sha256 is not None and config.get("images_sha256", images_sha256) != images_sha256:
        raise ValueError(f"{last}: trained on other image files (by size) under the same names than --data_root "
                         f"{args.data_root} holds now (another folder, or files changed since); a resumed run keeps "
                         f"its images: pass the --data_root it trained on (or a copy of it), or train again with "
                         f"--overwrite")
    check_backbone(config, clip_file, last)
    check_settings(args, config, last)
    done = state["epoch"] + 1
    if args.epochs < done:
        raise ValueError(f"--epochs {args.epochs}: the run in {args.output_dir} has trained {done} epochs already; "
                         f"expected --epochs {done} or more")
    read_metrics(Path(args.output_dir) / "metrics.jsonl", done)  # the rows the run keeps (fit drops the others)
    check_best(args.output_dir, state, args.epochs)  # best.pt of last.pt's epoch: fit rewrites it
    note_precision_change(config, device, last)
    return config


def note_precision_change(config, device, last):
    """Say so when a resume on ``device`` computes in another precision than the run's last epochs did (its
    configuration's; runs of earlier versions did not record it): the features are those of the new precision,
    so the metrics will not equal those of an uninterrupted run."""
    before, now = config.get("precision"), precision_name(device)
    if before is not None and before != now:
        print(f"[resume] note: {last} trained in {before}, and this resume on --device {device} runs in {now}: "
              f"its image features and training compute in {now} from here on, so its metrics will differ from an "
              f"uninterrupted run's (resume on a device of {before} to keep its precision)")
