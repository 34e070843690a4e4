"""Frozen image features, computed once and cached on disk.

The image encoder is frozen in LMPT, CoOp, zero-shot CLIP and the linear probe,
so its output for an image depends only on (checkpoint, image file,
preprocessing, horizontal flip, numeric precision). We decode each image once.
For a training split we encode it and its mirror image (flipping the tensor, not
the file) and store ``[N, 2, E]`` features: view 0 unflipped, view 1 flipped.
Training picks one of the two views per image and epoch, which is exactly a
random horizontal flip. Evaluation never flips, so test and validation splits
store the unflipped view alone, ``[N, 1, E]``, for half the encoder's work.

Cache files live in ``<cache_dir>/<key>.pt``; the key hashes everything that
shapes the features, so a changed checkpoint, image, list, preprocessing or
library version (torch, torchvision, Pillow) misses the cache instead of
reading stale features. Images are known by size, modification and change
times (more than ``make`` looks at); the checkpoint by its sha256 (remembered for its size,
modification and change times, inode and device). A truncated or corrupt
cache file is detected (checksum) and rebuilt. A file's modification time is when a run last wrote or
read it; ``tools/feature_cache.py`` lists the files and removes those unused for some days
(``lmpt/cache_files.py``).
"""
import hashlib
import itertools
import json
import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import PIL
import torch
import torchvision
from torch.utils.data import DataLoader
from tqdm import tqdm

from .cache_files import mark_used, remove_stale_temp_files
from .checkpoint import save_torch
from .data import (BatchNormalize, ImageListDataset, available_cores, build_transform, image_stats,
                   seed_worker)
from .device import autocast_on, precision_name, use_autocast
from .fileid import file_fingerprint, known_facts, remember_facts

CACHE_VERSION = 3  # 2: fp32 weights on CUDA too (1 rounded them to fp16); 3: 16-bit/float greyscale scaled
# The libraries that decode, resize and encode: another version may round differently, so it misses the cache.
LIBRARIES = f"torch {torch.__version__}, torchvision {torchvision.__version__}, pillow {PIL.__version__}"
# $LMPT_CACHE_DIR when set (an empty value is unset: not the current folder), else the repository's .cache/features
DEFAULT_CACHE_DIR = Path(os.environ.get("LMPT_CACHE_DIR") or Path(__file__).resolve().parents[1] / ".cache/features")


def remembered_resolution(checkpoint):
    """The input resolution of a checkpoint if it is on record with its sha256 (an earlier run read the
    file), so that decoding can start before the checkpoint is read; else None."""
    facts = known_facts(checkpoint)
    value = facts.get("image_resolution")
    return value if "sha256" in facts and isinstance(value, int) and value > 0 else None


def remember_resolution(checkpoint, resolution):
    remember_facts(checkpoint, image_resolution=int(resolution))


