"""The transaction features over a whole history at once, in Polars: the batch twin of the stream.

Why two paths. The stream worker computes each transaction's features incrementally, one
event at a time, from its card's bounded history (:func:`models.features.transaction_features`
then :func:`models.features.card_history_after`), and serves them; the nightly job learns from
those served features, never recomputed. Some datasets have no served features: a historical
file to bootstrap a model from, a backfill after a feature change. Those need the features
computed over the whole history at once, from a frame (Parquet, no per-row event objects),
with Polars expressions: this module. No command of the batch job calls it yet (the retrain
reads the served features from the lake; ``python -m stream backtest`` runs a historical file
through the worker's own per-event code); what holds it to the stream today is the property
test ``tests/unit/batch/test_feature_parity.py``, which runs both on random event sequences
and keeps them equal, and ``python -m benchmarks features`` measures it. Every window, cap,
floor and prior is imported from :mod:`models.features`, never copied.

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
- Counts, distinct counts and flags are exact. Sums, the std and divisions are equal to the
  stream's within float rounding, not bit for bit: the stream sums in history order, here
  another way (below). The two paths below differ by at most 3e-16 relative in the sums'
  logs and 3e-14 in the z-score on the benchmark's million transactions.

Here two paths compute that, card by card (each card's rows together, in arrival order):

- The range path, for cards whose times never go back in arrival order (the normal case:
  a live lake, the simulator): an event's candidates in a window are then a range of the
  rows before it, from the first one of its card later than ``t - w`` (found by as-of joins
  on integer (card, time rank) keys, exact for any float) and at most ``CAP`` rows back.
  Counts are the ranges' lengths; sums are differences of prefix sums, over amounts split
  into parts whose running sums are exact (:func:`_exact_parts`: a plain running sum would
  carry an error of the card's whole past into a small recent window); the std comes from
  the sums of amounts and of squares (its floor bounds the cancellation where it counts);
  distinct countries and devices count the range's rows whose previous row with the same
  value is before the range, as cumulative counts (:func:`_distinct_counts`); ``is_new_*``
  compare the event's previous row with its value to the range's start.
- The pair path, for the other cards (a back-dated event, a time that is not finite, the
  null card id, or an amount the range path does not sum: negative, non-finite or above
  :data:`RANGE_AMOUNT_LIMIT`): each event's candidates are an index range within its card
  (bounded below through the card's running maximum time, so only the 7-day history, at
  most ``CAP``), exploded into one row per (event, prior), gathered by position and
  aggregated per event (Polars' own sums and std).

Terminal label outcomes (``terminal_*_28d``): a label counts for a transaction at ``t`` when
it arrived in ``t - 28 d < arrival <= t`` and is among the latest
:data:`~models.features.OUTCOME_CAP` labels of the terminal to arrive by ``t``: what the
worker and the backtest hold when labels are recorded in arrival order before the events
stamped after them. Labels of equal arrival time are ordered by input order (the backtest's
order; Redis orders such ties by member name, so at the cap boundary the worker may keep a
different one of two simultaneous labels). Computed with as-of joins on integer (terminal,
arrival rank) keys and running counts (:func:`_outcome_counts`).

Cost. The range path and the outcomes are sorts, as-of joins (single passes over sorted
keys), running sums and gathers: O(n log n), with no per-event loop and no pairs. The pair
path's work is the sum of its events' 7-day histories, in parts (:data:`ROWS_PER_PART`).
1M transactions of 20k cards (50 a month each) with 1M labels, all on the range path, on 2
shared cores: 1.3-1.5 CPU s and wall about the same with ``collect()`` (Polars' default
streaming engine: its results come in chunks, which slows the gathers and sorts after them),
1.1-1.2 CPU s and 0.8-1.3 s wall with ``collect(engine="in-memory")``; peak RSS about 1 GB
for the process. See docs/benchmarks.md (``python -m benchmarks features``).
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
"""The pair path's transactions whose candidates are exploded together. The exploded frame is
its memory peak, about 50 bytes per (event, prior in 7 d) pair: 500k rows with ~12 priors each
(cards paying 50 times a month) take ~0.3 GB, with 117 each ~2.5 GB. Larger inputs are
processed part after part (whole cards each), which bounds the peak; each part costs a few ms
of overhead. The number of parts is set from all the rows (how many take the pair path is
only known once running), so a part may hold far fewer."""
_CODE = 2**32
"""Integer keys (code, rank) are ``code * _CODE + rank``: codes and ranks are below 2**32."""
RANGE_AMOUNT_LIMIT = 2.0**128
"""The range path's amounts are at most this (the stream's are at most 1e7): their squares and
sums stay far from overflow. A card with a larger, negative or non-finite amount takes the
pair path."""
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
    events = (
        lf.select(
            "event_id",
            pl.col("card_id"),
            _seconds(schema, "event_time").alias("_t"),
            pl.col("amount").cast(pl.Float64),
            pl.col("country"),
            _optional(schema, "device_id", "").alias("device_id"),
            _optional(schema, "channel", "pos").alias("channel"),
            *([pl.col("terminal_id")] if terminal_outcomes is not None else []),
            *(_finite(pl.col(name).cast(pl.Float64)).alias(name) for name in extras),
        )
        .with_row_index("_row")
        .cache()
    )

    # Each piece comes back in the input order, one row per event: put side by side.
    pieces = [events, _card_features(events, parts)]
    if terminal_outcomes is not None:
        pieces.append(_outcome_counts(events, terminal_outcomes, rows))
    result = (
        pl.concat(pieces, how="horizontal")
        .with_columns(amount_log=pl.col("amount").log1p())
        .with_columns(_history_to_features())
    )
    if terminal_outcomes is None:
        result = result.with_columns(_pos=pl.lit(0.0), _lab=pl.lit(0.0))
    rate = (pl.col("_pos") + OUTCOME_PRIOR_RATE * OUTCOME_PRIOR_WEIGHT) / (
        pl.col("_lab") + OUTCOME_PRIOR_WEIGHT
    )
    angle = 2.0 * math.pi * (pl.col("_t") % DAY_S) / DAY_S  # the stream's formula
    result = result.with_columns(
        hour_sin=angle.sin(),
        hour_cos=angle.cos(),
        is_online=(pl.col("channel") == "online").cast(pl.Float64),
        terminal_fraud_count_28d=pl.col("_pos"),
        terminal_label_count_28d=pl.col("_lab"),
        terminal_fraud_rate_28d=rate,
    )
    return result.select(
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


def _codes(column: pl.Expr) -> pl.Expr:
    """Integer codes of a column's values, equal for equal values (within one frame)."""
    return column.cast(pl.String).cast(pl.Categorical).to_physical()


