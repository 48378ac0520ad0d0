"""The transaction features of :mod:`batch.features`, in pandas: the baseline of
``python -m benchmarks features``. Benchmark code, not product code.

The same definition (:mod:`models.features`: windows, caps, floors, priors imported from
there), the same input frame and the same output columns, written the way one would write
it in pandas (vectorised; no Python loop over events or cards):

- Rows are put in card order (``factorize`` + a stable sort, arrival order kept within a
  card). With each card's times non-decreasing in arrival order, an event's priors in a
  window are a contiguous range of the rows before it: from the first row of its card whose
  time is ``> t - w`` (the stream's ``lower < p``; found with one ``searchsorted`` over
  integer keys (card, rank of the time), exact), no earlier than
  :data:`~models.features.CARD_HISTORY_CAP` rows back, up to the row itself (excluded).
- Counts are the lengths of those ranges; sums and the population std are ``rolling``
  aggregations over them (a :class:`~pandas.api.indexers.BaseIndexer` gives pandas the
  ranges: the stream's window edges, ties and cap, which a ``"7D"`` offset window cannot
  express).
- Distinct countries / devices in a window: a row ``j`` counts for an event ``i`` when it
  is in ``i``'s range and the previous row of its card with the same value (``groupby``
  ``shift``) is not; since range starts only grow, the events ``j`` counts for are one
  interval of ``i``, so the counts are a cumulative sum of +1/-1 at interval ends.
  ``is_new_country`` / ``is_new_device``: the event's own previous same value is outside its
  7-day range.
- Terminal outcomes: labels sorted by arrival per terminal with running counts, two
  ``merge_asof`` (arrived by ``t``, by ``t - 28 d``), as in the Polars version.

One restriction the Polars version does not have: each card's event times must not go
backwards in arrival order (ties are fine); a back-dated event raises ``ValueError``. The
producers' simulator, the lake of a running stream and the benchmark's data satisfy it.
Sums and the std are pandas' own (rolling, compensated add/remove): equal to the Polars
version within float rounding (:func:`differences` checks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from pandas.api.indexers import BaseIndexer

from models.features import (
    AMOUNT_STD_FLOOR,
    AMOUNT_STD_FLOOR_SHARE,
    CARD_HISTORY_CAP,
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

__all__ = [
    "EXACT",
    "TOLERANCE",
    "differences",
    "largest_difference",
    "transaction_features_pandas",
]

_LONGEST_SUFFIX, _ = CARD_WINDOWS[-1]

EXACT = frozenset(
    name
    for name in TRANSACTION_DENSE_FEATURES
    if name.startswith(("card_count", "card_countries", "card_devices", "is_"))
    or name in ("terminal_fraud_count_28d", "terminal_label_count_28d")
)
"""Counts and flags: equal or wrong."""
TOLERANCE = 1e-9
"""Relative or absolute, for the other features (sums, std, divisions in another order)."""


def transaction_features_pandas(
    transactions: pd.DataFrame, terminal_outcomes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``event_id`` and the features of every transaction, in the input (arrival) order.

    Input and output as :func:`batch.features.transaction_features_frame`: ``transactions``
    with ``event_id``, ``card_id``, ``amount``, ``country``, ``event_time`` (datetime, naive
    taken as UTC, or POSIX seconds), optional ``device_id``, ``channel``, ``terminal_id`` and
    ``extra_*``; ``terminal_outcomes`` with ``terminal_id``, ``label_time``, ``is_positive``
    in arrival order. Output columns: ``event_id``, the dense features (float64), the
    ``extra_*`` sorted by name (a missing extra is NaN here: pandas float columns have no
    null apart from NaN; infinities become 0.0 as online).
    """
    n = len(transactions)
    t_in = _seconds(transactions["event_time"])
    codes, _ = pd.factorize(transactions["card_id"], sort=False)
    order = np.argsort(codes, kind="stable")  # card order, arrival order within a card
    card = codes[order]
    t = t_in[order]
    idx = np.arange(n, dtype=np.int64)
    amount = transactions["amount"].to_numpy(dtype=np.float64)[order]
    country = pd.factorize(transactions["country"])[0][order]
    device_in = _optional(transactions, "device_id", "")
    device = pd.factorize(device_in)[0][order]
    has_device = (device_in != "").to_numpy()[order]

    if n:
        same_card = card[1:] == card[:-1]
        backwards = same_card & (t[1:] < t[:-1])
        if backwards.any():
            first = int(np.argmax(backwards)) + 1
            raise ValueError(
                "the pandas version needs each card's times non-decreasing in arrival order: "
                f"event {transactions['event_id'].iloc[order[first]]!r} is back-dated"
            )

    # Window ranges [start, i) of the rows in card order. key: (card, rank of t), exact ints.
    sorted_t = np.sort(t)
    stride = n + 1
    key = card * stride + np.searchsorted(sorted_t, t, side="right")
    starts: dict[str, np.ndarray] = {}
    for suffix, window in CARD_WINDOWS:
        lower = t - window  # the stream's float: lower < p <= t
        first_inside = np.searchsorted(
            key, card * stride + np.searchsorted(sorted_t, lower, side="right"), side="right"
        )
        starts[suffix] = np.maximum(first_inside, idx - CARD_HISTORY_CAP)
    start_7d = starts[_LONGEST_SUFFIX]

    amounts = pd.Series(amount)
    features: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    for suffix, _window in CARD_WINDOWS:
        features[f"card_count_{suffix}"] = (idx - starts[suffix]).astype(np.float64)
        rolling = amounts.rolling(_Ranges(starts[suffix], idx), min_periods=0)
        sums[suffix] = rolling.sum().to_numpy()
    count = features[f"card_count_{_LONGEST_SUFFIX}"]
    std = (
        amounts.rolling(_Ranges(start_7d, idx), min_periods=1).std(ddof=0).to_numpy()
    )  # NaN without priors

    frame = pd.DataFrame({"card": card, "country": country, "device": device, "row": idx})
    prev_country = _previous_same(frame, "country", None)
    prev_device = _previous_same(frame, "device", has_device)
    for suffix, _window in CARD_WINDOWS:
        for what, prev, valid in (
            ("countries", prev_country, None),
            ("devices", prev_device, has_device),
        ):
            name = f"card_{what}_{suffix}"
            if name in TRANSACTION_DENSE_FEATURES:
                features[name] = _distinct(starts[suffix], prev, valid).astype(np.float64)
        features[f"card_amount_sum_log_{suffix}"] = np.log1p(sums[suffix])

    seen = count > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(seen, sums[_LONGEST_SUFFIX] / np.where(seen, count, 1.0), np.nan)
        scale = np.maximum(
            np.maximum(np.nan_to_num(std), AMOUNT_STD_FLOOR), AMOUNT_STD_FLOOR_SHARE * mean
        )
        zscore = np.clip((amount - mean) / scale, -ZSCORE_CAP, ZSCORE_CAP)
        ratio = np.log1p(amount) - np.log1p(mean)
    previous_t = np.concatenate(([np.nan], t[:-1]))[:n]  # the latest prior, if any
    gap = np.where(seen, np.minimum(t - previous_t, SECS_SINCE_PREV_CAP_S), SECS_SINCE_PREV_CAP_S)
    features.update(
        is_new_country=(seen & (prev_country < start_7d)).astype(np.float64),
        is_new_device=(seen & has_device & (prev_device < start_7d)).astype(np.float64),
        secs_since_prev_log=np.log1p(gap),
        amount_log_ratio_mean=np.where(seen, ratio, 0.0),
        amount_zscore=np.where(seen, zscore, 0.0),
    )

    # Back to the input order.
    out: dict[str, Any] = {"event_id": transactions["event_id"].to_numpy()}
    amount_in = transactions["amount"].to_numpy(dtype=np.float64)
    angle = 2.0 * math.pi * (t_in % DAY_S) / DAY_S  # the stream's formula
    positives, labels = (
        _outcome_counts(transactions, t_in, terminal_outcomes)
        if terminal_outcomes is not None
        else (np.zeros(n), np.zeros(n))
    )
    unsorted = {name: _unsort(values, order) for name, values in features.items()}
    direct = {
        "amount_log": np.log1p(amount_in),
        "hour_sin": np.sin(angle),
        "hour_cos": np.cos(angle),
        "is_online": (_optional(transactions, "channel", "pos") == "online")
        .to_numpy()
        .astype(np.float64),
        "terminal_fraud_count_28d": positives,
        "terminal_label_count_28d": labels,
        "terminal_fraud_rate_28d": (positives + OUTCOME_PRIOR_RATE * OUTCOME_PRIOR_WEIGHT)
        / (labels + OUTCOME_PRIOR_WEIGHT),
    }
    for name in TRANSACTION_DENSE_FEATURES:
        out[name] = np.asarray(unsorted[name] if name in unsorted else direct[name], np.float64)
    for name in sorted(c for c in transactions.columns if c.startswith(EXTRA_FEATURE_PREFIX)):
        values = pd.to_numeric(transactions[name]).to_numpy(dtype=np.float64)
        out[name] = np.where(np.isinf(values), 0.0, values)
    return pd.DataFrame(out, index=transactions.index)


