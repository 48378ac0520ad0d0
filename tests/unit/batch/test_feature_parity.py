"""The batch transaction features (Polars, whole history at once) equal the stream's (one event
at a time): random event sequences through both, every feature of every event compared.

Tolerance: counts, distinct counts and flags must be equal. The rest within 1e-9, relative or
absolute: the stream sums amounts in Python in history order, Polars in its own order (and
computes the std and divides its own way), so values differ in the last bits (relative ~1e-15
for the sums of the non-negative amounts here, ~1e-13 for a std from sums of squares where
it is above its floor); a z-score near 0 is a difference of two such values, hence the
absolute part. A real drift (a window edge, a tie, the cap, a time one bit off)
moves a feature by far more: counts by 1, a log gap by ~0.2 at a microsecond.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from batch.features import ROWS_PER_PART, label_outcomes, transaction_features_frame
from models.events import Transaction, utc_from_timestamp
from models.features import (
    CARD_HISTORY_CAP,
    DAY_S,
    HOUR_S,
    OUTCOME_CAP,
    OUTCOME_WINDOW_S,
    TRANSACTION_DENSE_FEATURES,
    WEEK_S,
    CardHistory,
    card_history_after,
    count_outcomes,
    transaction_features,
)
from tests.factories import T0, outcomes_frame, transaction
from tests.factories import transactions_frame as frame

TOLERANCE = 1e-9
EXACT = {
    name
    for name in TRANSACTION_DENSE_FEATURES
    if name.startswith(("card_count", "card_countries", "card_devices", "is_"))
    or name in ("terminal_fraud_count_28d", "terminal_label_count_28d")
}

Label = tuple[str, float, bool]
"""(terminal, arrival time in POSIX s, is positive)."""


# --- the two paths ------------------------------------------------------------------------


class RecordedOutcomes:
    """Label outcomes per terminal as the backtest records them (``_learn_until`` in
    stream/backtest.py): in arrival order, each append dropping from the front the expired
    ones and those beyond ``OUTCOME_CAP``. :meth:`at` gives the record once every label that
    arrived by ``t`` is in, which is what an event stamped ``t`` is scored with."""

    def __init__(self, labels: Sequence[Label]) -> None:
        self._labels: dict[str, list[tuple[float, bool]]] = {}
        for terminal, arrival, positive in sorted(labels, key=lambda label: label[1]):
            self._labels.setdefault(terminal, []).append((arrival, positive))
        self._arrivals = {k: [a for a, _ in v] for k, v in self._labels.items()}
        self._state: dict[str, tuple[int, deque[tuple[float, bool]]]] = {}

    def at(self, terminal: str, t: float) -> list[tuple[float, bool]]:
        labels = self._labels.get(terminal, [])
        n = bisect.bisect_right(self._arrivals.get(terminal, []), t)
        done, recorded = self._state.get(terminal, (0, deque()))
        if n < done:  # an earlier-stamped event: record again from the start
            done, recorded = 0, deque()
        for arrival, positive in labels[done:n]:
            recorded.append((arrival, positive))
            lower = arrival - OUTCOME_WINDOW_S
            while recorded and (recorded[0][0] <= lower or len(recorded) > OUTCOME_CAP):
                recorded.popleft()
        self._state[terminal] = (n, recorded)
        return list(recorded)


def stream_features(txns: Sequence[Transaction], labels: Sequence[Label] = ()) -> list[dict]:
    """The stream path, as ``stream.scoring.score_batch`` runs it: per event in arrival order,
    the features from the card's PRIOR history and the terminal's outcomes, then the history
    advanced."""
    outcomes = RecordedOutcomes(labels)
    histories: dict[str, CardHistory] = {}
    rows = []
    for txn in txns:
        history = histories.get(txn.card_id)
        if history is None:
            history = CardHistory()
        counts = count_outcomes(txn.timestamp, outcomes.at(txn.terminal_id, txn.timestamp))
        rows.append(transaction_features(txn, history, counts))
        histories[txn.card_id] = card_history_after(history, txn)
    return rows


def batch_features(
    txns: Sequence[Transaction],
    labels: Sequence[Label] | None = None,
    *,
    float_times: bool = False,
    rows_per_part: int = ROWS_PER_PART,
) -> pl.DataFrame:
    outcomes = None if labels is None else outcomes_frame(labels)
    txn_frame = frame(txns, float_times=float_times)
    return transaction_features_frame(txn_frame, outcomes, rows_per_part=rows_per_part).collect()


def note_coverage(expected: list[dict]) -> None:
    """Tell the statistics (``--hypothesis-show-statistics``) which subtleties a case reached."""
    if any(x["card_count_7d"] == CARD_HISTORY_CAP for x in expected):
        event("card history cap reached")
    if any(x["terminal_label_count_28d"] == OUTCOME_CAP for x in expected):
        event("outcome cap reached")
    if any(0 < x["terminal_label_count_28d"] < OUTCOME_CAP for x in expected):
        event("some label outcomes")


def assert_same(expected: list[dict], batch: pl.DataFrame) -> None:
    """Every feature of every event equal; an extra the event lacks is null in the batch."""
    extras = sorted({name for x in expected for name in x if name.startswith("extra_")})
    assert batch.columns == ["event_id", *TRANSACTION_DENSE_FEATURES, *extras]
    assert batch.height == len(expected)
    for i, (x, row) in enumerate(zip(expected, batch.iter_rows(named=True), strict=True)):
        assert [name for name in extras if row[name] is not None] == [n for n in x if n in extras]
        for name, value in x.items():
            got = row[name]
            if name in EXACT:
                assert got == value, f"event {i}: {name} stream {value} batch {got}"
            else:
                close = math.isclose(got, value, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
                assert close, f"event {i}: {name} stream {value!r} batch {got!r}"


def assert_same_frames(expected: pl.DataFrame, batch: pl.DataFrame) -> None:
    """Two batch results equal as :func:`assert_same` has it: counts and flags exactly, the
    rest within the tolerance (each path sums its own way)."""
    assert batch.columns == expected.columns
    assert batch["event_id"].to_list() == expected["event_id"].to_list()
    for name in expected.columns[1:]:
        pairs = zip(expected[name], batch[name], strict=True)
        if name in EXACT:
            assert all(a == b for a, b in pairs), name
        else:
            close = (math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE) for a, b in pairs)
            assert all(close), name


def at_microseconds(t: float) -> float:
    """``t`` as an event time carries it (whole microseconds)."""
    return utc_from_timestamp(t).timestamp()


# --- strategies -----------------------------------------------------------------------------

CARDS = st.sampled_from(["c0", "c1", "c2"])
TERMINALS = st.sampled_from(["t0", "t1"])
COUNTRIES = st.sampled_from(["FR", "DE", "US"])
DEVICES = st.sampled_from(["", "", "d1", "d2"])
CHANNELS = st.sampled_from(["pos", "online"])
AMOUNTS = st.one_of(
    st.sampled_from([0.0, 1.0, 20.0, 20.0, 35.5, 9_999.99]),
    st.integers(0, 1_000_000).map(lambda cents: cents / 100),
)
EXTRAS: st.SearchStrategy[dict[str, float]] = st.one_of(
    st.just({}), st.floats(allow_nan=True, allow_infinity=True).map(lambda v: {"risk": v})
)
GAP_VALUES = (
    *(0.0, 0.0, 0.0, 1e-6, 0.5, 1.0, 59.0),
    *(HOUR_S - 1, HOUR_S, HOUR_S + 1, DAY_S - 0.5, DAY_S, 3 * DAY_S),
    *(WEEK_S - 1, WEEK_S, WEEK_S + 1, 10 * DAY_S),
)
GAPS = st.sampled_from(GAP_VALUES)
"""Gaps between consecutive arrivals: ties, a microsecond, and every window edge hit exactly."""
OFFSETS = st.one_of(
    st.sampled_from([g for g in GAP_VALUES if g < WEEK_S]), st.floats(0.0, 6 * DAY_S)
)
"""Times from T0 of back-dated sequences: under 7 days, with ties and window edges."""
BURST_GAPS = st.sampled_from([0.0, 1.0, 60.0])
LABEL_DELAYS = st.sampled_from(
    [0.0, 0.0, 1.0, -1.0, -HOUR_S, DAY_S, OUTCOME_WINDOW_S, OUTCOME_WINDOW_S - 1, -WEEK_S]
)
"""Label arrival relative to some event's time: at it, around it, at the outcome window edge."""

