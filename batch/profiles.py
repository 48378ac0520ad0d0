"""Batch-only aggregates: long-window entity profiles that the stream does not keep.

The worker keeps a week of each card's history and four weeks of label outcomes; longer
views are cheap in Polars over the lake and expensive in a stream. The nightly job computes:

- per entity (card, or sender), over 30 and 90 days: how many events, and for transactions
  the mean and standard deviation of ``amount_log``: the customer's spending profile;
- per scope (terminal, or sender), over 30 days: how many events, how many labels arrived
  and how many of those were positive, and a smoothed positive rate. Labels count by their
  *arrival* time, so the risk never knows a chargeback before it was filed.

How they reach the live scorer: the tables as of the model's cut-off travel inside the signed
model payload (``models.weights.Lookup``) and the worker looks each event's entity and scope
up. That is a snapshot that ages until the next retrain, so training must see snapshots of the
same kind: every training event gets the profile as of the start of its ``period`` (one day
by default, the retrain cadence), built only from what was known then. Both use the same
window rule (``[instant - window, instant)``, labels by arrival) and the same profile
expressions; a unit test checks that a snapshot equals the training values at its instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from batch.dataset import FEATURE_DTYPE
from models.features import DAY_S, OUTCOME_PRIOR_RATE, OUTCOME_PRIOR_WEIGHT
from models.names import EventKind

DEFAULT_PERIOD_S = DAY_S
US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ProfileSpec:
    """Which profiles one kind of event gets."""

    kind: EventKind
    entity_name: str
    scope_name: str
    value_feature: str | None
    entity_windows_days: tuple[int, ...] = (30, 90)
    scope_window_days: int = 30

    def entity_features(self) -> list[str]:
        names = []
        for days in self.entity_windows_days:
            names.append(f"profile_{self.entity_name}_count_{days}d")
            if self.value_feature:
                names.append(f"profile_{self.entity_name}_{self.value_feature}_mean_{days}d")
                names.append(f"profile_{self.entity_name}_{self.value_feature}_std_{days}d")
        return names

    def scope_features(self) -> list[str]:
        p, d = f"profile_{self.scope_name}", self.scope_window_days
        return [
            f"{p}_count_{d}d",
            f"{p}_positive_labels_{d}d",
            f"{p}_labels_{d}d",
            f"{p}_positive_rate_{d}d",
        ]

    def feature_names(self) -> list[str]:
        return self.entity_features() + self.scope_features()

    def entity_default(self) -> list[float]:
        return [0.0] * len(self.entity_features())

    def scope_default(self) -> list[float]:
        return [0.0, 0.0, 0.0, OUTCOME_PRIOR_RATE]


PROFILES: dict[EventKind, ProfileSpec] = {
    "transaction": ProfileSpec("transaction", "card", "terminal", "amount_log"),
    "email": ProfileSpec("email", "sender", "sender_outcome", None),
}


@dataclass(frozen=True)
class Snapshot:
    """Profile tables as of one instant, ready to become ``Lookup`` tables."""

    entity_features: list[str]
    entity_rows: dict[str, list[float]]
    scope_features: list[str]
    scope_rows: dict[str, list[float]]


def _events(scored: pl.LazyFrame, spec: ProfileSpec) -> pl.LazyFrame:
    """``scored`` holds the served features as columns (``batch.dataset.History``)."""
    value = pl.col(spec.value_feature).cast(pl.Float64) if spec.value_feature else pl.lit(0.0)
    return scored.select(
        "event_id",
        "entity_id",
        pl.col("scope_id").fill_null(""),
        pl.col("event_time").dt.epoch("us").alias("t"),
        value.fill_null(0.0).alias("v"),
    )


def _window_sums(
    per_bucket: pl.LazyFrame, keys: pl.LazyFrame, key: str, window_buckets: int, columns: list[str]
) -> pl.LazyFrame:
    """For each ``(key, q)`` in ``keys``: the sums of ``columns`` over buckets ``[q - W, q)``.

    Cumulative sums per key, read just before ``q`` and just before ``q - W`` with as-of
    joins: exact, vectorised, and linear in the number of (key, bucket) rows.
    """
    cum = (
        per_bucket.sort(key, "bucket")
        .with_columns(pl.col(c).cum_sum().over(key) for c in columns)
        .sort("bucket")
    )
    out = keys
    for side, shift in (("hi", 1), ("lo", 1 + window_buckets)):
        probe = keys.with_columns((pl.col("q") - shift).alias("at")).sort("at")
        found = probe.join_asof(
            cum,
            left_on="at",
            right_on="bucket",
            by=key,
            strategy="backward",
            check_sortedness=False,
        ).select(key, "q", *[pl.col(c).fill_null(0).alias(f"{c}_{side}") for c in columns])
        out = out.join(found, on=[key, "q"], how="left")
    return out.select(
        key, "q", *[(pl.col(f"{c}_hi") - pl.col(f"{c}_lo")).alias(c) for c in columns]
    )


def _entity_profile(
    n: pl.Expr, s: pl.Expr, ss: pl.Expr, spec: ProfileSpec, days: int
) -> list[pl.Expr]:
    out = [n.cast(pl.Float64).alias(f"profile_{spec.entity_name}_count_{days}d")]
    if spec.value_feature:
        mean = pl.when(n > 0).then(s / n).otherwise(0.0)
        var = pl.when(n > 0).then(ss / n - mean * mean).otherwise(0.0)
        name = f"profile_{spec.entity_name}_{spec.value_feature}"
        out.append(mean.alias(f"{name}_mean_{days}d"))
        out.append(var.clip(lower_bound=0.0).sqrt().alias(f"{name}_std_{days}d"))
    return out


def _scope_profile(
    n: pl.Expr, pos: pl.Expr, labels: pl.Expr, *, spec: ProfileSpec
) -> list[pl.Expr]:
    names = spec.scope_features()
    rate = (pos + OUTCOME_PRIOR_RATE * OUTCOME_PRIOR_WEIGHT) / (labels + OUTCOME_PRIOR_WEIGHT)
    return [
        n.cast(pl.Float64).alias(names[0]),
        pos.cast(pl.Float64).alias(names[1]),
        labels.cast(pl.Float64).alias(names[2]),
        rate.cast(pl.Float64).alias(names[3]),
    ]


def _buckets(
    scored: pl.LazyFrame, labels: pl.LazyFrame, spec: ProfileSpec, period_us: int
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Per (entity, bucket) event sums, and per (scope, bucket) events and arrived labels."""
    events = _events(scored, spec).with_columns((pl.col("t") // period_us).alias("bucket"))
    entity = events.group_by("entity_id", "bucket").agg(
        pl.len().alias("n"), pl.col("v").sum().alias("s"), (pl.col("v") ** 2).sum().alias("ss")
    )
    arrived = (
        labels.select(pl.col("scope_id").fill_null(""), "label_time", "is_positive")
        .with_columns((pl.col("label_time").dt.epoch("us") // period_us).alias("bucket"))
        .group_by("scope_id", "bucket")
        .agg(pl.col("is_positive").sum().alias("pos"), pl.len().alias("labels"))
    )
    counts = events.group_by("scope_id", "bucket").agg(pl.len().alias("n"))
    scope = counts.join(arrived, on=["scope_id", "bucket"], how="full", coalesce=True).select(
        "scope_id",
        "bucket",
        *[pl.col(c).fill_null(0).cast(pl.Int64) for c in ("n", "pos", "labels")],
    )
    return entity, scope


def _check_period(period_s: float, spec: ProfileSpec) -> int:
    days = (*spec.entity_windows_days, spec.scope_window_days)
    if period_s <= 0 or any(not math.isclose((d * DAY_S) % period_s, 0.0) for d in days):
        raise ValueError(
            f"the profile period ({period_s} s) must divide every window ({days} days)"
        )
    return int(period_s * US)


def point_in_time(
    examples: pl.DataFrame,
    scored: pl.LazyFrame,
    labels: pl.LazyFrame,
    spec: ProfileSpec,
    period_s: float = DEFAULT_PERIOD_S,
) -> pl.DataFrame:
    """``examples`` with every profile feature as of the start of each event's period.

    ``scored`` and ``labels`` are everything known at the cut-off (events before it; labels
    arrived before it, each with the ``scope_id`` of its event: ``History.labels``); a
    profile at instant ``b`` only sums events before ``b`` and labels that arrived before
    ``b``. The profiles are model inputs, so they are stored as
    ``batch.dataset.FEATURE_DTYPE`` like the served features. They are computed on the key
    columns alone and added to ``examples`` at the end, so a wide frame is never copied.
    """
    period_us = _check_period(period_s, spec)
    entity, scope = _buckets(scored, labels, spec, period_us)
    keyed = examples.lazy().select(
        "entity_id",
        pl.col("scope_id").fill_null(""),
        (pl.col("event_time").dt.epoch("us") // period_us).alias("q"),
    )
    out = keyed
    for days in spec.entity_windows_days:
        sums = _window_sums(
            entity,
            keyed.select("entity_id", "q").unique(),
            "entity_id",
            int(days * DAY_S * US) // period_us,
            ["n", "s", "ss"],
        ).select(
            "entity_id",
            "q",
            *_entity_profile(pl.col("n"), pl.col("s"), pl.col("ss"), spec=spec, days=days),
        )
        out = out.join(sums, on=["entity_id", "q"], how="left", maintain_order="left")
    sums = _window_sums(
        scope,
        keyed.select("scope_id", "q").unique(),
        "scope_id",
        int(spec.scope_window_days * DAY_S * US) // period_us,
        ["n", "pos", "labels"],
    ).select(
        "scope_id", "q", *_scope_profile(pl.col("n"), pl.col("pos"), pl.col("labels"), spec=spec)
    )
    out = out.join(sums, on=["scope_id", "q"], how="left", maintain_order="left")
    profiles = out.select(pl.col(spec.feature_names()).cast(FEATURE_DTYPE)).collect()
    return examples.hstack(profiles.get_columns())


def snapshot(
    scored: pl.LazyFrame, labels: pl.LazyFrame, spec: ProfileSpec, at: datetime
) -> Snapshot:
    """The profile tables as of ``at``: what the scorer looks up until the next retrain.

    The same windows as :func:`point_in_time` (``[at - window, at)``, labels by arrival) and
    the same profile expressions, for one instant: the served numbers are the training
    numbers of an event at that instant (a unit test holds the two together).
    """
    at_us = (at - EPOCH) // timedelta(microseconds=1)
    events = _events(scored, spec)

    def within(column: pl.Expr, days: int) -> pl.Expr:
        return (column >= at_us - days * int(DAY_S) * US) & (column < at_us)

    entity = events.select("entity_id").unique()
    for days in spec.entity_windows_days:
        sums = (
            events.filter(within(pl.col("t"), days))
            .group_by("entity_id")
            .agg(
                pl.len().alias("n"),
                pl.col("v").sum().alias("s"),
                (pl.col("v") ** 2).sum().alias("ss"),
            )
        )
        entity = (
            entity.join(sums, on="entity_id", how="left")
            .with_columns(pl.col("n", "s", "ss").fill_null(0))
            .select(
                pl.exclude("n", "s", "ss"),
                *_entity_profile(pl.col("n"), pl.col("s"), pl.col("ss"), spec=spec, days=days),
            )
        )
    days = spec.scope_window_days
    counts = events.filter(within(pl.col("t"), days)).group_by("scope_id").agg(pl.len().alias("n"))
    arrived = (
        labels.filter(within(pl.col("label_time").dt.epoch("us"), days))
        .select(pl.col("scope_id").fill_null(""), "is_positive")
        .group_by("scope_id")
        .agg(pl.col("is_positive").sum().alias("pos"), pl.len().alias("labels"))
    )
    scope = (
        counts.join(arrived, on="scope_id", how="full", coalesce=True)
        .with_columns(pl.col("n", "pos", "labels").fill_null(0))
        .select(
            "scope_id",
            *_scope_profile(pl.col("n"), pl.col("pos"), pl.col("labels"), spec=spec),
        )
    )
    # An entity with no event in the longest window has the default (zero) row: leave it out.
    longest = f"profile_{spec.entity_name}_count_{max(spec.entity_windows_days)}d"
    ent = entity.filter(pl.col(longest) > 0).collect()
    sco = scope.collect()
    return Snapshot(
        entity_features=spec.entity_features(),
        entity_rows={row[0]: list(row[1:]) for row in ent.iter_rows()},
        scope_features=spec.scope_features(),
        scope_rows={row[0]: list(row[1:]) for row in sco.iter_rows()},
    )
