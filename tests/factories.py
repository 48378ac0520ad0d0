"""Small, explicit event builders for tests: every field a test does not name has a fixed value."""

from __future__ import annotations

from typing import Any

from models.events import Email, Label, Transaction, utc_from_timestamp

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def transaction(n: int, *, at: float | None = None, **fields: Any) -> Transaction:
    values: dict[str, Any] = {
        "event_id": f"txn-{n:06d}",
        "event_time": utc_from_timestamp(T0 + n if at is None else at),
        "card_id": f"card-{n % 50:04d}",
        "customer_id": f"cust-{n % 50:04d}",
        "amount": 10.0 + (n % 17) * 3.5,
        "merchant_id": f"merchant-{n % 7}",
        "terminal_id": f"term-{n % 11}",
        "merchant_category": "grocery",
        "country": "FR",
        "device_id": f"dev-{n % 50}",
    }
    values.update(fields)
    return Transaction(**values)


def email(n: int, *, at: float | None = None, **fields: Any) -> Email:
    values: dict[str, Any] = {
        "event_id": f"email-{n:06d}",
        "event_time": utc_from_timestamp(T0 + n if at is None else at),
        "sender": f"person{n % 13}@example.org",
        "recipient": "me@example.com",
        "subject": f"Meeting notes {n}",
        "body": "Hi, attached are the notes from today's meeting. Thanks!",
    }
    values.update(fields)
    return Email(**values)


def label(event_id: str, kind: str, positive: bool, *, at: float = T0 + 10_000) -> Label:
    return Label(
        event_id=event_id,
        event_time=utc_from_timestamp(at),
        kind=kind,  # type: ignore[arg-type]
        is_positive=positive,
        source="generator",
    )
