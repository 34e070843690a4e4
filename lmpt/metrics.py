"""Evaluation metrics (SPEC §4): per-class AP, mAP by head/medium/tail, threshold and top-k metrics.

Pure functions of numpy arrays (torch tensors accepted), no I/O.

Units: ``average_precision`` returns fractions in [0, 1] (comparable with
scikit-learn); ``threshold_metrics``, ``topk_metrics`` and ``evaluate`` report
percentages (0–100), as the published code printed them.

Conventions where the SPEC leaves room:

- A class without any positive in the evaluation set has AP = NaN; it is left
  out of every mean (mAP, group mAP, CP, CR) and listed in
  ``classes_without_positives``.
- Prediction at a threshold is ``score >= thre`` (the ML-GCN style code).
- Scores of logits are ranked and thresholded by their logarithm in float64
  (``log_scores``), which float rounding cannot tie.
- Per-class precision of a class with no predicted positive is 0; CF1/OF1 are
  0 when both of their terms are 0.
"""
import math

import numpy as np


HEAD_MIN = 100  # head: at least this many training images
MEDIUM_MIN = 20  # medium: at least this many (and fewer than HEAD_MIN); tail: fewer than this many
GROUPS = ('head', 'medium', 'tail')


def to_numpy(x):
    """A NumPy array of an array-like or a torch tensor (fp16/bf16 ones as float64: NumPy has no bf16)."""
    if hasattr(x, 'detach'):
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _check_scores_targets(scores, targets, who):
    scores = to_numpy(scores).astype(np.float64)
    targets = to_numpy(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"{who}: expected scores and targets of the same shape [N, C], "
                         f"got {scores.shape} and {targets.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{who}: scores contain NaN")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError(f"{who}: expected targets of 0/1 values, got {np.unique(targets)[:10].tolist()}")
    return scores, targets.astype(np.float64)


def average_precision(scores, targets):
    """Non-interpolated AP per class, [C]; NaN for a class without positives.

    Equal to ``sklearn.metrics.average_precision_score`` on each column: tied
    scores form one threshold, and AP = Σ_thresholds ΔRecall · Precision.
    """
    return _average_precision(*_check_scores_targets(scores, targets, 'average_precision'))


def _average_precision(scores, targets):  # checked float64 [N, C] arrays
    n = scores.shape[0]
    s, y = np.ascontiguousarray(scores.T), np.ascontiguousarray(targets.T)  # [C, N]: each class's row contiguous
    # Descending; any order within a tie gives the same AP, since every tie is one threshold (below).
    order = np.argsort(-s, axis=1)  # [C, N]
    s = np.take_along_axis(s, order, axis=1)  # [C, N], descending
    y = np.take_along_axis(y, order, axis=1)  # [C, N]
    tp = np.cumsum(y, axis=1)  # [C, N]
    # index of the last element of each run of equal scores (the threshold every tie shares)
    is_end = np.ones_like(s, dtype=bool)
    is_end[:, :-1] = s[:, :-1] != s[:, 1:]
    end = np.where(is_end, np.arange(n), n)  # [C, N]
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(tp, end, axis=1) / (end + 1)  # [C, N]
    positives = tp[:, -1] if n else np.zeros(scores.shape[1])  # [C]
    with np.errstate(invalid='ignore', divide='ignore'):
        ap = (y * precision_at_end).sum(axis=1) / positives
    ap[positives == 0] = np.nan
    return ap


def mean_ap(ap):
    """Mean over the non-NaN entries; NaN if there is none."""
    ap = np.asarray(ap, dtype=np.float64)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else math.nan


def _f1(p, r):
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def threshold_metrics(scores, targets, thre):
    """CP, CR, CF1, OP, OR, OF1 in percent, predictions ``score >= thre``.

    CP and CR average over the classes with at least one positive (as mAP does).
    """
    return _threshold_metrics(*_check_scores_targets(scores, targets, 'threshold_metrics'), thre)


