"""Code written for OpenAI's clip keeps working: its error class and ``clip._download``, damaged archives
named as such, the BPE vocabulary checked, and OpenAI's released archive layout."""
import socket
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import clip
from clip import clip as clip_module  # (CoOp-style code does ``from clip import clip``)
from tiny_clip import make_tiny_clip, write_openai_style_archive, write_tiny_clip

# One of OpenAI's download URLs, as OpenAI's clip._MODELS holds them.
VIT_B_16_URL = ("https://openaipublic.azureedge.net/clip/models/"
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")
RN50_URL = "https://openaipublic.azureedge.net/clip/models/x/RN50.pt"  # a URL of that form (placeholder hash)


@pytest.fixture(autouse=True)
def no_env_folder(monkeypatch):
    monkeypatch.delenv("LMPT_PRETRAINED_DIR", raising=False)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("clip tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def same_weights(model, reference):
    ours, theirs = model.state_dict(), reference.state_dict()
    return set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k].to(ours[k].dtype)) for k in ours)


# ---------------------------------------------------------------------------
# A missing checkpoint is both a FileNotFoundError and OpenAI's RuntimeError.

@pytest.mark.parametrize("name", ["ViT-B/16", "nowhere/my-clip.pt"], ids=["released-name", "path"])
def test_missing_checkpoint_is_caught_as_runtime_error_and_as_file_not_found(name, tmp_path):
    name = name if name == "ViT-B/16" else str(tmp_path / name)
    caught = []
    for kind in (RuntimeError, FileNotFoundError):
        try:
            clip.load(name, device="cpu", download_root=str(tmp_path))
        except kind as error:  # code written for OpenAI's clip catches RuntimeError
            caught.append(error)
    assert len(caught) == 2
    assert all(isinstance(e, clip.CheckpointNotFoundError) for e in caught)
    expected = str(tmp_path / "ViT-B-16.pt") if name == "ViT-B/16" else name  # the messages name what was tried
    assert all(expected in str(e) and "nothing is downloaded" in str(e) for e in caught)


# ---------------------------------------------------------------------------
# clip._download for CoOp-style ``torch.jit.load(clip._download(clip._MODELS[name]))``.

def test_download_maps_url_basename_and_models_entry_to_the_local_file(tmp_path, monkeypatch, no_network):
    path = write_tiny_clip(tmp_path / "ViT-B-16.pt", arch="vit")
    for url in (VIT_B_16_URL, "ViT-B-16.pt", clip_module._MODELS["ViT-B/16"], "ViT-B/16"):
        found = clip_module._download(url, str(tmp_path))
        assert isinstance(found, str) and Path(found) == path, url
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path))  # root=None: the folder clip.load uses
    model_path = clip_module._download(clip_module._MODELS["ViT-B/16"])
    assert Path(model_path) == path
    # the CoOp load_clip_to_cpu path: the TorchScript archive, then build_model on its state dict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        archive = torch.jit.load(model_path, map_location="cpu").eval()
    model = clip.build_model(archive.state_dict())
    assert same_weights(model.float(), make_tiny_clip("vit").half())


@pytest.mark.parametrize("url", [clip_module._MODELS["RN50"], RN50_URL], ids=["models-entry", "url"])
def test_download_of_a_missing_file_downloads_nothing_and_says_where_to_put_it(url, tmp_path, no_network):
    with pytest.raises(RuntimeError) as info:
        clip_module._download(url, str(tmp_path))
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert "nothing is downloaded" in message
    assert str(tmp_path / "RN50.pt") in message and str(tmp_path) in message
    assert not (tmp_path / "RN50.pt").exists()


def test_download_of_an_unknown_file_downloads_nothing(tmp_path, no_network):
    (tmp_path / "other.pt").write_bytes(b"")
    with pytest.raises(clip.CheckpointNotFoundError) as info:
        clip_module._download("https://example.com/models/other.pt", str(tmp_path))
    message = str(info.value)
    assert "other.pt" in message and "nothing is downloaded" in message and "ViT-B-16.pt" in message


# ---------------------------------------------------------------------------
# A damaged TorchScript archive reports torch.jit.load's error.

def test_damaged_torchscript_archive_reports_the_jit_error(tmp_path):
    whole = write_openai_style_archive(tmp_path / "whole.pt", make_tiny_clip("vit"))
    damaged = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith("/constants.pkl"):
                target.writestr(info, source.read(info))
    with pytest.raises(clip.CheckpointFormatError) as info:
        clip.load("ViT-B/16", device="cpu", download_root=str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"{damaged}: a damaged TorchScript archive: torch.jit.load fails")
    assert "constants.pkl" in message  # torch.jit.load's reason
    assert "weights_only" not in message and "two options" not in message  # not torch.load's advice


def test_torch_save_archive_of_other_objects_still_reports_torch_load(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": make_tiny_clip("vit").state_dict(), "optimizer": torch.optim.SGD}, path)
    with pytest.raises(clip.CheckpointFormatError, match="torch.load\\(weights_only=True\\) refuses"):
        clip.load(str(path), device="cpu")


# ---------------------------------------------------------------------------
# OpenAI's released layout, a traced CLIP in fp16 with three extra tensors.

def test_openai_style_traced_archive_loads_as_fp32_with_the_fp16_rounded_weights(tmp_path):
    original = make_tiny_clip("vit", seed=6)
    expected = {k: v.half().float() if v.is_floating_point() else v for k, v in original.state_dict().items()}
    write_openai_style_archive(tmp_path / "ViT-B-16.pt", make_tiny_clip("vit", seed=6))
    model, preprocess = clip.load("ViT-B/16", device="cpu", jit=False, download_root=str(tmp_path))
    assert isinstance(model, clip.CLIP) and not model.training
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    state = model.state_dict()
    assert set(state) == set(expected)  # the archive's input_resolution, context_length, vocab_size are no weights
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert model.visual.input_resolution == original.visual.input_resolution
    assert model.context_length == 77 and model.vocab_size == 49408
    assert preprocess.transforms[1].size == (original.visual.input_resolution,) * 2  # the centre crop
