"""Tiny random CLIP models in OpenAI's format, for tests (a helper module, not a test file).

The full 49,408-token vocabulary and 77-token context are kept so that
``clip.tokenize`` and ``clip.load`` serve these models like released ones.
Widths are multiples of 64 where CLIP derives heads as width // 64.
"""
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import clip  # noqa: E402
from clip.model import CLIP  # noqa: E402

ARCHS = ("vit", "resnet")


def tiny_clip_config(arch):
    """Small ``CLIP(**kwargs)`` for ``arch`` in {"vit", "resnet"}."""
    text = dict(context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)
    if arch == "vit":
        # 2 vision heads (width 128 // 64), 4 x 4 patches of 8 pixels
        return dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8, **text)
    if arch == "resnet":
        # resolution must be divisible by 32: 64 gives a 2 x 2 grid for the attention pool (8 heads of 64)
        return dict(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                    vision_patch_size=None, **text)
    raise ValueError(f"tiny_clip_config: arch={arch!r}, expected one of {ARCHS}")


def make_tiny_clip(arch, seed=0, **overrides):
    """A random fp32 CLIP in eval mode (``overrides`` replace entries of ``tiny_clip_config(arch)``).
    Batch norms get random affine parameters and running statistics (OpenAI's init zeroes bn3,
    which would hide the residual branches)."""
    config = {**tiny_clip_config(arch), **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**config)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0.0, 0.1)
                    module.running_mean.normal_(0.0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def write_tiny_clip(path, arch="vit", fmt="torchscript", seed=0):
    """Write ``make_tiny_clip(arch, seed)`` with ``clip.save_checkpoint`` -> Path."""
    return Path(clip.save_checkpoint(make_tiny_clip(arch, seed), path, fmt=fmt))


def write_openai_style_archive(path, model=None):
    """Write ``model`` as OpenAI's released files are: the traced CLIP (encode_image, encode_text) in fp16,
    with ``input_resolution``, ``context_length`` and ``vocab_size`` tensors -> Path."""
    model = make_tiny_clip("vit") if model is None else model
    resolution = model.visual.input_resolution
    del model.context_length, model.vocab_size  # ints on the Python model, tensors in the archive
    model.register_buffer("input_resolution", torch.tensor(resolution))
    model.register_buffer("context_length", torch.tensor(77))
    model.register_buffer("vocab_size", torch.tensor(49408))
    inputs = {"encode_image": torch.randn(1, 3, resolution, resolution), "encode_text": clip.tokenize(["a dog"])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings (encode_text cuts at the end-of-text token)
        traced = torch.jit.trace_module(model, inputs, check_trace=False).half()
        torch.jit.save(traced, str(path))
    return Path(path)
