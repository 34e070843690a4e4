"""Vendored CLIP: OpenAI's ``clip`` package API, offline, with a shape-inferring model builder.

``clip.load(name_or_path)``, ``clip.tokenize(texts)``, ``clip.available_models()``,
``clip.save_checkpoint(model, path)``; ``clip._tokenizer`` is created on first use.
"""
from . import clip as _clip_module
from .checkpoint import read_state_dict, save_checkpoint
from .clip import (CLIP_MEAN, CLIP_STD, CheckpointNotFoundError, _transform, available_models, checkpoint_path,
                   from_state_dict, load, model_file, pretrained_dir, tokenize)
from .model import CLIP, CheckpointFormatError, build_model, convert_weights, infer_config
from .simple_tokenizer import SimpleTokenizer, VocabularyFormatError, VocabularyNotFoundError

__all__ = ["available_models", "model_file", "load", "tokenize", "save_checkpoint", "read_state_dict",
           "from_state_dict", "build_model", "convert_weights", "infer_config", "CLIP", "CLIP_MEAN", "CLIP_STD",
           "SimpleTokenizer", "CheckpointFormatError", "CheckpointNotFoundError", "VocabularyNotFoundError",
           "VocabularyFormatError", "checkpoint_path", "pretrained_dir"]


def __getattr__(name):
    if name == "_tokenizer":
        return _clip_module._get_tokenizer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
