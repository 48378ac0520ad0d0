"""The features: one definition, computed online by the worker and reproduced by the batch job.

Pure functions of an event, the state of its entity *before* the event, and the label
outcomes of its terminal or sender. The worker keeps the state per entity (a
:class:`CardHistory` per card, a :class:`SenderHistory` per sender) and advances it with
:func:`card_history_after` / :func:`sender_history_after` after computing the features.

Window rule (every windowed feature, so that a Polars version reproduces it exactly):
a prior event at time ``p`` counts in window ``w`` of an event at time ``t`` when
``t - w < p <= t``, computed as ``lower = t - w; lower < p <= t``. Events of the history
are in arrival order; one stamped later than ``t`` (it arrived first but happened after)
is ignored, one stamped exactly ``t`` counts as prior. Only the card's last
:data:`CARD_HISTORY_CAP` arrivals before the event are candidates (the sender's last
:data:`SENDER_HISTORY_CAP`). For a batch version: per entity, ordered by arrival, take the
previous ``CAP`` rows and apply the time rule; that is exactly what the online state gives
when event times do not go backwards within an entity (a late, back-dated event may find
entries already evicted online). Label outcomes follow the same rule
on their *arrival* time over :data:`OUTCOME_WINDOW_S`: a label that arrived after the event
was not known when the event was scored, and counting it would leak the future.

All values are finite floats. Feature names and definitions are frozen under
:data:`TXN_FEATURE_SET_VERSION` / :data:`EMAIL_FEATURE_SET_VERSION`: any change to a name or a
definition gets a new version, which makes saved online models refuse to load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from models import text
from models.events import Email, Transaction, utc_from_timestamp
from models.names import EventKind
from models.text import TEXT_FEATURE_PREFIX, is_text_feature

__all__ = [
    "CARD_HISTORY_CAP",
    "CARD_HISTORY_WINDOW_S",
    "CARD_WINDOWS",
    "EMAIL_DENSE_FEATURES",
    "EMAIL_FEATURE_SET_VERSION",
    "EXTRA_FEATURE_PREFIX",
    "FEATURE_SET_VERSIONS",
    "NO_OUTCOMES",
    "OUTCOME_WINDOW_S",
    "SENDER_FORGET_S",
    "SENDER_HISTORY_CAP",
    "SENDER_HISTORY_WINDOW_S",
    "TEXT_FEATURE_PREFIX",
    "TRANSACTION_DENSE_FEATURES",
    "TXN_FEATURE_SET_VERSION",
    "CardHistory",
    "OutcomeCounts",
    "Outcomes",
    "SenderHistory",
    "card_forgettable",
    "card_history_after",
    "count_outcomes",
    "decode_history",
    "dense_feature_names",
    "email_features",
    "encode_history",
    "is_text_feature",
    "sender_forgettable",
    "sender_history_after",
    "transaction_features",
]

TXN_FEATURE_SET_VERSION = "txn-v1"
EMAIL_FEATURE_SET_VERSION = "email-v2"  # v2: a sender silent 30 days is new again
FEATURE_SET_VERSIONS: dict[EventKind, str] = {
    "transaction": TXN_FEATURE_SET_VERSION,
    "email": EMAIL_FEATURE_SET_VERSION,
}

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S
WEEK_S = 7 * DAY_S

CARD_WINDOWS: tuple[tuple[str, float], ...] = (("1h", HOUR_S), ("24h", DAY_S), ("7d", WEEK_S))
"""Suffix and length of the card windows; the longest one bounds the card history."""
CARD_HISTORY_WINDOW_S = WEEK_S
CARD_HISTORY_CAP = 256
"""Most recent transactions kept per card. Binds only for cards with more than 256
transactions in 7 days; then every window sees the last 256 arrivals only."""
SENDER_WINDOWS: tuple[tuple[str, float], ...] = (("1h", HOUR_S), ("24h", DAY_S))
SENDER_HISTORY_WINDOW_S = DAY_S
SENDER_HISTORY_CAP = 256
"""Most recent messages kept per sender: the sender counts saturate at this value."""
SENDER_FORGET_S = 30 * DAY_S
"""A sender silent this long is new again: its first-seen time starts over. A sender's age is
a feature, so without this rule a worker would have to keep every sender it ever saw, and a
stream of new spam addresses would grow it without bound; with it, a sender silent this long
can be dropped (:func:`sender_forgettable`) and its next message scores as if it had been
kept."""

OUTCOME_WINDOW_S = 28 * DAY_S
"""Label outcomes count for this long after they arrived."""
OUTCOME_CAP = 512
"""At most this many outcomes are kept per terminal or sender: the latest to arrive. A busy
terminal collects thousands of labels in 28 days, and every one of its transactions would
otherwise read and loop over all of them; its risk is then the rate among its latest 512
labels. Whoever records outcomes (the worker in Redis, the backtest in memory) applies it."""
OUTCOME_PRIOR_RATE = 0.01
OUTCOME_PRIOR_WEIGHT = 10.0
"""Smoothed rate = (positives + RATE * WEIGHT) / (labels + WEIGHT): a terminal with one fraud
out of one label is suspicious, not certain."""

SECS_SINCE_PREV_CAP_S = WEEK_S
"""Gap to the previous transaction, capped; a card without one gets the cap."""
AMOUNT_STD_FLOOR = 1.0
AMOUNT_STD_FLOOR_SHARE = 0.1
"""The z-score divides by max(std, 1, 0.1 * mean): a card that always paid exactly 20.00
has std 0, and 25.00 should not look like an infinite outlier."""
ZSCORE_CAP = 10.0
EXTRA_FEATURE_PREFIX = "extra_"

Outcomes = Sequence[tuple[float, bool]]
"""Label outcomes of one terminal or sender: (label arrival time in POSIX s, was positive)."""
OutcomeCounts = tuple[int, int]
"""(positives, labels) among a terminal's or sender's outcomes that count for one event: see
:func:`count_outcomes`. The features take these two numbers, not the outcomes: the worker
counts them in Redis (a busy terminal holds 512 outcomes, and reading them for each of its
transactions cost milliseconds), the backtest with :func:`count_outcomes`."""
NO_OUTCOMES: OutcomeCounts = (0, 0)

TRANSACTION_DENSE_FEATURES: tuple[str, ...] = (
    "amount_log",
    "card_count_1h",
    "card_count_24h",
    "card_count_7d",
    "card_amount_sum_log_1h",
    "card_amount_sum_log_24h",
    "card_amount_sum_log_7d",
    "card_countries_24h",
    "card_countries_7d",
    "card_devices_24h",
    "card_devices_7d",
    "is_new_country",
    "is_new_device",
    "secs_since_prev_log",
    "amount_log_ratio_mean",
    "amount_zscore",
    "hour_sin",
    "hour_cos",
    "is_online",
    "terminal_fraud_count_28d",
    "terminal_label_count_28d",
    "terminal_fraud_rate_28d",
)
"""Fixed dense transaction features, in the order :func:`transaction_features` returns them;
``extra_<name>`` features of the event follow, sorted by name."""

EMAIL_DENSE_FEATURES: tuple[str, ...] = (
    "body_len_log",
    "link_count",
    "link_lookalike_count",
    "link_ip_count",
    "sender_domain_lookalike",
    "caps_share",
    "exclaim_density",
    "punct_density",
    "money_cue_count",
    "urgency_cue_count",
    "has_attachment",
    "sender_count_1h",
    "sender_count_24h",
    "sender_age_log",
    "sender_is_new",
    "sender_recipients_24h",
    "sender_spam_count_28d",
    "sender_label_count_28d",
    "sender_spam_rate_28d",
)
"""Dense email features, in order; the hashed ``tok_<bucket>`` text features follow, sorted
by bucket."""


def dense_feature_names(kind: EventKind) -> tuple[str, ...]:
    """The fixed dense feature names of one kind (without a transaction's ``extra_*``)."""
    return TRANSACTION_DENSE_FEATURES if kind == "transaction" else EMAIL_DENSE_FEATURES


# --- state ------------------------------------------------------------------------------


class CardHistory(msgspec.Struct, kw_only=True, frozen=True):
    """What one card's features need from its past: parallel lists, one entry per transaction
    in arrival order, at most :data:`CARD_HISTORY_CAP` of them, none older than 7 days.

    Stored by the worker as JSON (:func:`encode_history`).
    """

    times: list[float] = []
    amounts: list[float] = []
    countries: list[str] = []
    devices: list[str] = []

    def __post_init__(self) -> None:
        n = len(self.times)
        if not len(self.amounts) == len(self.countries) == len(self.devices) == n:
            raise ValueError("CardHistory lists must all have the same length")


class SenderHistory(msgspec.Struct, kw_only=True, frozen=True):
    """What one sender's features need: times and recipients of its messages of the last
    24 hours (arrival order, at most :data:`SENDER_HISTORY_CAP`), when it was first seen and
    when last (None in histories stored before ``last_seen`` existed: the latest of
    ``times`` stands for it, else ``first_seen``)."""

    times: list[float] = []
    recipients: list[str] = []
    first_seen: float | None = None
    last_seen: float | None = None

    def __post_init__(self) -> None:
        if len(self.recipients) != len(self.times):
            raise ValueError("SenderHistory lists must all have the same length")


H = TypeVar("H", CardHistory, SenderHistory)


_HISTORY_ENCODER = msgspec.json.Encoder()
_HISTORY_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    schema: msgspec.json.Decoder(schema) for schema in (CardHistory, SenderHistory)
}


