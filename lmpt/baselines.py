"""The baselines shipped beside LMPT (SPEC §9): zero-shot CLIP and fine-tuned CLIP.

- ``zero_shot(args)``: class embedding = normalised mean of the normalised
  embeddings of the prompt templates; logits 100·cos (deviation: the published
  script joined all templates into one string cut to 76 characters).
- ``finetune(args)``: a linear layer on the visual embedding (its width read from
  the model), trained with ``--loss_function`` (the DB loss by default) and AdamW; ``--from_scratch``
  also unfreezes the visual encoder, and trains and evaluates on images decoded once, kept in memory as
  uint8 and normalised on the device at each use, rather than on frozen features.
"""
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import clip

from .backbones import backbone_identity, resolve_backbone
from .checkpoint import (check_evaluation_dir, check_results_file, load_checkpoint, note_replaced_results,
                         read_saved_json, release_run_dir, replace_results, save_args, save_json, start_run_dir)
from .data import BatchNormalize, dataset_name, label_line
from .device import autocast_on, load_kernels, select_device, use_autocast
from .engine import (build_optimizer, build_scheduler, check_finite, checkpoint_results, fit, load_trainable_state,
                     run_results, seed_everything)
from .interrupts import sigterm_as_interrupt
from .losses import build_classification_loss
from .methods import FULL_FINETUNE, ZERO_SHOT, finetune_method
from .metrics import evaluate_logits
from .models import CONTEXT_LENGTH, class_text, full_precision, longest_prompts
from .prepare import (finish_run, load_clip_and_features, load_clip_and_pixels, load_splits, results_data,
                      selection_row, start_training)
from .report import format_results
from .templates import TEMPLATES, check_templates


def check_class_count(dataset, nb_classes):
    if nb_classes is not None and nb_classes != len(dataset.class_names):
        labels = dataset.root / dataset.spec.labels
        raise ValueError(f"--nb_classes {nb_classes} does not match {labels}, which lists "
                         f"{len(dataset.class_names)} classes")


def check_template_lengths(dataset, templates, flag):
    """Refuse (before any image is decoded) a class name whose prompt with some template exceeds CLIP's
    context of CONTEXT_LENGTH tokens (``models.prompt_tokens``: the start and end of text included)."""
    texts = [[t.format(class_text(name)) for t in templates] for name in dataset.class_names]  # [C][T]
    too_long = [row for row in longest_prompts(dataset.class_names, texts) if row[1] > CONTEXT_LENGTH]
    if too_long:
        name, tokens, i = too_long[0]
        template = templates[i]
        labels = dataset.root / dataset.spec.labels
        more = f" (and {len(too_long) - 1} more class name(s))" if len(too_long) > 1 else ""
        raise ValueError(f"{labels}:{label_line(labels, name)}: class name {name!r} gives {tokens} tokens with "
                         f"template {template!r} ({flag}){more}, the start and end of text included; expected at most "
                         f"CLIP's {CONTEXT_LENGTH}: shorten the name")


@torch.no_grad()
def zero_shot_classifier(clip_model, class_names, templates, device, chunk=512, progress=True):
    """Normalised class embeddings [C, E]: the mean of each class's normalised template embeddings.

    All C·T prompts are tokenised together, ordered by length and encoded in chunks of ``chunk``: the text
    encoder stops at a chunk's last end-of-text token, so each chunk runs over about its own prompts' length
    rather than the longest prompt's.
    """
    check_templates(templates, "zero_shot_classifier's templates")
    texts = [t.format(class_text(name)) for name in class_names for t in templates]
    tokens = clip.tokenize(texts)  # [C·T, 77]
    order = tokens.argmax(-1).argsort()  # [C·T] by end-of-text position (its id is the vocabulary's largest)
    embeddings = torch.empty(len(texts), clip_model.text_projection.shape[1], device=device)  # [C·T, E]
    for start in tqdm(range(0, len(tokens), chunk), desc="encoding class prompts", leave=False,
                      disable=not progress):
        index = order[start:start + chunk]
        with autocast_on(device):
            emb = clip_model.encode_text(tokens[index].to(device)).float()  # [chunk, E]
        embeddings[index.to(device)] = F.normalize(emb, dim=-1)
    per_template = embeddings.view(len(class_names), len(templates), -1)  # [C, T, E]
    return F.normalize(per_template.mean(1), dim=-1)  # [C, E]


