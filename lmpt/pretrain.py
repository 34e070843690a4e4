"""Pretraining the tiny CLIP (the embedded default backbone) on the synthetic corpus.

A ``clip.model.CLIP`` with a ModifiedResNet image tower (layers (1, 1, 1, 1), width 16,
64×64 input, embedding 128) and a 2-layer text transformer (width 128, 2 heads; the
full 49,408-token vocabulary and 77-token context, so ``clip.tokenize`` and ``clip.load``
serve it like any released checkpoint), trained contrastively on ``lmpt.synthetic``'s
corpus (symmetric InfoNCE, learnable temperature, AdamW, warmup + cosine, bf16 autocast).

Two cost cuts leave the model unchanged (docs/EMBEDDED.md): a text batch is cut to its
longest caption (the text tower is causal and pooled at the end-of-text token), and only
the vocabulary rows the corpus uses are trained (copied back into the full table at the end).

Also here: the quick checks the pretraining script prints — zero-shot and BCE-probe
mAP of a tiny CLIP on the synthetic benchmark's test split.
"""
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clip.clip import pretrained_dir as pretrained_folder

from .backbones import TINY_CHECKPOINT  # the file --pretrain_clip tiny names
from .baselines import zero_shot_classifier
from .data import NORMALIZATION
from .fileid import sha256_of_file
from .locks import folder_locked
from .metrics import SCORE_KINDS, average_precision, log_scores, mean_ap
from .templates import TEMPLATES

FAST_CHECKPOINT_NAME = "tiny-clip-synth-fast.pt"  # FAST_SETTINGS: the reduced tiny CLIP of the tests

# The architecture (clip.model.CLIP's arguments) and the training settings.
TINY_CLIP = dict(embed_dim=128, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                 vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=128,
                 transformer_heads=2, transformer_layers=2)
# Width 16 rather than 32, and 3,000 steps of 64: chosen so the whole demo (after the package install) fits in
# 10 minutes on 2 cores (README, "The tiny CLIP"); `tools/pretrain_tiny_clip.py --eval_only --probe`
# prints a checkpoint's figures.
# bf16: None is bf16 autocast where this CPU has oneDNN's bf16 kernels (``native_bf16``), else fp32.
DEFAULT_SETTINGS = dict(steps=3000, batch_size=64, corpus_size=16000, lr=5e-4, weight_decay=0.1,
                        warmup_steps=150, seed=0, bf16=None)
# The reduced setting of the learning test (`tools/demo.py --fast` prints its table). Its features are
# good enough for prompt tuning to beat zero-shot clearly; 1,500 steps of 32 or 48 on 6,000 or 8,000
# images were cheaper but left CoOp within 2 points of zero-shot (README, "The tiny CLIP").
FAST_SETTINGS = dict(DEFAULT_SETTINGS, steps=2000, batch_size=48, corpus_size=10000, warmup_steps=100)

# Normalisations seen in pretraining, by their ``--preprocess`` names (``data.NORMALIZATION``'s keys): CLIP's
# and ImageNet's (the LMPT default). ``images_to_tensor`` takes an index into them.
_PREPROCESS_KINDS = ("clip", "lmpt")
_NORMALISATIONS = tuple(NORMALIZATION[kind] for kind in _PREPROCESS_KINDS)


class PretrainError(ValueError):
    """A bad pretraining setting."""