def encode_history(history: CardHistory | SenderHistory) -> bytes:
    """A history as the worker's Faust tables store it: a JSON object of its lists.

    msgspec, straight from the struct: about a third cheaper than a dict in between (the
    worker encodes one history per card in every step), and not orjson, whose results sit
    in allocations of at least 4 KiB (``tests/unit/stream/test_history_encoding.py``).

    >>> encode_history(CardHistory(times=[1.0], amounts=[9.5], countries=["FR"], devices=[""]))
    b'{"times":[1.0],"amounts":[9.5],"countries":["FR"],"devices":[""]}'
    """
    return _HISTORY_ENCODER.encode(history)


def decode_history(stored: bytes, schema: type[H]) -> H:
    """The history :func:`encode_history` stored; ``ValueError`` naming ``schema`` when the
    bytes are not one (missing lists are empty, unknown fields ignored).

    >>> decode_history(b'{"times": [1.0], "amounts": [9.5], "countries": ["FR"],'
    ...                b' "devices": [""]}', CardHistory).amounts
    [9.5]
    """
    try:
        result: H = _HISTORY_DECODERS[schema].decode(stored)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ValueError(f"invalid {schema.__name__}: {exc}") from None
    return result


def _keep_from(times: list[float], lower: float, cap: int) -> int:
    """Index from which entries survive: the last ``cap`` ones, minus the leading ones at or
    before ``lower`` (they cannot count for this event, nor for any later-stamped one)."""
    start = max(0, len(times) - cap)
    return next((i for i in range(start, len(times)) if times[i] > lower), len(times))