SINGLE = st.tuples(CARDS, AMOUNTS, COUNTRIES, DEVICES, CHANNELS, TERMINALS, EXTRAS)
MAX_EVENTS = 700


@st.composite
def sequences(draw: st.DrawFn, *, backdated: bool) -> tuple[list[Transaction], list[Label]]:
    """Events in arrival order and labels. Not ``backdated``: times never go back (ties
    allowed), spanning weeks. ``backdated``: any order, all within 7 days (so that no entry
    is ever evicted by time, where a back-dated event could legitimately differ)."""
    txns: list[Transaction] = []
    t = T0
    steps = draw(st.lists(st.one_of(SINGLE, SINGLE, st.integers(2, 300)), min_size=1, max_size=40))
    for step in steps:
        if isinstance(step, int):  # a burst of one card, past the history cap if long enough
            card, gap = draw(CARDS), draw(BURST_GAPS)
            start = T0 + draw(st.floats(0.0, 5 * DAY_S)) if backdated else t
            times = [start + j * gap for j in range(step)]
            fields: list[tuple[str, float, str, str, str, str, dict[str, float]]] = [
                (card, 10.0 + j % 7, "FR" if j % 5 else "DE", f"d{j % 3}", "pos", f"t{j % 2}", {})
                for j in range(step)
            ]
        else:
            times = [T0 + draw(OFFSETS)] if backdated else [t + draw(GAPS)]
            fields = [step]
        for at, (card, amount, country, device, channel, terminal, extra) in zip(
            times, fields, strict=True
        ):
            txns.append(
                transaction(
                    len(txns),
                    at=at,
                    card_id=card,
                    amount=amount,
                    country=country,
                    device_id=device,
                    channel=channel,
                    terminal_id=terminal,
                    extra=extra,
                )
            )
            t = max(t, at)
    txns = txns[:MAX_EVENTS]
    picks = st.tuples(st.integers(0, len(txns) - 1), LABEL_DELAYS, TERMINALS, st.booleans())
    labels: list[Label] = [
        (terminal, at_microseconds(txns[i].timestamp + delay), positive)
        for i, delay, terminal, positive in draw(st.lists(picks, max_size=30))
    ]
    if draw(st.booleans()):  # a burst of labels at one terminal, past the outcome cap if long
        count, gap, every = draw(st.integers(1, 600)), draw(BURST_GAPS), draw(st.integers(1, 5))
        start = txns[draw(st.integers(0, len(txns) - 1))].timestamp
        terminal = draw(TERMINALS)
        labels += [
            (terminal, at_microseconds(start + j * gap), j % every == 0) for j in range(count)
        ]
    return txns, draw(st.permutations(labels))


