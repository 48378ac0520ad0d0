"""The worker's Kafka transport: Faust's aiokafka driver with five changes.

- The consumer waits at most :data:`FETCH_MAX_WAIT_MS` for an empty fetch (see ``stream.app.App``).
- The producer is idempotent: a batch sent again because its acknowledgement was lost (a
  broker restarting) is written once, so an alert reaches the alerts topic once.
- The consumer reads again what Faust fetched and did not hand over
  (:meth:`Consumer.getmany`).
- The records of the worker's input topics go to their ``stream.inbox.Inbox`` a fetch at a
  time, not to Faust's streams one message at a time (:meth:`Consumer._drain_messages`).
- A seek runs on the consumer thread (:meth:`Consumer._seek`), and the worker's seeks are made
  by the fetch loop between two fetches, what was fetched before them dropped
  (:meth:`Consumer.request_seek`).

The read-again closes a hole through which a worker taking over partitions lost records for
good. A fetch can return while a rebalance has stopped Faust's flow: Faust then hands over
none of the records (it seeks to the committed offsets instead, and for a partition with no
committed offset that is no seek at all); it also stops handing over when the flow stops or
the generation changes mid-batch, and skips records of a partition it does not count as
active at that moment. aiokafka has moved past those records already. Seen in the
kill-a-worker fault test (``tests/integration/test_faults.py``): the surviving worker's
changelog recovery waited for good for records it had fetched and dropped ("No event
received for active tp ... since recovery start"), so it never scored again. Here every
partition with records not handed over is sought back to the first of them, never forward
(:meth:`Consumer._read_again`); the worker's replay handling makes a record read twice
harmless. Records Faust drops after handing them over are ``stream.offsets``' business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message
from mode import Service

from stream.inbox import Inbox, first_offsets

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 10
"""Longest a fetch that finds no new data waits at the broker (Faust hard-codes 1500 ms)."""
POSITION_TIMEOUT_S = 5.0
"""How long a read-again waits for a partition's position (a rebalance may be resetting it)."""


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka builds its fetcher from this when the consumer starts.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Consumer(aiokafka_driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_seeks: dict[TP, int] = {}

    def request_seek(self, tp: TP, offset: int) -> None:
        """Have ``tp`` read again from ``offset`` (the worker's rewinds, ``stream.offsets``).

        The fetch loop makes the seek between two fetches (:meth:`_seek_as_requested`), and
        until then the records of ``tp`` at ``offset`` or later are dropped: those waiting in
        the inbox now, and those of the fetch in hand. Fetched before the seek, they would
        come before the records read again and move Faust's read offset past them, which then
        counted as read already and were skipped, the jump noted as a gap that commits may
        pass. A worker whose checkpoint was behind the labels' committed offset rewound the
        labels some 600 times in 25 s that way while labels flowed, and learned nothing."""
        pending = self._pending_seeks.get(tp)
        self._pending_seeks[tp] = offset if pending is None else min(pending, offset)
        inbox = self.inboxes.get(tp.topic)
        if inbox is not None:
            inbox.discard(tp.partition, offset)

    def forget_requested_seeks(self) -> None:
        """A rebalance: each partition starts again from its committed offset, which is never
        past a requested seek's offset (the record there was not acknowledged)."""
        self._pending_seeks.clear()

    def _stale(self, tp: TP, offset: int) -> bool:
        """A record a requested seek will bring again (see :meth:`request_seek`)."""
        pending = self._pending_seeks.get(tp)
        return pending is not None and offset >= pending

    async def _seek_as_requested(self) -> None:
        """Make the seeks :meth:`request_seek` asked for (no fetch is in hand here)."""
        while self._pending_seeks:
            tp, offset = self._pending_seeks.popitem()
            if tp not in self.assignment():
                continue  # a rebalance took it: its new owner reads from the commit
            try:
                await self.seek(tp, offset)
            except Exception as exc:  # the stall check asks again if it matters
                log.warning("could not seek %s back to %d: %s", tp, offset, exc)

    @property
    def inboxes(self) -> Mapping[str, Inbox[Message]]:
        """Input topics whose records go to an inbox (the app's ``inboxes``, set by
        ``stream.app``); the records of other topics take Faust's way."""
        inboxes: Mapping[str, Inbox[Message]] = getattr(self.app, "inboxes", {})
        return inboxes

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's ``Consumer.getmany``, except that no fetched record is lost: each
        partition with records not handed over is sought back to the first of them once the
        batch is done (:meth:`_read_again`). The monitor hears a partition's end offset once
        per fetch, where Faust told it per record (a Prometheus label look-up each).

        Faust hands over nothing when the flow stopped while the records were being fetched
        (it seeks to the committed offsets, which for a partition with none is no seek), and
        stops handing over when the flow stops or the generation changes on the way, or for
        a partition that is not active (nor buffered) when its turn comes."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        dropped: dict[TP, int] = {}
        if not self.flow_active:
            try:  # as Faust does
                await self.perform_seek()
            except Exception as exc:  # Faust logs and goes on, as here
                log.warning("exception performing seek when flow not active: %s", exc)
            dropped = {tp: batch[0].offset for tp, batch in records.items() if batch}
        else:
            buffered = self._buffered_partitions
            tracked: set[TP] = set()  # the end offset once per partition, not per record
            for tp, record in self.scheduler.iterate(records):
                if (
                    tp in dropped
                    or not self.flow_active
                    or self.app.consumer_generation_id != generation_id
                    or not (active_partitions is None or tp in active_partitions or tp in buffered)
                ):
                    # A partition's records come in offset order: the first dropped is the
                    # lowest, and the later ones must be read again with it.
                    dropped.setdefault(tp, record.offset)
                    continue
                if tp not in tracked:
                    tracked.add(tp)
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, self._to_message(tp, record)
        if dropped:
            await self._read_again(dropped)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop, except that the records of a topic with an inbox go to it a
        fetch at a time (:meth:`_hand_over`) instead of one ``wait_first`` each through the
        conductor to a stream. Every record still goes through Faust's read-offset check:
        a record read already is skipped, and a gap in the offsets is noted so that commits
        can pass it."""
        inboxes = self.inboxes
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        is_new = self._note_read
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if self._pending_seeks:
                    await self._seek_as_requested()
                self.diag.set_flag(CONSUMER_FETCHING)
                ait = self.getmany(timeout=1.0)
                await asyncio.sleep(0)  # as Faust: getmany may not give the loop a turn
                if self.should_stop:
                    continue
                fetched: dict[str, list[Message]] = {}
                since_yield = 0
                async for tp, message in ait:
                    since_yield += 1
                    if since_yield > 100:  # as Faust: let the loop run between records
                        await asyncio.sleep(0)
                        since_yield = 0
                    if self._pending_seeks and self._stale(tp, message.offset):
                        continue
                    inbox = inboxes.get(tp.topic)
                    if inbox is not None:
                        if await is_new(tp, message):
                            self._read_offset[tp] = message.offset
                            batch = fetched.get(tp.topic)
                            if batch is None:
                                batch = fetched[tp.topic] = []
                            batch.append(message)
                        continue
                    if await is_new(tp, message):
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        self._read_offset[tp] = message.offset
                for topic, messages in fetched.items():
                    await self._hand_over(inboxes[topic], messages)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _note_read(self, tp: TP, message: Message) -> bool:
        """Faust's bookkeeping of a fetched record before it is handed over: False for a
        record read already; a gap in the offsets is noted (commits pass over it), and every
        ``broker_commit_every`` acknowledgements commit. The caller moves the read offset."""
        offset = message.offset
        read = self._read_offset[tp]
        if read is not None and offset < read:
            return False
        if read and offset - read > 1 and self.app.topics.acks_enabled_for(message.topic):
            await self._add_gap(tp, read + 1, offset)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        return True

    async def _hand_over(self, inbox: Inbox[Message], messages: list[Message]) -> None:
        """Put one fetch's records of a topic in its inbox, once it has room; if the flow
        stops first (a rebalance), read them again instead."""
        while self.flow_active and not self.should_stop and not inbox.has_room():
            await self.wait_first(inbox.wait_for_room(), self.suspend_flow.wait())
        if self._pending_seeks:  # requested while this fetch waited
            messages = [m for m in messages if not self._stale(m.tp, m.offset)]
        if self.flow_active:
            inbox.put(messages)
            return
        await self.read_again(first_offsets(messages))

    async def _seek(self, partition: TP, offset: int) -> None:
        """Seek on the consumer thread, where aiokafka's fetcher lives.

        Faust's ``_seek`` calls aiokafka's ``seek`` from the event loop's thread, while the
        consumer thread may be handing out fetched records, and aiokafka's fetcher is not
        thread-safe: a seek that dropped a partition's fetched records in the middle of
        ``Fetcher.fetched_records`` crashed it (``KeyError``), and the worker stopped. Seen
        under ``make up``: the learner read again labels that had expired from Kafka, a
        seek every few milliseconds at start-up (``stream.offsets``)."""
        thread = self._thread

        async def seek() -> None:  # runs on the consumer thread's event loop
            thread.seek(partition, offset)

        await thread.call_thread(seek)
        requested = self._pending_seeks.get(partition)
        if requested is not None and requested >= offset:
            # This seek reads that far back already; made later, the request would skip
            # what lies between.
            del self._pending_seeks[partition]

    async def read_again(self, dropped: Mapping[tuple[str, int], int]) -> None:
        """:meth:`_read_again` by (topic, partition): what an inbox dropped."""
        await self._read_again({TP(topic, p): offset for (topic, p), offset in dropped.items()})

    async def _read_again(self, dropped: Mapping[TP, int]) -> None:
        """Seek each partition back to the first record dropped, unless it no longer is
        this worker's or something sought it back already (its position is not past it):
        a seek from here only ever moves back."""
        assigned = self.assignment()
        for tp, offset in dropped.items():
            if tp not in assigned:
                continue
            try:
                position = await asyncio.wait_for(self.position(tp), POSITION_TIMEOUT_S)
                if position is not None and position <= offset:
                    continue
                log.warning(
                    "records of %s from offset %d were fetched but not handed over; "
                    "reading them again",
                    tp,
                    offset,
                )
                await self.seek(tp, offset)
            except Exception as exc:  # e.g. a rebalance took it meanwhile
                log.warning("could not seek %s back to %d: %s", tp, offset, exc)


class Producer(aiokafka_driver.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "enable_idempotence": True}


class Transport(aiokafka_driver.Transport):
    Consumer = Consumer
    Producer = Producer