def zero_shot_logits(image_features, weights):
    """100·cos [N, C] of image features [N, E] with the classifier's normalised class embeddings [C, E]."""
    return 100.0 * F.normalize(image_features, dim=-1) @ weights.t()


# what a zero-shot result depends on (images: how many of the test list were scored; dataset and data_root: not in
# the results of earlier versions, whose args.json note_replaced reads)
REPLACED_KEYS = ("backbone_sha256", "templates", "preprocess", "score", "thre", "images", "dataset", "data_root")


def note_replaced(run_dir, results, args):
    """Say when an evaluation replaces earlier results in its folder, with the mAP they held and what differs
    (the CLIP file, templates, preprocessing, scores, threshold, images scored; the dataset and data root of
    its args.json)."""
    old_args = read_saved_json(run_dir / "args.json") or {}
    also_differ = []
    if "dataset" in old_args and dataset_name(old_args["dataset"]) != dataset_name(args.dataset):
        also_differ.append("dataset")
    if isinstance(old_args.get("data_root"), str) and Path(old_args["data_root"]) != Path(args.data_root):
        also_differ.append("data_root")  # both absolute (zero_shot_clip/test.py records it so)
    note_replaced_results(run_dir / "results.json", results, REPLACED_KEYS, "zero-shot", also_differ=also_differ)


def zero_shot(args):
    """Zero-shot CLIP on the test split: its results in ``--output``, else in the run folder ``--output_dir``,
    which it holds (``check_evaluation_dir``) from its start until they are written."""
    output = getattr(args, "output", None)  # a results file of its own: the run folder is not written
    if output is not None:
        return _zero_shot(args, None, check_results_file(
            output, own=None, hint="such as zero-shot_thre0.3.json (without --output, the run folder's results.json)"))
    try:
        return _zero_shot(args, check_evaluation_dir(args.output_dir), None)
    finally:
        release_run_dir(args.output_dir)


def _zero_shot(args, run_dir, output):
    """``zero_shot`` into ``run_dir`` (claimed) or the results file ``output`` (checked)."""
    seed_everything(args.seed)
    device = select_device(args.device, make_current=True)
    clip_file = resolve_backbone(args.pretrain_clip_path, args.pretrained_dir)
    templates = TEMPLATES[args.templates]

    def check_dataset(dataset):  # what the flags ask of the dataset, before its images
        check_class_count(dataset, args.nb_classes)
        check_template_lengths(dataset, templates, f"--templates {args.templates}")
    dataset, splits = load_splits(args, need_val=False, training=False, check_dataset=check_dataset)
    if args.topk > len(dataset.class_names):
        print(f"[zero-shot] note: --topk {args.topk} is more than the {len(dataset.class_names)} classes of "
              f"--dataset {args.dataset}: the top-{args.topk} metrics predict every class")
    test_split = splits["test"]
    rows = len(test_split.paths)

    def classifier(model):
        """The classifier (C × T prompts for T templates: tokenising and the text encoder) and the logits'
        kernels, in a thread while the loader workers decode the test images and the main thread runs the
        image encoder."""
        weights = zero_shot_classifier(model, dataset.class_names, templates, device, progress=False)
        load_kernels(lambda features: zero_shot_logits(features, weights), rows, weights.shape[1], device)
        return weights
    _, weights = load_clip_and_features(args, dataset, splits, clip_file, device, names=("test",),
                                        beside=classifier)  # weights: [C, E]
    logits = zero_shot_logits(test_split.features[:, 0].to(device), weights)  # [N, C]
    train_freq = dataset.train_freq
    results = evaluate_logits(logits, test_split.labels, train_freq, args.thre, args.score, topk=args.topk)
    results.update({"method": ZERO_SHOT, "templates": args.templates, "score": args.score, "thre": args.thre,
                    "preprocess": args.preprocess, **backbone_identity(args.pretrain_clip_path, clip_file),
                    **results_data(dataset, args.data_root)})
    if output is None:
        run_dir.mkdir(parents=True, exist_ok=True)  # claimed folders are made; a file system without locks too
        note_replaced(run_dir, results, args)
        save_args(run_dir, args)
        save_json(run_dir / "results.json", results)
    else:
        replace_results(output, results, REPLACED_KEYS, "zero-shot")  # the keys the earlier file holds
    print(format_results(results, dataset.class_names, train_freq))
    print(f"[zero-shot] run folder: {run_dir}" if output is None else f"[zero-shot] results written to {output}")
    return results


