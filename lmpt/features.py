"""Frozen image features, computed once and cached on disk.

The image encoder is frozen in LMPT, CoOp, zero-shot CLIP and the linear probe,
so its output for an image depends only on (checkpoint, image file,
preprocessing, horizontal flip, numeric precision). We decode each image once,
encode it and its mirror image (flipping the tensor, not the file), and store
``[N, 2, E]`` features: view 0 unflipped, view 1 flipped. Training picks one of
the two views per image and epoch, which is exactly a random horizontal flip.

Cache files live in ``<cache_dir>/<key>.pt``; the key hashes everything that
shapes the features, so a changed checkpoint, image, list or preprocessing
misses the cache instead of reading stale features. A truncated or corrupt
cache file is detected (checksum) and rebuilt.
"""
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import save_torch
from .data import DataError, ImageListDataset, build_transform, seed_worker

CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("LMPT_CACHE_DIR", Path(__file__).resolve().parents[1] / ".cache" / "features"))


def file_fingerprint(path):
    """sha256 of a file's bytes, memoised on (path, size, mtime) in a side file."""
    path = Path(path)
    stat = path.stat()
    memo = path.with_name(f".{path.name}.sha256")
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    try:
        saved_stamp, digest = memo.read_text().split("\n")[:2]
        if saved_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        memo.write_text(f"{stamp}\n{digest}\n")
    except OSError:
        pass  # a read-only pretrained/ folder: just hash again next time
    return digest


def cache_key(checkpoint, root, paths, preprocess, resolution, precision):
    """Hash of everything that shapes the features (images by path, size and mtime)."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, file_fingerprint(checkpoint), preprocess, resolution,
                         precision]).encode())
    root = Path(root)
    for p in paths:
        try:
            st = (root / p).stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:32]


def _checksum(tensor):
    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _load_cache(path, key):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob["key"] == key and blob["checksum"] == _checksum(blob["features"]):
            return blob
    except Exception:
        pass
    print(f"[features] cache file {path} is corrupt or stale; rebuilding it")
    return None


@contextmanager
def _threads_beside_workers(device, num_workers):
    """On the CPU, leave the decoding workers their cores: the encoder's threads would stall on them."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu" and num_workers > 0:
        torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - num_workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def encode_images(visual, root, paths, transform, device, batch_size=64, num_workers=0,
                  desc="encoding images", autocast=False):
    """Run the frozen image encoder over a list of images and their mirror images.

    Returns (features [N, 2, E] float32 on the CPU, errors {index: message}) where
    an unreadable image leaves a zero row and an entry in ``errors``.
    """
    dataset = ImageListDataset(root, paths, transform, tolerate_errors=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda", worker_init_fn=seed_worker,
                        persistent_workers=False)
    dtype = visual.conv1.weight.dtype
    features, errors = None, {}
    with _threads_beside_workers(device, num_workers):
        for images, index, error in tqdm(loader, desc=desc, leave=False):
            images = images.to(device, non_blocking=True)
            both = torch.cat([images, images.flip(-1)])  # [2B, 3, H, W]: the views and their mirrors
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
                out = visual(both.to(dtype)).float().cpu()  # [2B, E]
            b = images.shape[0]
            out = torch.stack([out[:b], out[b:]], dim=1)  # [B, 2, E]
            if features is None:
                features = torch.zeros(len(dataset), 2, out.shape[-1])
            features[index] = out
            for i, msg in zip(index.tolist(), error):
                if msg:
                    errors[i] = msg
                    features[i] = 0
    return features, errors


def cached_image_features(clip_model, checkpoint, root, paths, preprocess="lmpt", device="cpu",
                          batch_size=64, num_workers=0, cache_dir=DEFAULT_CACHE_DIR, desc="encoding images",
                          autocast=None):
    """Features [N, 2, E] of ``paths`` (relative to ``root``), from the cache when possible.

    Returns (features, errors) as :func:`encode_images`; a pass with unreadable
    images is cached too, so the report is the same on the next run.
    """
    device = torch.device(device)
    if autocast is None:
        autocast = device.type == "cuda"
    resolution = clip_model.visual.input_resolution
    precision = f"{device.type}-{'bf16' if autocast else str(clip_model.dtype)}"
    key = cache_key(checkpoint, root, paths, preprocess, resolution, precision)
    path = Path(cache_dir) / f"{key}.pt"
    if path.exists():
        blob = _load_cache(path, key)
        if blob is not None:
            return blob["features"], {int(k): v for k, v in blob["errors"].items()}
    transform = build_transform(preprocess, resolution)
    features, errors = encode_images(clip_model.visual, root, paths, transform, device, batch_size,
                                     num_workers, desc=desc, autocast=autocast)
    save_torch(path, {"key": key, "features": features, "errors": errors, "checksum": _checksum(features)})
    return features, errors


def raise_on_bad_images(errors, paths, list_file, skip_bad=False):
    """Refuse unreadable images, listing them all; with ``skip_bad`` return the indices to keep."""
    if not errors:
        return list(range(len(paths)))
    listing = "\n  ".join(errors[i] for i in sorted(errors)[:20])
    more = f"\n  … and {len(errors) - 20} more" if len(errors) > 20 else ""
    if not skip_bad:
        raise DataError(f"{list_file}: {len(errors)} image(s) cannot be read:\n  {listing}{more}\n"
                        f"Fix or remove them, or pass --skip_bad_images to drop them from the run.")
    print(f"[data] {list_file}: dropping {len(errors)} unreadable image(s) (--skip_bad_images):\n  {listing}{more}")
    return [i for i in range(len(paths)) if i not in errors]
