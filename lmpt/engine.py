"""The training loop shared by LMPT, CoOp and the fine-tuning baselines (``fit``), and its pieces: seeding,
the optimizers and the plateau scheduler, the NaN guard (``NonFiniteError``), the trained tensors a checkpoint
holds, resuming from ``last.pt`` (with ``best.pt`` checked and repaired), and the results record of a run.
How Ctrl-C and SIGTERM stop a run is in ``lmpt.interrupts``.

``fit`` reads like a checklist: for each epoch, draw the image order and the
flip decisions from ``seed`` and the epoch number alone (so a resumed run sees
exactly the batches an uninterrupted one would), take optimisation steps,
evaluate, step the plateau scheduler, and write ``metrics.jsonl``, ``last.pt``
and — when the selection mAP improved — ``best.pt``, all atomically.
"""
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import RESULT_FILES, load_checkpoint, read_metrics, read_saved_json, save_torch, write_metrics
from .interrupts import interrupts_deferred
from .locks import folder_locked


class NonFiniteError(RuntimeError):
    """A loss or logits became NaN/Inf; the last good checkpoint is kept."""


def seed_everything(seed):
    """Seed Python, NumPy and PyTorch (loader workers are seeded by ``lmpt.data.seed_worker``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_plan(seed, epoch, n, batch_size):
    """The batches (index tensors) and per-image flip decisions of one epoch."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=g)
    flips = torch.randint(0, 2, (n,), generator=g)  # [N] 0 = as is, 1 = mirrored
    return order.split(batch_size), flips


