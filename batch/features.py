"""The transaction features over a whole history at once, in Polars: the batch twin of the stream.

Why two paths. The stream worker computes each transaction's features incrementally, one
event at a time, from its card's bounded history (:func:`models.features.transaction_features`
then :func:`models.features.card_history_after`), and serves them; the nightly job learns from
those served features. Some datasets have no served features: a historical file to bootstrap
a model from, a backfill after a feature change. For those the batch job recomputes the
features here, over the whole history, from a frame (Parquet, no per-row event objects) with
Polars expressions that run on every core. Two implementations of one definition drift; the
property test ``tests/unit/batch/test_feature_parity.py`` runs both on random event sequences
and keeps them equal. Every window, cap, floor and prior is imported from
:mod:`models.features`, never copied.

How it matches the stream, per card (rows ordered by arrival, i.e. input order):

- Candidates for an event are the card's previous :data:`~models.features.CARD_HISTORY_CAP`
  arrivals, as the online history keeps; the stream's window rule then applies to each
  (``lower = t - w; lower < p <= t``, the same float operations). A tie (two events of one
  card at the same instant) counts the earlier arrival as prior of the later one, not the
  reverse. Times are the stream's floats to the bit (see :func:`_seconds`), so window edges
  and ties fall the same way.
- This is exactly the online state whenever a card's event times do not go backwards in
  arrival order (ties are fine). A back-dated event may differ: online, a later-stamped
  event may already have evicted entries (``card_history_after`` drops those at or before
  its own ``t - 7 d``) that the back-dated event's window would still include; here they
  still count. That is the rule :mod:`models.features` itself states for a batch version.
- Counts, distinct counts and flags are exact. Sums, the std and divisions are Polars' own
  (another summation order; a division by a scalar is a multiplication by its reciprocal):
  equal to the stream's within float rounding (~1e-15 relative), not bit for bit.

Terminal label outcomes (``terminal_*_28d``): a label counts for a transaction at ``t`` when
it arrived in ``t - 28 d < arrival <= t`` and is among the latest
:data:`~models.features.OUTCOME_CAP` labels of the terminal to arrive by ``t``: what the
worker and the backtest hold when labels are recorded in arrival order before the events
stamped after them. Labels of equal arrival time are ordered by input order (the backtest's
order; Redis orders such ties by member name, so at the cap boundary the worker may keep a
different one of two simultaneous labels).

Cost. Each event's candidates are an index range within its card (bounded below through the
card's running maximum time, so only the 7-day history, at most ``CAP``), exploded into one
row per (event, prior), gathered by position (no join) and aggregated per event: the work is
the sum of the events' 7-day histories, not the square of a card's size. Outcomes are two
as-of joins on running counts. 1M transactions of 20k cards (50 a month each) with 200k
labels: about 2-4 s and 0.6 GB above the input, on 2 shared cores.
"""

from __future__ import annotations

import math

import polars as pl

from models.features import (
    AMOUNT_STD_FLOOR,
    AMOUNT_STD_FLOOR_SHARE,
    CARD_HISTORY_CAP,
    CARD_HISTORY_WINDOW_S,
    CARD_WINDOWS,
    DAY_S,
    EXTRA_FEATURE_PREFIX,
    OUTCOME_CAP,
    OUTCOME_PRIOR_RATE,
    OUTCOME_PRIOR_WEIGHT,
    OUTCOME_WINDOW_S,
    SECS_SINCE_PREV_CAP_S,
    TRANSACTION_DENSE_FEATURES,
    ZSCORE_CAP,
)

__all__ = ["label_outcomes", "transaction_features_frame"]

Frame = pl.LazyFrame | pl.DataFrame

_LONGEST_SUFFIX, _LONGEST_S = CARD_WINDOWS[-1]
"""The last card window is the one the stream's 7-day features (distincts, mean, std, gap to
the previous transaction, is_new_*) use."""
ROWS_PER_PART = 500_000
"""Transactions whose candidates are exploded together. The exploded frame is the memory peak,
about 50 bytes per (event, prior in 7 d) pair: 500k rows with ~12 priors each (cards paying
50 times a month) take ~0.3 GB, with 117 each ~2.5 GB. Larger inputs are processed part after
part (whole cards each), which bounds the peak; each part costs a few ms of overhead."""
if _LONGEST_S > CARD_HISTORY_WINDOW_S:  # the history could not serve that window
    raise ImportError("the longest card window exceeds the card history window")


