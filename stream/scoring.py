"""Scoring a batch of decoded events: the one code path the live worker and the backtest share.

For each event, in order: read its entity's history, compute the features (from
``models.features``, the one definition), score them with the online model, map the score to
allow / review / block, explain alerts with reason codes, and advance the history. Pure: no
Kafka, no Redis; the caller loads the histories and label outcomes and stores the results.

An event whose features were already served (a replay after a crash) is scored again from
those served features and leaves the history alone, so a replay neither changes its score nor
counts the event twice in its entity's windows. The one exception is a history that never
received the event: a crash after the served features were saved but before the history's
changelog write reached Kafka. The history mark saved with the served features tells (see
:func:`history_mark`), and the event then enters the history on its replay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from models import features as F
from models.events import Alert, Decision, Email, ScoredEvent, Transaction, utc_from_timestamp
from models.features import NO_OUTCOMES, OutcomeCounts
from models.names import EventKind
from models.online import OnlineModel
from models.settings import Settings
from models.weights import BatchModel, blend_array

E = TypeVar("E", Transaction, Email)
H = TypeVar("H")

REASONS_PER_ALERT = 3
SUMMARY_CHARS = 120


@dataclass(frozen=True)
class Thresholds:
    """Scores at or above ``review`` ask a person; at or above ``block`` stop the event."""

    review: float
    block: float

    def decide(self, score: float) -> Decision:
        if score >= self.block:
            return "block"
        if score >= self.review:
            return "review"
        return "allow"

    @classmethod
    def for_kind(cls, kind: EventKind, settings: Settings) -> Thresholds:
        if kind == "transaction":
            return cls(settings.txn_review_threshold, settings.txn_block_threshold)
        return cls(settings.email_review_threshold, settings.email_block_threshold)


@dataclass(frozen=True)
class KindSpec(Generic[E, H]):
    """What differs between transactions and emails; everything else is shared."""

    kind: EventKind
    schema: type[E]
    entity: Callable[[E], str]
    """Key of the per-entity state, and the Kafka key of the event (card, sender)."""
    scope_name: str
    scope: Callable[[E], str]
    """The entity whose label outcomes give "risk from recent labels" (terminal, sender)."""
    features: Callable[[E, H, OutcomeCounts], dict[str, float]]
    history_after: Callable[[H, E], H]
    history: type[H]
    """The per-entity state (a new entity's is ``history()``; stored by
    :func:`models.features.encode_history`)."""
    forgettable: Callable[[H, float], bool]
    """Whether no event stamped at or after the time can tell the history from none."""
    summary: Callable[[E], str]


def _transaction_summary(txn: Transaction) -> str:
    return (
        f"{txn.amount:.2f} {txn.currency} at {txn.merchant_id} ({txn.merchant_category}, "
        f"{txn.country}, {txn.channel}) card {txn.card_id}"
    )


def _email_summary(email: Email) -> str:
    # Bodies never go into alerts: they may hold personal data, and the subject suffices.
    return f"from {email.sender}: {email.subject}"[:SUMMARY_CHARS]


TRANSACTIONS: KindSpec[Transaction, F.CardHistory] = KindSpec(
    kind="transaction",
    schema=Transaction,
    entity=lambda txn: txn.card_id,
    scope_name="terminal",
    scope=lambda txn: txn.terminal_id,
    features=F.transaction_features,
    history_after=F.card_history_after,
    history=F.CardHistory,
    forgettable=F.card_forgettable,
    summary=_transaction_summary,
)

EMAILS: KindSpec[Email, F.SenderHistory] = KindSpec(
    kind="email",
    schema=Email,
    entity=lambda email: email.sender,
    scope_name="sender",
    scope=lambda email: email.sender,
    features=F.email_features,
    history_after=F.sender_history_after,
    history=F.SenderHistory,
    forgettable=F.sender_forgettable,
    summary=_email_summary,
)

SPECS: dict[EventKind, KindSpec[Any, Any]] = {"transaction": TRANSACTIONS, "email": EMAILS}


class Histories(Protocol[H]):
    """Entity -> history, as :func:`score_batch` reads and advances them: a dict, or the
    worker's :class:`stream.step_histories.StepHistories`."""

    def get(self, entity: str, /) -> H | None: ...

    def __setitem__(self, entity: str, history: H, /) -> None: ...


HistoryMark = tuple[int, float | None, float | None]
"""An entity's history in brief: (entries, first entry's time, last entry's time)."""


def history_mark(history: Any) -> HistoryMark:
    """The mark of a card's or sender's history (both keep their entries' ``times``).

    Saved with the served features as the mark of the history *before* the event. On a
    replay, a history that still bears that mark never received the event (appending an
    entry changes the count or, once the history is full, the first and last times).
    """
    times = history.times
    return (len(times), times[0], times[-1]) if times else (0, None, None)