def _card_features(events: pl.LazyFrame, parts: int) -> pl.LazyFrame:
    """The features that read the card's history (counts, sums, distincts, gap, amount vs
    mean), one row per event in the input order: the range path for the cards it serves, the
    pair path (over ``parts`` groups of whole cards, one after the other) for the others."""
    no_device = pl.col("device_id") == ""
    by_time = (
        events.select(
            "_row",
            _codes(pl.col("card_id")).alias("_card"),
            "_t",
            "amount",
            # Integer codes: cheaper than strings to compare, group and carry.
            _codes(pl.col("country")).alias("_cc"),
            _codes(pl.when(no_device).then(None).otherwise(pl.col("device_id"))).alias("_dc"),
            # The time to order by: null and NaN last (their cards take the pair path).
            pl.col("_t").fill_nan(None).fill_null(math.inf).alias("_time"),
        )
        .sort("_time", maintain_order=True)  # about free when arrival order is time order
        .with_row_index("_i")
        .cache()
    )
    by_card = (
        pl.concat([by_time.drop("_i", "_time"), *_time_ranks(by_time)], how="horizontal")
        # Each card's rows together, in time order, then arrival order (stable sorts).
        .sort("_card", maintain_order=True)
        .with_columns(_ranged=_range_path_serves())
        .cache()
    )
    ranged = _range_features(by_card.filter(pl.col("_ranged")))
    paired = _pair_features(
        by_card.filter(~pl.col("_ranged"))
        .select("_row", "_card", "_t", "amount", "_cc", "_dc")
        .sort("_card", "_row"),  # arrival order within each card
        parts,
    )
    return pl.concat([ranged, paired]).sort("_row").drop("_row")


