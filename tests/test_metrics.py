"""Metrics against scikit-learn and naive references (SPEC §3, §4)."""
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from lmpt.metrics import (average_precision, class_groups, evaluate, evaluate_logits, log_scores, mean_ap,
                          threshold_metrics, topk_metrics)
from lmpt.report import format_results

ROOT = Path(__file__).resolve().parents[1]


def random_case(seed=0, n=120, c=7, levels=None):
    """Scores (optionally quantised to a few levels, so that ties abound); class 3 has no positive."""
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c))
    if levels:
        scores = np.floor(scores * levels) / levels
    targets = (rng.random((n, c)) < 0.25).astype(np.int64)
    targets[:, 3] = 0
    targets[:, 5] = 1  # every image positive for class 5
    return scores, targets


def sklearn_ap(scores, targets):
    return np.array([average_precision_score(targets[:, c], scores[:, c]) if targets[:, c].any() else np.nan
                     for c in range(targets.shape[1])])


@pytest.mark.parametrize('levels', [None, 4, 2])
@pytest.mark.parametrize('seed', [0, 1])
def test_average_precision_equals_sklearn(levels, seed):
    scores, targets = random_case(seed, levels=levels)
    got = average_precision(scores, targets)
    expected = sklearn_ap(scores, targets)
    assert np.isnan(got[3])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)  # NaNs compare equal


def test_average_precision_accepts_torch_and_all_tied_scores():
    scores, targets = random_case(3)
    np.testing.assert_allclose(average_precision(torch.tensor(scores), torch.tensor(targets)),
                               sklearn_ap(scores, targets), rtol=1e-12)
    flat = np.full_like(scores, 0.5)
    np.testing.assert_allclose(average_precision(flat, targets), sklearn_ap(flat, targets), rtol=1e-12)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_tensors_are_accepted(dtype):
    # NumPy has no bf16: such tensors once failed in .numpy(). Their values, rounded, are what is measured.
    scores, targets = random_case(4)
    s, t = torch.tensor(scores).to(dtype), torch.tensor(targets).to(dtype)
    rounded = s.double().numpy()
    np.testing.assert_allclose(average_precision(s, t), sklearn_ap(rounded, targets), rtol=1e-12)
    assert threshold_metrics(s, t, 0.5) == threshold_metrics(rounded, targets, 0.5)
    assert topk_metrics(s, t, 3) == topk_metrics(rounded, targets, 3)
    freq = np.array([500, 150, 60, 30, 10, 5, 2])
    assert json.dumps(evaluate(s, t, freq, 0.5)) == json.dumps(evaluate(rounded, targets, freq, 0.5))


def test_mean_ap_skips_nan():
    ap = np.array([0.2, np.nan, 0.6])
    assert mean_ap(ap) == pytest.approx(np.mean([0.2, 0.6]))
    assert math.isnan(mean_ap(np.array([np.nan, np.nan])))


@pytest.mark.parametrize('thre', [0.3, 0.5, 0.75])
def test_threshold_metrics_equal_sklearn(thre):
    scores, targets = random_case(4, levels=4)  # levels of 1/4: some scores equal the threshold exactly
    scores[:, 1] = np.minimum(scores[:, 1], thre - 0.01)  # a class with no predicted positive: precision 0
    got = threshold_metrics(scores, targets, thre)
    pred = (scores >= thre).astype(int)
    valid = [c for c in range(targets.shape[1]) if targets[:, c].any()]
    cp = 100 * precision_score(targets, pred, average='macro', labels=valid, zero_division=0)
    cr = 100 * recall_score(targets, pred, average='macro', labels=valid, zero_division=0)
    assert got['CP'] == pytest.approx(cp, rel=1e-12)
    assert got['CR'] == pytest.approx(cr, rel=1e-12)
    assert got['CF1'] == pytest.approx(2 * cp * cr / (cp + cr), rel=1e-12)
    assert got['OP'] == pytest.approx(100 * precision_score(targets, pred, average='micro'), rel=1e-12)
    assert got['OR'] == pytest.approx(100 * recall_score(targets, pred, average='micro'), rel=1e-12)
    assert got['OF1'] == pytest.approx(100 * f1_score(targets, pred, average='micro'), rel=1e-12)