def transaction_features_frame(
    transactions: Frame,
    terminal_outcomes: Frame | None = None,
    *,
    rows_per_part: int = ROWS_PER_PART,
) -> pl.LazyFrame:
    """``event_id`` and the features of every transaction, as the stream computes them.

    ``transactions``: one row per transaction, in arrival order (the order the stream would
    process them), with columns

    - ``event_id``; ``card_id``; ``amount`` (number); ``country`` (string);
    - ``event_time``: a ``Datetime`` (naive is taken as UTC; microseconds, like the events), or
      a number of POSIX seconds;
    - optional ``device_id`` (missing or null: ``""``, no device), ``channel`` (missing or
      null: ``"pos"``), ``terminal_id`` (needed with ``terminal_outcomes``);
    - optional ``extra_<name>`` numeric columns: passed through as the event's extra features
      (non-finite values become 0.0, as online), after the dense ones, sorted by name.

    ``terminal_outcomes``: label outcomes with ``terminal_id``, ``label_time`` (as
    ``event_time``: when the label arrived) and ``is_positive``, for instance from
    :func:`label_outcomes`. Without it every transaction gets the outcome features of a
    terminal without labels.

    ``rows_per_part``: see :data:`ROWS_PER_PART`. The number of parts needs the row count: a
    LazyFrame is counted once here (cheap for a Parquet scan).

    Returns a LazyFrame in the input order: ``event_id``, then
    :data:`~models.features.TRANSACTION_DENSE_FEATURES` (Float64), then the ``extra_*``.
    """
    if rows_per_part < 1:
        raise ValueError("rows_per_part must be at least 1")
    if isinstance(transactions, pl.DataFrame):
        rows = transactions.height
    else:
        rows = transactions.select(pl.len()).collect().item()
    parts = max(1, -(-rows // rows_per_part))
    lf = transactions.lazy()
    schema = lf.collect_schema()
    extras = sorted(name for name in schema.names() if name.startswith(EXTRA_FEATURE_PREFIX))
    events = lf.select(
        "event_id",
        pl.col("card_id"),
        _seconds(schema, "event_time").alias("_t"),
        pl.col("amount").cast(pl.Float64),
        pl.col("country"),
        _optional(schema, "device_id", "").alias("device_id"),
        _optional(schema, "channel", "pos").alias("channel"),
        *([pl.col("terminal_id")] if terminal_outcomes is not None else []),
        *(_finite(pl.col(name).cast(pl.Float64)).alias(name) for name in extras),
    ).with_row_index("_row")

    card = _card_features(events, parts)
    result = events.join(card, on="_row", how="left")
    if terminal_outcomes is not None:
        result = result.join(_outcome_counts(events, terminal_outcomes), on="_row", how="left")
    else:
        result = result.with_columns(_pos=pl.lit(0.0), _lab=pl.lit(0.0))
    rate = (pl.col("_pos") + OUTCOME_PRIOR_RATE * OUTCOME_PRIOR_WEIGHT) / (
        pl.col("_lab") + OUTCOME_PRIOR_WEIGHT
    )
    angle = 2.0 * math.pi * (pl.col("_t") % DAY_S) / DAY_S  # the stream's formula
    result = result.with_columns(
        amount_log=pl.col("amount").log1p(),
        hour_sin=angle.sin(),
        hour_cos=angle.cos(),
        is_online=(pl.col("channel") == "online").cast(pl.Float64),
        terminal_fraud_count_28d=pl.col("_pos"),
        terminal_label_count_28d=pl.col("_lab"),
        terminal_fraud_rate_28d=rate,
    )
    return result.sort("_row").select(
        "event_id", *(pl.col(name).cast(pl.Float64) for name in TRANSACTION_DENSE_FEATURES), *extras
    )


def label_outcomes(transactions: Frame, labels: Frame) -> pl.LazyFrame:
    """Terminal outcomes for :func:`transaction_features_frame` from labels by event id.

    ``labels`` has ``event_id``, ``label_time`` and ``is_positive`` (the lake's labels table);
    each label is scoped to the terminal of the transaction it names, as the worker records
    it. Labels of unknown events are dropped; the order of ``labels`` is kept (it breaks ties
    of arrival time).
    """
    terminals = (
        transactions.lazy().select("event_id", "terminal_id").unique("event_id", keep="first")
    )
    return (
        labels.lazy()
        .select("event_id", "label_time", "is_positive")
        .join(terminals, on="event_id", how="inner", maintain_order="left")
        .select("terminal_id", "label_time", "is_positive")
    )


# --- pieces -----------------------------------------------------------------------------


def _seconds(schema: pl.Schema, name: str) -> pl.Expr:
    """POSIX seconds, the same float as the stream's ``event_time.timestamp()``.

    Python divides the whole microseconds by 10**6 with one correct rounding. Polars divides
    a column by a scalar as a multiplication by its reciprocal, which is one bit off for a
    third of the times, enough to move a window edge or the gap to a tie. So: whole seconds
    (exact) plus the fraction; the tiny error of the fraction vanishes in the one rounding of
    the sum, for any time after 1970-01-13 (2**20 s: the sum is then never within the
    fraction's error of a rounding boundary)."""
    dtype = schema[name]
    if isinstance(dtype, pl.Datetime):
        us = pl.col(name).dt.epoch("us")
        whole, fraction = us // 1_000_000, us % 1_000_000
        return whole.cast(pl.Float64) + fraction.cast(pl.Float64) / 1_000_000.0
    if dtype.is_numeric():
        return pl.col(name).cast(pl.Float64)
    raise TypeError(f"{name} must be a Datetime or POSIX seconds, not {dtype}")


def _optional(schema: pl.Schema, name: str, default: str) -> pl.Expr:
    """A string column with the stream's default where it is missing or null."""
    if name not in schema:
        return pl.lit(default, dtype=pl.String)
    return pl.col(name).fill_null(default)


def _finite(value: pl.Expr) -> pl.Expr:
    """0.0 for NaN and infinities, as the stream's ``_finite``."""
    return pl.when(value.is_nan() | value.is_infinite()).then(0.0).otherwise(value)


def _card_features(events: pl.LazyFrame, parts: int) -> pl.LazyFrame:
    """``_row`` and the features that read the card's history (counts, sums, distincts, gap,
    amount vs mean), computed over ``parts`` groups of whole cards one after the other."""
    candidates = _candidates(events)
    if parts == 1:
        return _history_features(candidates)
    # A card's part: where its first row falls, so that parts hold whole cards.
    first_row = pl.col("_pos").first().over("card_id").cast(pl.Int64)
    candidates = (
        candidates.with_row_index("_pos")
        .with_columns(_part=(first_row * parts) // pl.len())
        .drop("_pos")
        .cache()
    )
    return pl.concat(
        [_history_features(candidates.filter(pl.col("_part") == i)) for i in range(parts)],
        parallel=False,  # one part's exploded candidates in memory at a time
    )


def _candidates(events: pl.LazyFrame) -> pl.LazyFrame:
    """The events grouped by card (arrival order kept within each), with ``_n``: how many of
    the card's previous arrivals are candidates for the event's windows."""
    g, t = pl.col("_g"), pl.col("_t")
    # Index within the card of the first arrival that can still be in the longest window:
    # the first whose running-max time is > t - 7 d, which is the first whose time is, even
    # when times go back (the running max is sorted, so it can be searched).
    first = t.cum_max().search_sorted(t - _LONGEST_S, side="right").over("card_id")
    # The previous CAP arrivals, no earlier than the window allows.
    index = g - g.first().over("card_id")
    n_prior = pl.min_horizontal(index - first.cast(pl.Int64), pl.lit(CARD_HISTORY_CAP))
    no_device = pl.col("device_id") == ""
    return (
        events.select("_row", "card_id", "_t", "amount", "country", "device_id")
        .sort("card_id", maintain_order=True)
        .with_row_index("_g")
        .select(
            "_row",
            "card_id",
            "_t",
            "amount",
            n_prior.alias("_n"),
            # Integer codes: cheaper than strings to carry through the explode and compare.
            pl.col("country").cast(pl.Categorical).to_physical().alias("_cc"),
            pl.when(no_device)
            .then(None)
            .otherwise(pl.col("device_id"))
            .cast(pl.Categorical)
            .to_physical()
            .alias("_dc"),
        )
    )


def _history_features(candidates: pl.LazyFrame) -> pl.LazyFrame:
    """The history features of a frame of whole cards, each card's rows contiguous and in
    arrival order: each event's candidates exploded into one row per (event, prior),
    gathered by position, filtered by the window rule and aggregated per event."""
    cards = candidates.with_row_index("_g")  # positions within this frame
    prior = pl.int_ranges(pl.col("_g") - pl.col("_n"), pl.col("_g")).explode()
    owner = pl.col("_g").repeat_by(pl.col("_n")).explode()
    # One struct gather per side: gathering column by column is about three times slower.
    # What the aggregation needs of the owner is reduced to flags at once, to keep the
    # exploded frame narrow (it is the memory peak).
    inside = {suffix: pl.col("_p") > pl.col("_ti") - window for suffix, window in CARD_WINDOWS}
    pairs = (
        cards.select(
            pl.struct(_i="_g", _ti="_t", _ci="_cc", _di="_dc").gather(owner).alias("_owner"),
            pl.struct(_p="_t", _a="amount", _cp="_cc", _dp="_dc").gather(prior).alias("_prior"),
        )
        .unnest("_owner", "_prior")
        .filter(inside[_LONGEST_SUFFIX] & (pl.col("_p") <= pl.col("_ti")))
        .select(
            "_i",
            "_p",
            "_a",
            "_cp",
            "_dp",
            (pl.col("_cp") == pl.col("_ci")).alias("_same_country"),
            (pl.col("_dp") == pl.col("_di")).alias("_same_device"),
            *(flag.alias(f"_in_{suffix}") for suffix, flag in inside.items()),
        )
    )

    aggs: list[pl.Expr] = [
        pl.len().alias("_count"),
        pl.col("_a").std(ddof=0).alias("_std"),
        pl.col("_p").max().alias("_latest"),
        pl.col("_same_country").any().alias("_seen_country"),
        pl.col("_same_device").any().alias("_seen_device"),
    ]
    counts: list[str] = []
    for suffix, _ in CARD_WINDOWS:
        flag = pl.col(f"_in_{suffix}")
        aggs += [
            flag.sum().alias(f"card_count_{suffix}"),
            pl.col("_a").filter(flag).sum().alias(f"_sum_{suffix}"),
        ]
        counts.append(f"card_count_{suffix}")
        for what, code in (("countries", "_cp"), ("devices", "_dp")):
            name = f"card_{what}_{suffix}"
            if name in TRANSACTION_DENSE_FEATURES:
                aggs.append(pl.col(code).filter(flag).drop_nulls().n_unique().alias(name))
                counts.append(name)
    # Sorted by owner by construction: the sorted flag lets group_by slice instead of hash.
    history = pairs.set_sorted("_i").group_by("_i").agg(aggs)

    n = pl.col("_count").fill_null(0)
    mean = pl.col(f"_sum_{_LONGEST_SUFFIX}") / pl.col("_count")
    scale = pl.max_horizontal(pl.col("_std"), AMOUNT_STD_FLOOR, AMOUNT_STD_FLOOR_SHARE * mean)
    zscore = ((pl.col("amount") - mean) / scale).clip(-ZSCORE_CAP, ZSCORE_CAP)
    gap = pl.min_horizontal(pl.col("_t") - pl.col("_latest"), SECS_SINCE_PREV_CAP_S)
    seen_country = pl.col("_seen_country").fill_null(False)
    seen_device = pl.col("_seen_device").fill_null(False)
    features: dict[str, pl.Expr] = {
        **{name: pl.col(name).fill_null(0) for name in counts},
        **{
            f"card_amount_sum_log_{suffix}": pl.col(f"_sum_{suffix}").fill_null(0.0).log1p()
            for suffix, _ in CARD_WINDOWS
        },
        "is_new_country": (n > 0) & ~seen_country,
        "is_new_device": (n > 0) & pl.col("_dc").is_not_null() & ~seen_device,
        "secs_since_prev_log": gap.fill_null(SECS_SINCE_PREV_CAP_S).log1p(),
        "amount_log_ratio_mean": (pl.col("amount").log1p() - mean.log1p()).fill_null(0.0),
        "amount_zscore": zscore.fill_null(0.0),
    }
    return cards.join(history, left_on="_g", right_on="_i", how="left").select(
        "_row", *(expr.cast(pl.Float64).alias(name) for name, expr in features.items())
    )


def _outcome_counts(events: pl.LazyFrame, outcomes: Frame) -> pl.LazyFrame:
    """``_row``, ``_pos`` and ``_lab``: positives and labels of the event's terminal that count.

    Per terminal, labels sorted by arrival (ties in input order) get an index ``q`` and the
    running count of positives. For an event at ``t``: ``n`` labels arrived by ``t``, ``m``
    by ``t - 28 d``; those that count are indices ``max(m, n - CAP) .. n - 1``.
    """
    schema = outcomes.lazy().collect_schema()
    labels = (
        outcomes.lazy()
        .select(
            "terminal_id",
            _seconds(schema, "label_time").alias("_at"),
            pl.col("is_positive").cast(pl.Boolean).fill_null(False),
        )
        .sort("terminal_id", "_at", maintain_order=True)
        .with_columns(
            _q=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("terminal_id"),
            _P=pl.col("is_positive").cast(pl.Int64).cum_sum().over("terminal_id"),
        )
        .with_columns(_Pcap=pl.col("_P").shift(OUTCOME_CAP).over("terminal_id").fill_null(0))
        # One row per arrival time: the last of the ties (all of them arrived by then).
        .group_by("terminal_id", "_at")
        .agg(pl.col("_q").max(), pl.col("_P").max(), pl.col("_Pcap").max())
        .sort("terminal_id", "_at")
    )
    left = events.select("_row", "terminal_id", "_t").with_columns(
        _lower=pl.col("_t") - OUTCOME_WINDOW_S
    )

    def arrived_by(key: str, suffix: str) -> pl.LazyFrame:
        """Per event: labels arrived at or before ``key`` (count, positives, positives of
        all but the latest CAP), as columns suffixed ``suffix``."""
        return (
            left.select("_row", "terminal_id", key)
            .sort("terminal_id", key)
            .join_asof(
                labels,
                left_on=key,
                right_on="_at",
                by="terminal_id",
                strategy="backward",
                check_sortedness=False,  # both sorted within each terminal above
            )
            .select(
                "_row",
                pl.col("_q").fill_null(0).alias(f"_q{suffix}"),
                pl.col("_P").fill_null(0).alias(f"_P{suffix}"),
                pl.col("_Pcap").fill_null(0).alias(f"_Pcap{suffix}"),
            )
        )

    by_t = arrived_by("_t", "n")
    by_lower = arrived_by("_lower", "m").select("_row", "_qm", "_Pm")
    capped = pl.col("_qn") - OUTCOME_CAP > pl.col("_qm")
    return by_t.join(by_lower, on="_row").select(
        "_row",
        pl.when(capped)
        .then(pl.col("_Pn") - pl.col("_Pcapn"))
        .otherwise(pl.col("_Pn") - pl.col("_Pm"))
        .cast(pl.Float64)
        .alias("_pos"),
        pl.when(capped)
        .then(pl.lit(OUTCOME_CAP))
        .otherwise(pl.col("_qn") - pl.col("_qm"))
        .cast(pl.Float64)
        .alias("_lab"),
    )
