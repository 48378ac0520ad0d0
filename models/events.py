"""The event schemas: one definition each, validated when decoded.

Every event carries an id, an event time in UTC and a schema version. They are msgspec
Structs: a typed msgspec decode validates types and bounds while it parses, at about
1.6M events/s, where a faust.Record neither validates nor gets near that speed.

Decoding goes through :func:`decode`, which raises :class:`InvalidEvent` with a reason a
person can act on; the worker puts that reason on the dead-letter topic beside the raw bytes.
New fields are added only with defaults; a breaking change gets a new topic version.

**Card numbers.** One rule says what a card number is (:func:`card_number_digits`,
:func:`is_card_number`): 12 to 19 ASCII digits once spaces and dashes are removed, passing the
Luhn check. :func:`decode` refuses a transaction whose ``card_id`` or ``customer_id`` is one,
and :func:`redact_card_numbers` masks them (all but the last 4 digits) in what a dead letter
keeps. The replay's tokenization (``models.tabular``) uses the same digits without the Luhn
check: there a false positive costs only a token, here it would cost a refused event.
"""

from __future__ import annotations

import math
import re
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


CARD_NUMBER_LENGTHS = range(12, 20)
"""Digits in a card number, as this rule counts them: 12 to 19 (ISO/IEC 7812's longest)."""
CARD_SEPARATORS = " -"
"""Characters a card number may be written with between its digits, removed before checking."""
CARD_MASK_KEEP = 4
"""Digits of a card number left visible when it is masked: the last four, nothing else (the
first six as well would leave only two unknown digits of a 12-digit number)."""

_CARD_FIRST = frozenset("0123456789" + CARD_SEPARATORS)
_CARD_STRIP = str.maketrans("", "", CARD_SEPARATORS)
# A run of digits with spaces or dashes between them, that is a whole word: not inside an
# alphanumeric id (a token "card_3f...") nor the fraction of a decimal number.
_CARD_RUN_TEXT = re.compile(r"(?<![0-9A-Za-z_.])[0-9](?:[ \-]*[0-9])*(?![0-9A-Za-z_])")
_CARD_RUN_BYTES = re.compile(rb"(?<![0-9A-Za-z_.])[0-9](?:[ \-]*[0-9])*(?![0-9A-Za-z_])")
# A JSON escape of a digit, a space or a dash (``\u0034``), not itself escaped (``\\u0034``).
_ESCAPED_CARD_CHAR = re.compile(rb"(?<!\\)((?:\\\\)*)\\u00(3[0-9]|2[0dD])")


def card_number_digits(value: str) -> str | None:
    """The digits of ``value`` when it is written like a card number: 12 to 19 ASCII digits
    once spaces and dashes are removed (``"4111 1111-1111 1111"``); None otherwise.

    No Luhn check: this is the shape only (see :func:`is_card_number`).
    """
    if not value or value[0] not in _CARD_FIRST:  # the usual id ("card_000123"): one look
        return None
    digits = value.translate(_CARD_STRIP)
    if len(digits) in CARD_NUMBER_LENGTHS and digits.isascii() and digits.isdigit():
        return digits
    return None


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check every issued card number passes
    (one random digit string in ten does too)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_card_number(value: str) -> bool:
    """Whether ``value`` is a card number: :func:`card_number_digits` and the Luhn check.

    The Luhn check keeps most numeric ids of that length from being taken for card numbers
    (nine in ten fail it); every card number issued passes it.
    """
    digits = card_number_digits(value)
    return digits is not None and luhn_valid(digits)


def mask_card_number(value: str) -> str:
    """``value`` with every digit but the last four replaced by ``*`` (separators kept)."""
    keep = sum(c.isdigit() for c in value) - CARD_MASK_KEEP
    out = []
    for char in value:
        if char.isdigit() and keep > 0:
            out.append("*")
            keep -= 1
        else:
            out.append(char)
    return "".join(out)


def mask_card_numbers(text: str) -> str:
    """``text`` with every card number in it masked: each whole word made of digits, spaces
    and dashes that :func:`is_card_number` accepts (a token such as ``card_<hex>`` is not
    touched, even when its hex holds a run of digits)."""
    return _CARD_RUN_TEXT.sub(_mask_text_match, text)


def _mask_text_match(match: re.Match[str]) -> str:
    run = match.group()
    return mask_card_number(run) if is_card_number(run) else run


def _mask_bytes_match(match: re.Match[bytes]) -> bytes:
    run = match.group().decode("ascii")  # digits, spaces and dashes only
    return mask_card_number(run).encode("ascii") if is_card_number(run) else match.group()