PROPERTY = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


PARTS = st.sampled_from([ROWS_PER_PART, ROWS_PER_PART, ROWS_PER_PART, 150])
"""Rows per part: mostly one part, sometimes several (parts must not change a value)."""


@PROPERTY
@given(sequences(backdated=False), PARTS)
def test_batch_equals_stream_when_times_do_not_go_back(
    case: tuple[list[Transaction], list[Label]], rows_per_part: int
) -> None:
    txns, labels = case
    expected = stream_features(txns, labels)
    note_coverage(expected)
    assert_same(expected, batch_features(txns, labels, rows_per_part=rows_per_part))


@PROPERTY
@given(sequences(backdated=True), PARTS)
def test_batch_equals_stream_for_events_in_any_order_within_a_week(
    case: tuple[list[Transaction], list[Label]], rows_per_part: int
) -> None:
    txns, labels = case
    expected = stream_features(txns, labels)
    note_coverage(expected)
    batch = batch_features(txns, labels, float_times=True, rows_per_part=rows_per_part)
    assert_same(expected, batch)


HUGE_AND_TINY = st.sampled_from([10_000_000.0, 9_999_999.99, 123_456.78, 0.01, 0.03, 0.0, 1e-6])
"""Amounts for the sums' precision: a window's sum must not carry the error of a card's huge
past (a plain running sum's difference would: ~1e-16 of 1e9 is 1e-7, far above 1e-9 of a
window of a few cents)."""


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(["c0", "c1"]), HUGE_AND_TINY, GAPS), min_size=1, max_size=400
    )
)
def test_window_sums_keep_their_precision_after_huge_amounts(
    steps: list[tuple[str, float, float]],
) -> None:
    txns, t = [], T0
    for n, (card, amount, gap) in enumerate(steps):
        t += gap
        txns.append(transaction(n, at=t, card_id=card, amount=amount, device_id=f"d{n % 3}"))
    assert_same(stream_features(txns), batch_features(txns))