def test_threshold_is_inclusive_and_empty_predictions_give_zero():
    targets = np.array([[1, 0], [0, 1]])
    scores = np.array([[0.5, 0.1], [0.2, 0.4]])
    got = threshold_metrics(scores, targets, 0.5)  # only the score equal to thre is predicted
    assert got['OP'] == 100.0 and got['OR'] == 50.0
    assert got['CP'] == 50.0  # class 1: no prediction → precision 0
    nothing = threshold_metrics(scores, targets, 0.9)
    assert all(v == 0.0 for v in nothing.values())


def naive_topk(scores, targets, k):
    tp = 0
    for i in range(scores.shape[0]):
        ranked = sorted(range(scores.shape[1]), key=lambda c: (-scores[i, c], c))[:k]
        tp += sum(targets[i, c] for c in ranked)
    precision = tp / (scores.shape[0] * k)
    recall = tp / targets.sum()
    return 100 * precision, 100 * recall, 100 * 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize('k', [1, 3, 5])
def test_topk_metrics_equal_naive(k):
    scores, targets = random_case(5, levels=3)
    got = topk_metrics(scores, targets, k=k)
    p, r, f = naive_topk(scores, targets, k)
    assert got['precision'] == pytest.approx(p, rel=1e-12)
    assert got['recall'] == pytest.approx(r, rel=1e-12)
    assert got['F1'] == pytest.approx(f, rel=1e-12)
    with pytest.raises(ValueError, match='k must be'):
        topk_metrics(scores, targets, k=0)


def test_topk_beyond_the_class_count_predicts_every_class():
    scores, targets = random_case(9)
    c = scores.shape[1]
    assert topk_metrics(scores, targets, k=c + 3) == topk_metrics(scores, targets, k=c)
    assert topk_metrics(scores, targets, k=c)['recall'] == pytest.approx(100.0)
    assert topk_metrics(scores, targets, k=c)['precision'] == pytest.approx(100 * targets.mean())


def test_class_groups_boundaries():
    groups = class_groups(np.array([100, 99, 20, 19, 0, 5000]))
    assert groups['head'].tolist() == [0, 5]
    assert groups['medium'].tolist() == [1, 2]
    assert groups['tail'].tolist() == [3, 4]


def train_class_freq(list_file, num_classes):
    counts = Counter()
    for line in list_file.read_text().splitlines():
        if line.strip():
            counts.update(int(tok) for tok in set(line.split()[1:]))
    return np.array([counts[c] for c in range(num_classes)])


@pytest.mark.parametrize('list_file,num_classes,sizes', [
    ('data/voc/voc_lt_train.txt', 20, (6, 6, 8)),  # SPEC §3
    ('data/coco/coco_lt_train.txt', 80, (22, 33, 25)),
])
def test_class_groups_on_published_splits(list_file, num_classes, sizes):
    path = ROOT / list_file
    if not path.exists():
        pytest.skip(f'{list_file} not present')
    groups = class_groups(train_class_freq(path, num_classes))
    assert tuple(len(groups[g]) for g in ('head', 'medium', 'tail')) == sizes


def test_evaluate_reports_percentages_and_missing_classes():
    scores, targets = random_case(6, levels=5)
    freq = np.array([500, 150, 60, 30, 10, 5, 2])
    results = evaluate(scores, targets, freq, thre=0.4)
    ap = sklearn_ap(scores, targets)
    assert results['mAP'] == pytest.approx(100 * np.nanmean(ap), rel=1e-12)
    assert results['head_mAP'] == pytest.approx(100 * np.mean(ap[[0, 1]]), rel=1e-12)
    assert results['medium_mAP'] == pytest.approx(100 * np.mean(ap[[2]]), rel=1e-12)  # class 3 has no positive
    assert results['tail_mAP'] == pytest.approx(100 * np.mean(ap[[4, 5, 6]]), rel=1e-12)
    assert results['classes_without_positives'] == [3]
    assert results['per_class_AP'][3] is None
    np.testing.assert_allclose([v for i, v in enumerate(results['per_class_AP']) if i != 3],
                               100 * np.delete(ap, 3), rtol=1e-12)
    for key, value in threshold_metrics(scores, targets, 0.4).items():
        assert results[key] == value
    json.dumps(results, allow_nan=False)  # JSON-serialisable as it stands


