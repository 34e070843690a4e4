"""OpenAI's ``clip`` API: ``available_models``, ``load``, ``tokenize``; offline, from local files only.

Checkpoints are OpenAI's released files, placed by the user in ``pretrained/`` of
the repository (or the folder given by ``download_root`` or ``$LMPT_PRETRAINED_DIR``).
Nothing is ever downloaded.
"""
import os
import warnings
from pathlib import Path
from typing import List, Union

import torch
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from .checkpoint import read_state_dict, save_checkpoint
from .model import build_model
from .simple_tokenizer import EOT_TOKEN, SOT_TOKEN, SimpleTokenizer

__all__ = ["available_models", "model_file", "load", "tokenize", "save_checkpoint", "CLIP_MEAN", "CLIP_STD"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRETRAINED_DIR = REPO_ROOT / "pretrained"
PRETRAINED_DIR_ENV = "LMPT_PRETRAINED_DIR"

# OpenAI's released model names -> file names in the pretrained folder.
_MODELS = {
    "RN50": "RN50.pt",
    "RN101": "RN101.pt",
    "RN50x4": "RN50x4.pt",
    "RN50x16": "RN50x16.pt",
    "RN50x64": "RN50x64.pt",
    "ViT-B/32": "ViT-B-32.pt",
    "ViT-B/16": "ViT-B-16.pt",
    "ViT-L/14": "ViT-L-14.pt",
    "ViT-L/14@336px": "ViT-L-14-336px.pt",
}

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CheckpointNotFoundError(FileNotFoundError, RuntimeError):
    """No checkpoint file for a model name or path. A FileNotFoundError, and a RuntimeError
    as OpenAI's ``clip.load`` raises for an unknown model, so code written for either catches it."""


def available_models() -> List[str]:
    """Names of OpenAI's released CLIP models."""
    return list(_MODELS)


def model_file(name: str) -> str:
    """The file name of a released model (``ViT-L/14@336px`` -> ``ViT-L-14-336px.pt``) in the pretrained folder."""
    if name not in _MODELS:
        raise ValueError(f"{name!r} is not a released CLIP model; expected one of {', '.join(_MODELS)}")
    return _MODELS[name]


def pretrained_dir(download_root=None) -> Path:
    """Folder for released checkpoints: ``download_root``, else ``$LMPT_PRETRAINED_DIR``, else ``<repo>/pretrained``."""
    if download_root:
        return Path(download_root).expanduser()
    if os.environ.get(PRETRAINED_DIR_ENV):
        return Path(os.environ[PRETRAINED_DIR_ENV]).expanduser()
    return DEFAULT_PRETRAINED_DIR


def checkpoint_path(name: str, download_root=None) -> Path:
    """Path of the checkpoint for a model name or an existing file; CheckpointNotFoundError if absent."""
    if name in _MODELS:
        path = pretrained_dir(download_root) / _MODELS[name]
        if path.is_file():
            return path
        raise CheckpointNotFoundError(
            f"CLIP checkpoint for {name} not found at {path}: expected the file {_MODELS[name]} there. "
            f"The checkpoints are OpenAI's released CLIP weights (https://github.com/openai/CLIP); "
            f"nothing is downloaded, so place {_MODELS[name]} in {path.parent}/ yourself "
            f"(or point download_root / ${PRETRAINED_DIR_ENV} at the folder holding it).")
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise CheckpointNotFoundError(
        f"CLIP checkpoint {name!r} not found: tried the path {path.resolve()}, which is no file, and it is not "
        f"one of the known model names ({', '.join(_MODELS)}; expected files "
        f"{', '.join(_MODELS.values())} in {pretrained_dir(download_root)}/). The checkpoints are OpenAI's "
        f"released CLIP weights, to be placed there by the user; nothing is downloaded.")


def _download(url: str, root: str = None) -> str:
    """Path (str) of the local file for a released model, for code written against OpenAI's
    ``clip._download(clip._MODELS[name])``: ``url`` is one of OpenAI's download URLs, its
    basename, or a file name of ``_MODELS`` (``ViT-B-16.pt``), matched by its file name alone (a
    folder in it is not read); ``root`` picks the folder as ``load``'s ``download_root`` does.
    Nothing is downloaded: a file that is not there raises
    CheckpointNotFoundError saying where to put it.
    """
    if url in _MODELS:
        return str(checkpoint_path(url, root))
    file_name = str(url).split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    names = {file: name for name, file in _MODELS.items()}
    if file_name not in names:
        raise CheckpointNotFoundError(
            f"clip._download({url!r}): not one of OpenAI's released CLIP checkpoints (files "
            f"{', '.join(_MODELS.values())}), and nothing is downloaded; place the file in "
            f"{pretrained_dir(root)}/ and pass its path to clip.load instead.")
    return str(checkpoint_path(names[file_name], root))


def _convert_image_to_rgb(image):
    return image.convert("RGB")


def _transform(n_px: int):
    """CLIP's preprocessing: bicubic resize of the short side, centre crop, RGB, tensor, CLIP mean/std."""
    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        _convert_image_to_rgb,
        ToTensor(),
        Normalize(CLIP_MEAN, CLIP_STD),
    ])


