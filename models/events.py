"""The event schemas: one definition each, validated when decoded.

Every event carries an id, an event time in UTC and a schema version. They are msgspec
Structs: a typed msgspec decode validates types and bounds while it parses, at about
1.6M events/s, where a faust.Record neither validates nor gets near that speed.

Decoding goes through :func:`decode`, which raises :class:`InvalidEvent` with a reason a
person can act on; the worker puts that reason on the dead-letter topic beside the raw bytes.
New fields are added only with defaults; a breaking change gets a new topic version.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

SCHEMA_VERSION: Literal[1] = 1
MAX_EVENT_BYTES = 256 * 1024
MAX_FUTURE_SKEW_S = 24 * 3600.0
"""Events stamped further in the future than this are refused: a clock bug or an attack."""

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Short = Annotated[str, msgspec.Meta(max_length=256)]
Country = Annotated[str, msgspec.Meta(min_length=2, max_length=3)]
Amount = Annotated[float, msgspec.Meta(ge=0.0, le=10_000_000.0)]
Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Version = Literal[1]
Decision = Literal["allow", "review", "block"]


class InvalidEvent(ValueError):
    """Bytes that are not a valid event; ``reason`` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """Fields every event has."""

    schema_version: Version = SCHEMA_VERSION
    event_id: Id
    event_time: datetime

    @property
    def timestamp(self) -> float:
        """Event time as POSIX seconds, the unit every feature window uses."""
        return self.event_time.timestamp()


class Transaction(Event, kw_only=True, frozen=True):
    """A card payment. ``card_id`` is a token, never a card number in clear."""

    card_id: Id
    customer_id: Id
    amount: Amount
    currency: Annotated[str, msgspec.Meta(min_length=3, max_length=3)] = "EUR"
    merchant_id: Id
    terminal_id: Id
    merchant_category: Short
    country: Country
    device_id: Short = ""
    channel: Literal["pos", "online"] = "pos"
    extra: dict[str, float] = {}
    """Extra numeric columns of a replayed dataset, used as features as they are."""


class Email(Event, kw_only=True, frozen=True):
    """A message arriving at a mailbox."""

    sender: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    recipient: Annotated[str, msgspec.Meta(max_length=320)] = ""
    subject: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    body: Annotated[str, msgspec.Meta(max_length=100_000)] = ""
    links: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=2048)]], msgspec.Meta(max_length=200)
    ] = []
    has_attachment: bool = False


class Label(Event, kw_only=True, frozen=True):
    """Ground truth for an earlier event, arriving late: a chargeback, a spam report, an analyst.

    ``event_id`` names the labelled event; ``event_time`` is when the label arrived.
    """

    kind: Literal["transaction", "email"]
    is_positive: bool
    source: Literal["chargeback", "spam_report", "analyst", "replay", "generator"] = "generator"
    reviewer: Short = ""


class Reason(msgspec.Struct, frozen=True):
    """One feature's push on a score: positive raises the risk."""

    feature: str
    value: float
    contribution: float


class ScoredEvent(Event, kw_only=True, frozen=True):
    """What the worker decided about one event, with the exact features it served."""

    kind: Literal["transaction", "email"]
    entity_id: str
    scope_id: str = ""
    """The terminal (transactions) or sender (emails) whose label outcomes feed the features:
    the key of the batch job's per-scope aggregates."""
    scored_at: datetime
    features: dict[str, float]
    online_score: float
    batch_score: float | None = None
    score: float
    decision: Decision
    online_version: str
    batch_version: str | None = None
    reasons: list[Reason] = []


class Alert(Event, kw_only=True, frozen=True):
    """A scored event that needs a person or a block. ``alert_id`` is derived from the event id,
    so a replayed event can never raise a second, different alert."""

    alert_id: str
    kind: Literal["transaction", "email"]
    entity_id: str
    scored_at: datetime
    score: float
    online_score: float
    batch_score: float | None = None
    decision: Literal["review", "block"]
    reasons: list[Reason]
    model_version: str
    """The online model's version."""
    summary: str = ""
    batch_version: str | None = None
    """The batch model's version, when a batch model took part in the score."""
    features: dict[str, float] = {}
    """The features served, so an analyst sees what the model saw (alerts page)."""


