"""The published LMPT training loop, re-expressed for the speed benchmark.

This is the baseline (a) of ``tools/benchmark_speed.py``: the loop structure of
the published repository, built from our parts (``clip.load``, ``CustomCLIP``,
the DB loss, ``ImageListDataset``) so that both loops learn the same prompts
from the same initial contexts, batches and flip decisions. What it keeps from
the published code, on purpose:

- every epoch decodes the JPEGs again in the main process (``num_workers=0``);
- the frozen image encoder runs on every training and every test batch;
- the caption loss expands caption token embeddings ``[B, 1, T, D]`` and prompts
  ``[1, C, T, D]`` to ``[B, C, T, D]`` and takes ``F.cosine_similarity`` along D;
- the evaluation pass recomputes the text features for every test batch;
- the text encoder and the logits are CoOp's (``published_logits``), written out
  here so that a speed-up of our ``lmpt.models.TextEncoder`` never reaches (a);
- on CUDA, CLIP runs with ``clip.load``'s fp16 weights (``precision="fp16"``).

Nobody should train with this module: ``lmpt.prompt_tuning.train`` computes the same thing.
"""
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import clip

from .backbones import resolve_backbone
from .checkpoint import save_torch
from .data import ImageListDataset, build_transform
from .device import select_device
from .engine import build_optimizer, build_scheduler, epoch_plan, seed_everything, trainable_state
from .losses import build_classification_loss
from .metrics import evaluate_logits
from .models import CustomCLIP, TextEncoder, freeze
from .prepare import CAPTION_CHARS, load_splits

PUBLISHED_METHODS = ("coop", "lmpt")  # what the published loop trains (a new method is ours alone)

PRECISIONS = ("fp16", "fp32")


class PublishedLoopError(ValueError):
    """A configuration the published-loop re-expression does not cover."""


def published_caption_distance(caption_embeddings, prompts, m_ctx):
    """d_ic = 1 − mean_t cos(E_i[t], P_c[t + m]) the published way, through [B, C, T, D] tensors; -> [B, C].

    caption_embeddings [B, L, D], prompts [C, L, D].
    """
    steps = prompts.shape[1] - m_ctx  # T
    b, c, d = caption_embeddings.shape[0], prompts.shape[0], prompts.shape[2]
    cap = caption_embeddings[:, :steps].to(prompts.dtype).unsqueeze(1).expand(b, c, steps, d)  # [B, C, T, D]
    pro = prompts[:, m_ctx:].unsqueeze(0).expand(b, c, steps, d)  # [B, C, T, D]
    cos = F.cosine_similarity(cap, pro, dim=-1)  # [B, C, T]
    return 1 - cos.mean(dim=-1)  # [B, C]


def published_cse_loss(caption_embeddings, prompts, targets, class_freq, margin, gamma, m_ctx):
    """The softmargin class-specific embedding loss (SPEC §7) on the published distance; a scalar.

    Δ_c = Δ (min n / n_c)^{1/4}, w_c = n_c^-γ / Σ n^-γ, ℓ_ic = d_ic (y=1) or max(0, Δ_c − d_ic) (y=0),
    L = mean_i Σ_c w_c ℓ_ic — the formula of ``lmpt.losses.CSELoss('softmargin')``, written out again here:
    the benchmark's same-prompts check compares the two implementations, so this loop does not call ours.
    """
    d = published_caption_distance(caption_embeddings, prompts, m_ctx)  # [B, C]
    n = torch.as_tensor(class_freq, dtype=d.dtype, device=d.device)  # [C]
    margins = margin * (n.min() / n) ** 0.25  # [C]
    weights = n ** (-gamma)
    weights = weights / weights.sum()  # [C]
    y = targets.to(d.dtype)
    per_pair = y * d + (1 - y) * torch.clamp(margins[None, :] - d, min=0)  # [B, C]
    return (per_pair * weights[None, :]).sum(dim=1).mean()


class PublishedTextEncoder(TextEncoder):
    """CoOp's TextEncoder as published: all 77 positions through CLIP's text transformer, in the model's dtype."""

    def __init__(self, clip_model):
        super().__init__(clip_model)
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts.type(self.dtype) + self.positional_embedding.type(self.dtype)  # [C, 77, D]
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # NLD -> LND -> NLD
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0], device=x.device), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


def published_logits(image_features, text_features, logit_scale):
    """CoOp's CustomCLIP.forward after the encoders: logit_scale.exp() · cos, in the model's dtype; [B, C]."""
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)  # [B, E]
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)  # [C, E]
    return logit_scale.exp() * image_features @ text_features.t()


def load_published_clip(backbone, pretrained_dir, device, precision):
    """``clip.load`` as the published code called it: fp16 weights on CUDA unless ``precision='fp32'``."""
    if precision not in PRECISIONS:
        raise PublishedLoopError(f"precision {precision!r}: expected one of {PRECISIONS}")
    model, _ = clip.load(str(resolve_backbone(backbone, pretrained_dir)), device=device, jit=False)
    if precision == "fp32":
        model = model.float()
    elif device.type != "cuda":
        raise PublishedLoopError("precision 'fp16' needs a CUDA device (clip.load gives fp32 weights on the CPU)")
    return freeze(model)