def _threshold_metrics(scores, targets, thre):  # checked float64 [N, C] arrays
    pred = (scores >= thre).astype(np.float64)  # [N, C]
    tp = (pred * targets).sum(axis=0)  # [C]
    n_pred = pred.sum(axis=0)  # [C]
    n_pos = targets.sum(axis=0)  # [C]
    valid = n_pos > 0
    prec = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    rec = np.divide(tp, n_pos, out=np.zeros_like(tp), where=valid)
    cp = float(prec[valid].mean()) if valid.any() else 0.0
    cr = float(rec[valid].mean()) if valid.any() else 0.0
    op = float(tp.sum() / n_pred.sum()) if n_pred.sum() > 0 else 0.0
    o_r = float(tp.sum() / n_pos.sum()) if n_pos.sum() > 0 else 0.0
    out = dict(CP=cp, CR=cr, CF1=_f1(cp, cr), OP=op, OR=o_r, OF1=_f1(op, o_r))
    return {k: 100.0 * v for k, v in out.items()}


def topk_metrics(scores, targets, k=5):
    """Precision, recall and F1 (percent) of the k top-scored classes of every image.

    precision = TP / (N·k), recall = TP / total positives; ties broken by class index.
    A k above the number of classes C counts as k = C (every class predicted).
    """
    scores, targets = _check_scores_targets(scores, targets, 'topk_metrics')
    n, num = scores.shape
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"topk_metrics: k must be an integer >= 1, got {k!r}")
    k = min(int(k), num)
    top = np.argsort(-scores, axis=1, kind='stable')[:, :k]  # [N, k]
    tp = np.take_along_axis(targets, top, axis=1).sum()
    precision = tp / (n * k) if n else 0.0
    recall = tp / targets.sum() if targets.sum() > 0 else 0.0
    return {k_: 100.0 * float(v) for k_, v in
            (('precision', precision), ('recall', recall), ('F1', _f1(precision, recall)))}


def class_groups(train_class_freq, head_min=HEAD_MIN, medium_min=MEDIUM_MIN):
    """Class indices of each group: head ≥ head_min, medium in [medium_min, head_min), tail < medium_min
    training images."""
    freq = to_numpy(train_class_freq).astype(np.float64)
    if freq.ndim != 1:
        raise ValueError(f"class_groups: expected train_class_freq of shape [C], got {freq.shape}")
    return {'head': np.flatnonzero(freq >= head_min),
            'medium': np.flatnonzero((freq >= medium_min) & (freq < head_min)),
            'tail': np.flatnonzero(freq < medium_min)}


def classes_by_frequency(train_class_freq, head_min=HEAD_MIN, medium_min=MEDIUM_MIN):
    """The classes as per-class tables list them: [(class index, group)], most training images first (ties by
    index). Used by ``report.format_results`` and ``tools/compare_runs.py --per_class``."""
    freq = to_numpy(train_class_freq)
    group_of = {}
    for name, idx in class_groups(freq, head_min, medium_min).items():
        group_of.update({int(i): name for i in idx})
    return [(i, group_of[i]) for i in sorted(range(len(freq)), key=lambda i: (-freq[i], i))]


def class_group(count):
    """The group of a class with ``count`` training images: 'head', 'medium' or 'tail'."""
    return next(name for name, idx in class_groups([count]).items() if len(idx))


SCORE_KINDS = ('softmax', 'sigmoid')


