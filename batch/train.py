"""Fitting the batch models: tuning within a time budget, calibration, blend and thresholds.

- Transactions: ``HistGradientBoostingClassifier``. Fraud is rare, so positives are
  up-weighted while fitting; the probabilities that up-weighting distorts are put right by
  Platt scaling on the validation window afterwards.
- Emails: a linear model on TF-IDF-weighted hashed tokens plus standardised dense features
  (``LogisticRegression`` with balanced class weights).
- Hyperparameters: a small grid, most promising first, tried until the time budget runs
  out (trees grow in steps, so the budget bounds the first candidate too); each candidate is
  judged by average precision on the validation window.
- The hybrid blend (online and batch scores) is a logistic regression on their logits,
  fitted on the validation window where the online scores are the ones actually served.
- Thresholds come from costs, not from 0.5: the review and block thresholds minimise the
  total cost of missed frauds, analyst reviews and wrongly blocked customers on validation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from models import evaluation, weights
from models.evaluation import FloatArray

BoolArray = npt.NDArray[np.bool_]

TREE_GRID: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 0.0},
    {"learning_rate": 0.05, "max_leaf_nodes": 63, "min_samples_leaf": 40, "l2_regularization": 1.0},
    {"learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 50, "l2_regularization": 1.0},
    {"learning_rate": 0.2, "max_leaf_nodes": 31, "min_samples_leaf": 100, "l2_regularization": 0.1},
    {"learning_rate": 0.05, "max_leaf_nodes": 31, "min_samples_leaf": 10, "l2_regularization": 0.0},
)
LINEAR_GRID: tuple[dict[str, Any], ...] = ({"C": 1.0}, {"C": 0.1}, {"C": 10.0}, {"C": 0.01})


@dataclass(frozen=True)
class Costs:
    """What each outcome costs, in any one currency: the basis of both thresholds."""

    missed: float
    """A fraud or spam let through."""
    review: float
    """An analyst looking at an alert (true or false)."""
    false_block: float
    """A legitimate customer or message blocked."""


@dataclass
class Tuned:
    """The chosen estimator and the record of the search."""

    estimator: Any
    params: dict[str, Any]
    valid_raw: FloatArray
    trials: list[dict[str, Any]] = field(default_factory=list)


def positive_weight(y: BoolArray) -> float:
    """How much more a positive weighs than a negative while fitting (balanced classes)."""
    positives = max(int(y.sum()), 1)
    return max(1.0, (len(y) - positives) / positives)


def tune(
    kind: str,
    X_train: Any,
    y_train: BoolArray,
    X_valid: Any,
    y_valid: BoolArray,
    *,
    budget_s: float,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> Tuned:
    """Fit candidates from the grid until ``budget_s`` runs out; keep the best by
    validation average precision.

    The budget bounds the whole search, the first candidate included: trees are grown
    :data:`TREES_PER_STEP` at a time and a candidate stops growing when the budget is spent
    (it keeps the trees it has; at least one step). Later candidates start only while
    budget is left."""
    grid = TREE_GRID if kind == "transaction" else LINEAR_GRID
    deadline = time.monotonic() + budget_s
    best: Tuned | None = None
    best_ap = -1.0
    trials: list[dict[str, Any]] = []
    for params in grid:
        if best is not None and time.monotonic() > deadline:
            log(f"time budget of {budget_s:.0f} s spent after {len(trials)} candidates")
            break
        t0 = time.monotonic()
        estimator, note = _fit(kind, params, X_train, y_train, seed, deadline)
        raw_valid = raw(estimator, X_valid)
        ap = evaluation.average_precision(y_valid, raw_valid) or 0.0
        trial = {**params, "valid_average_precision": ap, "seconds": time.monotonic() - t0}
        if kind == "transaction":
            trial["trees"] = int(estimator.n_iter_)
        trials.append(trial)
        log(f"candidate {len(trials)}: {params} -> validation AP {ap:.4f}{note}")
        if ap > best_ap:
            best_ap, best = ap, Tuned(estimator, dict(params), raw_valid)
    assert best is not None
    best.trials = trials
    return best


MAX_TREES = 300
TREES_PER_STEP = 25


def _fit(
    kind: str, params: dict[str, Any], X: Any, y: BoolArray, seed: int, deadline: float
) -> tuple[Any, str]:
    """The fitted estimator and a note for the log (why a tree model stopped growing)."""
    if kind == "transaction":
        weight = positive_weight(y)
        estimator = HistGradientBoostingClassifier(
            max_iter=TREES_PER_STEP,
            warm_start=True,  # each fit() adds trees to those grown already
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=seed,  # the same early-stopping rows at every step
            **params,
        )
        sample_weight = np.where(y, weight, 1.0)
        while True:
            estimator.fit(X, y, sample_weight=sample_weight)
            if estimator.n_iter_ < estimator.max_iter:
                return estimator, f", {estimator.n_iter_} trees (early stopping)"
            if estimator.max_iter >= MAX_TREES:
                return estimator, f", {estimator.n_iter_} trees (the most allowed)"
            if time.monotonic() > deadline:
                return estimator, f", {estimator.n_iter_} trees (time budget spent)"
            estimator.set_params(max_iter=estimator.max_iter + TREES_PER_STEP)
    estimator = LogisticRegression(
        class_weight="balanced", max_iter=2000, solver="liblinear", random_state=seed, **params
    )
    estimator.fit(X, y)
    return estimator, ""


def raw(estimator: Any, X: Any) -> FloatArray:
    """The uncalibrated decision value (a logit) of each row."""
    return np.asarray(estimator.decision_function(X), dtype=np.float64)


def fit_platt(raw: FloatArray, y: BoolArray) -> weights.Calibration:
    """Platt scaling: ``p = sigmoid(a * raw + b)`` fitted on held-out rows."""
    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(raw.reshape(-1, 1), y)
    return weights.Calibration(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def fit_blend(online: FloatArray, batch: FloatArray, y: BoolArray) -> weights.Blend:
    """The hybrid score's weights on the two logits (``models.weights.blend_array``).

    Learned on the validation window; mildly regularised, so that when the online score
    adds nothing it gets a weight near zero rather than noise.
    """
    X = np.column_stack([weights.logit_array(online), weights.logit_array(batch)])
    lr = LogisticRegression(C=1.0, max_iter=1000)
    lr.fit(X, y)
    return weights.Blend(
        online_weight=float(lr.coef_[0, 0]),
        batch_weight=float(lr.coef_[0, 1]),
        bias=float(lr.intercept_[0]),
    )


def choose_thresholds(y: BoolArray, p: FloatArray, costs: Costs) -> tuple[float, float, float]:
    """(review threshold, block threshold, total cost on these rows).

    Every event at or above the review threshold is reviewed (cost ``review`` each) or, at
    or above the block threshold, blocked (``false_block`` when it was legitimate); every
    positive below the review threshold is missed (``missed``). Candidates are quantiles of
    ``p``; the pair with the least total cost wins.
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    candidates = np.unique(np.quantile(p, np.linspace(0.0, 1.0, 201)))
    candidates = np.append(candidates, np.nextafter(1.0, 2.0))  # "never": nothing reaches it
    order = np.argsort(p)
    sorted_p, sorted_y = p[order], y[order]
    pos_below = np.concatenate([[0], np.cumsum(sorted_y)])
    neg_below = np.concatenate([[0], np.cumsum(~sorted_y)])
    idx = np.searchsorted(sorted_p, candidates, side="left")
    total_neg = int((~y).sum())
    missed = pos_below[idx] * costs.missed
    at_or_above = len(p) - idx
    negatives_above = total_neg - neg_below[idx]
    # cost[r, b]: review from candidate r, block from candidate b (b >= r).
    cost = (
        missed[:, None]
        + (at_or_above[:, None] - at_or_above[None, :]) * costs.review
        + negatives_above[None, :] * costs.false_block
    ).astype(np.float64)
    cost[np.tril_indices(len(candidates), k=-1)] = np.inf
    r, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return float(candidates[r]), float(candidates[b]), float(cost[r, b])