# --- examples ---------------------------------------------------------------------------------

T = T0 + 30 * DAY_S


def test_a_readable_example() -> None:
    txns = [
        transaction(0, at=T - 2 * HOUR_S, card_id="c1", amount=10.0, country="FR", device_id="d1"),
        transaction(1, at=T - 1800.0, card_id="c1", amount=30.0, country="DE", device_id=""),
        transaction(2, at=T - 60.0, card_id="c2", amount=5.0, country="US", device_id="d9"),
        transaction(
            3, at=T, card_id="c1", amount=200.0, country="FR", device_id="d2", channel="online"
        ),
    ]
    labels = [("term-3", T - 60.0, True), ("term-3", T + 1.0, True)]  # the second: too late
    batch = batch_features(txns, labels)
    assert_same(stream_features(txns, labels), batch)
    last = batch.row(3, named=True)
    assert (last["card_count_1h"], last["card_count_24h"], last["card_count_7d"]) == (1, 2, 2)
    assert last["card_amount_sum_log_24h"] == math.log1p(40.0)
    assert (last["card_countries_24h"], last["card_devices_24h"]) == (2, 1)  # "" is no device
    assert (last["is_new_country"], last["is_new_device"]) == (0, 1)
    assert last["secs_since_prev_log"] == math.log1p(1800.0)
    assert last["amount_zscore"] == 10.0  # (200 - 20) / max(std 10, 1, 2), clipped
    assert (last["is_online"], last["hour_cos"]) == (1.0, 1.0)  # T is midnight UTC
    assert (last["terminal_fraud_count_28d"], last["terminal_label_count_28d"]) == (1, 1)
    assert math.isclose(last["terminal_fraud_rate_28d"], 0.1)  # (1 + 0.01 * 10) / (1 + 10)
    first = batch.row(0, named=True)
    assert (first["card_count_7d"], first["is_new_country"], first["amount_zscore"]) == (0, 0, 0)


def test_ties_count_the_earlier_arrival_only() -> None:
    txns = [transaction(n, at=T, card_id="c1", amount=float(n + 1)) for n in range(3)]
    batch = batch_features(txns)
    assert_same(stream_features(txns), batch)
    assert batch["card_count_1h"].to_list() == [0, 1, 2]
    assert batch["secs_since_prev_log"].to_list()[1:] == [0.0, 0.0]