class LinearProbe(nn.Module):
    """A linear classifier on CLIP's visual embedding, optionally with the encoder trainable (its weights must
    then be fp32: the fp16 CLIP ``clip.load`` gives on CUDA is refused, as fp16 weights would train without an
    fp32 copy). A frozen fp16 encoder is fed images in its precision."""

    def __init__(self, visual, embed_dim, num_classes, train_encoder=False):
        super().__init__()
        wrong = train_encoder and sorted({str(p.dtype) for p in visual.parameters() if p.dtype != torch.float32})
        if wrong:
            raise ValueError(f"LinearProbe(train_encoder=True): the image encoder has {', '.join(wrong)} weights; "
                             f"training needs fp32 ones: call .float() on the CLIP model first (clip.load gives fp16 "
                             f"on CUDA; clip.from_state_dict(..., fp16=False) gives fp32 on any device)")
        self.visual = visual
        self.fc = nn.Linear(embed_dim, num_classes)  # [E] -> [C]
        for p in visual.parameters():
            p.requires_grad_(train_encoder)
        self.train_encoder = train_encoder

    def train(self, mode=True):
        super().train(mode)
        if not self.train_encoder:
            self.visual.eval()
        return self

    def forward(self, features):
        with full_precision(features):  # fp32 logits, also under the encoder's autocast
            return self.fc(features.float())

    def forward_images(self, images):
        # images: [B, 3, r, r] float; cast to the encoder's weights' dtype (a no-op but for a frozen fp16 encoder)
        return self.forward(self.visual(images.to(self.visual.conv1.weight.dtype)))


def feature_inputs(model, train_split, device):
    """The linear probe's inputs, the cached features: (logits of training images ``index`` [B], each
    flipped or not as ``flips`` [B] says -> [B, C]; logits of a split's unflipped images -> [N, C])."""
    features = train_split.features.to(device)  # [N, 2, E]: unflipped, flipped

    def train_logits(index, flips):
        return model(features[index.to(device), flips.to(device)])

    return train_logits, lambda split: unflipped_logits(model, split, device)


def unflipped_logits(model, split, device):
    """The linear probe's logits [N, C] of a split's cached unflipped features."""
    return model(split.features[:, 0].to(device))


def pixel_inputs(model, train_split, preprocess, batch_size, device, autocast):
    """Full fine-tuning's inputs, the decoded images (the encoder trains): the same two functions as
    ``feature_inputs``, over ``split.pixels`` (uint8, normalised on the device by ``BatchNormalize``)."""
    normalize = BatchNormalize(preprocess)  # the decoded uint8 pixels -> the encoder's input, on the device

    def images(split, index):
        """The images ``index`` of a split, ready for the encoder: [B, 3, r, r] float32 on the device."""
        return normalize(split.pixels[index].to(device, non_blocking=True))

    def train_logits(index, flips):
        x = images(train_split, index)
        x = torch.where(flips.to(device).view(-1, 1, 1, 1).bool(), x.flip(-1), x)
        return model.forward_images(x)

    def split_logits(split):
        out = []
        for index in tqdm(torch.arange(len(split.paths)).split(batch_size), desc=f"evaluating {split.name}",
                          leave=False):
            with autocast_on(device, autocast):
                out.append(model.forward_images(images(split, index)).float())
        return torch.cat(out)
    return train_logits, split_logits


# what lmpt/test.py reads of a fine-tuning run's configuration to evaluate its classifier (every run of
# finetune_clip/fc.py saves them, with more: prepare.Training.run_config)
FINETUNE_TEST_KEYS = ("dataset", "class_names", "backbone", "preprocess", "score", "thre")


def finetuned_logits(args, state, checkpoint_path, dataset, splits, clip_file, device):
    """``lmpt/test.py`` on a checkpoint of ``finetune_clip/fc.py``: the logits [N, C] of its classifier on the
    test split of ``splits``, from the cached features (the linear probe: the encoder is CLIP's own) or, for
    full fine-tuning, from the images decoded once and its trained encoder (whose features are not cached)."""
    config, test_split = state["config"], splits["test"]
    if config["method"] == FULL_FINETUNE:
        clip_model = load_clip_and_pixels(args, dataset, {"test": test_split}, clip_file, device)
        model = finetuned_model(state, checkpoint_path, clip_model, device)
        _, logits_of = pixel_inputs(model, test_split, args.preprocess, args.batch_size, device, use_autocast(device))
    else:
        def restore(clip_model):  # in a thread, while the test images are decoded and encoded
            model = finetuned_model(state, checkpoint_path, clip_model, device)
            load_kernels(model, len(test_split.paths), model.fc.in_features, device)
            return model
        _, model = load_clip_and_features(args, dataset, splits, clip_file, device, names=("test",), beside=restore)

        def logits_of(split):
            return unflipped_logits(model, split, device)
    return checked_logits(logits_of, test_split)


