"""Small, explicit event builders for tests: every field a test does not name has a fixed value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from models.events import Email, Label, ScoredEvent, Transaction, utc_from_timestamp

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


def batch_model(version: str, *, seed: int = 0, review: float = 0.5, block: float = 0.9) -> Any:
    """A small but real transaction batch model (gradient-boosted trees fitted on random
    rows over the served feature names), for tests of publishing and hot swapping."""
    from datetime import UTC, datetime

    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    from models import weights
    from models.features import FEATURE_SET_VERSIONS, TRANSACTION_DENSE_FEATURES

    names = list(TRANSACTION_DENSE_FEATURES)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, len(names)))
    y = X[:, names.index("amount_log")] + rng.normal(scale=0.5, size=400) > 1.0
    trees = HistGradientBoostingClassifier(max_iter=10, random_state=seed).fit(X, y)
    now = datetime.now(UTC)
    return weights.BatchModel(
        weights.ModelCard(
            kind="transaction",
            version=version,
            feature_set_version=FEATURE_SET_VERSIONS["transaction"],
            feature_names=names,
            created_at=now,
            trained_until=now,
            library_versions={},
            metrics={},
            review_threshold=review,
            block_threshold=block,
            hybrid=weights.Blend(online_weight=0.5, batch_weight=1.0, bias=0.0),
        ),
        weights.trees_from_sklearn(trees, names),
    )


def scored(n: int, *, at: float | None = None, **fields: Any) -> ScoredEvent:
    """A scored transaction ``txn-{n}`` (online model only), scored 10 ms after it happened."""
    when = T0 + n if at is None else at
    values: dict[str, Any] = {
        "event_id": f"txn-{n:06d}",
        "event_time": utc_from_timestamp(when),
        "kind": "transaction",
        "entity_id": f"card-{n % 50:04d}",
        "scored_at": utc_from_timestamp(when + 0.01),
        "features": {"amount": 10.0 + n, "count_1h": float(n % 3)},
        "online_score": 0.1,
        "score": 0.1,
        "decision": "allow",
        "online_version": "online-1",
    }
    values.update(fields)
    return ScoredEvent(**values)


# Frames as the batch job reads them (tests of batch.features and its pandas benchmark twin).


def transactions_frame(txns: Sequence[Transaction], *, float_times: bool = False) -> pl.DataFrame:
    """The transactions as the batch job reads them, in arrival order."""
    extras = sorted({name for txn in txns for name in txn.extra})
    columns: dict[str, list] = {
        "event_id": [txn.event_id for txn in txns],
        "event_time": [txn.timestamp if float_times else txn.event_time for txn in txns],
        "card_id": [txn.card_id for txn in txns],
        "amount": [txn.amount for txn in txns],
        "country": [txn.country for txn in txns],
        "device_id": [txn.device_id for txn in txns],
        "channel": [txn.channel for txn in txns],
        "terminal_id": [txn.terminal_id for txn in txns],
    }
    for name in extras:
        columns[f"extra_{name}"] = [txn.extra.get(name) for txn in txns]
    return pl.DataFrame(columns)


def outcomes_frame(labels: Sequence[tuple[str, float, bool]]) -> pl.DataFrame:
    """(terminal, label arrival time, is positive) as the batch features read label outcomes."""
    return pl.DataFrame(
        {
            "terminal_id": [terminal for terminal, _, _ in labels],
            "label_time": [utc_from_timestamp(arrival) for _, arrival, _ in labels],
            "is_positive": [positive for _, _, positive in labels],
        },
        schema={
            "terminal_id": pl.String,
            "label_time": pl.Datetime("us", "UTC"),
            "is_positive": pl.Boolean,
        },
    )
