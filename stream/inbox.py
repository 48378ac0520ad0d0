"""An input topic's messages on their way from the consumer's fetch loop to the worker, in
batches.

Faust hands each fetched message to a stream on its own: two tasks and an ``asyncio.wait``
to deliver it (``wait_first(callback(message), suspend_flow.wait())``), a lock, an ``Event``
object, a queue put, then the stream's per-event iteration and acknowledgement. At full load
that was about half of a worker's event-loop thread (docs/benchmarks.md), for a worker that
only ever wants batches. ``stream.transport.Consumer`` puts each fetch's messages of an input
topic in its :class:`Inbox` in one call instead, and the worker's loop (``stream.app``) takes
them out a batch at a time.

What a stream did and the loop must still do: take nothing while Faust's flow is stopped (a
rebalance), tell Faust which messages are being worked on and acknowledge them after the step
(so commits and the wait for work in progress at a rebalance are Faust's own), and drop what
waits here when partitions are revoked, reading it again (:meth:`Inbox.clear` returns where
from: a partition nobody committed yet would otherwise not be read again at all).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from stream.offsets import Offset, Partition

M = TypeVar("M", bound=Offset)


@dataclass
class _Chunk(Generic[M]):
    messages: Sequence[M]
    start: int
    arrived: float
    """``time.monotonic()`` when it was put: the batch it starts waits from then."""


class Inbox(Generic[M]):
    """A bounded buffer of one topic's messages, in the order fetched.

    ``capacity`` bounds what waits here (the fetch loop waits for :meth:`has_room`), so a
    slow worker slows the fetching rather than filling memory; one fetch's messages always go
    in whole, so the bound is ``capacity`` plus one fetch.
    """

    def __init__(self, topic: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.topic = topic
        self.capacity = capacity
        self._chunks: deque[_Chunk[M]] = deque()
        self._count = 0
        self._more = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return self._count

    def has_room(self) -> bool:
        return self._count < self.capacity

    async def wait_for_room(self) -> None:
        while not self.has_room():
            self._room.clear()
            await self._room.wait()

    def put(self, messages: Sequence[M], now: float | None = None) -> None:
        """Add one fetch's messages at the end (whatever room is left)."""
        if not messages:
            return
        arrived = time.monotonic() if now is None else now
        self._chunks.append(_Chunk(messages, 0, arrived))
        self._count += len(messages)
        self._more.set()

    def put_back(self, messages: Sequence[M]) -> None:
        """Return taken messages to the front, first to be taken again."""
        if messages:
            self._chunks.appendleft(_Chunk(messages, 0, time.monotonic()))
            self._count += len(messages)
            self._more.set()

    def ready(self, size: int, within_s: float) -> bool:
        """Whether :meth:`take` with these arguments would return at once."""
        if self._count >= size:
            return True
        return bool(self._chunks) and time.monotonic() - self._chunks[0].arrived >= within_s

    async def take(self, size: int, within_s: float) -> list[M]:
        """Up to ``size`` messages, once there are ``size`` or the oldest has waited
        ``within_s`` (Faust's ``take_events(size, within_s)``, timed from the arrival of the
        oldest message rather than from the call: what arrived while the last batch was
        being handled has waited already)."""
        while True:
            while not self._chunks:
                self._more.clear()
                await self._more.wait()
            deadline = self._chunks[0].arrived + within_s
            while self._chunks and self._count < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._more.clear()
                try:
                    await asyncio.wait_for(self._more.wait(), remaining)
                except TimeoutError:
                    break
            if self._chunks:  # else cleared meanwhile: wait again
                return self._pop(size)

    def _pop(self, size: int) -> list[M]:
        out: list[M] = []
        while self._chunks and len(out) < size:
            chunk = self._chunks[0]
            end = min(len(chunk.messages), chunk.start + size - len(out))
            out.extend(chunk.messages[chunk.start : end])
            if end == len(chunk.messages):
                self._chunks.popleft()
            else:
                chunk.start = end
        self._count -= len(out)
        if self.has_room():
            self._room.set()
        return out

    def discard(self, partition: int, from_offset: int) -> int:
        """Drop the waiting messages of ``partition`` at ``from_offset`` or later (a seek back
        there will bring them again); return how many. Its earlier ones stay."""
        dropped = 0
        for chunk in self._chunks:
            waiting = chunk.messages[chunk.start :]
            kept = [m for m in waiting if m.partition != partition or m.offset < from_offset]
            if len(kept) != len(waiting):
                dropped += len(waiting) - len(kept)
                chunk.messages, chunk.start = kept, 0
        if dropped:
            self._chunks = deque(chunk for chunk in self._chunks if chunk.messages)
            self._count -= dropped
            if self.has_room():
                self._room.set()
        return dropped

    def clear(self) -> dict[Partition, int]:
        """Drop every message waiting; return each partition's first offset dropped."""
        first = first_offsets(m for chunk in self._chunks for m in chunk.messages[chunk.start :])
        self._chunks.clear()
        self._count = 0
        self._room.set()
        return first


def first_offsets(messages: Iterable[Offset]) -> dict[Partition, int]:
    """Each partition's first offset among ``messages`` (in their order): where to read a
    partition again from when they are dropped."""
    first: dict[Partition, int] = {}
    for message in messages:
        first.setdefault((message.topic, message.partition), message.offset)
    return first