def log_scores(logits, kind='softmax'):
    """The logarithm of the scores, float64 [N, C]: log-softmax over classes (published default) or log-sigmoid.

    The metrics rank and threshold these (``evaluate_logits``), not the scores themselves: CLIP's logits are
    100·cos, commonly above 16.6 (a cosine of 0.166), where σ(z) is exactly 1.0 in float32 (in float64 above
    z ≈ 37), and a dominant class's softmax score saturates the same way; the ties would flatten
    AP and top-k. The logarithm keeps every order; ``score >= thre`` is ``log score >= log thre``.
    Accepts a torch tensor or a numpy array.
    """
    if kind not in SCORE_KINDS:
        raise ValueError(f"log_scores: kind must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")
    z = to_numpy(logits.detach().double() if hasattr(logits, 'detach') else logits).astype(np.float64)
    if kind == 'sigmoid':
        return -np.logaddexp(0.0, -z)  # log σ(z) = −log(1 + e^−z) = −log1p(e^−z), exact for large z
    shifted = z - z.max(axis=-1, keepdims=True)  # [N, C], 0 at each row's top class
    others = np.exp(shifted)
    np.put_along_axis(others, shifted.argmax(axis=-1)[:, None], 0.0, axis=-1)  # all but one top class
    return shifted - np.log1p(others.sum(axis=-1, keepdims=True))  # log1p: the top class stays exact


def log_threshold(thre):
    """``thre`` on the scores as a threshold on their logarithm (−inf for 0: every score passes)."""
    return math.log(thre) if thre > 0 else -math.inf


def evaluate_logits(logits, targets, train_class_freq, thre=0.5, score='softmax', topk=None):
    """``evaluate`` of the scores of ``logits`` [N, C] (``score``: softmax or sigmoid), ranked and thresholded
    by their logarithm (``log_scores``) so that no two scores are tied by rounding. With ``topk`` (k), also the
    precision, recall and F1 of the k top-scored classes (``topk_metrics``) as ``top{k}_precision`` and so on."""
    scores = log_scores(logits, score)  # [N, C], ranked as the scores are
    results = evaluate(scores, targets, train_class_freq, thre=log_threshold(thre))
    if topk is not None:
        results.update({f'top{topk}_{name}': value for name, value in topk_metrics(scores, targets, k=topk).items()})
    return results


def evaluate(scores, targets, train_class_freq, thre=0.5):
    """All SPEC §4 metrics, in percent: mAP and head/medium/tail mAP, CP/CR/CF1/OP/OR/OF1,
    per-class AP (None where a class has no positive), the classes left out of mAP, the group bounds and the
    number of images scored (fewer than the list's after --skip_bad_images).

    ``thre`` is compared with ``scores`` as they are given (``score >= thre``): with log-scores
    (``log_scores``, ``lmpt.api.score_images``) pass ``log_threshold(thre)``, as ``evaluate_logits`` does.
    Log-scores (all <= 0, some < 0) with a threshold in (0, 1) would predict nothing and zero CP/CF1/OF1:
    they are refused (ValueError)."""
    scores, targets = _check_scores_targets(scores, targets, 'evaluate')
    if 0 < thre < 1 and scores.size and (scores <= 0).all() and (scores < 0).any():
        raise ValueError(f"evaluate: thre {thre} is a threshold on scores in [0, 1], but the scores are all <= 0, "
                         f"log-scores (log_scores) it seems, which no image would reach; pass "
                         f"thre=log_threshold({thre}) with log-scores, or the scores themselves")
    freq = to_numpy(train_class_freq)
    if freq.shape != (scores.shape[1],):
        raise ValueError(f"evaluate: expected train_class_freq of shape [{scores.shape[1]}], got {freq.shape}")
    ap = _average_precision(scores, targets)  # [C]
    results = {'mAP': 100.0 * mean_ap(ap)}
    for name, idx in class_groups(freq).items():
        results[f'{name}_mAP'] = 100.0 * mean_ap(ap[idx])
    results.update(_threshold_metrics(scores, targets, thre))
    results['per_class_AP'] = [None if math.isnan(v) else 100.0 * float(v) for v in ap]
    results['classes_without_positives'] = [int(i) for i in np.flatnonzero(np.isnan(ap))]
    results['group_bounds'] = {'head_min': HEAD_MIN, 'medium_min': MEDIUM_MIN}  # training images, as grouped
    results['images'] = int(scores.shape[0])
    return results
