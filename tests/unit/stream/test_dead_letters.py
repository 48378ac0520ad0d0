"""What the worker puts on the dead-letter topic: the raw bytes, the key and the reason, with
card numbers masked (a dead letter must not store what the scorer refused to store)."""

from __future__ import annotations

import json

import msgspec
import redis.asyncio as aioredis

from models.events import DeadLetter, Transaction, decode, encode
from models.names import Topics
from models.settings import Settings
from stream.worker import RawMessage, StreamWorker
from tests import factories

VISA = "4111111111111111"


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


def new_worker() -> tuple[StreamWorker, RecordingSink]:
    # Decoding and dead-lettering never reach Redis: the client connects lazily.
    s = Settings(namespace="unitdead", redis_url="redis://127.0.0.1:1/0")
    sink = RecordingSink()
    worker = StreamWorker(s, sink, {"transaction": {}, "email": {}}, aioredis.from_url(s.redis_url))
    return worker, sink


def refuse(raw: bytes, key: bytes | None) -> tuple[bytes | None, DeadLetter, bytes]:
    """Hand one message to the worker; return the dead letter's Kafka key, the record and
    its bytes."""
    worker, sink = new_worker()
    message = RawMessage("unitdead.transactions.v1", 2, 17, key, raw)
    assert worker._decode_all(Transaction, [message]) == []
    ((topic, sent_key, value),) = sink.sent
    assert topic == Topics.for_namespace("unitdead").dead_letters
    letter = decode(value, DeadLetter, max_bytes=None)
    assert (letter.topic, letter.partition, letter.offset) == (message.topic, 2, 17)
    return sent_key, letter, value


def as_json(**changes: object) -> bytes:
    data = msgspec.to_builtins(factories.transaction(1))
    data.update(changes)
    return json.dumps(data).encode()


def assert_no_card_number(*blobs: bytes | str | None) -> None:
    for blob in blobs:
        if blob is None:
            continue
        text = blob if isinstance(blob, str) else blob.decode("utf-8", "replace")
        assert VISA not in text.replace(" ", "").replace("-", ""), text


def test_a_card_number_in_clear_is_dead_lettered_with_the_reason_and_masked():
    sent_key, letter, value = refuse(as_json(card_id="4111 1111 1111 1111"), VISA.encode())
    assert "card_id is a card number in clear (**** **** **** 1111)" in letter.reason
    assert json.loads(letter.raw)["card_id"] == "**** **** **** 1111"
    assert json.loads(letter.raw)["event_id"] == "txn-000001"  # the rest is kept as sent
    assert sent_key == letter.key == b"************1111"  # a transaction is keyed by card
    assert_no_card_number(sent_key, value, letter.raw, letter.key, letter.reason)


def test_a_card_number_is_masked_whatever_else_got_the_event_refused():
    # Refused for its amount first, or for not being JSON at all: the number is masked still.
    for raw in (
        as_json(customer_id=VISA, amount=-1.0),
        as_json(card_id=int(VISA)),  # a number where a string belongs
        b'{"card_id":"\\u0034111111111111111"',  # escaped and truncated
        b"\xff\xfe" + VISA.encode(),
    ):
        sent_key, letter, value = refuse(raw, VISA.encode())
        assert letter.reason
        assert_no_card_number(sent_key, value, letter.raw, letter.key, letter.reason)


def test_other_dead_letters_keep_their_raw_bytes_and_key_exactly():
    raw = as_json(amount=-1.0)
    sent_key, letter, _ = refuse(raw, b"card-0001")
    assert letter.raw == raw and sent_key == letter.key == b"card-0001"
    sent_key, letter, _ = refuse(b"\xff\x00 not json", None)
    assert letter.raw == b"\xff\x00 not json" and sent_key is None and letter.key is None


def test_a_token_is_scored_not_dead_lettered():
    worker, sink = new_worker()
    raw = encode(factories.transaction(1, card_id="card_" + "4" * 32))
    message = RawMessage("unitdead.transactions.v1", 0, 0, b"k", raw)
    assert len(worker._decode_all(Transaction, [message])) == 1 and sink.sent == []