def native_bf16():
    """Whether this CPU has oneDNN's bf16 kernels (AVX-512 or AMX): there bf16 autocast is faster than fp32 (docs/
    EMBEDDED.md); on a CPU without them (AVX2 only) it is emulated, several times slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolved_bf16(bf16):
    """A ``bf16`` setting as pretraining uses and records it: None is ``native_bf16()``."""
    return native_bf16() if bf16 is None else bool(bf16)


def build_tiny_clip(seed=0):
    """A freshly initialised tiny CLIP (fp32)."""
    from clip.model import CLIP
    torch.manual_seed(seed)
    return CLIP(**TINY_CLIP)


# ---------------------------------------------------------------------------
# Pieces of the training step.

def images_to_tensor(images, normalisation=None, generator=None):
    """uint8 [B, H, W, 3] -> float [B, 3, H, W], normalised per image with CLIP's or ImageNet's stats.

    ``normalisation`` 0 (CLIP) or 1 (ImageNet) for all; None draws one per image.
    """
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255)  # [B, 3, H, W]
    if normalisation is None:
        which = torch.randint(0, 2, (x.shape[0],), generator=generator)  # [B]
    else:
        which = torch.full((x.shape[0],), int(normalisation))
    mean = torch.tensor([m for m, _ in _NORMALISATIONS])[which][:, :, None, None]  # [B, 3, 1, 1]
    std = torch.tensor([s for _, s in _NORMALISATIONS])[which][:, :, None, None]
    return (x - mean) / std


def cut_to_longest(tokens):
    """Token ids [B, 77] -> [B, L], L = the longest caption (end-of-text included) in the batch."""
    length = int(tokens.argmax(dim=-1).max()) + 1
    return tokens[:, :length]


def contrastive_loss(image_features, text_features, logit_scale, content_ids=None):
    """Symmetric InfoNCE; pairs with the same ``content_ids`` count as positives of each other."""
    image_features = F.normalize(image_features.float(), dim=-1)  # [B, E]
    text_features = F.normalize(text_features.float(), dim=-1)  # [B, E]
    logits = logit_scale.exp().clamp(max=100) * image_features @ text_features.t()  # [B, B]
    if content_ids is None:
        target = torch.eye(len(logits))
    else:
        target = (content_ids[:, None] == content_ids[None, :]).float()  # [B, B]
    target = target / target.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


class CompactVocabulary:
    """Train only the token-embedding rows a corpus uses, then write them back.

    The mapping keeps the order of ids, so the end-of-text token (the largest id)
    stays the largest and ``argmax`` still finds it.
    """

    def __init__(self, model, tokens):
        self.model = model
        self.used = torch.unique(tokens)  # [V'] sorted ids
        self.lookup = torch.zeros(model.token_embedding.num_embeddings, dtype=torch.long)  # [V]
        self.lookup[self.used] = torch.arange(len(self.used))
        self.full = model.token_embedding
        model.token_embedding = nn.Embedding.from_pretrained(self.full.weight[self.used].clone(), freeze=False)

    def remap(self, tokens):
        return self.lookup[tokens]

    def restore(self):
        """Copy the trained rows into the full table and put it back; returns the model."""
        self.compact = self.model.token_embedding
        with torch.no_grad():
            self.full.weight[self.used] = self.compact.weight
        self.model.token_embedding = self.full
        return self.model

    def resume(self):
        """Back to the compact table after ``restore`` (to evaluate in the middle of training)."""
        self.model.token_embedding = self.compact


def _parameter_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        small = p.ndim < 2 or "embedding" in name or "logit_scale" in name or ".bn" in name or "ln_" in name
        (no_decay if small else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step, steps, warmup_steps, lr):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def _check_settings(steps, batch_size, corpus_size, lr, warmup_steps):
    for name, value in (("steps", steps), ("batch_size", batch_size), ("corpus_size", corpus_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise PretrainError(f"pretrain_tiny_clip: {name} must be a positive integer, got {value!r}")
    if batch_size < 2 or batch_size > corpus_size:
        raise PretrainError(f"pretrain_tiny_clip: batch_size must be in 2..corpus_size ({corpus_size}), "
                            f"got {batch_size}")
    if not lr > 0 or warmup_steps < 0:
        raise PretrainError(f"pretrain_tiny_clip: expected lr > 0 and warmup_steps >= 0, got {lr}, {warmup_steps}")


# ---------------------------------------------------------------------------
# Pretraining.

def pretrain_tiny_clip(out_path=None, steps=DEFAULT_SETTINGS["steps"], batch_size=DEFAULT_SETTINGS["batch_size"],
                       seed=0, corpus_size=DEFAULT_SETTINGS["corpus_size"], lr=DEFAULT_SETTINGS["lr"],
                       weight_decay=DEFAULT_SETTINGS["weight_decay"], warmup_steps=DEFAULT_SETTINGS["warmup_steps"],
                       bf16=None, log_every=50, log=print, evaluate=None, eval_every=0):
    """Pretrain the tiny CLIP on a fresh synthetic corpus; save it when ``out_path`` is given.

    Saves with ``clip.save_checkpoint(model, out_path, fmt='torchscript')`` (OpenAI's
    released format, fp16 weights) and a metadata json beside it (``<name>.json``). ``bf16``: bf16 autocast (None:
    where the CPU has it natively, ``native_bf16``; the metadata records which).
    Returns ``(model, info)``: the trained fp32 model in eval mode and a dict of the
    settings, losses and timings. ``evaluate(model) -> str`` (given ``eval_every``) is
    logged every ``eval_every`` steps, e.g. a zero-shot mAP.
    """
    import clip
    from lmpt.synthetic import GENERATOR_VERSION, make_corpus

    _check_settings(steps, batch_size, corpus_size, lr, warmup_steps)
    settings = dict(steps=int(steps), batch_size=int(batch_size), corpus_size=int(corpus_size), lr=float(lr),
                    weight_decay=float(weight_decay), warmup_steps=int(warmup_steps), seed=int(seed), bf16=resolved_bf16(bf16))
    t0 = time.time()
    images, captions, contents = make_corpus(corpus_size, seed=seed)  # [N, 64, 64, 3] uint8, [N], [N]
    tokens = clip.tokenize(captions, context_length=TINY_CLIP["context_length"], truncate=True)  # [N, 77]
    # Captions of the same objects in other words are not negatives of each other.
    content_index = {c: i for i, c in enumerate(sorted(set(contents)))}
    content_ids = torch.tensor([content_index[c] for c in contents])  # [N]
    corpus_seconds = time.time() - t0
    log(f"[pretrain] corpus: {corpus_size} images, {len(set(captions))} distinct captions, "
        f"{len(content_index)} distinct contents ({corpus_seconds:.1f}s)")

    model = build_tiny_clip(seed)
    vocabulary = CompactVocabulary(model, tokens)
    tokens = vocabulary.remap(tokens)
    model.train().to(memory_format=torch.channels_last)  # faster CPU convolutions (oneDNN)
    try:
        optimizer = torch.optim.AdamW(_parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                                      fused=True)
    except (RuntimeError, TypeError):  # builds without the fused CPU kernel
        optimizer = torch.optim.AdamW(_parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(corpus_size, generator=generator), 0
    losses, t1 = [], time.time()
    for step in range(steps):
        if cursor + batch_size > corpus_size:
            order, cursor = torch.randperm(corpus_size, generator=generator), 0
        index = order[cursor:cursor + batch_size]  # [B]
        cursor += batch_size
        x = images_to_tensor(images[index.numpy()], generator=generator)  # [B, 3, 64, 64]
        x = x.contiguous(memory_format=torch.channels_last)
        text = cut_to_longest(tokens[index])  # [B, L]
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, warmup_steps, lr)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings["bf16"]):
            image_features = model.encode_image(x)  # [B, E]
            text_features = model.encode_text(text)  # [B, E]
        loss = contrastive_loss(image_features, text_features, model.logit_scale, content_ids[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0 or step + 1 == steps:
            recent = np.mean(losses[-log_every or -1:])
            log(f"[pretrain] step {step + 1}/{steps}  loss {recent:.3f}  "
                f"temperature {1 / model.logit_scale.exp().item():.4f}  {time.time() - t1:.0f}s")
        if evaluate is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            log(f"[pretrain] step {step + 1}: {evaluate(vocabulary.restore().eval())}")
            vocabulary.resume()
            model.train()
    model = vocabulary.restore().eval().to(memory_format=torch.contiguous_format)
    info = dict(settings=settings, architecture=architecture_record(),
                generator_version=GENERATOR_VERSION, first_loss=losses[0], final_loss=float(np.mean(losses[-20:])),
                corpus_seconds=round(corpus_seconds, 1), train_seconds=round(time.time() - t1, 1),
                torch_threads=torch.get_num_threads())
    if out_path is not None:
        save_tiny_clip(model, out_path, info)
    return model, info


def metadata_path(checkpoint_path):
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.stem + ".json")


def save_tiny_clip(model, out_path, info):
    """The checkpoint in OpenAI's format, then its metadata json (so a json means a finished checkpoint)."""
    import clip
    from lmpt.checkpoint import save_json
    out_path = Path(out_path)
    metadata_path(out_path).unlink(missing_ok=True)
    clip.save_checkpoint(model, out_path, fmt="torchscript")
    save_json(metadata_path(out_path), {**info, "sha256": sha256_of_file(out_path)})
    return out_path