@dataclass(frozen=True)
class Verdict:
    """The outcome of scoring one event: always a scored event, sometimes an alert."""

    scored: ScoredEvent
    alert: Alert | None
    replayed: bool
    """True when the features came from an earlier serving of the same event."""
    advanced: bool = True
    """True when the event entered its entity's history in this call (every fresh event; a
    replayed one whose history never received it, see ``served_marks``)."""
    history_mark: HistoryMark | None = None
    """The mark of the entity's history before the event (to save with served features)."""


def score_batch(
    spec: KindSpec[E, H],
    events: Sequence[E],
    histories: Histories[H],
    outcomes: Mapping[str, OutcomeCounts],
    model: OnlineModel,
    model_version: str,
    thresholds: Thresholds,
    scored_at: float,
    served: Mapping[str, dict[str, float]] | None = None,
    batch: BatchModel | None = None,
    served_marks: Mapping[str, HistoryMark] | None = None,
) -> list[Verdict]:
    """Score ``events`` in order, advancing ``histories`` (entity -> history) in place.

    ``outcomes`` maps event ids to the label outcomes of their terminal or sender counted
    at the event's time (:func:`models.features.count_outcomes`); an event missing from it
    has none. ``served`` maps event ids already scored before to the features served then. With a
    ``batch`` model the final score is the hybrid of the online and the batch score (the
    blend and the thresholds travel with the batch model, fitted for it); without one it is
    the online score and ``thresholds`` decide. ``served_marks`` maps replayed event ids to
    the :func:`history_mark` saved when they were first served: a replayed event whose
    entity's history still bears it enters the history now.
    """
    served = served or {}
    served_marks = served_marks or {}
    scored_time = utc_from_timestamp(scored_at)
    rows: list[dict[str, float]] = []
    replayed: list[bool] = []
    advanced: list[bool] = []
    marks: list[HistoryMark | None] = []
    first_rows: dict[str, dict[str, float]] = {}
    for event in events:
        # The same event twice in one batch (redelivered after a rebalance) is a replay of
        # its first occurrence, like one served in an earlier batch.
        previous = served.get(event.event_id) or first_rows.get(event.event_id)
        entity = spec.entity(event)
        history = histories.get(entity)
        if history is None:
            history = spec.history()
        mark: HistoryMark | None
        if previous is None:
            mark = history_mark(history)
            rows.append(spec.features(event, history, outcomes.get(event.event_id, NO_OUTCOMES)))
            histories[entity] = spec.history_after(history, event)
            first_rows[event.event_id] = rows[-1]
        else:
            mark = served_marks.get(event.event_id)
            rows.append(previous)
            if mark is not None and history_mark(history) == mark:
                histories[entity] = spec.history_after(history, event)
            else:
                mark = None
        replayed.append(previous is not None)
        advanced.append(mark is not None)
        marks.append(mark)
    online = [model.score_one(x) for x in rows]
    if batch is not None and rows:
        keys = [{"entity_id": spec.entity(e), "scope_id": spec.scope(e)} for e in events]
        scores = batch.score_rows(rows, keys)
        finals = blend_array(batch.card, online, scores).tolist()
        batch_scores: list[float | None] = scores.tolist()
        thresholds = Thresholds(batch.card.review_threshold, batch.card.block_threshold)
        batch_version: str | None = batch.version
    else:
        batch_scores = [None] * len(rows)
        finals, batch_version = online, None
    verdicts = []
    for event, x, online_score, batch_score, score, was_replayed, moved, mark in zip(
        events, rows, online, batch_scores, finals, replayed, advanced, marks, strict=True
    ):
        entity = spec.entity(event)
        decision = thresholds.decide(score)
        reasons = model.reasons_one(x, top=REASONS_PER_ALERT) if decision != "allow" else []
        scored = ScoredEvent(
            event_id=event.event_id,
            event_time=event.event_time,
            kind=spec.kind,
            entity_id=entity,
            scope_id=spec.scope(event),
            scored_at=scored_time,
            features=x,
            online_score=online_score,
            batch_score=batch_score,
            score=score,
            decision=decision,
            online_version=model_version,
            batch_version=batch_version,
            reasons=reasons,
        )
        alert = None
        if decision != "allow":
            alert = Alert(
                alert_id=f"alert-{event.event_id}",
                event_id=event.event_id,
                event_time=event.event_time,
                kind=spec.kind,
                entity_id=entity,
                scored_at=scored_time,
                score=score,
                online_score=online_score,
                batch_score=batch_score,
                decision=decision,
                reasons=reasons,
                model_version=model_version,
                summary=spec.summary(event)[:SUMMARY_CHARS],
                batch_version=batch_version,
                features=x,
            )
        verdicts.append(
            Verdict(
                scored=scored,
                alert=alert,
                replayed=was_replayed,
                advanced=moved,
                history_mark=mark,
            )
        )
    return verdicts
