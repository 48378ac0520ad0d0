"""One retrain of one kind: lake -> examples -> model -> honest evaluation -> gate -> publish.

Stages, each announced on the progress stream:

1. **Examples**: scored events with the labels known at the cut-off (``batch.dataset``),
   plus the batch-only profiles as of each event's period (``batch.profiles``).
2. **Split** by event time into train / validation / test.
3. **Fit** within the time budget (``batch.train``), calibrate and fit the hybrid blend
   on validation, choose the thresholds from the costs on validation.
4. **Evaluate** on the test window, side by side: the new batch and hybrid scores, the
   model in production (as it would have served: its own lookups and blend), and the online
   model's logged scores. When production was trained on part of the test window, the
   comparison uses only the events after its cut-off, so it is not judged on what it saw.
5. **Gate**: publish only if the new hybrid score's average precision beats the incumbent's
   (production's hybrid, or the online score when there is no batch model yet) by the
   margin; ``force`` overrides. The report says which and why.
6. **Publish**: the signed payload to Redis with an atomic pointer swap, announced on the
   model-updates topic. Nothing is written to Redis before this step, so a run that fails
   or is killed earlier leaves production untouched.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
import redis
from scipy.special import expit

from batch import design, train
from batch.dataset import DatasetError, RetrainError, Split, load_history, time_split
from batch.profiles import DEFAULT_PERIOD_S, PROFILES, point_in_time, snapshot
from models import evaluation, weights
from models.batch_registry import BatchModelRegistry
from models.evaluation import FloatArray
from models.features import FEATURE_SET_VERSIONS
from models.names import EventKind, RedisKeys
from models.settings import Settings

TOP_K_PER_DAY = 50


@dataclass(frozen=True)
class Options:
    """What one run is asked to do (the CLI's flags, already validated)."""

    kind: EventKind
    cutoff: datetime
    since: datetime | None = None
    force: bool = False
    dry_run: bool = False
    valid_share: float = 0.2
    test_share: float = 0.2
    min_positives: int = 5
    profile_period_s: float = DEFAULT_PERIOD_S
    max_train_rows: int = 500_000
    """Above this, the training window's negatives are sampled (every positive is kept)."""
    seed: int = 0
    production: bool = True
    """Judge against the batch model in production (read from Redis). False: against the
    online score only, and no Redis is needed (the backtest's comparison)."""


@dataclass(frozen=True)
class ScoreColumns:
    """The test labels and every scorer's scores on the comparison window (for plots)."""

    labels: npt.NDArray[np.bool_]
    scores: dict[str, FloatArray]


@dataclass
class Outcome:
    """What happened: the model, its figures, the decision and where the report is."""

    kind: EventKind
    version: str
    promoted: bool
    reason: str
    metrics: dict[str, Any]
    run_dir: Path
    previous: str | None = None
    stages: dict[str, float] = field(default_factory=dict)
    test_scores: pl.DataFrame | None = None
    """The new model on the test window, by event: event_id, batch_score, hybrid_score."""


def version_for(kind: EventKind, now: datetime) -> str:
    prefix = "txn" if kind == "transaction" else "email"
    return f"{prefix}-{now.strftime('%Y%m%dT%H%M%S.%fZ')}"


def run(
    settings: Settings,
    options: Options,
    *,
    log: Callable[[str], None] = lambda _: None,
    announce: Callable[[EventKind, str], None] | None = None,
) -> Outcome:
    """Retrain ``options.kind``; ``announce(kind, version)`` tells the workers (Kafka)."""
    kind, spec = options.kind, PROFILES[options.kind]
    stages: dict[str, float] = {}
    clock = time.monotonic()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        stages[name] = round(now - clock, 3)
        clock = now
        peak = _peak_mb()
        log(f"[{kind}] {name} done in {stages[name]:.1f} s (peak memory so far {peak:,.0f} MB)")

    log(
        f"[{kind}] reading the lake at {settings.lake_dir} "
        f"(cut-off {options.cutoff:%Y-%m-%dT%H:%M:%SZ})"
    )
    if options.since is not None and options.since >= options.cutoff:
        raise DatasetError(
            f"--since ({options.since:%Y-%m-%dT%H:%M:%SZ}) is not before the cut-off"
        )
    history = load_history(settings.lake_dir, kind, options.cutoff)
    log(f"[{kind}] {history.frame.height:,} scored events before the cut-off")
    examples = point_in_time(
        history.labelled(options.since),
        history.frame.lazy(),
        history.labels(),
        spec,
        options.profile_period_s,
    )
    stage("examples")
    split = time_split(
        examples,
        valid_share=options.valid_share,
        test_share=options.test_share,
        min_positives=options.min_positives,
    )
    log(f"[{kind}] {split.describe()}")

    inputs = design.Inputs(kind, history.served, spec.feature_names())
    fit_on = sample_negatives(split.train, options.max_train_rows, options.seed)
    if fit_on.height < split.train.height:
        log(
            f"[{kind}] fitting on every positive and a random share of the negatives: "
            f"{fit_on.height:,} of {split.train.height:,} training events "
            "(calibration on the full validation window puts the probabilities right)"
        )
    X_train, X_valid, X_test = (inputs.matrix(f) for f in (fit_on, split.valid, split.test))
    y_train, y_valid, y_test = (_labels(f) for f in (fit_on, split.valid, split.test))
    stage("features")

    tuned = train.tune(
        kind,
        inputs.fit_transform(X_train),
        y_train,
        inputs.transform(X_valid),
        y_valid,
        budget_s=settings.retrain_budget_s,
        seed=options.seed,
        log=lambda m: log(f"[{kind}] {m}"),
    )
    stage("fit")

    calibration = train.fit_platt(tuned.valid_raw, y_valid)
    batch_valid = expit(calibration.a * tuned.valid_raw + calibration.b)
    online_valid = split.valid["online_score"].to_numpy()
    blend = train.fit_blend(online_valid, batch_valid, y_valid)
    hybrid_valid = weights.blend_array(blend, online_valid, batch_valid)
    costs = train.Costs(settings.cost_missed, settings.cost_review, settings.cost_false_block)
    review_t, block_t, valid_cost = train.choose_thresholds(y_valid, hybrid_valid, costs)
    log(f"[{kind}] thresholds from costs: review {review_t:.4f}, block {block_t:.4f}")

    now = datetime.now(UTC)
    version = version_for(kind, now)
    snap = snapshot(history.frame.lazy(), history.labels(), spec, options.cutoff)
    model = weights.BatchModel(
        weights.ModelCard(
            kind=kind,
            version=version,
            feature_set_version=FEATURE_SET_VERSIONS[kind],
            feature_names=inputs.names,
            created_at=now,
            trained_until=options.cutoff,
            library_versions=weights.library_versions("numpy", "scikit-learn", "polars"),
            metrics={},
            review_threshold=review_t,
            block_threshold=block_t,
            hybrid=blend,
        ),
        inputs.export(tuned.estimator),
        calibration,
        [
            weights.Lookup(
                key="entity_id",
                features=snap.entity_features,
                rows=snap.entity_rows,
                default=spec.entity_default(),
            ),
            weights.Lookup(
                key="scope_id",
                features=snap.scope_features,
                rows=snap.scope_rows,
                default=spec.scope_default(),
            ),
        ],
    )
    stage("calibrate")

    batch_test = model.calibrate(_exported_raw(model, tuned, inputs, X_test))
    hybrid_test = weights.blend_array(model.card, split.test["online_score"].to_numpy(), batch_test)
    registry = BatchModelRegistry(
        redis.Redis.from_url(settings.redis_url), RedisKeys(settings.namespace)
    )
    production = _production(registry, settings, kind, log) if options.production else None
    metrics, columns = _evaluate(
        kind,
        split,
        model,
        batch_test,
        hybrid_test,
        y_test,
        production,
        settings,
        extra={
            "valid_cost": valid_cost,
            "costs": costs.__dict__,
            "trials": tuned.trials,
            "params": tuned.params,
            "split": split.summary(),
            "calibration": msgspec.to_builtins(calibration),
            "lookup_rows": {"entity": len(snap.entity_rows), "scope": len(snap.scope_rows)},
        },
    )
    stage("evaluate")

    promoted, reason = _gate(metrics, settings.promotion_margin, options.force)
    if options.dry_run:
        promoted, reason = False, f"dry run: not published ({reason})"
    log(f"[{kind}] {'PROMOTE' if promoted else 'KEEP PRODUCTION'}: {reason}")
    model = model.with_card(metrics=_card_metrics(metrics))
    run_dir = Path(settings.runs_dir) / kind / version
    previous = None
    if promoted:
        blob = weights.sign(model, _signing_key(settings))
        previous = registry.publish(kind, version, blob)
        if announce is not None:
            announce(kind, version)
        stage("publish")
    test_scores = pl.DataFrame(
        {
            "event_id": split.test["event_id"],
            "batch_score": batch_test,
            "hybrid_score": hybrid_test,
        }
    )
    outcome = Outcome(
        kind, version, promoted, reason, metrics, run_dir, previous, stages, test_scores
    )
    from batch.report import write_report  # matplotlib is imported only when reporting

    write_report(outcome, model, columns, _importances(inputs, tuned, X_test, y_test, options.seed))
    stage("report")
    return outcome


def _peak_mb() -> float:
    """This process's peak resident memory (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_negatives(frame: pl.DataFrame, max_rows: int, seed: int) -> pl.DataFrame:
    """At most about ``max_rows`` rows: every positive, and negatives sampled uniformly.

    Fraud is rare, so the negatives are what makes a large training window large; fitting
    balances the classes anyway, and the Platt calibration fitted on the (unsampled)
    validation window maps the scores back to real-world probabilities. Rows are chosen by
    position and gathered once, in ``frame``'s order (no copy of the whole window).
    """
    if frame.height <= max_rows:
        return frame
    positive = frame["is_positive"].to_numpy()
    positives, negatives = np.flatnonzero(positive), np.flatnonzero(~positive)
    keep = max(max_rows - len(positives), min(len(negatives), len(positives)))
    rng = np.random.default_rng(seed)
    sampled = rng.choice(negatives, size=min(keep, len(negatives)), replace=False)
    return frame[np.sort(np.concatenate([positives, sampled]))]


def _signing_key(settings: Settings) -> bytes:
    if not settings.model_signing_key:
        raise RetrainError(
            "FRAUD_MODEL_SIGNING_KEY is empty: set the same secret for the batch job and the "
            "workers, or run with --dry-run to train and report without publishing"
        )
    return settings.model_signing_key.encode()


def _labels(frame: pl.DataFrame) -> npt.NDArray[np.bool_]:
    return frame["is_positive"].to_numpy().astype(bool)


def _production(
    registry: BatchModelRegistry, settings: Settings, kind: EventKind, log: Callable[[str], None]
) -> weights.BatchModel | None:
    """The model in production, verified; None when there is none or it cannot be used."""
    current = registry.current_blob(kind)
    if current is None:
        log(f"[{kind}] no batch model in production yet: the incumbent is the online score")
        return None
    version, blob = current
    if not settings.model_signing_key:
        log(f"[{kind}] production {version} cannot be verified without FRAUD_MODEL_SIGNING_KEY")
        return None
    try:
        return weights.verify(
            blob,
            settings.model_signing_key.encode(),
            kind=kind,
            feature_set_version=FEATURE_SET_VERSIONS[kind],
        )
    except weights.InvalidWeights as exc:
        log(f"[{kind}] production {version} is unusable ({exc.reason}): judged against online")
        return None


def _evaluate(
    kind: EventKind,
    split: Split,
    model: weights.BatchModel,
    batch: FloatArray,
    hybrid: FloatArray,
    y_test: npt.NDArray[np.bool_],
    production: weights.BatchModel | None,
    settings: Settings,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], ScoreColumns]:
    test = split.test
    online = test["online_score"].to_numpy()
    card = model.card
    online_threshold = (
        settings.txn_review_threshold if kind == "transaction" else settings.email_review_threshold
    )
    scores: dict[str, tuple[FloatArray, float]] = {
        "new_hybrid": (hybrid, card.review_threshold),
        "new_batch": (batch, card.review_threshold),
        "online_logged": (online, online_threshold),
    }
    window = np.ones(test.height, dtype=bool)
    notes = []
    if production is not None:
        prod_batch = design.score_with(production, test)
        prod_hybrid = weights.blend_array(production.card, online, prod_batch)
        scores["production_hybrid"] = (prod_hybrid, production.card.review_threshold)
        scores["production_batch"] = (prod_batch, production.card.review_threshold)
        after = (test["event_time"] >= production.card.trained_until).to_numpy()
        if y_test[after].sum() >= 5 and (~y_test[after]).sum() >= 5:
            window = after
        else:
            notes.append(
                f"production {production.card.version} was trained until "
                f"{production.card.trained_until:%Y-%m-%dT%H:%M:%SZ}, inside the test window, "
                "and too few test events come after it: its figures are optimistic"
            )
    times = test["event_time"].dt.epoch("s").to_numpy().astype(np.float64)
    entities = test["entity_id"].to_numpy()
    figures = {}
    columns = {name: s[window] for name, (s, _) in scores.items()}
    for name, (s, threshold) in scores.items():
        summary = evaluation.summarize(y_test[window], s[window], threshold)
        if kind == "transaction":
            summary["precision_top_k_per_day"] = evaluation.precision_top_k_per_day(
                times[window], entities[window], y_test[window], s[window], TOP_K_PER_DAY
            )
        figures[name] = summary
    metrics = {
        "kind": kind,
        "version": card.version,
        "production_version": production.card.version if production else None,
        "comparison_events": int(window.sum()),
        "comparison_positives": int(y_test[window].sum()),
        "test_events": int(test.height),
        "scores": figures,
        "thresholds": {"review": card.review_threshold, "block": card.block_threshold},
        "notes": notes,
        **extra,
    }
    return metrics, ScoreColumns(y_test[window], columns)


EXPORT_CHECK_ROWS = 2_000


def _exported_raw(
    model: weights.BatchModel, tuned: train.Tuned, inputs: design.Inputs, X_test: Any
) -> FloatArray:
    """The new model's decision values on the test window, as the exported model serves them.

    Computed by the fitted estimator (compiled and multi-threaded; the numpy walk of the
    exported trees takes minutes on millions of rows), after checking on the first
    :data:`EXPORT_CHECK_ROWS` rows that the export gives the same numbers: bit for bit for
    trees, to float rounding for the folded linear model (the unit tests of
    ``models.weights`` hold both on many more cases)."""
    raw = train.raw(tuned.estimator, inputs.transform(X_test))
    head = X_test[:EXPORT_CHECK_ROWS]
    exported = model.raw_matrix(head)
    if not np.allclose(exported, raw[: head.shape[0]], rtol=1e-9, atol=1e-9):
        worst = float(np.max(np.abs(exported - raw[: head.shape[0]])))
        raise RetrainError(
            f"the exported model does not reproduce the fitted one (largest difference "
            f"{worst:.3g}): not published; please report this as a bug"
        )
    return raw


def _importances(
    inputs: design.Inputs, tuned: train.Tuned, X_test: Any, y_test: npt.NDArray[np.bool_], seed: int
) -> dict[str, float]:
    """Which features the new model leans on.

    Trees: permutation importance (the drop in average precision when a column is shuffled)
    on at most 5,000 test rows, every positive among them; it predicts the rows again for
    every column and repeat (with 20,000 rows the report stage took two minutes; see
    docs/benchmarks.md). Linear: the absolute weight times the spread of its (transformed)
    column on the test window."""
    if inputs.kind == "transaction":
        from sklearn.inspection import permutation_importance

        # Every positive (they are what average precision is about) and random negatives.
        rng = np.random.default_rng(seed)
        positives = np.flatnonzero(y_test)[:2_500]
        negatives = np.flatnonzero(~y_test)
        rows = np.sort(
            np.concatenate(
                [
                    positives,
                    rng.choice(
                        negatives, min(len(negatives), 5_000 - len(positives)), replace=False
                    ),
                ]
            )
        )
        result = permutation_importance(
            tuned.estimator,
            X_test[rows],
            y_test[rows],
            scoring="average_precision",
            n_repeats=3,
            random_state=seed,
        )
        values = result.importances_mean
    else:
        X = inputs.transform(X_test)
        mean = np.asarray(X.mean(axis=0)).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        spread = np.sqrt(np.clip(sq - mean * mean, 0, None))
        values = np.abs(np.asarray(tuned.estimator.coef_)[0]) * spread
    ranked = sorted(zip(inputs.names, values.tolist(), strict=True), key=lambda nv: -nv[1])
    return dict(ranked[:20])


def _gate(metrics: dict[str, Any], margin: float, force: bool) -> tuple[bool, str]:
    scores = metrics["scores"]
    new = scores["new_hybrid"]["average_precision"] or 0.0
    incumbent_name = "production_hybrid" if "production_hybrid" in scores else "online_logged"
    incumbent = scores[incumbent_name]["average_precision"] or 0.0
    verdict = (
        f"new hybrid AP {new:.4f} vs {incumbent_name.replace('_', ' ')} AP {incumbent:.4f} "
        f"(margin {margin}) on {metrics['comparison_events']} test events"
    )
    if new >= incumbent + margin:
        return True, f"better: {verdict}"
    if force:
        return True, f"forced despite: {verdict}"
    return False, f"not better by the margin: {verdict}"


def _card_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, figures in metrics["scores"].items():
        for key in ("roc_auc", "average_precision"):
            value = figures.get(key)
            if value is not None and np.isfinite(value):
                out[f"{name}_{key}"] = float(value)
    return out
