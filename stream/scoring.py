"""Scoring a batch of decoded events: the one code path the live worker and the backtest share.

For each event, in order: read its entity's history, compute the features (from
``models.features``, the one definition), score them with the online model, map the score to
allow / review / block, explain alerts with reason codes, and advance the history. Pure: no
Kafka, no Redis; the caller loads the histories and label outcomes and stores the results.

An event whose features were already served (a replay after a crash) is scored again from
those served features and leaves the history alone, so a replay neither changes its score nor
counts the event twice in its entity's windows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from models import features as F
from models.events import Alert, Decision, Email, ScoredEvent, Transaction, utc_from_timestamp
from models.names import EventKind
from models.online import OnlineModel
from models.settings import Settings
from models.weights import BatchModel, blend_array

E = TypeVar("E", Transaction, Email)
H = TypeVar("H")

Outcomes = Sequence[tuple[float, bool]]
"""Label outcomes of one terminal or sender: (label arrival time, was positive)."""

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
    features: Callable[[E, H, Outcomes], dict[str, float]]
    history_after: Callable[[H, E], H]
    new_history: Callable[[], H]
    history_to_dict: Callable[[H], dict[str, Any]]
    history_from_dict: Callable[[dict[str, Any]], H]
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
    new_history=F.CardHistory,
    history_to_dict=F.history_to_dict,
    history_from_dict=F.card_history_from_dict,
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
    new_history=F.SenderHistory,
    history_to_dict=F.history_to_dict,
    history_from_dict=F.sender_history_from_dict,
    summary=_email_summary,
)

SPECS: dict[EventKind, KindSpec[Any, Any]] = {"transaction": TRANSACTIONS, "email": EMAILS}


@dataclass(frozen=True)
class Verdict:
    """The outcome of scoring one event: always a scored event, sometimes an alert."""

    scored: ScoredEvent
    alert: Alert | None
    replayed: bool
    """True when the features came from an earlier serving of the same event."""


def score_batch(
    spec: KindSpec[E, H],
    events: Sequence[E],
    histories: MutableMapping[str, H],
    outcomes: Mapping[str, Outcomes],
    model: OnlineModel,
    model_version: str,
    thresholds: Thresholds,
    scored_at: float,
    served: Mapping[str, dict[str, float]] | None = None,
    batch: BatchModel | None = None,
) -> list[Verdict]:
    """Score ``events`` in order, advancing ``histories`` (entity -> history) in place.

    ``served`` maps event ids already scored before to the features served then. With a
    ``batch`` model the final score is the hybrid of the online and the batch score (the
    blend and the thresholds travel with the batch model, fitted for it); without one it is
    the online score and ``thresholds`` decide.
    """
    served = served or {}
    scored_time = utc_from_timestamp(scored_at)
    rows: list[dict[str, float]] = []
    replayed: list[bool] = []
    for event in events:
        previous = served.get(event.event_id)
        if previous is None:
            entity = spec.entity(event)
            history = histories.get(entity)
            if history is None:
                history = spec.new_history()
            rows.append(spec.features(event, history, outcomes.get(spec.scope(event), ())))
            histories[entity] = spec.history_after(history, event)
        else:
            rows.append(previous)
        replayed.append(previous is not None)
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
    for event, x, online_score, batch_score, score, was_replayed in zip(
        events, rows, online, batch_scores, finals, replayed, strict=True
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
        verdicts.append(Verdict(scored=scored, alert=alert, replayed=was_replayed))
    return verdicts