# --- pieces -----------------------------------------------------------------------------


class _Ranges(BaseIndexer):
    """Given window bounds: row ``i`` aggregates rows ``start[i]`` to ``end[i] - 1``."""

    def __init__(self, start: np.ndarray, end: np.ndarray) -> None:
        super().__init__()
        self._start = start.astype(np.int64)
        self._end = end.astype(np.int64)

    def get_window_bounds(
        self,
        num_values: int = 0,
        min_periods: int | None = None,
        center: bool | None = None,
        closed: str | None = None,
        step: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._start, self._end


def _seconds(column: pd.Series) -> np.ndarray:
    """POSIX seconds, the stream's float (whole seconds plus the fraction, as in
    :func:`batch.features._seconds`)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(column.dtype):
        us = column.to_numpy().astype("datetime64[us]").view(np.int64)
        return (us // 1_000_000).astype(np.float64) + (us % 1_000_000).astype(np.float64) / 1e6
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64)
    raise TypeError(f"{column.name} must be a datetime or POSIX seconds, not {column.dtype}")


def _optional(frame: pd.DataFrame, name: str, default: str) -> pd.Series:
    if name not in frame.columns:
        return pd.Series(default, index=frame.index)
    return frame[name].fillna(default)


def _previous_same(frame: pd.DataFrame, value: str, valid: np.ndarray | None) -> np.ndarray:
    """Per row (card order), the row of the previous arrival of its card with the same
    ``value`` (-1 for none); rows not ``valid`` are left out (a device of ``""``)."""
    rows = frame if valid is None else frame[valid]
    previous = rows.groupby(["card", value], sort=False)["row"].shift(1)
    result = np.full(len(frame), -1, dtype=np.int64)
    result[rows["row"].to_numpy()] = previous.fillna(-1).to_numpy(dtype=np.int64)
    return result


def _distinct(start: np.ndarray, prev: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Distinct values among rows ``start[i] .. i - 1``, for every row ``i``.

    Row ``j`` counts for ``i`` when ``start[i] <= j < i`` and ``prev[j] < start[i]`` (it is
    the first of its value in the range). ``start`` never decreases, so that holds for ``i``
    from ``max(j + 1, first i with start > prev[j])`` up to the first ``i`` with
    ``start > j`` (excluded): +1 and -1 at those ends, summed cumulatively."""
    n = len(start)
    j = np.arange(n, dtype=np.int64)
    if valid is not None:
        j = j[valid]
    begin = np.maximum(j + 1, np.searchsorted(start, prev[j], side="right"))
    end = np.searchsorted(start, j, side="right")
    keep = begin < end
    delta = np.bincount(begin[keep], minlength=n + 1) - np.bincount(end[keep], minlength=n + 1)
    return np.cumsum(delta)[:n]


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    result = np.empty_like(values)
    result[order] = values
    return result


def _outcome_counts(
    transactions: pd.DataFrame, t: np.ndarray, outcomes: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Positives and labels of each event's terminal that count (see
    :func:`batch.features._outcome_counts`): running counts per terminal over labels by
    arrival (ties in input order), then ``merge_asof`` at ``t`` and at ``t - 28 d``."""
    n = len(transactions)
    terminals, _ = pd.factorize(
        pd.concat([transactions["terminal_id"], outcomes["terminal_id"]], ignore_index=True)
    )
    at = _seconds(outcomes["label_time"])
    labels = pd.DataFrame(
        {
            "_term": terminals[n:],
            "_at": at,
            "_positive": outcomes["is_positive"].fillna(False).astype(bool).to_numpy(),
        }
    )
    labels = labels.iloc[np.lexsort((np.arange(len(labels)), labels["_at"], labels["_term"]))]
    by_terminal = labels.groupby("_term", sort=False)
    labels = labels.assign(
        _q=by_terminal.cumcount() + 1,
        _P=by_terminal["_positive"].cumsum().astype(np.int64),
    )
    labels["_Pcap"] = labels.groupby("_term", sort=False)["_P"].shift(OUTCOME_CAP).fillna(0)
    # One row per arrival time: the last of the ties (all of them arrived by then).
    labels = labels[~labels.duplicated(["_term", "_at"], keep="last")]
    labels = labels.sort_values("_at", kind="stable")[["_term", "_at", "_q", "_P", "_Pcap"]]

    events = pd.DataFrame({"_row": np.arange(n), "_term": terminals[:n], "_t": t})
    events["_lower"] = events["_t"] - OUTCOME_WINDOW_S

    def arrived_by(on: str) -> pd.DataFrame:
        left = events[["_row", "_term", on]].sort_values(on, kind="stable")
        found = pd.merge_asof(
            left, labels, left_on=on, right_on="_at", by="_term", direction="backward"
        )
        return found.set_index("_row").sort_index()[["_q", "_P", "_Pcap"]].fillna(0)

    by_t, by_lower = arrived_by("_t"), arrived_by("_lower")
    qn, pn, pcapn = (by_t[c].to_numpy(dtype=np.float64) for c in ("_q", "_P", "_Pcap"))
    qm, pm = (by_lower[c].to_numpy(dtype=np.float64) for c in ("_q", "_P"))
    capped = qn - OUTCOME_CAP > qm
    positives = np.where(capped, pn - pcapn, pn - pm)
    labelled = np.where(capped, float(OUTCOME_CAP), qn - qm)
    return positives, labelled


# --- checking against the Polars version ----------------------------------------------


def differences(
    expected: pl.DataFrame, got: pd.DataFrame, *, tolerance: float = TOLERANCE, limit: int = 5
) -> list[str]:
    """What differs between the Polars features (``expected``) and these (``got``): column
    names and order, event ids, counts and flags exactly, the rest within ``tolerance``
    (relative or absolute); empty when they agree. At most ``limit`` examples per column."""
    problems: list[str] = []
    if list(got.columns) != expected.columns:
        return [f"columns differ: polars {expected.columns}, pandas {list(got.columns)}"]
    if len(got) != expected.height:
        return [f"rows differ: polars {expected.height:,}, pandas {len(got):,}"]
    ids = expected["event_id"].to_numpy()
    if not np.array_equal(ids, got["event_id"].to_numpy().astype(ids.dtype)):
        return ["event ids differ (order or values)"]
    for name in expected.columns[1:]:
        want = expected[name].cast(pl.Float64).to_numpy()  # nulls become NaN
        have = got[name].to_numpy(dtype=np.float64)
        if name in EXACT:
            bad = ~((want == have) | (np.isnan(want) & np.isnan(have)))
        else:
            bad = ~np.isclose(have, want, rtol=tolerance, atol=tolerance, equal_nan=True)
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = ", ".join(
                f"row {i} ({ids[i]}): polars {float(want[i])!r} pandas {float(have[i])!r}"
                for i in rows[:limit]
            )
            problems.append(f"{name}: {len(rows):,} rows differ, e.g. {shown}")
    return problems


def largest_difference(expected: pl.DataFrame, got: pd.DataFrame) -> tuple[str, float]:
    """The feature with the largest relative difference (absolute below 1) and its size."""
    worst, size = "", 0.0
    for name in expected.columns[1:]:
        want = expected[name].cast(pl.Float64).to_numpy()
        have = got[name].to_numpy(dtype=np.float64)
        both = ~(np.isnan(want) | np.isnan(have))
        if not both.any():
            continue
        diff = np.abs(want[both] - have[both]) / np.maximum(np.abs(want[both]), 1.0)
        biggest = float(diff.max())
        if biggest > size:
            worst, size = name, biggest
    return worst, size
