"""The worker's Kafka transport: Faust's aiokafka driver with three changes.

- The consumer waits at most :data:`FETCH_MAX_WAIT_MS` for an empty fetch (see ``stream.app.App``).
- The producer is idempotent: a batch sent again because its acknowledgement was lost (a
  broker restarting) is written once, so an alert reaches the alerts topic once.
- The consumer reads again what Faust fetched and did not hand over
  (:meth:`Consumer.getmany`).

The last one closes a hole through which a worker taking over partitions lost records for
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
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

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
    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's ``Consumer.getmany``, except that no fetched record is lost: each
        partition with records not handed over is sought back to the first of them once the
        batch is done (:meth:`_read_again`).

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
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, self._to_message(tp, record)
        if dropped:
            await self._read_again(dropped)

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