def load(name: str, device: Union[str, torch.device] = "cuda" if torch.cuda.is_available() else "cpu",
         jit: bool = False, download_root: str = None):
    """Load a CLIP model -> (model in eval mode, preprocess for PIL images).

    ``name``: one of ``available_models()`` (a file in the pretrained folder) or a path.
    Reads OpenAI's TorchScript archives (their weights only) and torch.save'd state dicts.
    The weights are fp16 on CUDA only, fp32 on any other device: OpenAI's ``load`` keeps fp16
    on every device but the CPU (``mps`` too). ``jit=True`` is not supported (the archive's
    graph is never run) and falls back to ``jit=False``, with a warning: the Python model has
    no top-level ``input_resolution`` tensor, ``model.visual.input_resolution`` (an int) gives it.
    """
    if jit:
        warnings.warn("clip.load: jit=True is not supported (the TorchScript graph is never run); "
                      "loading the weights into the Python model instead, as with jit=False. It has no "
                      "model.input_resolution tensor: use model.visual.input_resolution (an int)", stacklevel=2)
    path = checkpoint_path(name, download_root)
    model = from_state_dict(read_state_dict(path), device, source=path)
    return model, _transform(model.visual.input_resolution)


def from_state_dict(state_dict, device="cpu", fp16=None, source="state dict"):
    """CLIP in eval mode on ``device`` from a state dict (as ``read_state_dict`` returns it).

    ``fp16`` defaults to OpenAI's choice: fp16 weights on CUDA, fp32 elsewhere. ``source``
    (the checkpoint's path) prefixes the message of a state dict that does not fit.
    """
    if fp16 is None:
        fp16 = torch.device(device).type == "cuda"
    try:
        model = build_model(state_dict, fp16=fp16, device=device)
    except ValueError as error:
        raise type(error)(f"{source}: {error}") from None
    return model.to(device).eval()


_tokenizer_instance = None


def _get_tokenizer() -> SimpleTokenizer:
    global _tokenizer_instance
    if _tokenizer_instance is None:
        _tokenizer_instance = SimpleTokenizer()
    return _tokenizer_instance


def tokenize(texts: Union[str, List[str]], context_length: int = 77, truncate: bool = False) -> torch.IntTensor:
    """Token ids [N, context_length] (int32, zero padded) of a string or a list of strings.

    Each row is ``<|startoftext|> tokens <|endoftext|>``. Too long a text raises
    RuntimeError unless ``truncate=True``, which cuts it and keeps ``<|endoftext|>`` last.
    The dtype is OpenAI's on torch >= 1.8 (torch.int); embedding lookups and indexing take it as it is.
    """
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = _get_tokenizer()
    sot_token = tokenizer.encoder[SOT_TOKEN]
    eot_token = tokenizer.encoder[EOT_TOKEN]
    all_tokens = [[sot_token] + tokenizer.encode(text) + [eot_token] for text in texts]
    result = torch.zeros(len(all_tokens), context_length, dtype=torch.int)  # [N, context_length]
    for i, tokens in enumerate(all_tokens):
        if len(tokens) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {texts[i]} is too long for context length {context_length}")
            tokens = tokens[:context_length]
            tokens[-1] = eot_token
        result[i, :len(tokens)] = torch.tensor(tokens)
    return result


def __getattr__(name):
    # ``_tokenizer``: the SimpleTokenizer instance, created on first access (reads the vocabulary)
    if name == "_tokenizer":
        return _get_tokenizer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