def _intact(path, sha256):
    """Whether a cached checkpoint is the file that was saved: its sha256 as recorded, or (a record written
    before sha256s were) an archive that passes its CRCs and reads as a CLIP state dict."""
    if sha256 is not None:
        return sha256_of_file(path) == sha256
    import clip
    try:
        clip.checkpoint.check_archive(path)
        clip.read_state_dict(path)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def ensure_tiny_clip(pretrained_dir=None, name=TINY_CHECKPOINT, log=print, **settings):
    """Path of the tiny CLIP in ``pretrained_dir`` (default: ``$LMPT_PRETRAINED_DIR``, else the repository's
    ``pretrained/``, where ``--pretrain_clip tiny`` looks), pretrained first unless cached with the same settings,
    generator version and architecture.

    ``settings`` override ``DEFAULT_SETTINGS`` (e.g. ``**FAST_SETTINGS``). One process pretrains in a folder at a
    time (``locks.folder_locked``): a second one started meanwhile waits, then uses what the first saved.
    """
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise PretrainError(f"ensure_tiny_clip: unknown setting(s) {sorted(unknown)}; "
                            f"expected some of {sorted(DEFAULT_SETTINGS)}")
    wanted = dict(DEFAULT_SETTINGS, **settings)
    path = pretrained_folder(pretrained_dir) / name
    if cached_tiny_clip(path, wanted, log=lambda line: None):
        return path
    with pretraining_locked(path.parent):
        if not cached_tiny_clip(path, wanted, log):  # one pretrained by that process meanwhile is used
            pretrain_tiny_clip(path, log=log, **wanted)
    return path