def train_published(args, precision=None, plan_seed=None, log=print):
    """Run the published loop with the settings of ``lmpt.train.parse_args(argv)``.

    ``precision``: 'fp16' (default on CUDA, as published) or 'fp32' (default on the CPU).
    ``plan_seed``: seed of ``epoch_plan`` (default ``args.seed``: the batches and flips of our loop).
    Returns a dict: ``init_ctx``, ``ctx`` (final contexts, CPU), ``mAP`` per epoch,
    ``setup_seconds``, ``train_seconds`` and ``eval_seconds`` per epoch.
    """
    t_start = time.perf_counter()
    if args.training_method not in PUBLISHED_METHODS:
        raise PublishedLoopError(f"--training_method {args.training_method!r}: the published loop covers "
                                 f"{' and '.join(PUBLISHED_METHODS)}")
    caption_loss = args.training_method == "lmpt"  # the class-specific embedding loss
    if caption_loss and args.cseloss != "softmargin":
        raise PublishedLoopError(f"--cseloss {args.cseloss!r}: the published loop is written for softmargin only")
    seed_everything(args.seed)
    device = select_device(args.device)
    precision = precision or ("fp16" if device.type == "cuda" else "fp32")
    plan_seed = args.seed if plan_seed is None else plan_seed
    dataset, splits = load_splits(args, need_val=False)
    clip_model = load_published_clip(args.pretrain_clip, args.pretrained_dir, device, precision)
    train_split, test_split = splits["train"], splits["test"]
    train_freq = dataset.train_freq

    torch.manual_seed(args.seed)  # the same initial contexts as lmpt.prompt_tuning.train
    model = CustomCLIP(dataset.class_names, clip_model, n_ctx=args.n_ctx, ctx_init=args.ctx_init,
                       csc=args.csc, class_token_position=args.class_token_position).to(device)
    init_ctx = model.prompt_learner.ctx.detach().cpu().clone()
    text_encoder = PublishedTextEncoder(clip_model)
    tokenized_prompts = model.prompt_learner.tokenized_prompts  # [C, 77]

    def forward(images, flip=None):  # [B, 3, H, W] -> (logits [B, C], prompts [C, 77, D])
        if flip is not None:
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        image_features = model.image_encoder(images.type(clip_model.dtype))  # [B, E], frozen, run every batch
        prompts = model.prompt_learner()  # [C, 77, D]
        text_features = text_encoder(prompts, tokenized_prompts)  # [C, E], every batch
        return published_logits(image_features, text_features, clip_model.logit_scale), prompts

    cls_loss = build_classification_loss(args.loss_function, train_freq, dataset.neg_freq,
                                         dataset=dataset.spec.name, gamma=args.gamma,
                                         neg_scale=args.neg_scale).to(device)
    optimizer = build_optimizer(args.optimizer, model.prompt_learner.parameters(), args.lr)
    scheduler = build_scheduler(optimizer)
    transform = build_transform(args.preprocess, clip_model.visual.input_resolution)
    train_set = ImageListDataset(dataset.root, train_split.paths, transform)
    test_set = ImageListDataset(dataset.root, test_split.paths, transform)
    train_labels = train_split.labels.to(device)  # [N, C]
    run_dir = Path(args.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {"init_ctx": init_ctx, "mAP": [], "train_seconds": [], "eval_seconds": [], "precision": precision,
           "setup_seconds": time.perf_counter() - t_start}
    best = -float("inf")

    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        batches, flips = epoch_plan(plan_seed, epoch, len(train_set), args.batch_size)
        loader = DataLoader(train_set, batch_sampler=[b.tolist() for b in batches], num_workers=0)
        for images, index in loader:
            logits, prompts = forward(images.to(device), flips[index].to(device).bool())  # [B, C]
            targets = train_labels[index.to(device)]  # [B, C]
            loss = cls_loss(logits.float(), targets)
            if caption_loss:
                captions = [dataset.captions[i][:CAPTION_CHARS] for i in index.tolist()]
                tokens = clip.tokenize(captions, truncate=True).to(device)  # [B, 77]
                caption_embeddings = clip_model.token_embedding(tokens)  # [B, 77, D], every batch
                loss_cse = published_cse_loss(caption_embeddings, prompts, targets, train_freq,
                                              args.cse_margin, args.cse_gamma, args.m_ctx)
                loss = args.lam * loss + (1 - args.lam) * loss_cse
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        t1 = time.perf_counter()

        model.eval()
        logits = []
        with torch.no_grad():
            for images, _ in DataLoader(test_set, batch_size=args.batch_size, shuffle=False, num_workers=0):
                logits.append(forward(images.to(device))[0].float())  # text re-encoded per batch
        m_ap = evaluate_logits(torch.cat(logits), test_split.labels, train_freq, args.thre, args.score)["mAP"]
        scheduler.step(m_ap)
        if m_ap > best:
            best = m_ap
            save_torch(run_dir / "best.pt", {"model": trainable_state(model), "epoch": epoch})
        t2 = time.perf_counter()
        out["mAP"].append(m_ap)
        out["train_seconds"].append(t1 - t0)
        out["eval_seconds"].append(t2 - t1)
        log(f"[published] epoch {epoch + 1}/{args.epochs} mAP {m_ap:.2f} train {t1 - t0:.1f}s eval {t2 - t1:.1f}s")
    out["ctx"] = model.prompt_learner.ctx.detach().cpu().clone()
    return out