def cache_key(checkpoint, root, paths, preprocess, resolution, precision, mirrors=True):
    """Hash of everything that shapes the features (images by path, size, modification and change time:
    no tool sets the change time, every write renews it, so an image rewritten under the same size and mtime
    is not the cached one; the transform by its steps' ``repr``). Code that no ``repr`` shows (the encoders,
    decoding) bumps ``CACHE_VERSION`` when it changes what they compute."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, file_fingerprint(checkpoint), preprocess, resolution,
                         repr(build_transform(preprocess, resolution)), precision, mirrors, LIBRARIES]).encode())
    for p, st in zip(paths, image_stats(root, paths)):
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode() if st else
                 f"{p}\0missing\n".encode())
    return h.hexdigest()[:32]


def _checksum(tensor):
    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _load_cache(path, key):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob["key"] == key and blob["checksum"] == _checksum(blob["features"]):
            return blob
    except (PermissionError, MemoryError):
        raise  # not the file's content: rebuilding it would not help
    except FileNotFoundError:  # removed since it was found (tools/feature_cache.py, say): encoded again
        print(f"[features] cache file {path} was removed meanwhile; encoding again")
        return None
    except Exception:  # cut short, damaged, or of another layout: rebuilt
        pass
    print(f"[features] cache file {path} is corrupt or stale; rebuilding it")
    return None


@contextmanager
def _threads_beside_workers(device, num_workers):
    """On the CPU, leave the decoding workers their cores: the encoder's threads would stall on them."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu" and num_workers > 0:
        torch.set_num_threads(max(1, min(before, available_cores() - num_workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


PREFETCH_BYTES = 1 << 30  # decoded images the workers may hold ahead of the encoder, all workers together


def workers_pass_pixels(device):
    """Whether the decoding workers stop at uint8 pixels (normalised by ``BatchNormalize`` on the
    encoder's device): for a GPU encoder, a quarter of the bytes to pass, pin and copy. On the CPU the
    workers normalise, in parallel, beside a main process busy encoding."""
    return torch.device(device).type == "cuda"


def decoding_loader(root, paths, preprocess, resolution, batch_size, num_workers, device, pixels=None):
    """The DataLoader of feature extraction: ``(images [B, 3, r, r], index, error)`` batches in list order,
    unreadable images reported rather than raised, pinned memory for CUDA.

    With ``pixels`` (default: ``workers_pass_pixels(device)``) the batches are uint8 pixels, else
    normalised float32. The workers may decode up to ``PREFETCH_BYTES`` ahead (the whole list when it
    fits), not the DataLoader's default of two batches each: the model is built and CUDA starts while
    they decode, and with the shallow default they would wait for it.
    """
    pixels = workers_pass_pixels(device) if pixels is None else pixels
    transform = build_transform(preprocess, resolution, normalize=not pixels)
    dataset = ImageListDataset(root, paths, transform, tolerate_errors=True)
    depth = {}
    if num_workers > 0:
        round_bytes = batch_size * num_workers * 3 * resolution ** 2 * (1 if pixels else 4)  # a batch per worker
        rounds = min(math.ceil(len(paths) / (batch_size * num_workers)), PREFETCH_BYTES // round_bytes)
        depth["prefetch_factor"] = max(2, rounds)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.device(device).type == "cuda", worker_init_fn=seed_worker, **depth)


def every_batch(batches):
    """``batches`` up to the last one, without asking a DataLoader iterator (which has a length) for one
    more: that request would join its workers first (:func:`close_in_background` does it beside)."""
    return itertools.islice(batches, len(batches)) if hasattr(batches, "__len__") else batches


def decode_pixels(root, paths, preprocess, resolution, batch_size, num_workers, device, desc="decoding images"):
    """Every image of ``paths`` decoded once -> (pixels [N, 3, r, r] uint8 on the CPU, errors {index: message}).

    The preprocessing of the features up to normalisation, which ``BatchNormalize`` finishes on any device,
    bit for bit. For full fine-tuning, whose encoder changes at every step: its epochs take the decoded
    images from memory instead of decoding the JPEGs again. An unreadable image leaves a zero row.
    """
    batches = iter(decoding_loader(root, paths, preprocess, resolution, batch_size, num_workers, device, pixels=True))
    pixels = torch.zeros(len(paths), 3, resolution, resolution, dtype=torch.uint8)  # [N, 3, r, r]
    errors = {}
    for images, index, error in tqdm(every_batch(batches), desc=desc, total=len(batches), leave=False):
        pixels[index] = images
        errors.update((i, msg) for i, msg in zip(index.tolist(), error) if msg)
    if num_workers > 0:
        close_in_background(batches)
    return pixels, errors


def readable_now(root, paths, indices):
    """The paths among ``paths[indices]`` that can be read now. A cached pass keeps its unreadable images by
    the files' size and times (``cache_key``), which a cause outside the file leaves as they were: its folder's
    permissions, a network file system's error."""
    subset = [paths[i] for i in indices]
    dataset = ImageListDataset(root, subset, torchvision.transforms.PILToTensor(), tolerate_errors=True)
    return [path for i, path in enumerate(subset) if not dataset[i][2]]  # [2]: the error message, "" if none


def encode_images(visual, root, paths, preprocess, resolution, batch_size, num_workers, device, autocast=False,
                  mirrors=False, desc="encoding images", batches=None):
    """Decode the images ``paths`` (under ``root``) and run the frozen image encoder ``visual`` over them ->
    (features [N, V, E] float32 on the CPU, errors {index: message}); V = 2 with ``mirrors``, else 1.

    The one decode-and-encode path of the features (``FeatureJob``) and of ``api.score_images``:
    ``decoding_loader``, its uint8 pixels normalised on the device by ``BatchNormalize`` where the workers pass
    pixels (``workers_pass_pixels``), ``encode_batches``, and the workers shut down beside what follows
    (``close_in_background``). ``batches``: an iterator of ``decoding_loader(root, paths, preprocess, resolution,
    batch_size, num_workers, device)`` already started (its workers decoding while the encoder was built);
    default: started here. An unreadable image leaves a zero row and an entry in ``errors``.
    """
    device = torch.device(device)
    if batches is None:
        batches = iter(decoding_loader(root, paths, preprocess, resolution, batch_size, num_workers, device))
    normalize = BatchNormalize(preprocess) if workers_pass_pixels(device) else None
    features, errors = encode_batches(visual, batches, len(paths), device, num_workers, autocast, desc, mirrors,
                                      normalize)
    if num_workers > 0:
        close_in_background(batches)
    return features, errors


class FeatureJob:
    """Features [N, V, E] of one list of images: from the cache, or encoded by :meth:`result`.

    The cache key needs only the checkpoint file and the input resolution, not the model, so
    :meth:`start` can set the loader workers decoding before the encoder is built and moved to
    its device: on a first run, which is decode-bound, that work (and CUDA's start-up) overlaps
    with decoding. :meth:`result` starts them itself if nobody did.
    """

    def __init__(self, checkpoint, root, paths, resolution, preprocess="lmpt", device="cpu", batch_size=64,
                 num_workers=0, cache_dir=DEFAULT_CACHE_DIR, desc="encoding images", autocast=None, mirrors=True):
        self.device = torch.device(device)
        self.autocast = use_autocast(self.device) if autocast is None else autocast
        self.mirrors = mirrors  # False: the unflipped view alone (evaluation)
        precision = precision_name(self.device, self.autocast)
        self.key = cache_key(checkpoint, root, paths, preprocess, resolution, precision, mirrors)
        self.path = Path(cache_dir) / f"{self.key}.pt"
        self.root, self.paths, self.desc = root, paths, desc
        self.preprocess, self.resolution = preprocess, resolution
        self.batch_size, self.num_workers = batch_size, num_workers
        # what the file holds, for `python tools/feature_cache.py` (not part of the key)
        self.about = {"checkpoint": str(checkpoint), "images": len(paths), "image_folder": str(root),
                      "what": desc, "preprocess": preprocess, "resolution": resolution, "precision": precision,
                      "views": 2 if mirrors else 1}
        self.cached = _load_cache(self.path, self.key) if self.path.exists() else None
        if self.cached is not None:
            mark_used(self.path)  # its modification time says when a run last needed it
        if self.cached is not None and self.cached["errors"]:
            readable = readable_now(root, paths, [int(i) for i in self.cached["errors"]])
            if readable:
                print(f"[features] {len(readable)} image(s) unreadable when cached can be read now "
                      f"({readable[0]}{', …' if len(readable) > 1 else ''}); encoding the {len(paths)} images again")
                self.cached = None
        self.batches = None

    def start(self):
        """Start decoding (a no-op when the features are cached or decoding has started)."""
        if self.cached is None and self.batches is None:
            loader = decoding_loader(self.root, self.paths, self.preprocess, self.resolution, self.batch_size,
                                     self.num_workers, self.device)
            self.batches = iter(loader)  # the workers start here
        return self

    def result(self, visual):
        """(features [N, V, E] float32 on the CPU, errors {index: message}); encoded ones are cached.

        V is 2 (the image, its mirror) with ``mirrors``, else 1.

        An unreadable image leaves a zero row and an entry in ``errors``; such a pass is cached
        too, so the next run reports the same images.
        """
        if self.cached is not None:
            return self.cached["features"], {int(k): v for k, v in self.cached["errors"].items()}
        self.start()
        features, errors = encode_images(visual, self.root, self.paths, self.preprocess, self.resolution,
                                         self.batch_size, self.num_workers, self.device, self.autocast, self.mirrors,
                                         self.desc, batches=self.batches)
        self.batches = None
        try:
            save_torch(self.path, {"key": self.key, "features": features, "errors": errors,
                                   "checksum": _checksum(features), "about": self.about})
        except OSError as error:  # a cache saves time only: the features in hand are as good
            print(f"[features] not cached ({error}); going on: the next run encodes these images again")
        try:
            remove_stale_temp_files(self.path.parent)  # those of writes killed a day ago or more
        except OSError:  # a folder that can be written but not listed: housekeeping is optional
            pass
        return features, errors


_CLOSING = []  # threads shutting down the workers of loaders whose batches have all been taken


def close_in_background(batches):
    """Shut down the workers of a DataLoader iterator whose batches have all been taken, in a thread.

    An exhausted DataLoader joins its workers when it is asked for one batch more. Asked in the loop, as a
    ``for`` loop asks, that wait comes before the last forward is launched and before anything after the
    encoding (the logits, the metrics, the next split's decoding) can start. :func:`every_batch` takes
    exactly ``len(batches)`` batches, and the join happens here, beside what follows. Python waits for
    the thread at exit; :func:`wait_for_closing_loaders` waits sooner.
    """
    thread = threading.Thread(target=next, args=(batches, None), name="loader-shutdown")
    thread.start()
    _CLOSING[:] = [t for t in _CLOSING if t.is_alive()] + [thread]  # a long process keeps no finished ones
    return thread


def wait_for_closing_loaders():
    """Wait until every loader handed to :func:`close_in_background` has shut its workers down."""
    while _CLOSING:
        _CLOSING.pop().join()


GPU_FORWARD_IMAGES = 256  # images (views included) per image-encoder forward on a GPU: loader batches are joined


@torch.no_grad()
def encode_batches(visual, batches, n, device, num_workers=0, autocast=False, desc="encoding images",
                   mirrors=True, normalize=None, images_per_forward=None):
    """Run the frozen image encoder over ``(images, index, error)`` batches of n images (and their mirrors).

    ``normalize`` turns a batch on the device into the encoder's input (uint8 batches: ``BatchNormalize``).
    On a GPU, loader batches are joined on the device into forwards of about ``images_per_forward`` images,
    views included (default ``GPU_FORWARD_IMAGES``; elsewhere each batch is one forward), and the features
    stay there until the end, so the loop never waits for the encoder: the next batch is fetched while
    the device works. Of ``batches`` with a length (a DataLoader's), exactly that many are taken: the
    last forward is launched without asking for one more, which would shut the loader's workers down
    first (:func:`close_in_background`). Returns (features [n, V, E] float32 on the CPU, errors {index: message});
    V = 2 with ``mirrors``, else 1.
    """
    dtype = visual.conv1.weight.dtype
    n_views = 2 if mirrors else 1
    if images_per_forward is None:
        images_per_forward = GPU_FORWARD_IMAGES if device.type == "cuda" else 0
    features, errors, pending, pending_views = None, {}, [], 0

    def encode():  # the pending batches, joined: one forward of V·B images
        nonlocal features, pending_views
        images = torch.cat([images for images, _ in pending])  # [B, 3, H, W]
        index = torch.cat([index for _, index in pending])  # [B]
        pending.clear()
        pending_views = 0
        if normalize is not None:
            images = normalize(images)
        views = [images, images.flip(-1)] if mirrors else [images]  # V × [B, 3, H, W]
        with autocast_on(device, autocast):
            out = visual(torch.cat(views).to(dtype)).float()  # [V·B, E]
        out = out.view(n_views, images.shape[0], -1).transpose(0, 1)  # [B, V, E]
        if features is None:
            features = torch.zeros(n, n_views, out.shape[-1], device=out.device)
        features[index] = out

    with _threads_beside_workers(device, num_workers):
        total = len(batches) if hasattr(batches, "__len__") else None
        for images, index, error in tqdm(every_batch(batches), desc=desc, total=total, leave=False):
            pending.append((images.to(device, non_blocking=True), index.to(device, non_blocking=True)))
            errors.update((i, msg) for i, msg in zip(index.tolist(), error) if msg)
            pending_views += len(index) * n_views
            if pending_views >= images_per_forward:
                encode()
        if pending:
            encode()
    if features is None:  # no image at all
        features = torch.zeros(n, n_views, visual.output_dim)
    else:
        features = features.cpu()
        features[list(errors)] = 0  # an unreadable image leaves a zero row
    return features, errors