def _time_ranks(by_time: pl.LazyFrame) -> list[pl.LazyFrame]:
    """For the events sorted by ``_time``: ``_r``, how many event times are at most the
    event's, and for each window ``_r_<suffix>``, how many are at most ``t - w`` (the
    stream's float), each a frame of one column in the same order.

    Integer keys that order the times and the windows' lower bounds exactly as the floats
    do: ``p > t - w`` exactly when ``p``'s count is above ``t - w``'s. As-of joins, each a
    single pass over the sorted times."""
    times = by_time.select("_time", (pl.col("_i").cast(pl.Int64) + 1).alias("_count"))
    bounds = {"_r": pl.col("_time")} | {
        f"_r_{suffix}": pl.col("_time") - window for suffix, window in CARD_WINDOWS
    }
    return [
        by_time.select(bound.alias("_bound"))
        .join_asof(times, left_on="_bound", right_on="_time", strategy="backward")
        .select(pl.col("_count").fill_null(0).alias(name))
        for name, bound in bounds.items()
    ]


def _range_path_serves() -> pl.Expr:
    """Per row of the frame in card order (each card's rows by time, ties in arrival order):
    whether its card takes the range path, i.e. its times are finite and never go back in
    arrival order (then arrival order is this order), and its amounts are finite,
    non-negative and at most :data:`RANGE_AMOUNT_LIMIT` (see :func:`_range_features`)."""
    t, amount = pl.col("_t"), pl.col("amount")
    same_card = pl.col("_card") == pl.col("_card").shift(1)  # null on the first row
    # An earlier time that arrived later: back-dated.
    back_dated = (same_card & (pl.col("_row") < pl.col("_row").shift(1))).fill_null(False)
    summable = amount.is_finite() & (amount >= 0.0) & (amount <= RANGE_AMOUNT_LIMIT)
    irregular = back_dated | ~(t.is_finite() & summable).fill_null(False)
    # A null card (one group on the pair path, as there) is neither in nor out: false.
    return (~pl.col("_card").is_in(pl.col("_card").filter(irregular).implode())).fill_null(False)


# --- the range path ---------------------------------------------------------------------


