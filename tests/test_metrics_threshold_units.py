"""metrics.evaluate compares thre with the scores as given: log-scores take log_threshold(thre), and log-scores
with a threshold meant for the scores (in (0, 1)) are refused rather than silently zeroing CP/CF1/OF1."""
import numpy as np
import pytest
import torch

from lmpt.metrics import evaluate, evaluate_logits, log_scores, log_threshold

THRESHOLD_METRICS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def case(seed=0, n=60, c=5):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, c, generator=g, dtype=torch.float64)  # [N, C]
    targets = (torch.rand(n, c, generator=g) < 0.3).long()
    targets[0] = 1  # every class has a positive
    return logits, targets.numpy(), np.array([150, 60, 30, 10, 2])


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_log_scores_with_a_threshold_on_the_scores_are_refused(score):
    logits, targets, freq = case()
    with pytest.raises(ValueError, match=r"evaluate: thre 0.3 is a threshold on scores in \[0, 1\], but the scores are "
                                         r"all <= 0, log-scores \(log_scores\) it seems, which no image would reach; "
                                         r"pass thre=log_threshold\(0.3\) with log-scores"):
        evaluate(log_scores(logits, score), targets, freq, thre=0.3)


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_log_scores_with_log_threshold_equal_the_scores_with_the_threshold(score):
    logits, targets, freq = case(1)
    logged = evaluate(log_scores(logits, score), targets, freq, thre=log_threshold(0.3))
    plain = evaluate(np.exp(log_scores(logits, score)), targets, freq, thre=0.3)
    assert logged == evaluate_logits(logits, targets, freq, thre=0.3, score=score)
    for key in THRESHOLD_METRICS:
        assert logged[key] == pytest.approx(plain[key], abs=1e-9), key
    assert logged["CF1"] > 0


def test_scores_that_are_not_log_scores_keep_their_threshold():
    logits, targets, freq = case(2)
    zeros = evaluate(np.zeros(targets.shape), targets, freq, thre=0.5)  # no score < 0: not log-scores
    assert zeros["CP"] == zeros["OP"] == 0.0
    raw = logits.numpy() - 20  # every score negative: a threshold of 0 or below, or 1 and above, is taken as given
    for thre in (0.0, -25.0, 1.0):
        evaluate(raw, targets, freq, thre=thre)
    assert evaluate(np.exp(log_scores(logits)), targets, freq, thre=0.3)["CF1"] > 0