def card_history_after(history: CardHistory, txn: Transaction) -> CardHistory:
    """The history with ``txn`` appended, without entries at or before ``t - 7 d`` (``t`` the
    time of ``txn``), and without the oldest arrivals beyond :data:`CARD_HISTORY_CAP`.

    Only the oldest run of expired entries is dropped (arrival order); an expired entry behind
    a younger one waits for the next event, where the window rule ignores it anyway.

    >>> h = CardHistory(times=[0.0, 500_000.0], amounts=[1.0, 2.0], countries=["FR", "DE"],
    ...                 devices=["", "d1"])
    >>> card_history_after(h, _txn(t=700_000.0, amount=3.0)).times
    [500000.0, 700000.0]
    """
    t = txn.timestamp
    times = [*history.times, t]
    i = _keep_from(times, t - CARD_HISTORY_WINDOW_S, CARD_HISTORY_CAP)
    return CardHistory(
        times=times[i:],
        amounts=[*history.amounts, txn.amount][i:],
        countries=[*history.countries, txn.country][i:],
        devices=[*history.devices, txn.device_id][i:],
    )


def sender_history_after(history: SenderHistory, email: Email) -> SenderHistory:
    """The history with ``email`` appended, entries at or before ``t - 24 h`` and beyond
    :data:`SENDER_HISTORY_CAP` dropped, the first-seen time kept at its minimum and the
    last-seen at its maximum. A sender silent for :data:`SENDER_FORGET_S` starts afresh."""
    t = email.timestamp
    if sender_forgettable(history, t):
        history = SenderHistory()
    times = [*history.times, t]
    i = _keep_from(times, t - SENDER_HISTORY_WINDOW_S, SENDER_HISTORY_CAP)
    first_seen = t if history.first_seen is None else min(history.first_seen, t)
    last_seen = _sender_last_seen(history)
    return SenderHistory(
        times=times[i:],
        recipients=[*history.recipients, email.recipient.lower()][i:],
        first_seen=first_seen,
        last_seen=t if last_seen is None else max(last_seen, t),
    )