def _range_features(rows: pl.LazyFrame) -> pl.LazyFrame:
    """``_row`` and the history features of whole cards whose times never go back (each
    card's rows contiguous and in arrival order), without pairing events.

    In such a card an event's candidates in window ``w`` are a range of the rows before it:
    from the first row of its card with time ``> t - w`` (the stream's ``lower < p``; the
    priors' ``p <= t`` holds for every earlier row), and no more than
    :data:`~models.features.CARD_HISTORY_CAP` rows back, up to the event (excluded). Those
    first rows come from as-of joins on integer keys (card, time rank; :func:`_time_ranks`),
    sorted in this order. Counts are the ranges' lengths, sums differences of prefix sums
    (:func:`_exact_parts`), the distincts cumulative counts (:func:`_distinct_counts`)."""
    rows = rows.with_row_index("_g").with_columns(pl.col("_g").cast(pl.Int64)).cache()
    card = pl.col("_card").cast(pl.Int64) * _CODE
    keys = rows.select("_g", _key=card + pl.col("_r"))
    first_inside = [  # the first row of the card whose time is above t - w
        rows.select(_query=card + pl.col(f"_r_{suffix}"))
        .join_asof(
            keys, left_on="_query", right_on="_key", strategy="forward", allow_exact_matches=False
        )
        .select(pl.col("_g").alias(f"_first_{suffix}"))
        for suffix, _ in CARD_WINDOWS
    ]
    g, t = pl.col("_g"), pl.col("_t")
    amount_parts = _exact_parts(pl.col("amount"))
    square_parts = _exact_parts(pl.col("amount") * pl.col("amount"))
    ranges = (
        pl.concat(
            [rows.select("_g", "_row", "_card", "_t", "amount", "_cc", "_dc"), *first_inside],
            how="horizontal",
        )
        .with_columns(
            *(
                pl.max_horizontal(f"_first_{suffix}", g - CARD_HISTORY_CAP).alias(
                    f"_start_{suffix}"
                )
                for suffix, _ in CARD_WINDOWS
            ),
            # Exclusive prefix sums (over the rows before) of each part.
            *(
                part.cum_sum().shift(1, fill_value=0.0).alias(f"_{kind}{k}")
                for kind, parts in (("a", amount_parts), ("q", square_parts))
                for k, part in enumerate(parts)
            ),
            # The previous row with the same value. When that is another card's, it is
            # before this card's first row, so before every range start, as if there were
            # none: no need to group by card too (which costs 5 times more for countries).
            *(pl.col("_g").shift(1).over(code).alias(f"_prev{code}") for code in ("_cc", "_dc")),
        )
        .cache()
    )
    start = {suffix: pl.col(f"_start_{suffix}") for suffix, _ in CARD_WINDOWS}

    def window_sum(kind: str, suffix: str) -> pl.Expr:
        """The sum over the rows of the window: per part, the difference of the prefix
        sums at the event and at the range's start (exact for all but the finest part)."""
        d = [pl.col(f"_{kind}{k}") - pl.col(f"_{kind}{k}").gather(start[suffix]) for k in range(3)]
        return (d[0] + d[1]) + d[2]

    longest = start[_LONGEST_SUFFIX]
    count = g - longest
    sums = ranges.select(
        *((g - start[suffix]).alias(f"card_count_{suffix}") for suffix, _ in CARD_WINDOWS),
        *(window_sum("a", suffix).alias(f"_sum_{suffix}") for suffix, _ in CARD_WINDOWS),
        window_sum("q", _LONGEST_SUFFIX).alias("_squares"),
        "_row",
        pl.when(count > 0).then(count).alias("_count"),
        # Times never go back: the latest prior is the previous row.
        pl.when(count > 0).then(t.shift(1)).alias("_latest"),
        # A null value is never seen (as on the pair path, where null == null is not true).
        ((pl.col("_prev_cc") >= longest) & pl.col("_cc").is_not_null()).alias("_seen_country"),
        ((pl.col("_prev_dc") >= longest) & pl.col("_dc").is_not_null()).alias("_seen_device"),
    )
    mean = pl.col(f"_sum_{_LONGEST_SUFFIX}") / pl.col("_count")
    # Population variance from the sums: where it matters (std above the floor of
    # max(1, 0.1 * mean), so mean**2 <= 100 var) the cancellation costs at most ~7 bits.
    variance = (pl.col("_squares") / pl.col("_count") - mean * mean).clip(lower_bound=0.0)
    history = pl.concat([sums, *_distinct_counts(ranges)], how="horizontal").with_columns(
        _std=variance.sqrt()
    )
    return history.select("_row", *_history_columns())