def redact_card_numbers(raw: bytes, *, json: bool = True) -> bytes:
    """``raw`` with every card number in it masked; the very same bytes when it holds none.

    For what a dead letter keeps (raw bytes, key, reason): the scorer refuses card numbers in
    clear, so the record of that refusal must not store one either. With ``json`` (event
    bytes), a value that parses as JSON is searched after decoding, where an escaped digit
    (``"\\u0034111..."``) is a digit again: a string holding a card number is masked, an
    integer that is one becomes its masked string, and the document is encoded again (keys
    and order kept). Then digit runs in the bytes are masked where they stand, JSON escapes
    of digits, spaces and dashes read as what they stand for (bytes that do not parse).
    """
    out = raw
    if json:
        try:
            doc = _GENERIC_JSON.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
            pass
        else:
            masked, changed = _mask_document(doc)
            if changed:
                out = _ENCODER.encode(masked)
    # Bytes that do not parse (truncated JSON, say) are searched with the JSON escapes of
    # digits, space and dash read as what they stand for; they stay escaped unless masked.
    plain = _ESCAPED_CARD_CHAR.sub(_unescape_card_char, out)
    masked_bytes = _CARD_RUN_BYTES.sub(_mask_bytes_match, plain)
    return out if masked_bytes == plain else masked_bytes


def _unescape_card_char(match: re.Match[bytes]) -> bytes:
    return match.group(1) + bytes([int(match.group(2), 16)])


def _mask_document(doc: Any) -> tuple[Any, bool]:
    """(``doc`` with card numbers masked, whether anything was); iterative, so a document
    nested as deep as the decoder allows cannot exhaust Python's stack."""
    root = [doc]
    changed = False
    stack: list[list[Any] | dict[Any, Any]] = [root]
    while stack:
        container = stack.pop()
        if isinstance(container, dict):
            for key in list(container):
                value = container[key]
                new_key = mask_card_numbers(key) if isinstance(key, str) else key
                new_value, touched = _mask_scalar(value)
                if isinstance(new_value, list | dict):
                    stack.append(new_value)
                if new_key != key:
                    del container[key]
                    changed = True
                if new_key != key or touched:
                    container[new_key] = new_value
                    changed = True
        else:
            for i, value in enumerate(container):
                new_value, touched = _mask_scalar(value)
                if isinstance(new_value, list | dict):
                    stack.append(new_value)
                if touched:
                    container[i] = new_value
                    changed = True
    return root[0], changed


def _mask_scalar(value: Any) -> tuple[Any, bool]:
    if isinstance(value, str):
        masked = mask_card_numbers(value)
        return masked, masked != value
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 10**11 <= abs(value) < 10**19  # before str(): a huge int has no str()
        and is_card_number(str(abs(value)))
    ):
        return mask_card_number(str(value)), True
    return value, False


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
    """A card payment. ``card_id`` is a token, never a card number in clear: :func:`decode`
    refuses a ``card_id`` or ``customer_id`` that :func:`is_card_number` accepts."""

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


LabelSource = Literal["chargeback", "spam_report", "analyst", "replay", "generator"]


class Label(Event, kw_only=True, frozen=True):
    """Ground truth for an earlier event, arriving late: a chargeback, a spam report, an analyst.

    ``event_id`` names the labelled event; ``event_time`` is when the label arrived.
    """

    kind: Literal["transaction", "email"]
    is_positive: bool
    source: LabelSource = "generator"
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
    """An input that could not be processed, kept with its raw bytes so nothing is lost.

    Card numbers are the exception: the worker masks them in ``raw``, ``key`` and ``reason``
    (:func:`redact_card_numbers`), so ``raw`` is the bytes as sent except for those digits.
    """

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
_GENERIC_JSON = msgspec.json.Decoder()


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
    if isinstance(event, Transaction):
        _check_card_numbers(event)
    if isinstance(event, Event):
        _check_event_time(event, now)
    if isinstance(event, Transaction):
        for name, value in event.extra.items():
            if not math.isfinite(value):
                raise InvalidEvent(f"invalid Transaction: extra feature {name!r} is not finite")
    return event


def _check_card_numbers(txn: Transaction) -> None:
    # Defence in depth: a producer that sends a card number where a token belongs gets its
    # event refused (so dead-lettered, masked), never scored, stored, alerted on or lake'd.
    for name, value in (("card_id", txn.card_id), ("customer_id", txn.customer_id)):
        if value[0] in _CARD_FIRST and is_card_number(value):  # ids are never empty
            raise InvalidEvent(
                f"invalid Transaction: {name} is a card number in clear "
                f"({mask_card_number(value)}); send a token instead (e.g. card_<keyed hash>, "
                "as python -m producers replay makes with FRAUD_CARD_TOKEN_KEY)"
            )


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
