"""LMPT and CoOp: train class-specific prompts on a frozen CLIP, and evaluate them.

``train(args)`` is what ``lmpt/train.py`` runs; ``evaluate_checkpoint_prompts`` is the prompt runs' part of
``lmpt/test.py`` (``lmpt.evaluation``). Training runs only the prompt learner and the text
encoder: image features come from the cache (see ``lmpt.features``), caption
token embeddings are computed once, and evaluation encodes the class prompts
once per pass.
"""
import torch

from .checkpoint import load_checkpoint, start_run_dir
from .device import autocast_on, load_kernels, use_autocast
from .engine import (build_optimizer, build_scheduler, check_finite, checkpoint_results, fit, load_trainable_state,
                     run_results)
from .interrupts import sigterm_as_interrupt
from .losses import build_classification_loss, build_cse_loss
from .methods import CAPTION_METHODS, PROMPT_METHODS
from .metrics import evaluate_logits
from .models import CustomCLIP, check_prompt_length
from .prepare import caption_token_embeddings, finish_run, load_clip_and_features, selection_row, start_training

PROMPT_KEYS = ("n_ctx", "ctx_init", "csc", "class_token_position")


def prompt_text_features(model, device):
    """Normalised class text features [C, E] of the model's prompts, encoded once, without gradient."""
    with torch.no_grad(), autocast_on(device):
        return model.text_features()


def evaluate_prompts(model, split, train_class_freq, thre, score, device, text=None, topk=None):
    """Metrics of the prompts on a split's unflipped features; ``text``: their text features [C, E] if
    already encoded (by default they are encoded here, once for the whole split); ``topk``: k of the top-k
    metrics, if any."""
    text = prompt_text_features(model, device) if text is None else text
    logits = prompt_logits(model, split.features[:, 0].to(device), text, device)  # [N, C]
    check_finite(logits, f"the logits on the {split.name} split")
    return evaluate_logits(logits, split.labels, train_class_freq, thre, score, topk=topk), logits


def prompt_logits(model, image_features, text, device):
    """The evaluation's logits [N, C] of image features [N, E] and the prompts' text features [C, E]."""
    with torch.no_grad(), autocast_on(device):
        return model.logits(image_features, text)


def train(args):
    if args.training_method not in PROMPT_METHODS:
        raise ValueError(f"--training_method {args.training_method!r}: implemented methods are {PROMPT_METHODS}")
    start = start_training(args, "train", args.pretrain_clip, (args.training_method,),
                           captions=args.training_method in CAPTION_METHODS,  # CoOp needs no captions
                           check_dataset=lambda d: check_prompt_length(d.class_names, args.n_ctx, args.ctx_init))
    device, dataset, clip_model = start.device, start.dataset, start.clip_model
    train_split, test_split, select_split = start.splits["train"], start.splits["test"], start.select_split
    train_freq = dataset.train_freq

    torch.manual_seed(args.seed)  # the contexts' initialisation depends on the seed alone
    model = CustomCLIP(dataset.class_names, clip_model, n_ctx=args.n_ctx, ctx_init=args.ctx_init,
                       csc=args.csc, class_token_position=args.class_token_position).to(device)
    cls_loss = build_classification_loss(args.loss_function, train_freq, dataset.neg_freq,
                                         **start.db_params).to(device)  # μ and λ as start_training resolved them
    use_cse = args.training_method in CAPTION_METHODS
    if use_cse:
        cse_loss = build_cse_loss(args.cseloss, train_freq, args.cse_margin, args.cse_gamma, args.m_ctx).to(device)
        kept_captions = [dataset.captions[i] for i in train_split.kept]
        captions = caption_token_embeddings(clip_model, kept_captions).to(device)  # [N, 77, D]
    features = train_split.features.to(device)  # [N, 2, E]
    labels = train_split.labels.to(device)  # [N, C]
    autocast = use_autocast(device)

    def batch_loss(index, flips, epoch, step):
        index, flips = index.to(device), flips.to(device)
        with autocast_on(device, autocast):
            prompts = model.prompt_learner()  # [C, 77, D]
            logits = model.logits(features[index, flips], model.text_features(prompts))  # [B, C]
        check_finite(logits.detach(), "the logits", epoch, step)
        loss_cls = cls_loss(logits, labels[index])  # fp32 logits (CustomCLIP.logits)
        if not use_cse:
            return loss_cls, {"cls_loss": loss_cls.item()}
        loss_cse = cse_loss(captions[index], prompts.float(), labels[index])
        loss = args.lam * loss_cls + (1 - args.lam) * loss_cse
        return loss, {"cls_loss": loss_cls.item(), "cse_loss": loss_cse.item()}

    def evaluate():
        results, _ = evaluate_prompts(model, select_split, train_freq, args.thre, args.score, device)
        return results["mAP"], selection_row(select_split, results)

    config = start.run_config(args, args.training_method, args.pretrain_clip,
                              **{k: getattr(args, k) for k in PROMPT_KEYS}, m_ctx=args.m_ctx)
    optimizer = build_optimizer(args.optimizer, model.prompt_learner.parameters(), args.lr)
    scheduler = build_scheduler(optimizer)
    run_dir = start_run_dir(args)  # everything is built: an old run is replaced only now (--overwrite)
    with sigterm_as_interrupt():  # for callers of train() from Python; train.py's run_resumable has one already
        best = fit(model, batch_loss, evaluate, optimizer, scheduler, run_dir, args.epochs, args.batch_size,
                   len(train_split.paths), args.seed, config, resume=args.resume, desc=args.training_method,
                   selection_split=select_split.name)

    results = final_evaluation(model, run_dir / "best.pt", test_split, train_freq, args.thre, args.score, device)
    return finish_run(run_dir, run_results(results, config, best, select_split.name), dataset, args.data_root,
                      "train")