def _exact_parts(value: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """``value`` (>= 0, finite) as three parts that add up to it exactly, the first two on
    grids coarse enough that any running sum of them over the frame is exact.

    A plain running sum loses ~1e-16 of the running total at each step; the difference of two
    such sums (a window's sum) then carries an error of the card's whole past, far beyond a
    tiny recent window's value. Here: ``hi`` is ``value`` rounded down to a multiple of a
    power of two ``q0`` with the frame's total below ``2**53 q0``, so every running sum of
    ``hi`` is a multiple of ``q0`` below that: exact. ``mid`` does the same for the rest
    (below ``q0`` each, so the total is below ``rows * q0``) on ``q1``. What remains is below
    ``q1`` each: its running sums err by at most ``rows**2 * 2**-53 * q1``, below
    ``rows**3 * 2**-155`` of the frame's total (3e-29 of it for a million rows), and a
    window's sum is then the exact one within two roundings. All operations on powers of two
    are exact.
    """
    exponent = pl.max_horizontal(value.sum(), 1.0).log(2).floor() + 2  # total < 2**exponent
    q0 = pl.lit(2.0).pow(exponent - 53)
    q1 = q0 * pl.lit(2.0).pow(pl.len().cast(pl.Float64).log(2).floor() + 2 - 53)
    hi = (value / q0).floor() * q0
    rest = value - hi
    mid = (rest / q1).floor() * q1
    return hi, mid, rest - mid


def _distinct_counts(ranges: pl.LazyFrame) -> list[pl.LazyFrame]:
    """Distinct countries and devices among the rows of each window's range, one frame per
    window in the rows' order.

    Row ``j`` counts for event ``i`` when it is in ``i``'s range ``[s_i, i)`` and the previous
    row with its value, ``p_j``, is not (``p_j < s_i``; a ``p_j`` of an earlier card is before
    every range start of this one). The starts ``s`` never decrease, so: ``j`` counts for
    ``i`` from ``b_j = max(j + 1, e(p_j))`` up to ``e(j)`` (excluded), where ``e(x)`` is the
    first event whose start is above ``x``; and every ``j < s_i`` has ``b_j <= e(j) <= i``.
    Hence the count for ``i`` is the number of ``j`` with ``b_j <= i``, less ``s_i``. A row
    without a value (no device) counts for none: ``b_j = e(j)``. ``e`` and the numbers of
    ``b_j <= i`` come from as-of joins (the ``b_j`` sorted)."""
    g = pl.col("_g")
    rows = ranges.select("_g")
    frames = []
    for suffix, _ in CARD_WINDOWS:
        names = [f"card_{what}_{suffix}" for what in ("countries", "devices")]
        if not any(name in TRANSACTION_DENSE_FEATURES for name in names):
            continue
        start = f"_start_{suffix}"
        first_above = (  # e(j) for every row j
            rows.join_asof(
                ranges.select(start, _e="_g"),
                left_on="_g",
                right_on=start,
                strategy="forward",
                allow_exact_matches=False,
            ).select(pl.col("_e").fill_null(pl.len()))
        )
        with_e = pl.concat(
            [ranges.select("_g", start, "_prev_cc", "_prev_dc", "_cc", "_dc"), first_above],
            how="horizontal",
        ).cache()
        for name, code in zip(names, ("_cc", "_dc"), strict=True):
            if name not in TRANSACTION_DENSE_FEATURES:
                continue
            begin = pl.max_horizontal(g + 1, pl.col("_e").gather(pl.col(f"_prev{code}")))
            begin = pl.when(pl.col(code).is_null()).then(pl.col("_e")).otherwise(begin)
            begins = with_e.select(begin.sort().alias("_b")).with_row_index("_n")
            begun = rows.join_asof(begins, left_on="_g", right_on="_b", strategy="backward")
            frames.append(
                pl.concat([with_e.select(start), begun.select("_n")], how="horizontal").select(
                    (pl.col("_n").cast(pl.Int64).fill_null(-1) + 1 - pl.col(start)).alias(name)
                )
            )
    return frames


# --- the pair path ----------------------------------------------------------------------


def _pair_features(rows: pl.LazyFrame, parts: int) -> pl.LazyFrame:
    """``_row`` and the history features of whole cards (each card's rows contiguous and in
    arrival order, times in any order), by pairing each event with its candidates, over
    ``parts`` groups of whole cards one after the other."""
    candidates = _candidates(rows)
    if parts == 1:
        return _history_features(candidates)
    # A card's part: where its first row falls, so that parts hold whole cards.
    first_row = pl.col("_pos").first().over("_card").cast(pl.Int64)
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


def _candidates(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The rows with ``_n``: how many of the card's previous arrivals are candidates for the
    event's windows."""
    g, t = pl.col("_g"), pl.col("_t")
    # Index within the card of the first arrival that can still be in the longest window:
    # the first whose running-max time is > t - 7 d, which is the first whose time is, even
    # when times go back (the running max is sorted, so it can be searched).
    first = t.cum_max().search_sorted(t - _LONGEST_S, side="right").over("_card")
    # The previous CAP arrivals, no earlier than the window allows.
    index = g - g.first().over("_card")
    n_prior = pl.min_horizontal(index - first.cast(pl.Int64), pl.lit(CARD_HISTORY_CAP))
    return (
        rows.with_row_index("_g")
        .with_columns(n_prior.alias("_n"))
        .select("_row", "_card", "_t", "amount", "_n", "_cc", "_dc")
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
    for suffix, _ in CARD_WINDOWS:
        flag = pl.col(f"_in_{suffix}")
        aggs += [
            flag.sum().alias(f"card_count_{suffix}"),
            pl.col("_a").filter(flag).sum().alias(f"_sum_{suffix}"),
        ]
        for what, code in (("countries", "_cp"), ("devices", "_dp")):
            name = f"card_{what}_{suffix}"
            if name in TRANSACTION_DENSE_FEATURES:
                aggs.append(pl.col(code).filter(flag).drop_nulls().n_unique().alias(name))
    # Sorted by owner by construction: the sorted flag lets group_by slice instead of hash.
    history = pairs.set_sorted("_i").group_by("_i").agg(aggs)
    return cards.join(history, left_on="_g", right_on="_i", how="left").select(
        "_row", *_history_columns()
    )


def _history_columns() -> list[pl.Expr]:
    """What both paths compute per event from the card's history, in one schema (null
    without priors in 7 d): ``card_count_*`` and the distincts, ``_sum_*``, ``_std`` (of the
    7-day amounts), ``_latest`` (latest prior time), ``_seen_country`` /
    ``_seen_device`` (a 7-day prior has the event's value). Narrow types: these columns are
    put back in the input order, the features computed there (:func:`_history_to_features`).
    """
    counts = {
        name: pl.UInt32
        for name in TRANSACTION_DENSE_FEATURES
        if name.startswith(("card_count_", "card_countries_", "card_devices_"))
    }
    others = {
        **{f"_sum_{suffix}": pl.Float64 for suffix, _ in CARD_WINDOWS},
        "_std": pl.Float64,
        "_latest": pl.Float64,
        "_seen_country": pl.Boolean,
        "_seen_device": pl.Boolean,
    }
    return [pl.col(name).cast(dtype) for name, dtype in (counts | others).items()]


def _history_to_features() -> list[pl.Expr]:
    """The history features from :func:`_history_columns` and the event's ``amount_log``,
    ``amount``, ``_t`` and ``device_id``."""
    n = pl.col(f"card_count_{_LONGEST_SUFFIX}").fill_null(0)
    mean = pl.when(n > 0).then(pl.col(f"_sum_{_LONGEST_SUFFIX}") / n)
    scale = pl.max_horizontal(pl.col("_std"), AMOUNT_STD_FLOOR, AMOUNT_STD_FLOOR_SHARE * mean)
    zscore = ((pl.col("amount") - mean) / scale).clip(-ZSCORE_CAP, ZSCORE_CAP)
    gap = pl.min_horizontal(pl.col("_t") - pl.col("_latest"), SECS_SINCE_PREV_CAP_S)
    seen_country = pl.col("_seen_country").fill_null(False)
    seen_device = pl.col("_seen_device").fill_null(False)
    counts = [
        name
        for name in TRANSACTION_DENSE_FEATURES
        if name.startswith(("card_count_", "card_countries_", "card_devices_"))
    ]
    features: dict[str, pl.Expr] = {
        **{name: pl.col(name).fill_null(0) for name in counts},
        **{
            f"card_amount_sum_log_{suffix}": pl.col(f"_sum_{suffix}").fill_null(0.0).log1p()
            for suffix, _ in CARD_WINDOWS
        },
        "is_new_country": (n > 0) & ~seen_country,
        "is_new_device": (n > 0) & (pl.col("device_id") != "") & ~seen_device,
        "secs_since_prev_log": gap.fill_null(SECS_SINCE_PREV_CAP_S).log1p(),
        "amount_log_ratio_mean": (pl.col("amount_log") - mean.log1p()).fill_null(0.0),
        "amount_zscore": zscore.fill_null(0.0),
    }
    return [expr.cast(pl.Float64).alias(name) for name, expr in features.items()]


# --- terminal outcomes ------------------------------------------------------------------


def _outcome_counts(events: pl.LazyFrame, outcomes: Frame, rows: int) -> pl.LazyFrame:
    """``_pos`` and ``_lab``, positives and labels of the event's terminal that count, one row
    per event in the input order.

    Labels are sorted by terminal, then arrival (ties in input order), and get a position and
    the running count of positives. For an event at ``t``: ``n`` is the position after the
    last label of its terminal to arrive by ``t``, ``m`` after the last one by ``t - 28 d``;
    the labels that count are those at positions ``max(m, n - CAP) .. n - 1``. Positions and
    running counts run over all terminals (only their differences within one terminal are
    read), so both are as-of joins on one integer key, (terminal, arrival rank), with the
    events sorted by that key. A label without terminal or arrival time (null, NaN) never
    counts.
    """
    schema = outcomes.lazy().collect_schema()
    terminals = pl.col("terminal_id").cast(pl.String)
    # One integer code per terminal, the same for events and labels: coded together.
    codes = (
        pl.concat([events.select(terminals), outcomes.lazy().select(terminals)])
        .select(_codes(pl.col("terminal_id")).cast(pl.UInt64).alias("_term"))
        .cache()
    )
    label_rows = (
        pl.concat(
            [
                codes.slice(rows),
                outcomes.lazy().select(
                    _seconds(schema, "label_time").alias("_at"),
                    pl.col("is_positive").cast(pl.Boolean).fill_null(False).cast(pl.Int64),
                ),
            ],
            how="horizontal",
        )
        .filter(pl.col("_at").is_not_nan() & pl.col("_term").is_not_null())
        .cache()
    )
    # Arrival times as integers: how many label times are at most a time (exact order).
    label_times = label_rows.select(pl.col("_at").sort()).with_row_index("_c")
    labels = (
        label_rows.select(
            (pl.col("_term") * _CODE + pl.col("_at").rank("max").cast(pl.UInt64)).alias("_key"),
            "is_positive",
        )
        .sort("_key", maintain_order=True)
        .with_row_index("_k")
        .select(
            "_key",
            pl.col("_k").cast(pl.Int64),
            pl.col("is_positive").cum_sum().alias("_P"),  # positives up to here, included
        )
        # Positives up to CAP positions before (read only when that is in the terminal).
        .with_columns(_Pcap=pl.col("_P").shift(OUTCOME_CAP, fill_value=0))
        .cache()
    )
    by_time = (
        pl.concat(
            [
                events.select("_row", pl.col("_t").fill_nan(None).fill_null(-math.inf)),
                codes.slice(0, rows),
            ],
            how="horizontal",
        )
        .with_columns(
            pl.col("_term").fill_null(_CODE - 1),  # a terminal no label has
            _lower=pl.col("_t") - OUTCOME_WINDOW_S,
        )
        .sort("_t")  # about free when the input's arrival order is time order
        .cache()
    )
    arrived = [  # labels (of any terminal) arrived by t, by t - 28 d
        by_time.select(bound)
        .join_asof(label_times, left_on=bound, right_on="_at", strategy="backward")
        .select((pl.col("_c").cast(pl.UInt64) + 1).fill_null(0).alias(f"_arrived{bound}"))
        for bound in ("_t", "_lower")
    ]
    term = pl.col("_term") * _CODE
    queries = (
        pl.concat([by_time.select("_row", "_term"), *arrived], how="horizontal")
        .select(
            "_row",
            "_term",
            (term + pl.col("_arrived_t")).alias("_by_t"),
            (term + pl.col("_arrived_lower")).alias("_by_lower"),
        )
        .sort("_term", maintain_order=True)  # by terminal, then time (a stable sort)
        .cache()
    )
    last_by_t = queries.select("_by_t").join_asof(
        labels, left_on="_by_t", right_on="_key", strategy="backward"
    )
    last_by_lower = queries.select("_by_lower").join_asof(
        labels.select("_key", _k_lower="_k", _P_lower="_P"),
        left_on="_by_lower",
        right_on="_key",
        strategy="backward",
    )
    n = pl.col("_k").fill_null(-1) + 1
    m = pl.col("_k_lower").fill_null(-1) + 1
    capped = n - OUTCOME_CAP > m
    positives = (
        pl.when(capped)
        .then(pl.col("_P") - pl.col("_Pcap"))
        .otherwise(pl.col("_P").fill_null(0) - pl.col("_P_lower").fill_null(0))
    )
    labelled = pl.when(capped).then(pl.lit(OUTCOME_CAP)).otherwise(n - m)
    return (
        pl.concat(
            [
                queries.select("_row"),
                last_by_t.select("_k", "_P", "_Pcap"),
                last_by_lower.select("_k_lower", "_P_lower"),
            ],
            how="horizontal",
        )
        .select(
            "_row",
            positives.cast(pl.Float64).alias("_pos"),
            labelled.cast(pl.Float64).alias("_lab"),
        )
        .sort("_row")
        .drop("_row")
    )