def test_the_history_cap_hides_all_but_the_last_arrivals() -> None:
    n = CARD_HISTORY_CAP + 50
    txns = [
        transaction(k, at=T + k // 3, card_id="c1", amount=1.0 + k % 10, country=f"C{k % 100:02d}")
        for k in range(n)
    ]
    batch = batch_features(txns)
    assert_same(stream_features(txns), batch)
    assert batch["card_count_7d"].to_list() == [min(k, CARD_HISTORY_CAP) for k in range(n)]
    assert batch["card_countries_7d"].to_list()[-1] == 100  # 256 prior: every country seen


@pytest.mark.parametrize("count", [OUTCOME_CAP, OUTCOME_CAP + 1, OUTCOME_CAP + 88])
def test_the_outcome_cap_keeps_the_latest_labels(count: int) -> None:
    positives = 100  # the oldest 100 labels are positive
    labels = [("term-0", T + j, j < positives) for j in range(count)]
    txns = [transaction(0, at=T + count, terminal_id="term-0")]
    batch = batch_features(txns, labels)
    assert_same(stream_features(txns, labels), batch)
    assert batch["terminal_label_count_28d"].item() == OUTCOME_CAP
    assert batch["terminal_fraud_count_28d"].item() == positives - (count - OUTCOME_CAP)
    # Spread over 1.1 outcome windows: some expired, and the cap binds on the rest or not.
    step = 1.1 * OUTCOME_WINDOW_S / count
    spread = [(term, at_microseconds(T + j * step), p) for j, (term, _, p) in enumerate(labels)]
    later = [transaction(0, at=spread[-1][1], terminal_id="term-0")]
    assert_same(stream_features(later, spread), batch_features(later, spread))


def test_a_tiny_window_after_a_huge_past_is_summed_exactly() -> None:
    """A hundred of the largest amounts, then cents: the 1-hour sum is the cents', to the
    last bits, not a difference of running totals near 1e9 (which would be ~1e-7 off)."""
    huge = [
        transaction(n, at=T + n * 3600.0, card_id="c1", amount=10_000_000.0) for n in range(100)
    ]
    start = T + 100 * 3600.0 + 2 * HOUR_S
    tiny = [transaction(100 + n, at=start + n, card_id="c1", amount=0.01) for n in range(4)]
    batch = batch_features([*huge, *tiny])
    assert_same(stream_features([*huge, *tiny]), batch)
    assert batch["card_count_1h"][-1] == 3
    assert math.isclose(batch["card_amount_sum_log_1h"][-1], math.log1p(0.03), rel_tol=1e-15)


def test_each_card_takes_its_own_path() -> None:
    """A card whose times go back (the pair path) next to cards whose times do not (the
    range path): each card's features are what it gets alone, and what the stream computes
    (all within a week, where the two agree for back-dated events too)."""
    back = [transaction(n, at=T + d * HOUR_S, card_id="back") for n, d in enumerate([0, 5, 2, 5])]
    ties = [transaction(10 + n, at=T + (n // 2) * 60.0, card_id="ties") for n in range(6)]
    plain = [transaction(20 + n, at=T + n * 600.0, card_id="plain") for n in range(5)]
    mixed = [*back[:2], *ties[:3], *plain[:2], *back[2:], *ties[3:], *plain[2:]]
    batch = batch_features(mixed)
    assert_same(stream_features(mixed), batch)
    for alone in (back, ties, plain):
        ids = [txn.event_id for txn in alone]
        assert_same_frames(batch_features(alone), batch.filter(pl.col("event_id").is_in(ids)))


def test_both_paths_compute_the_same_features() -> None:
    """The same card history twice: as it is (times never go back: the range path) and with
    one back-dated event appended (the whole card then takes the pair path). The events
    before it get the same features either way."""
    txns = [
        transaction(
            n,
            at=T + (n // 3) * 1_000.0 + (n % 3) * 0.5,
            card_id="c1",
            amount=round(0.01 + (n * 7919 % 1000) * 3.37, 2),
            country=("FR", "DE", "US")[n * 7 % 3],
            device_id=("", "d1", "d2", "d3")[n * 5 % 4],
        )
        for n in range(400)  # past the history cap, ties, every window
    ]
    ranged = batch_features(txns)
    paired = batch_features([*txns, transaction(999, at=T, card_id="c1")]).head(len(txns))
    assert_same(stream_features(txns), ranged)
    assert_same_frames(ranged, paired)


def test_nulls_in_a_frame_read_alike_on_both_paths() -> None:
    """Null card ids, countries and devices (a frame may hold them, an event cannot): the
    range path reads them as the pair path does (the null cards are one card; a null value
    is never seen before, nor a distinct value), and no row is lost."""
    txns = [
        transaction(n, at=T + n * 600.0, card_id=f"c{n % 3}", country=("FR", "DE")[n % 4 // 3])
        for n in range(60)
    ]
    every = pl.int_range(pl.len())
    with_nulls = frame(txns).with_columns(
        card_id=pl.when(every % 11 == 5).then(None).otherwise(pl.col("card_id")),
        country=pl.when(every % 7 == 3).then(None).otherwise(pl.col("country")),
        device_id=pl.when(every % 6 == 2).then(None).otherwise(pl.col("device_id")),
    )
    ranged = transaction_features_frame(with_nulls).collect()
    # The same, with a back-dated event appended to each card: all of them take the pair path.
    back_dated = frame([transaction(900 + k, at=T, card_id=f"c{k}") for k in range(3)])
    paired = transaction_features_frame(pl.concat([with_nulls, back_dated])).collect()
    assert ranged.height == len(txns)
    assert_same_frames(ranged, paired.head(len(txns)))


def test_a_negative_amount_takes_the_pair_path() -> None:
    """A frame may hold amounts an event cannot (a refund of -0.50): the card's sums are
    then the pair path's (the range path sums non-negative amounts only), still the
    stream's values."""
    txns = [
        transaction(n, at=T + n * 60.0, card_id=f"c{n % 2}", amount=(-0.5 if n == 4 else 20.0 + n))
        for n in range(12)
    ]
    assert_same(stream_features(txns), batch_features(txns))


def test_a_backdated_event_may_count_what_the_stream_evicted() -> None:
    """The documented difference: online, the event at T + 8 d evicted the one at T, which the
    back-dated event at T + 6 d would still see; the batch path counts it."""
    txns = [transaction(n, at=T + d * DAY_S, card_id="c1") for n, d in enumerate([0, 8, 6])]
    stream, batch = stream_features(txns), batch_features(txns)
    assert (stream[2]["card_count_7d"], batch["card_count_7d"][2]) == (0.0, 1.0)


def test_label_outcomes_scope_labels_to_the_terminal_of_their_event() -> None:
    txns = [transaction(n, at=T + n, terminal_id=f"term-{n % 2}") for n in range(4)]
    labels = pl.DataFrame(
        {
            "event_id": [txns[0].event_id, "unknown", txns[1].event_id],
            "label_time": [utc_from_timestamp(T + 1.5)] * 3,
            "is_positive": [True, True, False],
        }
    )
    outcomes = label_outcomes(frame(txns), labels).collect()
    assert outcomes.rows() == [
        ("term-0", utc_from_timestamp(T + 1.5), True),
        ("term-1", utc_from_timestamp(T + 1.5), False),
    ]
    batch = transaction_features_frame(frame(txns), outcomes).collect()
    expected = [("term-0", T + 1.5, True), ("term-1", T + 1.5, False)]
    assert_same(stream_features(txns, expected), batch)


def test_parts_lazy_input_and_minimal_columns_change_nothing() -> None:
    txns = [
        transaction(n, at=T + (n % 40) * 600.0, card_id=f"c{n % 7}", device_id="")
        for n in range(120)
    ]
    expected = stream_features(txns)
    whole = batch_features(txns)
    assert_same(expected, whole)
    for rows_per_part in (1, 13, 60):
        assert batch_features(txns, rows_per_part=rows_per_part).equals(whole)
    # A LazyFrame, without the optional columns (their stream defaults: no device, "pos").
    minimal = frame(txns).drop("device_id", "channel", "terminal_id").lazy()
    assert transaction_features_frame(minimal, rows_per_part=50).collect().equals(whole)


def test_no_transactions_no_rows() -> None:
    empty = frame([transaction(0)]).clear()
    batch = transaction_features_frame(empty, outcomes_frame([])).collect()
    assert batch.columns == ["event_id", *TRANSACTION_DENSE_FEATURES]
    assert batch.height == 0