def pretraining_locked(folder):
    """``folder`` held while one process pretrains a CLIP into it (``locks.folder_locked``), said when another
    does."""
    return folder_locked(folder, f"[pretrain] waiting for another process pretraining a CLIP in {folder}")


def cached_tiny_clip(path, wanted, log=print):
    """Whether ``path`` holds the tiny CLIP of the settings ``wanted``, intact; why not is logged."""
    from lmpt.synthetic import GENERATOR_VERSION

    try:
        info = json.loads(metadata_path(path).read_text(encoding="utf-8"))
        cached = (path.is_file() and info.get("settings") == _normalised(wanted)
                  and info.get("generator_version") == GENERATOR_VERSION
                  and info.get("architecture") == architecture_record())
        damaged = cached and not _intact(path, info.get("sha256"))
    except (OSError, ValueError, AttributeError):
        cached = damaged = False
    if damaged:
        log(f"[pretrain] the cached tiny CLIP {path} is damaged (not the file that was saved); pretraining it again")
    elif not cached:
        log(f"[pretrain] no cached tiny CLIP with these settings at {path}; pretraining it")
    return cached and not damaged


def architecture_record():
    """``TINY_CLIP`` as its metadata json records it (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_CLIP.items()}


def _normalised(settings):
    types = dict(steps=int, batch_size=int, corpus_size=int, lr=float, weight_decay=float, warmup_steps=int,
                 seed=int, bf16=bool)
    return {k: resolved_bf16(v) if k == "bf16" else types[k](v) for k, v in settings.items()}


# ---------------------------------------------------------------------------
# Quick checks on the synthetic benchmark (zero-shot and a BCE probe).

@torch.no_grad()
def normalised_image_features(model, root, paths, preprocess="clip", batch_size=256):
    """L2-normalised image features [N, E] of the JPEGs at ``root/paths`` (64×64, no resizing), their pixels
    normalised with ``preprocess``'s stats ('clip' or 'lmpt', ``data.NORMALIZATION``'s names). The quick checks'
    own loop, not ``features.encode_images`` (the runs' decode-and-encode path: raw features [N, V, E], errors)."""
    from PIL import Image
    if preprocess not in _PREPROCESS_KINDS:
        raise ValueError(f"normalised_image_features: preprocess={preprocess!r}, expected one of "
                         f"{', '.join(_PREPROCESS_KINDS)}")
    normalisation = _PREPROCESS_KINDS.index(preprocess)  # images_to_tensor's index into _NORMALISATIONS
    features = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([np.asarray(Image.open(Path(root) / p).convert("RGB")) for p in
                          paths[start:start + batch_size]])  # [b, 64, 64, 3]
        features.append(F.normalize(model.encode_image(images_to_tensor(batch, normalisation)).float(), dim=-1))
    return torch.cat(features)  # [N, E]


def mean_average_precision(scores, labels):
    """mAP (a fraction) over the classes with a positive; scores, labels [N, C] (``lmpt.metrics``' AP)."""
    return mean_ap(average_precision(scores, labels))


@torch.no_grad()
def zero_shot_map(model, dataset, image_features=None):
    """Zero-shot mAP on ``dataset``'s test split: softmax over classes of 100·cos to 'a photo of a {name}.'."""
    if image_features is None:
        image_features = normalised_image_features(model, dataset.root, dataset.test_paths)  # [N, E]
    text_features = zero_shot_classifier(model, dataset.class_names, TEMPLATES["single"], "cpu",
                                         progress=False)  # [C, E]
    # not baselines.zero_shot_logits: it normalises the features again, which moves the last bits of unit ones
    logits = 100 * image_features @ text_features.t()  # [N, C]
    return mean_average_precision(log_scores(logits), dataset.test_labels)


def bce_probe_map(model, dataset, epochs=300, lr=1e-2, weight_decay=1e-4, seed=0, score="softmax"):
    """mAP of a logistic-regression probe (BCE, full-batch Adam) on frozen features, trained on the train split:
    a quick check of the features, not ``finetune_clip/fc.py``'s linear probe (DB loss, AdamW, epochs).

    ``score``: 'softmax' (over classes, as the zero-shot scores and the published scripts) or 'sigmoid'.
    """
    if score not in SCORE_KINDS:  # before the work, not after
        raise ValueError(f"bce_probe_map: score={score!r}, expected one of {', '.join(SCORE_KINDS)}")
    train_x = normalised_image_features(model, dataset.root, dataset.train_paths)  # [N_train, E]
    test_x = normalised_image_features(model, dataset.root, dataset.test_paths)  # [N_test, E]
    train_y = torch.as_tensor(dataset.train_labels)  # [N_train, C]
    torch.manual_seed(seed)
    probe = nn.Linear(train_x.shape[1], train_y.shape[1])
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.binary_cross_entropy_with_logits(probe(train_x * 10), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = probe(test_x * 10)  # [N_test, C]
    return mean_average_precision(log_scores(logits, score), dataset.test_labels)