def test_log_scores_are_the_logarithm_of_softmax_and_sigmoid():
    logits = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    np.testing.assert_allclose(log_scores(logits), torch.log_softmax(logits, dim=1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(log_scores(logits.numpy(), 'sigmoid'), F.logsigmoid(logits).numpy(), rtol=1e-12)
    extreme = log_scores(np.array([[1e4, -1e4, 0.0]]))
    assert extreme[0, 0] == 0.0 and np.isfinite(extreme).all()
    dominant = torch.tensor([[40.0, 0.0], [45.0, 0.0], [40.0, 40.0]], dtype=torch.bfloat16)
    for kind in ('softmax', 'sigmoid'):  # every order kept where the scores would round to 1.0
        ranked = log_scores(dominant, kind)[:, 0]
        assert ranked[0] < ranked[1], kind
    assert log_scores(dominant)[2].tolist() == [-math.log(2)] * 2
    with pytest.raises(ValueError, match='softmax'):
        log_scores(logits, 'relu')


def clip_scale_case(seed=0, n=400, c=12):
    """Logits 100·cos with CLIP-like cosines (0.2 to 0.35): every float32 sigmoid is 1.0."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.2).astype(np.int64)
    cos = 0.22 + 0.05 * targets + 0.02 * rng.standard_normal((n, c))
    return torch.tensor(100.0 * cos, dtype=torch.float32), targets


@pytest.mark.parametrize('score', ['sigmoid', 'softmax'])
def test_clip_scale_logits_are_ranked_and_thresholded_without_rounding_ties(score):
    logits, targets = clip_scale_case()
    freq = np.array([150, 120, 80, 60, 40, 30, 20, 19, 10, 5, 3, 1])
    exact = (torch.log_softmax(logits.double(), dim=1) if score == 'softmax' else logits.double()).numpy()
    if score == 'sigmoid':
        assert torch.sigmoid(logits).unique().numel() < 10  # what float32 scores would have ranked
    results = evaluate_logits(logits, targets, freq, thre=0.7, score=score)
    reference = [100 * average_precision_score(targets[:, j], exact[:, j]) for j in range(targets.shape[1])]
    np.testing.assert_allclose(results['per_class_AP'], reference, rtol=1e-12)
    # σ(z) ≥ 0.7 ⟺ z ≥ log(0.7 / 0.3); softmax ≥ 0.7 ⟺ log-softmax ≥ log 0.7
    cut = math.log(0.7 / 0.3) if score == 'sigmoid' else math.log(0.7)
    pred = (exact >= cut).astype(np.int64)
    assert results['OP'] == pytest.approx(100 * precision_score(targets.ravel(), pred.ravel(), zero_division=0))
    assert results['OR'] == pytest.approx(100 * recall_score(targets.ravel(), pred.ravel()))
    assert topk_metrics(log_scores(logits, score), targets, 3) == topk_metrics(exact, targets, 3)


def test_format_results_orders_by_training_frequency():
    scores, targets = random_case(7)
    freq = np.array([5, 150, 60, 30, 500, 10, 2])
    names = ['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6']
    results = evaluate(scores, targets, freq)
    text = format_results(results, names, freq)
    rows = [line.split() for line in text.splitlines() if line.split() and line.split()[0] in names]
    table = [r for r in rows if len(r) == 4]
    assert [r[0] for r in table] == ['c4', 'c1', 'c2', 'c3', 'c5', 'c0', 'c6']
    assert [r[2] for r in table] == ['head', 'head', 'medium', 'medium', 'tail', 'tail', 'tail']
    assert dict((r[0], r[3]) for r in table)['c3'] == 'n/a'
    assert f"{results['mAP']:.2f}" in text
    assert f"{results['tail_mAP']:.2f}" in text


def test_bad_inputs_are_refused():
    scores, targets = random_case(8)
    with pytest.raises(ValueError, match='same shape'):
        average_precision(scores[:, :3], targets)
    with pytest.raises(ValueError, match='0/1'):
        average_precision(scores, targets * 2)
    with pytest.raises(ValueError, match='NaN'):
        average_precision(np.full_like(scores, np.nan), targets)
    with pytest.raises(ValueError, match='train_class_freq'):
        evaluate(scores, targets, np.ones(3))


def test_group_bounds_are_inclusive_below_and_recorded_with_the_results():
    from lmpt.metrics import HEAD_MIN, MEDIUM_MIN, class_group, evaluate
    assert [class_group(n) for n in (HEAD_MIN, HEAD_MIN - 1, MEDIUM_MIN, MEDIUM_MIN - 1, 0)] == \
        ['head', 'medium', 'medium', 'tail', 'tail']
    scores, targets = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1, 0], [0, 1]])
    assert evaluate(scores, targets, [HEAD_MIN, 3])['group_bounds'] == {'head_min': 100, 'medium_min': 20}