def _trained_tensors(model):
    """{name: tensor} of what training changes: the parameters that train (prompt contexts, a probe, an
    unfrozen encoder) and the running statistics of the batch-norm layers among them (a fine-tuned
    ResNet's), which move with the weights they normalise."""
    trained = {}
    for prefix, module in model.named_modules():
        prefix = prefix + "." if prefix else ""
        own = {prefix + n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
        trained.update(own)
        if own and isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            trained.update((prefix + n, b) for n, b in module.named_buffers(recurse=False) if b is not None)
    return trained


def trainable_state(model):
    """What training changes (:func:`_trained_tensors`), copied to the CPU: the ``model`` of a checkpoint."""
    return {k: v.detach().cpu().clone() for k, v in _trained_tensors(model).items()}


def load_trainable_state(model, state, source):
    """Load :func:`trainable_state` back, refusing a checkpoint of another shape."""
    expected = {name: t.shape for name, t in _trained_tensors(model).items()}
    if set(state) != set(expected):
        raise ValueError(f"{source}: checkpoint holds tensors {sorted(state)}, "
                         f"this model trains {sorted(expected)}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != tuple(shape):
            raise ValueError(f"{source}: parameter {name} has shape {tuple(state[name].shape)} in the "
                             f"checkpoint but {tuple(shape)} in the model rebuilt from its configuration")
    model.load_state_dict(state, strict=False)


OPTIMIZERS = ("sgd", "adam", "adamw")


def build_optimizer(name, params, lr, weight_decay=1e-4):
    """One of :data:`OPTIMIZERS` (SGD with momentum 0.9), weight decay 1e-4."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=5, min_lr=1e-7)


def check_finite(value, what, epoch=None, step=None):
    """Raise ``NonFiniteError`` naming ``what`` (and the epoch and step, 0-based indices named counting from 1
    as everything a person reads does) unless all is finite."""
    if not torch.isfinite(value).all():
        at = "" if epoch is None else f" at epoch {epoch + 1}, step {step + 1}"
        raise NonFiniteError(f"NaN or Inf in {what}{at}; stopping. "
                             f"The last good checkpoint (if any) is kept in the run folder.")


def best_epoch_held(run_dir):
    """The epoch (0-based) of a run's ``best.pt``, read without a copy of its tensors."""
    return load_checkpoint(Path(run_dir) / "best.pt", mmap=True)["epoch"]


def check_best(run_dir, last, epochs):
    """Before a run is resumed: whether its ``best.pt`` holds the best epoch that ``last.pt`` (``last``, as
    loaded) records. Returns None when it does, or what is wrong with it when that epoch is last.pt's own
    (``repair_best`` then writes it again from last.pt); refuses a best.pt of an earlier epoch that is missing,
    unreadable or of another epoch, since nothing else holds that epoch's state.

    One exception, for runs of code before ade04c2, which wrote best.pt before last.pt: a best.pt of the epoch
    after last.pt's (of an attempt stopped between the two) is accepted when the run's ``epochs`` train that
    epoch again, which writes it again (``fit`` refuses to go on when it does not)."""
    best_path, last_path = Path(run_dir) / "best.pt", Path(run_dir) / "last.pt"
    epoch = last["best"]["epoch"]
    if not best_path.exists():
        problem = "missing"
    else:
        try:
            found = best_epoch_held(run_dir)
            ahead = found == last["epoch"] + 1 and epoch < last["epoch"]  # (at last.pt's own, it is rewritten)
            problem = None if found == epoch or ahead else f"holds epoch {found + 1}"
        except (OSError, ValueError) as error:
            problem = str(error).removeprefix(f"{best_path}: ")
        if problem is None and found != epoch and epochs <= found:
            raise ValueError(f"{best_path}: holds epoch {found + 1}, after {last_path}'s (written before it by code "
                             f"before commit ade04c2), which --epochs {epochs} does not train again; resume with "
                             f"--epochs {found + 1} or more")
    if problem is not None and epoch != last["epoch"]:
        raise ValueError(f"{best_path}: {problem}, but {last_path} records epoch {epoch + 1} as the run's best "
                         f"(its last is epoch {last['epoch'] + 1}), which only best.pt holds; put the run's best.pt "
                         f"back, or train the run again with --overwrite")
    return problem


def repair_best(run_dir, last, epochs):
    """After a run stopped between writing ``last.pt`` and ``best.pt`` of an epoch that improved (or a best.pt
    damaged since): that epoch's state is ``last.pt``'s, so ``best.pt`` is written again from it."""
    problem = check_best(run_dir, last, epochs)
    if problem is not None:
        best_path = Path(run_dir) / "best.pt"
        print(f"[resume] {best_path}: {problem}; written again from last.pt, which holds the run's best epoch "
              f"({last['epoch'] + 1})")
        save_torch(best_path, last)


RUN_IDENTITY = ("method", "backbone", "backbone_file", "backbone_sha256")  # of a run's configuration


def checkpoint_results(results, checkpoint_path, state, thre, score):
    """An evaluation's metrics with the checkpoint it evaluated, that checkpoint's epoch (counted from 1; ``state``
    is the checkpoint), the threshold and the score of CP…OF1."""
    return {**results, "checkpoint": str(checkpoint_path), "checkpoint_epoch": state["epoch"] + 1,
            "thre": thre, "score": score}


def run_results(results, config, best, selection_split):
    """A training run's ``results.json``: the test results of its best checkpoint (``checkpoint_results``) with
    what names the run (its method and CLIP, from ``config``) and how the epoch was selected (``best``, as
    ``fit`` returns it, on ``selection_split``)."""
    return {**results, **{key: config[key] for key in (*RUN_IDENTITY, "preprocess") if key in config},
            **selection_record(best, selection_split)}


def selection_record(best, selection_split):
    """How a run selected its best epoch, as its results record it: ``selected_epoch`` (counted from 1; ``best``
    as ``fit`` returns it or a checkpoint holds it), ``selection_split`` (left out when None: not in the
    configurations of older runs) and ``selection_mAP``."""
    split = {"selection_split": selection_split} if selection_split is not None else {}
    return {"selected_epoch": best["epoch"] + 1, **split, "selection_mAP": best.get("mAP")}


def resume_state(run_dir, model, optimizer, scheduler, epochs):
    """``fit``'s state after the epochs of ``run_dir/last.pt``, restored into ``model``, ``optimizer`` and
    ``scheduler``; ``metrics.jsonl`` rewritten with their rows alone and ``best.pt`` repaired (``repair_best``).
    Returns (the next epoch, the best epoch's record, the metrics rows, whether best.pt is ahead of last.pt:
    ``check_best``'s exception, which the next epoch must write again)."""
    ckpt = load_checkpoint(run_dir / "last.pt", resume=True)
    load_trainable_state(model, ckpt["model"], run_dir / "last.pt")
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    start, best = ckpt["epoch"] + 1, ckpt["best"]
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl", start) if r["epoch"] <= start]  # counted from 1
    write_metrics(run_dir / "metrics.jsonl", rows)  # without the row of an epoch last.pt does not hold
    repair_best(run_dir, ckpt, epochs)
    if start < epochs:
        print(f"[resume] resuming {run_dir} after epoch {start} (best mAP {best['mAP']:.2f} "
              f"at epoch {best['epoch'] + 1})")
    else:
        print(f"[resume] {run_dir} has trained its {start} epoch{'s' * (start != 1)}: nothing to train, its best epoch "
              f"({best['epoch'] + 1}, mAP {best['mAP']:.2f}) is evaluated again (a larger --epochs extends it)")
    return start, best, rows, best_epoch_held(run_dir) == start


def _train_epoch(model, batch_loss, optimizer, batches, flips, epoch, bar_desc):
    """One epoch's optimisation steps over ``batches`` (index tensors; ``flips`` [N]: ``epoch_plan``'s), under
    a progress bar named ``bar_desc``. Returns (the sums over the epoch's samples of the loss and of each part
    ``batch_loss`` returns, the number of samples, the index of the last step)."""
    model.train()
    sums, count = {}, 0
    bar = tqdm(batches, desc=bar_desc, leave=False)
    for step, index in enumerate(bar):
        loss, parts = batch_loss(index, flips[index], epoch, step)
        check_finite(loss.detach(), "the training loss", epoch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()  # one device sync a step
        for k, v in {"loss": value, **parts}.items():
            sums[k] = sums.get(k, 0.0) + v * len(index)
        count += len(index)
        bar.set_postfix(loss=f"{value:.4f}")
    return sums, count, step


def evaluated_last(run_dir):
    """Whether the run folder's ``test_results.json`` is of its ``last.pt`` (``lmpt/test.py --checkpoint
    <run>/last.pt``; no ``--output`` writes that name): a new last.pt leaves it describing a checkpoint the folder
    no longer holds."""
    checkpoint = (read_saved_json(Path(run_dir) / "test_results.json") or {}).get("checkpoint")
    return isinstance(checkpoint, str) and Path(checkpoint).name == "last.pt"


def _write_epoch(run_dir, rows, state, improved):
    """An epoch's files: ``metrics.jsonl`` (``rows``), ``last.pt`` (``state``, after removing an evaluation of the
    last.pt it replaces) and, when the epoch ``improved``, ``best.pt`` (after removing the evaluations of the
    best.pt it replaces), in that order, each atomically."""
    # metrics, last.pt, best.pt: a run killed after the metrics resumes from the older last.pt (and drops
    # the row), one killed after last.pt has best.pt rewritten from it (repair_best)
    with interrupts_deferred():  # a Ctrl-C or SIGTERM now stops the run once the epoch is saved
        write_metrics(run_dir / "metrics.jsonl", rows)
        # held: an lmpt/test.py beside checks its checkpoint and writes its results wholly before or after
        with folder_locked(run_dir):
            if evaluated_last(run_dir):  # of the last.pt replaced now (a resumed, extended run)
                (run_dir / "test_results.json").unlink(missing_ok=True)
            save_torch(run_dir / "last.pt", state)
            if improved:
                for name in RESULT_FILES:  # evaluations of the best.pt replaced (by a resumed, extended run)
                    (run_dir / name).unlink(missing_ok=True)
                save_torch(run_dir / "best.pt", state)


def _refuse_unselected_ahead_best(run_dir, epoch, selection_map, best):
    """For runs of code before ade04c2 (``check_best``'s exception): the resumed ``epoch`` was to write again
    the best.pt the stopped attempt left ahead of last.pt, but did not improve, so best.pt now holds that
    attempt's epoch, which nothing else holds. Removes the results files, which described it, and refuses
    to go on."""
    for name in RESULT_FILES:  # they described the best epoch, whose state nothing holds any more
        (run_dir / name).unlink(missing_ok=True)
    raise ValueError(f"{run_dir / 'best.pt'}: holds epoch {epoch + 1} of the attempt that was stopped "
                     f"(written before its last.pt, by code before commit ade04c2), which this attempt did "
                     f"not select again (mAP {selection_map:.2f}; best {best['mAP']:.2f} at epoch "
                     f"{best['epoch'] + 1}, whose state nothing holds any more); train the run again with "
                     f"--overwrite")


def fit(model, batch_loss, evaluate, optimizer, scheduler, run_dir, epochs, batch_size, n_train, seed,
        config, resume=False, on_epoch_end=None, desc="train", selection_split=None):
    """Train ``model`` for ``epochs`` epochs; return the best epoch's record ``{"epoch", "mAP"}``.

    Epochs and steps are 0-based indices here and in the checkpoints; what a person reads (the messages,
    ``metrics.jsonl``, ``results.json``) counts them from 1.

    - ``batch_loss(index [B], flips [B], epoch, step) -> (loss, {name: float})``
    - ``evaluate() -> (selection_mAP, {metric: value})`` on the selection split; a ``NonFiniteError`` it
      raises (``check_finite`` of its logits) is given the epoch and step
    - ``config``: saved with every checkpoint (what ``test.py`` needs to rebuild the model)
    - ``resume``: continue from ``run_dir/last.pt``
    - ``on_epoch_end(epoch)``: called after each epoch's files are written
    - ``selection_split``: the name of the split ``evaluate`` selects on (``val``, ``test``), which the epoch
      line names: ``val mAP 13.45`` (``metrics.jsonl``'s ``val_mAP``)
    """
    run_dir = Path(run_dir)
    start, best, rows, ahead = 0, {"epoch": None, "mAP": -math.inf}, [], False
    if resume:
        start, best, rows, ahead = resume_state(run_dir, model, optimizer, scheduler, epochs)
    for epoch in range(start, epochs):
        t0 = time.time()
        batches, flips = epoch_plan(seed, epoch, n_train, batch_size)
        sums, count, step = _train_epoch(model, batch_loss, optimizer, batches, flips, epoch,
                                         f"{desc} epoch {epoch + 1}/{epochs}")
        model.eval()
        try:
            selection_map, metrics = evaluate()
        except NonFiniteError as error:  # the evaluation of what the epoch's last step made
            raise NonFiniteError(f"after epoch {epoch + 1}, step {step + 1}: {error}") from None
        lr = optimizer.param_groups[0]["lr"]  # this epoch's, before the plateau scheduler may lower it
        scheduler.step(selection_map)
        improved = selection_map > best["mAP"]
        if improved:
            best = {"epoch": epoch, "mAP": selection_map}
        row = {"epoch": epoch + 1, "lr": lr,  # epochs in files count from 1, as the progress bar does
               **{f"train_{k}": v / max(count, 1) for k, v in sums.items()},
               **metrics, "selection_mAP": selection_map, "best_epoch": best["epoch"] + 1,
               "seconds": round(time.time() - t0, 3)}
        rows.append(row)
        state = {"model": trainable_state(model), "config": config, "epoch": epoch, "best": best,
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        _write_epoch(run_dir, rows, state, improved)
        split = f"{selection_split} " if selection_split else ""  # "val mAP" / "test mAP": the split selected on
        print(f"[{desc}] epoch {epoch + 1}/{epochs} loss {row.get('train_loss', float('nan')):.4f} "
              f"{split}mAP {selection_map:.2f} (best {best['mAP']:.2f} @ {best['epoch'] + 1}) {row['seconds']:.1f}s")
        if ahead and not improved:  # a best.pt of the stopped attempt's, from code before ade04c2 (check_best)
            _refuse_unselected_ahead_best(run_dir, epoch, selection_map, best)
        ahead = False
        if on_epoch_end is not None:  # a hook for tests (a stop at an epoch's end)
            on_epoch_end(epoch)
    return best
