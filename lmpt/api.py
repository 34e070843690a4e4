"""Use a trained run from Python: ``load_run`` rebuilds its model, ``score_images`` scores image files.

    from lmpt.api import load_run, score_images
    run = load_run("runs/voc-lt_lmpt_ViT16_seed0")  # its best.pt, on the CPU
    scores = score_images(run, ["a.jpg", "b.jpg"])   # [2, C] log-scores, as lmpt/test.py ranks them

The model is the one ``lmpt/test.py`` evaluates, built by the same functions (``evaluation``'s
``read_run_checkpoint`` and ``run_backbone``, ``prompt_tuning.prompt_model``, ``baselines.finetuned_model``),
and the images are decoded and encoded by the function that encodes its test images
(``features.encode_images``), so the scores of a run's test images give the metrics of its
``test_results.json``.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .baselines import finetuned_model
from .data import DataError, build_transform, listing
from .device import select_device, use_autocast
from .engine import check_finite
from .features import encode_images
from .methods import FINETUNE_METHODS
from .metrics import log_scores
from .prepare import load_clip
from .evaluation import read_run_checkpoint, run_backbone
from .prompt_tuning import prompt_logits, prompt_model, restore_prompts


@dataclass
class Run:
    """A trained run ready for inference (``load_run``)."""
    model: torch.nn.Module  # CustomCLIP (coop, lmpt) or LinearProbe (linear-probe, finetune-full), eval mode
    config: dict  # the run's configuration, saved in its checkpoint (method, dataset, class_names, score, thre, …)
    checkpoint: Path  # the checkpoint file read
    epoch: int  # the checkpoint's epoch, counted from 1
    device: torch.device
    resolution: int  # the image encoder's input resolution r
    transform: object  # PIL image -> [3, r, r]: the run's preprocessing at r (``data.build_transform``)
    text: torch.Tensor = None  # a prompt run's class text features [C, E], encoded once; None for a classifier

    @property
    def method(self):
        return self.config["method"]

    @property
    def class_names(self):
        return list(self.config["class_names"])

    @property
    def preprocess(self):
        """The run's preprocessing kind (``lmpt`` or ``clip``)."""
        return self.config["preprocess"]

    @property
    def score(self):
        """The run's scores of logits: ``softmax`` or ``sigmoid``."""
        return self.config["score"]

    @property
    def thre(self):
        """The run's threshold on the scores (not on their logarithm: ``metrics.log_threshold``)."""
        return self.config["thre"]

    @property
    def image_encoder(self):
        """The image encoder: CLIP's frozen one, or a finetune-full run's trained one."""
        return self.model.visual if self.method in FINETUNE_METHODS else self.model.image_encoder

    def logits(self, image_features):
        """Logits [N, C] of image features [N, E] (from ``image_encoder``), in fp32, without gradient."""
        image_features = image_features.to(self.device)
        if self.text is not None:
            return prompt_logits(self.model, image_features, self.text, self.device)
        with torch.no_grad():
            return self.model(image_features)


def load_run(run_or_checkpoint, device="cpu", pretrained_dir=None):
    """The model of a run of ``lmpt/train.py`` (coop, lmpt) or ``finetune_clip/fc.py`` (linear-probe,
    finetune-full), as ``lmpt/test.py --checkpoint`` rebuilds it -> ``Run``.

    ``run_or_checkpoint``: a run folder (its ``best.pt``, as lmpt/test.py picks) or a .pt file of one.
    ``device``: ``cpu``, ``cuda``, ``cuda:<i>`` or ``auto``. ``pretrained_dir``: the folder holding the run's CLIP
    file (default: ``$LMPT_PRETRAINED_DIR``, else ``pretrained/``). CLIP's weights are fp32 on every device
    (``prepare.load_clip``; ``clip.load`` would give fp16 on CUDA). Refused as lmpt/test.py refuses them:
    a path without a checkpoint (FileNotFoundError), a file that is no run checkpoint, a run of another method
    or of an earlier version (ValueError naming the file), a CLIP file other than the run's (another sha256).
    """
    device = select_device(device)
    state, checkpoint_path = read_run_checkpoint(run_or_checkpoint)
    config = state["config"]
    clip_model = load_clip(run_backbone(config, pretrained_dir, checkpoint_path), device)
    text = None
    if config["method"] in FINETUNE_METHODS:
        model = finetuned_model(state, checkpoint_path, clip_model, device)
    else:
        model = prompt_model(config, clip_model).eval()
        text = restore_prompts(model, state, checkpoint_path, device)  # [C, E]
    resolution = clip_model.visual.input_resolution
    return Run(model=model, config=config, checkpoint=checkpoint_path, epoch=state["epoch"] + 1, device=device,
               resolution=resolution, transform=build_transform(config["preprocess"], resolution), text=text)


def score_images(run, image_files, batch_size=64, num_workers=0):
    """Log-scores [N, C] (float64 NumPy) of image files (paths), in the order given: the logarithm of the
    run's scores (``run.score``: softmax over the classes or sigmoid), which ``lmpt/test.py`` ranks and
    thresholds (``metrics.log_scores``; ``np.exp`` gives the scores). Pass them to ``metrics.evaluate`` with
    ``thre=metrics.log_threshold(run.thre)``.

    The images are decoded with the run's preprocessing (``run.transform``) in batches of ``batch_size`` by
    ``num_workers`` loader processes (0: in this one), and encoded as lmpt/test.py encodes its test images
    (unflipped; bf16 autocast on a GPU that has it natively). Unreadable files are refused, all named at once.
    """
    files = [Path(f) for f in image_files]
    if not files:
        raise ValueError("score_images: no image files given; expected a list of image paths")
    features, errors = encode_images(run.image_encoder, Path(), files, run.preprocess, run.resolution, batch_size,
                                     num_workers, run.device, use_autocast(run.device), mirrors=False)  # [N, 1, E]
    if errors:
        raise DataError(f"{len(errors)} image(s) cannot be read:\n"
                        f"{listing([errors[i] for i in sorted(errors)], 20)}")
    logits = run.logits(features[:, 0])  # [N, C]
    check_finite(logits, "the logits of the images")
    return np.asarray(log_scores(logits, run.score))
