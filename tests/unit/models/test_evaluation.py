"""The backtest's metrics agree with scikit-learn's, ties included, and say "not defined"
where scikit-learn would raise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from models import evaluation

FIXED_LABELS = [0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0]
FIXED_SCORES = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.05, 0.9, 0.7, 0.2, 0.2, 0.2]
"""Ties inside a class (0.2 x3) and across classes (0.4: two negatives, one positive)."""


def cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = [(np.array(FIXED_LABELS, bool), np.array(FIXED_SCORES))]
    for n, rate, decimals in ((50, 0.3, 1), (2000, 0.02, 2), (5000, 0.1, 6)):
        y = rng.random(n) < rate
        s = np.round(rng.random(n) * 0.6 + y * 0.3, decimals)  # rounding makes many ties
        out.append((y, s))
    y = np.array([1, 0, 1, 0, 1, 0], bool)
    out.append((y, np.full(6, 0.5)))  # every score tied
    return out


@pytest.mark.parametrize(("y", "s"), cases())
def test_roc_auc_and_average_precision_equal_scikit_learn(y, s):
    assert evaluation.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert evaluation.average_precision(y, s) == pytest.approx(
        skm.average_precision_score(y, s), abs=1e-12
    )


@pytest.mark.parametrize(("y", "s"), cases())
@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.4, 0.5, 1.0])
def test_threshold_metrics_equal_scikit_learn(y, s, threshold):
    flagged = s >= threshold
    got = evaluation.at_threshold(y, s, threshold)
    tn, fp, fn, tp = skm.confusion_matrix(y, flagged, labels=[False, True]).ravel()
    assert (got.tp, got.fp, got.tn, got.fn) == (tp, fp, tn, fn)
    if tp + fp:
        assert got.precision == pytest.approx(skm.precision_score(y, flagged))
    else:
        assert got.precision is None
    assert got.recall == pytest.approx(skm.recall_score(y, flagged, zero_division=0))
    assert got.f1 == pytest.approx(skm.f1_score(y, flagged, zero_division=0))
    assert got.false_positive_rate == pytest.approx(fp / (fp + tn))


def test_curves_are_the_scikit_learn_curves():
    y, s = np.array(FIXED_LABELS, bool), np.array(FIXED_SCORES)
    c = evaluation.curve(y, s)
    fpr, tpr = evaluation.roc_points(c)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
    recall, precision = evaluation.pr_points(c)
    sk_precision, sk_recall, _ = skm.precision_recall_curve(y, s)
    # scikit-learn lists them lowest threshold first and appends the (recall 0, precision 1) end
    assert np.allclose(recall, sk_recall[:-1][::-1])
    assert np.allclose(precision, sk_precision[:-1][::-1])


def test_one_class_only_is_not_defined_rather_than_an_error():
    assert evaluation.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]) is None
    assert evaluation.roc_auc([1, 1], [0.1, 0.2]) is None
    assert evaluation.average_precision([0, 0], [0.1, 0.2]) is None
    assert evaluation.average_precision([1, 1], [0.1, 0.2]) == 1.0
    nothing_flagged = evaluation.at_threshold([0, 1], [0.1, 0.2], 0.9)
    assert nothing_flagged.precision is None and nothing_flagged.recall == 0.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        evaluation.roc_auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="finite"):
        evaluation.roc_auc([0, 1], [0.5, float("nan")])


def test_precision_top_k_per_day_ranks_entities_by_their_best_score_of_the_day():
    day = 86_400.0
    # day 0: card a (best 0.9, one fraud), b (0.8, legit), c (0.1, fraud)
    # day 1: card a (0.2, legit), d (0.95, fraud)
    times = [10.0, 20.0, 30.0, 40.0, 50.0, day + 5, day + 6]
    cards = ["a", "a", "b", "c", "b", "a", "d"]
    labels = [False, True, False, True, False, False, True]
    scores = [0.9, 0.3, 0.8, 0.1, 0.2, 0.2, 0.95]
    top2 = evaluation.precision_top_k_per_day(times, cards, labels, scores, k=2)
    assert top2 is not None
    # day 0: top 2 are a (fraud) and b (legit): 0.5; day 1: a and d, d fraud: 0.5
    assert top2["value"] == 0.5 and top2["days"] == 2
    top1 = evaluation.precision_top_k_per_day(times, cards, labels, scores, k=1)
    assert top1 is not None
    assert top1["value"] == 1.0  # a on day 0, d on day 1
    top10 = evaluation.precision_top_k_per_day(times, cards, labels, scores, k=10)
    assert top10 is not None
    # fewer than k cards: divided by the cards of the day (2 of 3, 1 of 2)
    assert top10["value"] == pytest.approx((2 / 3 + 1 / 2) / 2)
