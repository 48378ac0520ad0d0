"""The floor: a textbook Faust agent that handles one event at a time.

``python -m benchmarks.naive worker --web-port N --datadir DIR`` (what ``benchmarks.worker``
runs). Per event it decodes the value into a ``faust.Record`` (Faust's JSON codec), builds the
project's ``Transaction`` from it, scores it with the very same code as the worker
(:func:`stream.scoring.score_batch` on a one-event batch, the same online model and
thresholds), and ``await``s a send of the scored event. Card histories live in a plain dict
(no table, no changelog) and nothing goes to Redis, so this floor does *less* work per event
than the real worker: what it measures is the per-event agent pattern itself.

It reads ``FRAUD_NAMESPACE`` / ``FRAUD_KAFKA_BOOTSTRAP`` / ``FRAUD_PARTITIONS``, consumes the
namespace's transactions topic in its own consumer group and writes to
``<namespace>.naive-scored.v1``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import faust

from benchmarks import stack
from models.events import Transaction, encode
from models.names import Topics
from models.online import OnlineModel
from models.settings import Settings
from stream.scoring import TRANSACTIONS, Thresholds, score_batch


class TransactionRecord(faust.Record, serializer="json", isodates=True):
    """A transaction as a faust.Record (the tutorial way; no validation)."""

    schema_version: int
    event_id: str
    event_time: datetime
    card_id: str
    customer_id: str
    amount: float
    merchant_id: str
    terminal_id: str
    merchant_category: str
    country: str
    currency: str = "EUR"
    device_id: str = ""
    channel: str = "pos"
    extra: dict = {}


def create_app(settings: Settings) -> faust.App:
    topics = Topics.for_namespace(settings.namespace)
    brokers = ";".join(f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(","))
    app = faust.App(
        f"{settings.namespace}-naive",
        broker=brokers,
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_host="127.0.0.1",
    )
    source = app.topic(topics.transactions, value_type=TransactionRecord, key_type=bytes)
    scored = app.topic(
        stack.floor_topic(settings.namespace), key_serializer="raw", value_serializer="raw"
    )
    model = OnlineModel("transaction", positive_weight=settings.positive_weight)
    thresholds = Thresholds.for_kind("transaction", settings)
    histories: dict[str, Any] = {}

    @app.agent(source, name="naive-score")
    async def score(stream: faust.StreamT[TransactionRecord]) -> None:
        async for record in stream:
            event = Transaction(**record.asdict())
            verdict = score_batch(
                TRANSACTIONS,
                [event],
                histories,
                {},
                model,
                model.version,
                thresholds,
                scored_at=time.time(),
            )[0]
            await scored.send(key=event.card_id.encode(), value=encode(verdict.scored))

    return app


app = create_app(Settings.from_env())

if __name__ == "__main__":
    app.main()