def finetuned_model(state, checkpoint_path, clip_model, device):
    """The ``LinearProbe`` of a checkpoint of ``finetune_clip/fc.py`` on ``clip_model``'s image encoder (already on
    ``device``), in eval mode: its classifier and, for full fine-tuning, its trained encoder's weights."""
    config = state["config"]
    full = config["method"] == FULL_FINETUNE  # the encoder trained: its weights are restored
    model = LinearProbe(clip_model.visual, clip_model.visual.output_dim, len(config["class_names"]), full)
    model.fc.to(device)  # not model.to(): the encoder may be in use meanwhile (beside the encoding)
    return restore_probe(model, state, checkpoint_path)


def restore_probe(model, state, checkpoint_path):
    """A ``LinearProbe`` holding a checkpoint's trained tensors, in eval mode."""
    load_trainable_state(model, state["model"], checkpoint_path)
    return model.eval()


def checked_logits(logits_of, split):
    """``logits_of(split)`` [N, C], without gradient, refused where not finite (naming the split)."""
    with torch.no_grad():
        logits = logits_of(split)
    check_finite(logits, f"the logits on the {split.name} split")
    return logits


def finetune(args):
    method = finetune_method(args.from_scratch)
    start = start_training(args, "finetune", args.pretrain_clip_path, (method,),
                           check_dataset=lambda d: check_class_count(d, args.nb_classes),
                           pixels=args.from_scratch)  # an encoder that trains: decoded images, not features
    device, dataset, clip_model = start.device, start.dataset, start.clip_model
    train_split, test_split, select_split = start.splits["train"], start.splits["test"], start.select_split
    train_freq = dataset.train_freq
    embed_dim = clip_model.visual.output_dim  # 1024 for RN50, 512 for ViT-B/16 (read, not hard-coded)
    torch.manual_seed(args.seed)
    model = LinearProbe(clip_model.visual, embed_dim, len(dataset.class_names), args.from_scratch).to(device)
    loss_fn = build_classification_loss(args.loss_function, train_freq, dataset.neg_freq,
                                        **start.db_params).to(device)  # μ and λ as start_training resolved them
    autocast = use_autocast(device)
    labels = train_split.labels.to(device)
    train_logits, logits_of = (pixel_inputs(model, train_split, args.preprocess, args.batch_size, device, autocast)
                               if args.from_scratch else feature_inputs(model, train_split, device))

    def batch_loss(index, flips, epoch, step):
        with autocast_on(device, autocast):
            logits = train_logits(index, flips)
        loss = loss_fn(logits, labels[index.to(device)])  # fp32 logits (LinearProbe.forward)
        return loss, {}

    def evaluate():
        results = evaluate_logits(checked_logits(logits_of, select_split), select_split.labels, train_freq,
                                  args.thre, args.score)
        return results["mAP"], selection_row(select_split, results)

    config = start.run_config(args, method, args.pretrain_clip_path)
    optimizer = build_optimizer("adamw", [p for p in model.parameters() if p.requires_grad], args.lr)
    run_dir = start_run_dir(args)  # everything is built: an old run is replaced only now (--overwrite)
    with sigterm_as_interrupt():  # for callers of finetune() from Python; fc.py's run_resumable has one already
        best = fit(model, batch_loss, evaluate, optimizer, build_scheduler(optimizer), run_dir, args.epochs,
                   args.batch_size, len(train_split.paths), args.seed, config, resume=args.resume,
                   desc=config["method"], selection_split=select_split.name)
    state = load_checkpoint(run_dir / "best.pt")
    restore_probe(model, state, run_dir / "best.pt")
    results = checkpoint_results(evaluate_logits(checked_logits(logits_of, test_split), test_split.labels, train_freq,
                                                 args.thre, args.score), run_dir / "best.pt", state, args.thre,
                                 args.score)
    return finish_run(run_dir, run_results(results, config, best, select_split.name), dataset, args.data_root,
                      "finetune")