def restore_prompts(model, state, checkpoint_path, device):
    """Load a checkpoint's prompts into ``model``; returns their text features [C, E]."""
    load_trainable_state(model, state["model"], checkpoint_path)
    return prompt_text_features(model, device)


def final_evaluation(model, checkpoint_path, split, train_freq, thre, score, device, restored=None, topk=None):
    """Metrics of a checkpoint's prompts on a split. ``restored``: (the checkpoint, its text features)
    when ``model`` already holds its prompts (``restore_prompts``); ``topk``: k of the top-k metrics, if any."""
    if restored is None:
        state = load_checkpoint(checkpoint_path)
        restored = state, restore_prompts(model, state, checkpoint_path, device)
    state, text = restored
    results, _ = evaluate_prompts(model, split, train_freq, thre, score, device, text, topk)
    return checkpoint_results(results, checkpoint_path, state, thre, score)


def prompt_model(config, clip_model):
    """A ``CustomCLIP`` on ``clip_model`` (and its device) with the prompt learner of a run's configuration
    (``PROMPT_KEYS``); ``restore_prompts`` loads the trained contexts."""
    return CustomCLIP(config["class_names"], clip_model, **{k: config[k] for k in PROMPT_KEYS})


def evaluate_checkpoint_prompts(args, state, checkpoint_path, dataset, splits, clip_file, device, topk=None):
    """``final_evaluation`` of a checkpoint's prompts on the test split, restored while its images are encoded
    (``topk``: k of the top-k metrics, if any)."""
    config, rows = state["config"], len(splits["test"].paths)

    def restore(clip_model):  # in a thread, while the test images are decoded and encoded
        # built on clip_model's device already; no .to(): it would touch the image encoder in use meanwhile
        model = prompt_model(config, clip_model)
        text = restore_prompts(model, state, checkpoint_path, device)
        load_kernels(lambda features: prompt_logits(model, features, text, device), rows, text.shape[1], device)
        return model, text
    _, (model, text) = load_clip_and_features(args, dataset, splits, clip_file, device, names=("test",),
                                              beside=restore)
    return final_evaluation(model, checkpoint_path, splits["test"], dataset.train_freq,
                            args.thre, args.score, device, restored=(state, text), topk=topk)
