"""Review s21 of the vendored CLIP: OpenAI's error class and ``clip._download``, damaged archives, the BPE
vocabulary check, and parity tests for paths the tiny models do not reach."""
import socket
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import clip  # noqa: E402
from clip import clip as clip_module  # noqa: E402  (CoOp-style code does ``from clip import clip``)
from tiny_clip import make_tiny_clip, write_tiny_clip  # noqa: E402

# One of OpenAI's download URLs, as OpenAI's clip._MODELS holds them.
VIT_B_16_URL = ("https://openaipublic.azureedge.net/clip/models/"
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")


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
# F2: a missing checkpoint is both a FileNotFoundError and OpenAI's RuntimeError.

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