ReviewVerdict = Literal["confirmed", "false_positive"]


class Review(msgspec.Struct, kw_only=True, frozen=True):
    """An analyst's verdict on one alert, recorded once; it is also published as a Label."""

    schema_version: Version = SCHEMA_VERSION
    alert_id: Id
    event_id: Id
    kind: Literal["transaction", "email"]
    verdict: ReviewVerdict
    reviewer: Short
    reviewed_at: datetime
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""

    def as_label(self) -> Label:
        """The label this verdict teaches: confirmed means fraud/spam."""
        return Label(
            event_id=self.event_id,
            event_time=self.reviewed_at,
            kind=self.kind,
            is_positive=self.verdict == "confirmed",
            source="analyst",
            reviewer=self.reviewer,
        )


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True):
    """An input that could not be processed, kept with its raw bytes so nothing is lost."""

    schema_version: Version = SCHEMA_VERSION
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    raw: bytes
    reason: str
    failed_at: datetime


class ModelUpdate(Event, kw_only=True, frozen=True):
    """Announces that a new batch model version is current in the registry."""

    kind: Literal["transaction", "email"]
    version: str
    redis_key: str


E = TypeVar("E", bound=msgspec.Struct)

_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def encode(event: msgspec.Struct) -> bytes:
    """JSON bytes of any event."""
    return _ENCODER.encode(event)


def decode(
    raw: bytes,
    schema: type[E],
    *,
    now: float | None = None,
    max_bytes: int | None = MAX_EVENT_BYTES,
) -> E:
    """Decode and validate ``raw`` as ``schema``; raise :class:`InvalidEvent` with a reason.

    Beyond the types and bounds in the schema: the event time must carry a UTC offset and
    not lie more than a day in the future, and float fields must be finite. ``max_bytes``
    guards against oversized input; a dead letter (which carries such input) is read with
    ``max_bytes=None``.
    """
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidEvent(f"event of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    decoder = _DECODERS.get(schema)
    if decoder is None:
        decoder = _DECODERS[schema] = msgspec.json.Decoder(schema)
    try:
        event = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"invalid {schema.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"undecodable {schema.__name__}: {exc}") from None
    except UnicodeDecodeError:  # msgspec raises it for bad UTF-8 inside a string
        raise InvalidEvent(f"undecodable {schema.__name__}: a string is not valid UTF-8") from None
    except RecursionError:
        raise InvalidEvent(f"undecodable {schema.__name__}: nested too deeply") from None
    if isinstance(event, Event):
        _check_event_time(event, now)
    if isinstance(event, Transaction):
        for name, value in event.extra.items():
            if not math.isfinite(value):
                raise InvalidEvent(f"invalid Transaction: extra feature {name!r} is not finite")
    return event


def _check_event_time(event: Event, now: float | None) -> None:
    if event.event_time.tzinfo is None or event.event_time.utcoffset() is None:
        raise InvalidEvent(
            f"invalid {type(event).__name__}: event_time has no UTC offset (use e.g. ...Z)"
        )
    ts = event.event_time.timestamp()
    limit = (time.time() if now is None else now) + MAX_FUTURE_SKEW_S
    if ts > limit:
        raise InvalidEvent(
            f"invalid {type(event).__name__}: event_time {event.event_time.isoformat()} "
            "is more than a day in the future"
        )


def utc_from_timestamp(ts: float) -> datetime:
    """A UTC datetime from POSIX seconds, the form every event time takes."""
    return datetime.fromtimestamp(ts, tz=UTC)


def parse_instant(text: str) -> float:
    """POSIX seconds of an ISO 8601 time; a time without an offset is taken as UTC.

    Raises ``ValueError`` with an example of the expected form (CLIs turn it into a message).
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not an ISO time: {text!r} (e.g. 2025-01-06 or 2025-01-06T08:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def entity_key(event: Transaction | Email) -> str:
    """The Kafka key of an event: the entity whose state it updates (card, or sender)."""
    return event.card_id if isinstance(event, Transaction) else event.sender
