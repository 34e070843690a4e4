"""The frozen-feature cache: exact features, keyed by what shapes them, decoding started before the model."""
import hashlib
import json
import multiprocessing
import os
import shutil
import threading
from argparse import Namespace
from types import SimpleNamespace

import pytest
import torch
import torchvision
from PIL import Image

import clip
from conftest import write_lmpt_dataset
from lmpt import features as features_module
from lmpt import fileid as fileid_module
from lmpt import prepare
from lmpt.data import build_transform, load_dataset
from lmpt.device import load_kernels, precision_name, use_autocast
from lmpt.features import FeatureJob
from lmpt.fileid import file_fingerprint


@pytest.fixture()
def data(tmp_path):
    write_lmpt_dataset(tmp_path / "data", n_train=8, n_test=6)
    return load_dataset("voc-lt", tmp_path / "data")


def job(checkpoint, data, cache, paths=None, resolution=None, preprocess="lmpt", workers=0, mirrors=True):
    resolution = resolution or clip.load(str(checkpoint), device="cpu")[0].visual.input_resolution
    return FeatureJob(checkpoint, data.root, paths or data.test_paths, resolution, preprocess, "cpu", batch_size=4,
                      num_workers=workers, cache_dir=cache, mirrors=mirrors)


def test_features_are_the_encoder_on_each_image_and_its_mirror(tmp_path, data, tiny_vit_checkpoint):
    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    features, errors = job(tiny_vit_checkpoint, data, tmp_path / "cache", workers=2).result(model.visual)
    assert errors == {} and features.shape == (len(data.test_paths), 2, model.visual.output_dim)
    transform = build_transform("lmpt", model.visual.input_resolution)
    with torch.no_grad():
        for i, path in enumerate(data.test_paths):
            image = transform(Image.open(data.root / path).convert("RGB"))[None]  # [1, 3, H, W]
            torch.testing.assert_close(features[i, 0], model.visual(image)[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(features[i, 1], model.visual(image.flip(-1))[0], rtol=1e-5, atol=1e-5)
    unflipped, _ = job(tiny_vit_checkpoint, data, tmp_path / "cache", mirrors=False).result(model.visual)
    assert unflipped.shape == (len(data.test_paths), 1, model.visual.output_dim)  # evaluation: view 0 alone
    torch.testing.assert_close(unflipped, features[:, :1], rtol=1e-5, atol=1e-5)


def test_workers_pass_uint8_pixels_and_decode_ahead_up_to_the_prefetch_budget(tmp_path, data, monkeypatch):
    paths = data.test_paths * 5  # 30 images
    loader = features_module.decoding_loader(data.root, paths, "lmpt", 16, 4, 2, "cpu", pixels=True)  # as for CUDA
    images, index, error = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16) and index.tolist() == [0, 1, 2, 3]
    floats, _, _ = next(iter(features_module.decoding_loader(data.root, paths, "lmpt", 16, 4, 2, "cpu")))
    assert floats.dtype == torch.float32 and torch.equal(floats, features_module.BatchNormalize("lmpt")(images))
    assert loader.prefetch_factor == 4  # ceil(30 / (4 images × 2 workers)): the whole list may be decoded ahead
    monkeypatch.setattr(features_module, "PREFETCH_BYTES", 3 * (4 * 2 * 3 * 16 * 16))  # room for 3 rounds of uint8
    assert features_module.decoding_loader(data.root, paths, "lmpt", 16, 4, 2, "cpu", True).prefetch_factor == 3
    monkeypatch.setattr(features_module, "PREFETCH_BYTES", 3 * (4 * 2 * 3 * 16 * 16) * 4)  # or of float32
    assert features_module.decoding_loader(data.root, paths, "lmpt", 16, 4, 2, "cpu").prefetch_factor == 3
    monkeypatch.setattr(features_module, "PREFETCH_BYTES", 1)
    assert features_module.decoding_loader(data.root, paths, "lmpt", 16, 4, 2, "cpu").prefetch_factor == 2
    assert features_module.decoding_loader(data.root, paths, "lmpt", 16, 4, 0, "cpu").prefetch_factor is None


def test_gpu_style_joined_forwards_give_the_same_features(tmp_path, data, tiny_vit_checkpoint):
    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    resolution = model.visual.input_resolution
    (data.root / data.test_paths[2]).write_bytes(b"not a jpeg")  # an unreadable image: a zero row and a message
    sizes = []
    model.visual.register_forward_hook(lambda module, inputs, output: sizes.append(inputs[0].shape[0]))
    normalize = features_module.BatchNormalize("lmpt")
    runs = {}
    for images_per_forward in (0, 10):  # each loader batch (4 images) a forward; batches joined up to 10 views
        sizes.clear()
        loader = features_module.decoding_loader(data.root, data.test_paths, "lmpt", resolution, 4, 0, "cpu",
                                                 pixels=True)
        runs[images_per_forward] = features_module.encode_batches(model.visual, loader, len(data.test_paths),
                                                              torch.device("cpu"), normalize=normalize,
                                                              images_per_forward=images_per_forward)
        runs[images_per_forward] += (list(sizes),)
    (each, errors, each_sizes), (joined, joined_errors, joined_sizes) = runs[0], runs[10]
    assert each_sizes == [8, 4] and joined_sizes == [12]  # 6 images and their mirrors
    torch.testing.assert_close(joined, each, rtol=1e-5, atol=1e-6)
    assert list(errors) == list(joined_errors) == [2] and data.test_paths[2] in errors[2]
    assert joined[2].abs().sum() == 0 and joined[1].abs().sum() > 0


def test_the_loader_is_not_asked_past_its_last_batch_and_its_workers_are_joined_beside(tmp_path, data,
                                                                                      tiny_vit_checkpoint, monkeypatch):
    """An exhausted DataLoader joins its workers when asked for one batch more: the last (joined) forward is
    launched before that, and the join runs in a thread of its own, beside what follows the encoding."""
    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    events = []
    model.visual.register_forward_hook(lambda module, inputs, output: events.append("forward"))
    iterator_class = torch.utils.data.dataloader._MultiProcessingDataLoaderIter
    shutdown = iterator_class._shutdown_workers

    def recorded_shutdown(self):
        if not self._shutdown:
            events.append(("shutdown", threading.current_thread().name))
        return shutdown(self)
    monkeypatch.setattr(iterator_class, "_shutdown_workers", recorded_shutdown)
    resolution = model.visual.input_resolution
    batches = iter(features_module.decoding_loader(data.root, data.test_paths, "lmpt", resolution, 4, 2, "cpu",
                                                   pixels=True))  # 6 images: 2 batches, joined into one forward
    joined, errors = features_module.encode_batches(model.visual, batches, len(data.test_paths), torch.device("cpu"),
                                                    num_workers=2, mirrors=False, images_per_forward=100,
                                                    normalize=features_module.BatchNormalize("lmpt"))
    assert events == ["forward"] and errors == {}  # launched, and the workers not joined yet
    features_module.close_in_background(batches).join()
    assert events == ["forward", ("shutdown", "loader-shutdown")]
    # a feature job does the same: its features are the 0-worker ones, its workers joined in the thread
    events.clear()
    features, _ = job(tiny_vit_checkpoint, data, tmp_path / "cache", workers=2, mirrors=False).result(model.visual)
    features_module.wait_for_closing_loaders()
    assert events[-1] == ("shutdown", "loader-shutdown") and events.count("forward") == 2  # 2 batches of 4 images
    assert not features_module._CLOSING and not multiprocessing.active_children()
    reference, _ = job(tiny_vit_checkpoint, data, tmp_path / "cache0", mirrors=False).result(model.visual)
    assert torch.equal(features, reference)
    torch.testing.assert_close(joined, features, rtol=1e-5, atol=1e-6)  # one forward of 6 against 4 + 2


def test_second_job_reads_the_cache_without_decoding(tmp_path, data, tiny_vit_checkpoint):
    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    first, _ = job(tiny_vit_checkpoint, data, tmp_path / "cache").result(model.visual)
    again = job(tiny_vit_checkpoint, data, tmp_path / "cache")
    assert again.cached is not None and again.start().batches is None  # nothing to decode
    assert torch.equal(again.result(None)[0], first)


def test_cache_key_changes_with_everything_that_shapes_the_features(tmp_path, data, tiny_vit_checkpoint):
    cache = tmp_path / "cache"
    base = job(tiny_vit_checkpoint, data, cache).key
    resolution = clip.load(str(tiny_vit_checkpoint), device="cpu")[0].visual.input_resolution
    assert job(tiny_vit_checkpoint, data, cache).key == base  # same inputs, same key
    other_checkpoint = tmp_path / "copy.pt"
    shutil.copy(tiny_vit_checkpoint, other_checkpoint)
    assert job(other_checkpoint, data, cache).key == base  # the bytes count, not the file name
    with open(other_checkpoint, "ab") as f:
        f.write(b"\0")
    keys = {
        "checkpoint bytes": job(other_checkpoint, data, cache, resolution=resolution).key,
        "preprocessing": job(tiny_vit_checkpoint, data, cache, preprocess="clip").key,
        "resolution": job(tiny_vit_checkpoint, data, cache, resolution=2 * resolution).key,
        "image list": job(tiny_vit_checkpoint, data, cache, paths=data.test_paths[:-1]).key,
        "mirrors": job(tiny_vit_checkpoint, data, cache, mirrors=False).key,
    }
    with pytest.MonkeyPatch.context() as patch:  # another torch / torchvision / Pillow release
        patch.setattr(features_module, "LIBRARIES", features_module.LIBRARIES + " (another)")
        keys["library versions"] = job(tiny_vit_checkpoint, data, cache).key
    with pytest.MonkeyPatch.context() as patch:  # an edited resize step (bicubic squash for lmpt)
        import lmpt.data
        patch.setattr(lmpt.data, "_resize_steps", lambda kind, r: [
            torchvision.transforms.Resize((r, r), interpolation=torchvision.transforms.InterpolationMode.BICUBIC)])
        keys["transform steps"] = job(tiny_vit_checkpoint, data, cache).key
    image = data.root / data.test_paths[0]
    size = image.stat().st_size
    raw = bytearray(image.read_bytes())  # the same size, other bytes, a new mtime (as make sees a new file)
    raw[size // 2] ^= 0xFF
    image.write_bytes(bytes(raw))
    os.utime(image, ns=(2, 2))
    assert image.stat().st_size == size
    keys["image file, same size"] = job(tiny_vit_checkpoint, data, cache).key
    Image.new("RGB", (40, 48), (1, 2, 3)).save(image, quality=90)  # same name, new content
    os.utime(image, ns=(1, 1))
    keys["image file"] = job(tiny_vit_checkpoint, data, cache).key
    assert len({base, *keys.values()}) == 1 + len(keys), keys


def test_fingerprint_is_the_sha256_and_is_hashed_once_per_process(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    path.write_bytes(os.urandom(3 << 20))
    assert file_fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(b"changed")  # new size and mtime: hashed again
    assert file_fingerprint(path) == hashlib.sha256(b"changed").hexdigest()
    opened = []
    real_open = open
    monkeypatch.setattr(fileid_module, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k),
                        raising=False)
    side = path.with_name(f".{path.name}.lmpt.json")
    saved = json.loads(side.read_text())
    side.unlink()  # no side file (a read-only folder): the process remembers
    assert file_fingerprint(path) == hashlib.sha256(b"changed").hexdigest()
    assert opened == []
    monkeypatch.setattr(fileid_module, "_FACTS", {})  # a new process: the side file remembers
    side.write_text(json.dumps(saved))
    assert file_fingerprint(path) == hashlib.sha256(b"changed").hexdigest() and opened == []
    os.utime(path, ns=(1, 1))  # touched: the side file no longer vouches for the bytes
    assert file_fingerprint(path) == hashlib.sha256(b"changed").hexdigest() and opened == [path]
    other = path.with_name("other")
    other.write_bytes(b"another")  # another file of the same size and mtime put in its place
    os.utime(other, ns=(1, 1))
    other.replace(path)
    assert file_fingerprint(path) == hashlib.sha256(b"another").hexdigest() and opened == [path, path]


def test_a_file_written_over_keeping_its_size_and_mtime_is_hashed_again(tmp_path):
    # cp -p of a same-size file with the same mtime keeps the inode: only the change time tells.
    path = tmp_path / "weights.pt"
    path.write_bytes(b"first")
    os.utime(path, ns=(10**9, 10**9))
    assert file_fingerprint(path) == hashlib.sha256(b"first").hexdigest()
    inode = path.stat().st_ino
    with open(path, "r+b") as f:
        f.write(b"other")
    os.utime(path, ns=(10**9, 10**9))
    assert path.stat().st_ino == inode and path.stat().st_size == 5
    assert file_fingerprint(path) == hashlib.sha256(b"other").hexdigest()


def test_a_file_replaced_while_it_is_hashed_is_remembered_as_the_new_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"old checkpoint")
    replacements = [b"new checkpoint"]
    real_open = open

    def open_and_replace(*args, **kwargs):  # the first read opens the old file; then an export replaces it
        handle = real_open(*args, **kwargs)
        if replacements:
            fresh = tmp_path / "fresh.pt"
            fresh.write_bytes(replacements.pop())
            fresh.replace(path)  # atomically, as mv or an atomic save does
        return handle
    monkeypatch.setattr(fileid_module, "open", open_and_replace, raising=False)
    assert file_fingerprint(path) == hashlib.sha256(b"new checkpoint").hexdigest()
    monkeypatch.setattr(fileid_module, "_FACTS", {})  # a later run: the side file speaks for the new file
    monkeypatch.setattr(fileid_module, "open", None, raising=False)  # and nothing is read
    assert file_fingerprint(path) == hashlib.sha256(b"new checkpoint").hexdigest()

    class Growing:  # a copy that never finishes: the file grows while it is read
        def __init__(self, handle):
            self.handle, self.grown = handle, False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def fileno(self):
            return self.handle.fileno()

        def read(self, size):
            if not self.grown:  # once each time it is opened
                with real_open(path, "ab") as f:
                    f.write(b"more")
                self.grown = True
            return self.handle.read(size)
    open_and_append = lambda *args, **kwargs: Growing(real_open(*args, **kwargs))  # noqa: E731
    path.write_bytes(b"growing")
    monkeypatch.setattr(fileid_module, "open", open_and_append, raising=False)
    with pytest.raises(OSError, match="weights.pt: the file changed while it was read, 3 times"):
        file_fingerprint(path)


def test_an_empty_image_list_has_empty_features(tmp_path, data, tiny_vit_checkpoint):
    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    features, errors = FeatureJob(tiny_vit_checkpoint, data.root, [], model.visual.input_resolution,
                                  cache_dir=tmp_path / "cache").result(model.visual)
    assert features.shape == (0, 2, model.visual.output_dim) and errors == {}


def test_decoding_starts_before_the_model_is_built(tmp_path, data, tiny_vit_checkpoint, monkeypatch, capsys):
    checkpoint = tmp_path / "clip.pt"  # a file of its own: nothing on record for it yet
    shutil.copy(tiny_vit_checkpoint, checkpoint)
    events = []
    real_start, real_build, real_read = FeatureJob.start, clip.from_state_dict, clip.read_state_dict

    def start(self):
        events.append(("start", self.desc, self.resolution))
        return real_start(self)

    def build(*args, **kwargs):
        events.append(("build",))
        return real_build(*args, **kwargs)

    def read(*args, **kwargs):
        events.append(("read",))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(FeatureJob, "start", start)
    monkeypatch.setattr(prepare.clip, "from_state_dict", build)
    monkeypatch.setattr(prepare.clip, "read_state_dict", read)
    cache = tmp_path / "cache"
    args = Namespace(dataset="voc-lt", data_root=tmp_path / "data", val_list=None, pretrained_dir=tmp_path,
                     preprocess="lmpt", batch_size=8, num_workers=2, cache_dir=cache, skip_bad_images=False)
    dataset, _ = prepare.load_splits(args, need_val=False)
    resolution = clip.load(str(checkpoint), device="cpu")[0].visual.input_resolution
    train = ("start", "encoding train images", resolution)

    def load(beside=None):
        events.clear()
        _, splits = prepare.load_splits(args, need_val=False)
        model, extra = prepare.load_clip_and_features(args, dataset, splits, str(checkpoint), "cpu",
                                                         names=("train", "test"), beside=beside)
        assert splits["train"].features.shape[:2] == (8, 2) and splits["test"].features.shape[:2] == (6, 1)
        return model, extra, splits

    # A checkpoint never seen: read it (for its resolution), then decode while the model is built.
    model, extra, first = load(beside=lambda m: m.dtype)
    assert events[:3] == [("read",), train, ("build",)]
    assert extra == torch.float32 and not model.training
    side = checkpoint.with_name(f".{checkpoint.name}.lmpt.json")
    facts = json.loads(side.read_text())["facts"]  # on record beside the checkpoint, for any cache folder
    assert facts == {"sha256": file_fingerprint(checkpoint), "image_resolution": resolution}
    # Seen before (another cache folder, resolution on record): decoding starts before the checkpoint is read.
    monkeypatch.setattr(fileid_module, "_FACTS", {})  # a new process
    args.cache_dir = tmp_path / "other_cache"
    _, _, again = load()
    assert events[:3] == [train, ("read",), ("build",)]
    assert torch.equal(again["train"].features, first["train"].features)
    load()  # everything cached now: nothing is decoded
    assert events == [("read",), ("build",)]
    # A record that does not fit the file: its workers are dropped, the right size is decoded, the record fixed.
    features_module.remember_resolution(checkpoint, 2 * resolution)
    shutil.rmtree(args.cache_dir)
    _, _, fixed = load()
    assert events[:4] == [("start", "encoding train images", 2 * resolution), ("read",), train, ("build",)]
    assert "resolution " + str(2 * resolution) in capsys.readouterr().out
    assert torch.equal(fixed["test"].features, first["test"].features)
    assert features_module.remembered_resolution(checkpoint) == resolution


def test_bf16_autocast_only_on_gpus_with_native_bf16(tmp_path, data, tiny_vit_checkpoint, monkeypatch):
    """bf16 autocast on a GPU of compute capability 8.0 (Ampere) and newer, the named one's: on a machine with an
    Ampere cuda:0 and an older cuda:1, --device cuda:1 runs in fp32 (torch.cuda.is_bf16_supported would ask
    cuda:0, the current device)."""
    keys, majors = {}, {0: 8, 1: 7}
    monkeypatch.setattr(torch.version, "hip", None)
    assert use_autocast("cuda") is False  # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(major=majors[index]))
    for current in (0, 1):  # --device cuda: the current GPU's
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        native = current == 0
        assert use_autocast("cuda") is native
        assert precision_name("cuda") == ("cuda-bf16" if native else "cuda-fp32")
        assert precision_name("cpu") == "cpu-fp32"
        assert use_autocast(f"cuda:{current}") is native and use_autocast(f"cuda:{1 - current}") is not native
        assert use_autocast("cpu") is False
        cuda_job = FeatureJob(tiny_vit_checkpoint, data.root, data.test_paths, 32, device="cuda",
                              cache_dir=tmp_path)
        assert cuda_job.autocast is native
        keys[native] = cuda_job.key
    assert keys[True] != keys[False]  # bf16 and fp32 features never share a cache file
    monkeypatch.setattr(torch.version, "hip", "6.0")  # ROCm: bf16 on every AMD GPU
    assert use_autocast("cuda:1") is True


def test_kernels_are_loaded_by_one_run_on_zeros_on_cuda_only(monkeypatch):
    calls = []
    load_kernels(calls.append, 5, 3, "cpu")  # nothing to load on the CPU
    assert calls == []
    zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *shape, device=None: zeros(*shape))  # no GPU here: on the CPU
    load_kernels(calls.append, 5, 3, "cuda")
    assert len(calls) == 1 and torch.equal(calls[0], zeros(5, 3))