def _sender_last_seen(history: SenderHistory) -> float | None:
    if history.last_seen is not None:
        return history.last_seen
    return max(history.times) if history.times else history.first_seen


def sender_forgettable(history: SenderHistory, t: float) -> bool:
    """True when no message stamped ``t`` or later can tell ``history`` from no history at
    all: the sender was last seen :data:`SENDER_FORGET_S` or more before ``t`` (so it is new
    again, and its 24-hour windows are long empty). A worker may then drop it."""
    last = _sender_last_seen(history)
    return last is None or last <= t - SENDER_FORGET_S


def card_forgettable(history: CardHistory, t: float) -> bool:
    """True when no transaction stamped ``t`` or later can tell ``history`` from no history
    at all: its latest transaction is 7 days or more before ``t``, so every window has passed
    it and the gap to it is at its cap. A worker may then drop the card."""
    return not history.times or max(history.times) <= t - CARD_HISTORY_WINDOW_S


# --- shared pieces ----------------------------------------------------------------------


def _finite(value: float) -> float:
    """``value`` as a float, 0.0 when it is NaN or infinite: a feature must never poison a model."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def count_outcomes(t: float, outcomes: Outcomes) -> OutcomeCounts:
    """(positives, labels) of the outcomes that arrived in ``t - 28 d < arrival <= t``: the
    window rule, which the worker's Redis count (``stream.outcomes``) reproduces exactly.

    >>> count_outcomes(100.0, [(50.0, True), (90.0, False), (150.0, True)])
    (1, 2)
    """
    lower = t - OUTCOME_WINDOW_S
    labels = positives = 0
    for arrived, is_positive in outcomes:
        if lower < arrived <= t:
            labels += 1
            positives += bool(is_positive)
    return positives, labels


def outcome_features(counts: OutcomeCounts) -> tuple[float, float, float]:
    """(positives, labels, smoothed positive rate) from an event's :func:`count_outcomes`.

    >>> outcome_features((1, 2))
    (1.0, 2.0, 0.09166666666666667)
    """
    positives, labels = counts
    rate = (positives + OUTCOME_PRIOR_RATE * OUTCOME_PRIOR_WEIGHT) / (labels + OUTCOME_PRIOR_WEIGHT)
    return float(positives), float(labels), rate


def _hour_of_day(t: float) -> tuple[float, float]:
    """(sin, cos) of the UTC time of day: 23:59 and 00:01 are neighbours, as they should be."""
    angle = 2.0 * math.pi * (t % DAY_S) / DAY_S
    return math.sin(angle), math.cos(angle)


# --- transactions -----------------------------------------------------------------------


def transaction_features(
    txn: Transaction, history: CardHistory, terminal_outcomes: OutcomeCounts = NO_OUTCOMES
) -> dict[str, float]:
    """The features of ``txn`` given its card's PRIOR history and its terminal's label outcomes
    counted at the transaction's time (:func:`count_outcomes`).

    ``history`` must not contain ``txn`` itself (compute features, then advance the history).
    Names and order: :data:`TRANSACTION_DENSE_FEATURES`, then ``extra_<name>`` for each extra
    numeric field of the event, sorted by name. Definitions:

    - ``card_count_<w>`` / ``card_amount_sum_log_<w>``: number of prior transactions of the
      card in window ``w`` (1h, 24h, 7d), and ``log1p`` of the sum of their amounts.
    - ``card_countries_<w>`` / ``card_devices_<w>``: distinct countries / non-empty devices
      among them (24h, 7d).
    - ``is_new_country``: 1 when the card has prior transactions in 7 d and none from this
      country (a card's first transaction is new, not foreign: ``card_count_7d`` says so).
      ``is_new_device``: the same for a non-empty device id.
    - ``secs_since_prev_log``: ``log1p(min(t - latest prior time, 7 d))``, ``log1p(7 d)``
      without a prior transaction in 7 d.
    - ``amount_log_ratio_mean``: ``log1p(amount) - log1p(mean)``; ``amount_zscore``:
      ``(amount - mean) / max(std, 1, 0.1 * mean)`` clipped to +-10; mean and population std
      (ddof=0) of the prior amounts in 7 d; both 0 without any.
    - ``hour_sin`` / ``hour_cos``: time of day in UTC on the unit circle.
    - ``terminal_*_28d``: see :func:`count_outcomes` and :func:`outcome_features`.

    >>> from datetime import UTC, datetime
    >>> t0 = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    >>> h = CardHistory()
    >>> for dt, amount in [(-7200.0, 10.0), (-1800.0, 30.0)]:
    ...     h = card_history_after(h, _txn(t=t0 + dt, amount=amount))
    >>> x = transaction_features(_txn(t=t0, amount=200.0), h, (1, 1))  # 1 fraud in 1 label
    >>> for name in ["card_count_1h", "card_count_24h", "card_amount_sum_log_24h",
    ...              "secs_since_prev_log", "amount_zscore", "hour_cos", "terminal_fraud_rate_28d"]:
    ...     print(name, round(x[name], 3))
    card_count_1h 1.0
    card_count_24h 2.0
    card_amount_sum_log_24h 3.714
    secs_since_prev_log 7.496
    amount_zscore 10.0
    hour_cos -1.0
    terminal_fraud_rate_28d 0.1
    """
    t = txn.timestamp
    lowers = [t - w for _, w in CARD_WINDOWS]
    lower_1h, lower_24h, lower_7d = lowers
    count_1h = count_24h = 0
    sum_1h = sum_24h = 0.0
    countries_24h: set[str] = set()
    devices_24h: set[str] = set()
    countries_7d: set[str] = set()
    devices_7d: set[str] = set()
    amounts_7d: list[float] = []
    latest: float | None = None
    for p, amount, country, device in zip(
        history.times, history.amounts, history.countries, history.devices, strict=True
    ):
        if not lower_7d < p <= t:
            continue
        amounts_7d.append(amount)
        countries_7d.add(country)
        if device:
            devices_7d.add(device)
        if latest is None or p > latest:
            latest = p
        if p > lower_24h:
            count_24h += 1
            sum_24h += amount
            countries_24h.add(country)
            if device:
                devices_24h.add(device)
            if p > lower_1h:
                count_1h += 1
                sum_1h += amount

    count_7d = len(amounts_7d)
    sum_7d = sum(amounts_7d)
    amount = txn.amount
    ratio, zscore = _amount_vs_history(amount, amounts_7d, sum_7d)
    gap = SECS_SINCE_PREV_CAP_S if latest is None else min(t - latest, SECS_SINCE_PREV_CAP_S)
    hour_sin, hour_cos = _hour_of_day(t)
    frauds, labels, rate = outcome_features(terminal_outcomes)

    x = {
        "amount_log": math.log1p(amount),
        "card_count_1h": float(count_1h),
        "card_count_24h": float(count_24h),
        "card_count_7d": float(count_7d),
        "card_amount_sum_log_1h": math.log1p(sum_1h),
        "card_amount_sum_log_24h": math.log1p(sum_24h),
        "card_amount_sum_log_7d": math.log1p(sum_7d),
        "card_countries_24h": float(len(countries_24h)),
        "card_countries_7d": float(len(countries_7d)),
        "card_devices_24h": float(len(devices_24h)),
        "card_devices_7d": float(len(devices_7d)),
        "is_new_country": float(count_7d > 0 and txn.country not in countries_7d),
        "is_new_device": float(
            count_7d > 0 and bool(txn.device_id) and txn.device_id not in devices_7d
        ),
        "secs_since_prev_log": math.log1p(gap),
        "amount_log_ratio_mean": ratio,
        "amount_zscore": zscore,
        "hour_sin": hour_sin,
        "hour_cos": hour_cos,
        "is_online": float(txn.channel == "online"),
        "terminal_fraud_count_28d": frauds,
        "terminal_label_count_28d": labels,
        "terminal_fraud_rate_28d": rate,
    }
    for name in sorted(txn.extra):
        x[EXTRA_FEATURE_PREFIX + name] = _finite(txn.extra[name])
    return x


def _amount_vs_history(amount: float, amounts: list[float], total: float) -> tuple[float, float]:
    """(log ratio to the mean, floored and clipped z-score) of ``amount`` against ``amounts``."""
    if not amounts:
        return 0.0, 0.0
    mean = total / len(amounts)
    std = math.sqrt(sum((a - mean) ** 2 for a in amounts) / len(amounts))
    scale = max(std, AMOUNT_STD_FLOOR, AMOUNT_STD_FLOOR_SHARE * mean)
    zscore = min(max((amount - mean) / scale, -ZSCORE_CAP), ZSCORE_CAP)
    return math.log1p(amount) - math.log1p(mean), zscore


# --- emails -----------------------------------------------------------------------------


def email_features(
    email: Email, history: SenderHistory, sender_outcomes: OutcomeCounts = NO_OUTCOMES
) -> dict[str, float]:
    """The features of ``email`` given its sender's PRIOR history and spam-label outcomes
    counted at the email's time (:func:`count_outcomes`).

    Names and order: :data:`EMAIL_DENSE_FEATURES`, then hashed ``tok_<bucket>`` text features
    (see :func:`models.text.hashed_tokens_one`) of subject and body, sorted by bucket.

    - Links are the declared ones plus URLs in the body; ``link_lookalike_count`` counts
      those whose host :func:`models.text.lookalike_kind` flags (``link_ip_count`` the IP
      ones among them); ``sender_domain_lookalike`` applies the same test to the sender.
    - ``caps_share``, ``exclaim_density``, ``punct_density``, cue counts: over subject and
      body together.
    - ``sender_count_<w>`` (1h, 24h), ``sender_recipients_24h`` (distinct non-empty,
      lowercased): prior messages by the window rule. ``sender_age_log``:
      ``log1p(t - first seen)``, 0 for a new sender, who also gets ``sender_is_new`` 1; a
      sender silent :data:`SENDER_FORGET_S` (30 days) before ``t`` is new again.
    - ``sender_*_28d``: see :func:`count_outcomes` and :func:`outcome_features`.

    >>> from datetime import UTC, datetime
    >>> mail = Email(event_id="m1", event_time=datetime(2024, 5, 1, tzinfo=UTC),
    ...              sender="security@paypa1.com", subject="URGENT: verify your account",
    ...              body="Your account is suspended! Click http://192.168.4.2/login now.")
    >>> x = email_features(mail, SenderHistory())
    >>> for name, value in x.items():
    ...     if value and not name.startswith("tok_"):
    ...         print(name, round(value, 3))
    body_len_log 4.143
    link_count 1.0
    link_lookalike_count 1.0
    link_ip_count 1.0
    sender_domain_lookalike 1.0
    caps_share 0.129
    exclaim_density 0.011
    punct_density 0.011
    urgency_cue_count 3.0
    sender_is_new 1.0
    sender_spam_rate_28d 0.01
    >>> sum(k.startswith("tok_") for k in x)
    14
    """
    t = email.timestamp
    content = f"{email.subject}\n{email.body}"
    tokens = text.tokens_one(content)
    money, urgency = text.cue_counts(tokens, content)
    exclaim, punct = text.punctuation_densities(content)
    hosts = [text.url_host(link) for link in text.links_one(email.links, email.body)]
    kinds = [text.lookalike_kind(host) for host in hosts]
    spams, labels, rate = outcome_features(sender_outcomes)

    x = {
        "body_len_log": math.log1p(len(email.body)),
        "link_count": float(len(hosts)),
        "link_lookalike_count": float(sum(1 for kind in kinds if kind)),
        "link_ip_count": float(kinds.count("ip")),
        "sender_domain_lookalike": float(text.is_lookalike_domain(text.email_domain(email.sender))),
        "caps_share": text.caps_share(content),
        "exclaim_density": exclaim,
        "punct_density": punct,
        "money_cue_count": float(money),
        "urgency_cue_count": float(urgency),
        "has_attachment": float(email.has_attachment),
        **_sender_features(t, history),
        "sender_spam_count_28d": spams,
        "sender_label_count_28d": labels,
        "sender_spam_rate_28d": rate,
    }
    x.update(text.hashed_tokens_one(tokens))
    return x


def _sender_features(t: float, history: SenderHistory) -> dict[str, float]:
    """Volume, fan-out and age of a sender from its prior messages (window rule as above)."""
    lower_1h, lower_24h = (t - w for _, w in SENDER_WINDOWS)
    count_1h = count_24h = 0
    recipients: set[str] = set()
    for p, recipient in zip(history.times, history.recipients, strict=True):
        if lower_24h < p <= t:
            count_24h += 1
            if recipient:
                recipients.add(recipient)
            if p > lower_1h:
                count_1h += 1
    first = None if sender_forgettable(history, t) else history.first_seen
    is_new = first is None or first > t
    age = 0.0 if is_new or first is None else t - first
    return {
        "sender_count_1h": float(count_1h),
        "sender_count_24h": float(count_24h),
        "sender_age_log": math.log1p(age),
        "sender_is_new": float(is_new),
        "sender_recipients_24h": float(len(recipients)),
    }


def _txn(
    *,
    t: float,
    amount: float,
    card: str = "c1",
    country: str = "FR",
    device: str = "",
    channel: str = "pos",
    terminal: str = "t1",
) -> Transaction:
    """A transaction for the examples above, with fixed values for the fields they ignore."""
    return msgspec.convert(
        {
            "event_id": f"{card}-{t}",
            "event_time": utc_from_timestamp(t),
            "card_id": card,
            "customer_id": "u1",
            "amount": amount,
            "merchant_id": "m1",
            "terminal_id": terminal,
            "merchant_category": "5411",
            "country": country,
            "device_id": device,
            "channel": channel,
        },
        Transaction,
    )
