"""The recent alerts, held in memory and followed live from Redis, fanned out to the pages.

The workers append every alert to a capped Redis stream (``RedisKeys.alerts_stream``) and
every page server appends verdicts to another (``RedisKeys.reviews_stream``). One reader
task per server follows both with a blocking ``XREAD``, so an alert reaches every open page
within milliseconds of the worker raising it, and Redis sees one reader per server, not one
per browser. The window kept is the stream's own cap: what Redis still holds is what the
page can show and review.

A browser that falls too far behind (its queue fills) is dropped rather than allowed to
grow the server's memory; its EventSource reconnects and reloads the list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisDown
from redis.exceptions import TimeoutError as RedisSlow

from models.events import Alert, InvalidEvent, Review, decode
from models.names import RedisKeys

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
READ_BLOCK_MS = 1000
READ_COUNT = 1000


@dataclass
class Entry:
    """One alert as the page shows it: the alert and, once given, its verdict."""

    alert: Alert
    review: Review | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self.alert)
        out["review"] = None if self.review is None else msgspec.to_builtins(self.review)
        return out


Message = bytes | None
"""What a subscriber receives: one Server-Sent Event, encoded once for every subscriber,
or ``None`` when the server stops."""


def event_message(what: Literal["alert", "review"], entry: Entry) -> bytes:
    """The Server-Sent Event of a new alert or a verdict: ``event: <what>`` and the entry."""
    return b"event: " + what.encode() + b"\ndata: " + msgspec.json.encode(entry.to_json()) + b"\n\n"


class AlertFeed:
    """The last ``capacity`` alerts by id, in the order they were raised, kept up to date."""

    def __init__(self, redis: Redis, keys: RedisKeys, capacity: int) -> None:
        self._redis = redis
        self._keys = keys
        self._capacity = capacity
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._subscribers: set[asyncio.Queue[Message]] = set()
        self._last_alert = "0-0"
        self._last_review = "0-0"

    async def load(self) -> None:
        """Read the alerts Redis still holds and their verdicts. The reviews stream's position
        is taken first, so a verdict given meanwhile is read again by :meth:`follow`."""
        # redis-py types stream replies loosely; they are lists of (id, {field: value}).
        newest_review: Any = await self._redis.xrevrange(self._keys.reviews_stream, count=1)
        if newest_review:
            self._last_review = _text(newest_review[0][0])
        newest_first: Any = await self._redis.xrevrange(
            self._keys.alerts_stream, count=self._capacity
        )
        for stream_id, fields in reversed(newest_first):
            self._add(stream_id, fields)
        ids = list(self._entries)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            raws: Any = await self._redis.mget([self._keys.review(a) for a in chunk])
            for alert_id, raw in zip(chunk, raws, strict=True):
                review = _review(raw)
                if review is not None:
                    self._entries[alert_id].review = review

    async def follow(self) -> None:
        """Read both streams forever, applying and broadcasting what arrives."""
        while True:
            try:
                batches: Any = await self._redis.xread(
                    {
                        self._keys.alerts_stream: self._last_alert,
                        self._keys.reviews_stream: self._last_review,
                    },
                    count=READ_COUNT,
                    block=READ_BLOCK_MS,
                )
            except (RedisDown, RedisSlow, OSError) as exc:  # Redis restarting: keep serving
                log.warning("alerts page: reading Redis failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for stream, messages in batches:
                is_alerts = _text(stream) == self._keys.alerts_stream
                for stream_id, fields in messages:
                    if is_alerts:
                        entry = self._add(stream_id, fields)
                        if entry is not None:
                            self._broadcast(event_message("alert", entry))
                    else:
                        self._last_review = _text(stream_id)
                        self._apply_review(fields)

    def subscribe(self) -> asyncio.Queue[Message]:
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Message]) -> None:
        self._subscribers.discard(queue)

    def is_subscribed(self, queue: asyncio.Queue[Message]) -> bool:
        return queue in self._subscribers

    def close(self) -> None:
        """End every subscription (the server is stopping): each gets ``None`` as its last
        item, so open event streams finish instead of holding the shutdown up."""
        for queue in list(self._subscribers):
            self._subscribers.discard(queue)
            with contextlib.suppress(asyncio.QueueFull):  # a full one ends when drained
                queue.put_nowait(None)

    def get(self, alert_id: str) -> Entry | None:
        return self._entries.get(alert_id)

    def newest_first(self) -> Iterator[Entry]:
        return reversed(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, stream_id: bytes | str, fields: dict[bytes, bytes]) -> Entry | None:
        self._last_alert = _text(stream_id)
        raw = fields.get(b"alert")
        try:
            if raw is None:
                raise InvalidEvent("entry has no 'alert' field")
            alert = decode(raw, Alert)
        except InvalidEvent as exc:  # written by a worker, so a bug or a foreign writer
            log.warning("alerts page: skipped stream entry %s: %s", self._last_alert, exc)
            return None
        if alert.alert_id in self._entries:  # the same alert again: keep the first
            return None
        entry = self._entries[alert.alert_id] = Entry(alert)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return entry

    def _apply_review(self, fields: dict[bytes, bytes]) -> None:
        review = _review(fields.get(b"review"))
        if review is None:
            return
        entry = self._entries.get(review.alert_id)
        if entry is None or entry.review == review:
            return
        entry.review = review
        self._broadcast(event_message("review", entry))

    def _broadcast(self, message: bytes) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # a stalled browser: drop it, it reconnects and reloads
                self._subscribers.discard(queue)


def _review(raw: bytes | None) -> Review | None:
    """A recorded verdict, or None for nothing or a claim still being recorded."""
    if not raw or not raw.startswith(b"{"):
        return None
    try:
        return decode(raw, Review)
    except InvalidEvent as exc:
        log.warning("alerts page: unreadable review %r: %s", raw[:80], exc)
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