def test_a_cached_unreadable_image_that_can_be_read_now_is_encoded_again(tmp_path, data, tiny_vit_checkpoint, capsys,
                                                                       monkeypatch):
    """An image unreadable for a cause outside its file (its folder's permissions, a network file system's
    error) is the same file, under the same cache key, once it can be read: here, an open that failed once."""
    model, _ = clip.load(str(tiny_vit_checkpoint), device="cpu")
    good, _ = job(tiny_vit_checkpoint, data, tmp_path / "good").result(model.visual)
    image = data.root / data.test_paths[2]
    open_image = features_module.ImageListDataset._open

    def failing_open(self, path):
        if path == image:
            raise PermissionError(13, "Permission denied", str(path))
        return open_image(self, path)
    with monkeypatch.context() as patch:
        patch.setattr(features_module.ImageListDataset, "_open", failing_open)
        first = job(tiny_vit_checkpoint, data, tmp_path / "cache")
        features, errors = first.result(model.visual)
    assert list(errors) == [2] and not features[2].any()
    again = job(tiny_vit_checkpoint, data, tmp_path / "cache")
    assert again.key == first.key  # the same cache entry...
    assert again.cached is None  # ...not reused: its unreadable image can be read now
    assert "1 image(s) unreadable when cached can be read now" in capsys.readouterr().out
    features, errors = again.result(model.visual)
    assert errors == {} and torch.equal(features, good)
    still = job(tiny_vit_checkpoint, data, tmp_path / "cache")
    assert still.cached is not None and still.cached["errors"] == {}  # the new pass is the cached one


def test_a_cache_file_that_cannot_be_read_for_permission_is_not_called_corrupt(tmp_path, monkeypatch, capsys):
    path = tmp_path / "cache.pt"
    path.write_bytes(b"not a cache")
    assert features_module._load_cache(path, "key") is None  # damaged: rebuilt
    assert "corrupt or stale; rebuilding it" in capsys.readouterr().out

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(features_module.torch, "load", refused)
    with pytest.raises(PermissionError):
        features_module._load_cache(path, "key")
    assert "corrupt" not in capsys.readouterr().out
