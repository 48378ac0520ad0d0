"""The Faust application: topics, tables and three thin step loops around :class:`StreamWorker`.

Start a worker with::

    faust -A stream.app worker -l info            # or: python -m stream worker

Settings come from ``FRAUD_*`` environment variables (see ``models.settings``), read once
here, at the entry point. Several workers share the partitions of one consumer group; give
each its own ``--web-port`` (and ``--datadir`` if they share a directory).

Per-entity histories live in Faust tables backed by changelog topics, so a restarted or a
second worker recovers them. The tables use the key partitioner (``use_partitioner=True``,
raw keys): a card's history goes to the changelog partition with the number of the input
partition its events arrive on, because producers key events by the same raw bytes with the
same murmur2 partitioner, and it can be written once per batch rather than per event. Keys
and values are bytes (``key_type=bytes`` makes Faust use the raw codec); the worker encodes
histories as JSON itself.

Faust's per-message machinery was most of a worker's cost (docs/benchmarks.md), so the
worker takes its input in batches around it: each input topic's fetched records go to an
inbox a fetch at a time (``stream.inbox``, ``stream.transport``) and a loop per topic hands
them to the worker a step at a time (:func:`consume`), where Faust's agents and streams
handed over one event at a time. Faust still runs the rest: the consumer group and its
rebalances, the tables and their changelogs, commits of what the loops acknowledged, timers,
the web server. A step's outputs, table changelog writes included, leave as one record batch
per partition (:class:`BatchSink`, :class:`ChangelogTable`); Faust's Prometheus monitor skips
its per-event updates (:class:`StepMonitor`); the consumer fetches 8 MiB per partition and
waits at most 10 ms for an empty fetch (:class:`App`); the garbage collector is set for a
long-running worker (``stream.heap``). Outputs, offsets and guarantees are those of plain
Faust.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiokafka
import faust
import redis.asyncio as aioredis
from faust.sensors.prometheus import PrometheusMonitor, setup_prometheus_sensors
from faust.types import TP, Message

from models import kafka_security
from models.events import InvalidEvent, ModelUpdate, decode
from models.names import EVENT_KINDS, EventKind, Topics, consumer_group, history_table
from models.settings import Settings
from models.topology import align_changelog_configs, changelog_topic_config, topic_partitions
from stream import lag, metrics
from stream.batch_models import BatchModels
from stream.heap import settle_heap
from stream.inbox import Inbox
from stream.transport import Consumer, Transport
from stream.worker import RawMessage, StreamWorker

log = logging.getLogger(__name__)

STALL_CHECK_INTERVAL_S = 5.0
"""How often the event partitions' consumer positions are compared with what reached the
worker (``stream.worker.STALLED_AFTER_S``)."""
PRODUCER_BATCH_BYTES = 512 * 1024
CONSUMER_FETCH_BYTES = 8 * 1024 * 1024
INBOX_STEPS = 4
"""Steps' worth of messages an inbox holds before the fetching waits for the worker."""


class BatchSink:
    """Sends the worker's outputs as Kafka record batches, one step's worth at a time.

    ``send`` only collects; the step loop awaits :meth:`flush` at the end of each step, which
    hands the messages to the app's aiokafka producer as one record batch per topic partition
    (``send_batch``) and returns without waiting for delivery, as ``send_soon`` did. Faust's
    ``send_soon`` instead queues each message for a task that publishes them one at a time
    (a partitioner call, futures, sensor callbacks and a loop iteration per message), and
    Faust's conductor stops handing events to streams while more than 100 wait: about a
    third of the worker's time went there (docs/benchmarks.md).

    Nothing else changes: the same producer (its commit-time ``flush`` waits for these
    batches too, so offsets are still committed only after the outputs were sent), the same
    key partitioner (the producer's own; a key's partition is remembered), the same bytes.
    """

    MAX_KNOWN_KEYS = 200_000

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._pending: dict[str, list[tuple[bytes | None, bytes]]] = {}
        self._partitions: dict[str, int] = {}
        self._known: dict[str, dict[bytes, int]] = {}

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        pending = self._pending.get(topic)
        if pending is None:
            pending = self._pending[topic] = []
        pending.append((key, value))

    async def flush(self) -> None:
        """Queue what was sent since the last flush on the producer (delivery not awaited)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        producer = cast(Any, self._app.producer)._ensure_producer()
        for topic, messages in pending.items():
            by_partition = await self._route(producer, topic, messages)
            for partition, items in by_partition.items():
                await self._send_partition(producer, topic, partition, items)

    async def _route(
        self, producer: Any, topic: str, messages: list[tuple[bytes | None, bytes]]
    ) -> dict[int, list[tuple[bytes | None, bytes]]]:
        count = len(await producer.partitions_for(topic))
        known = self._known.get(topic)
        if (
            known is None
            or self._partitions.get(topic) != count
            or len(known) > self.MAX_KNOWN_KEYS
        ):
            known = self._known[topic] = {}
            self._partitions[topic] = count
        partition_of = producer._partition
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for key, value in messages:
            partition = known.get(key) if key is not None else None
            if partition is None:
                partition = partition_of(topic, None, None, None, key, value)
                if key is not None:
                    known[key] = partition
            items = by_partition.get(partition)
            if items is None:
                items = by_partition[partition] = []
            items.append((key, value))
        return by_partition

    async def _send_partition(
        self, producer: Any, topic: str, partition: int, items: list[tuple[bytes | None, bytes]]
    ) -> None:
        batch = producer.create_batch()
        size = 0
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                if size:
                    await self._submit(producer, batch, topic, partition)
                    batch, size = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # Larger than a whole batch: the producer sizes a batch for it.
                    self._watch(await producer.send(topic, value, key, partition), topic)
                    continue
            size += 1
        if size:
            await self._submit(producer, batch, topic, partition)

    async def _submit(self, producer: Any, batch: Any, topic: str, partition: int) -> None:
        # Closed, the batch holds this step's messages only (no send() elsewhere in the app
        # can add to it), and it leaves without waiting out the producer's linger: it is
        # complete already.
        batch.close()
        self._watch(await producer.send_batch(batch, topic, partition=partition), topic)

    @staticmethod
    def _watch(delivery: asyncio.Future[Any], topic: str) -> None:
        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("could not deliver a batch to %s: %s", topic, fut.exception())

        delivery.add_done_callback(done)


class ChangelogTable(MutableMapping[bytes, bytes]):
    """A Faust table whose writes reach its changelog through a :class:`BatchSink`.

    A write stores the value in the table's store and sends ``(key, value)`` to the table's
    changelog topic with the producer's key partitioner: the message Faust's own
    ``table[key] = value`` sends (the tables use ``use_partitioner=True``), minus the
    per-message ``send_soon``. Reads go to the store. The stores are in memory, so Faust
    keeps no persisted changelog offsets that this would bypass.
    """

    def __init__(self, table: Any, sink: BatchSink) -> None:
        self._table = table
        self._sink = sink
        self._changelog = table.changelog_topic.get_topic_name()

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes = self._table.data[key]
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._table.data[key] = value
        self._sink.send(self._changelog, key, value)

    def __delitem__(self, key: bytes) -> None:
        """Drop the value from memory only; the changelog keeps it (no tombstone).

        Used for histories no event can use any more (``StreamWorker.forget_idle``). A
        tombstone could wipe a newer history: a worker's store also holds the standby copies
        of other workers' partitions, and a standby's sweep may judge a copy that lags its
        owner's latest write. A recovered history that is forgettable is dropped again by the
        next sweep; the cost is a changelog that keeps one record per key ever seen
        (compacted), read at recovery."""
        del self._table.data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._table.data)

    def __len__(self) -> int:
        return len(self._table.data)

    def payload_bytes(self) -> int:
        """Bytes of the values held: what grows as cards and senders gain history (until
        every history is full, :data:`models.features.CARD_HISTORY_CAP`)."""
        return sum(len(value) for value in self._table.data.values())

    def export_size(self, kind: EventKind) -> None:
        """Report this table's entities and bytes on ``/metrics``, computed when scraped
        (a pass over the values: a few ms for 100,000 histories, nothing between scrapes)."""
        metrics.STATE_ENTITIES.labels(kind).set_function(self.__len__)
        metrics.STATE_BYTES.labels(kind).set_function(self.payload_bytes)


class StepMonitor(PrometheusMonitor):
    """Faust's Prometheus monitor without the Prometheus updates of its four per-event hooks.

    Faust calls them for every message (in, out) and every stream event (in, out); with
    their counters, gauges and labels they took about a tenth of the worker's time at full
    load (docs/benchmarks.md). What goes: ``faust_messages_received*``,
    ``faust_active_messages``, ``faust_events*``, ``faust_active_events`` and
    ``faust_events_runtime_ms`` (``fraud_events_total`` counts scored events by kind). What
    stays: commits and committed offsets, rebalances, assignments, sends, web requests, and
    the two per-event facts Faust itself reads (the last read offset per partition, and when a
    stream last took an event, which its stalled-stream warnings check).
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


def setup_metrics(app: faust.App) -> None:
    """``/metrics`` on the worker's web port: Faust's (a :class:`StepMonitor`) and ours."""
    setup_prometheus_sensors(app, name_prefix="faust")
    app.monitor = StepMonitor(metrics=cast(Any, app.monitor)._metrics)


def _raw(messages: Sequence[Message]) -> list[RawMessage]:
    """The worker's view of the messages; a message without a value (a tombstone) has an
    empty one, which the worker dead-letters as undecodable."""
    return [RawMessage(m.topic, m.partition, m.offset, m.key, m.value or b"") for m in messages]


@dataclass
class _Step:
    """Messages taken together: tracked, handed over, then acknowledged together."""

    messages: list[Message]
    raw: list[RawMessage]
    prepared: asyncio.Future[Any] | None
    """``prepare(raw)`` under way, with a ``prepare``; None without."""


async def consume(
    app: faust.App,
    inbox: Inbox[Message],
    size: int,
    within_s: float,
    handle: Callable[[Any], Awaitable[Any]],
    after_step: Callable[[], Awaitable[None]],
    dead_letter: Callable[[RawMessage, str], None],
    *,
    prepare: Callable[[list[RawMessage]], Awaitable[Any]] | None = None,
) -> None:
    """Hand an input topic's messages to ``handle`` a step at a time, for good: what a Faust
    agent over ``stream.take_events(size, within_s)`` did, without the per-event stream.

    Nothing is taken while Faust's flow is stopped (a rebalance: what waits in the inbox is
    dropped and read again, see ``forget_offsets``). The messages of a step are tracked as
    Faust tracks a stream's (a rebalance waits for them), and acknowledged once ``handle``
    and ``after_step`` are done, so Faust commits past them only then; a step cut short by
    the worker stopping is not acknowledged (the next worker reads it again). A step that
    raises is logged and its messages go to ``dead_letter`` with the error: a bug must
    neither stop the worker nor lose the events.

    With ``prepare``, a step is handled in two halves, ``handle(await prepare(raw))``, and a
    step's ``prepare`` runs while the step before it is in ``handle``: the worker's Redis
    look-ups for the next step wait on Redis while this step is scored, instead of after
    it (``StreamWorker.prepare_step``). Only when the next step is there already
    (``Inbox.ready``): otherwise the step in hand is finished before the loop waits for
    more, so the overlap never holds an event back.
    """
    consumer = cast(Consumer, app.consumer)
    # When each partition last reached a step: what a stream notes per event, and what
    # Faust's warnings of a stream that stopped taking events read.
    inbound_time = app.monitor.stream_inbound_time

    async def finish(step: _Step) -> None:
        try:
            await handle(step.raw if step.prepared is None else await step.prepared)
        except Exception as exc:
            log.exception("a step of %d %s messages failed", len(step.raw), inbox.topic)
            for raw_message in step.raw:
                dead_letter(raw_message, f"the worker failed on it ({type(exc).__name__})")
        finally:
            await after_step()  # what a failed step sent still goes
        for message in step.messages:
            consumer.ack(message)

    pending: _Step | None = None  # prepared, not yet handled
    try:
        while True:
            if pending is not None and not (consumer.flow_active and inbox.ready(size, within_s)):
                step, pending = pending, None
                await finish(step)
            if not consumer.flow_active:
                await consumer.can_resume_flow.wait()
            messages = await inbox.take(size, within_s)
            if not consumer.flow_active:
                inbox.put_back(messages)
                continue
            now = time.monotonic()
            for message in messages:
                consumer.track_message(message)
                inbound_time[message.tp] = now
            raw = _raw(messages)
            if prepare is None:
                await finish(_Step(messages, raw, None))
                continue
            # The new step is pending before the one in hand is finished: a stop meanwhile
            # cancels its prepare (below).
            before, pending = pending, _Step(messages, raw, asyncio.ensure_future(prepare(raw)))
            if before is not None:
                await finish(before)
    finally:
        if pending is not None and pending.prepared is not None:
            pending.prepared.cancel()  # the worker stops: its messages are not acknowledged


def read_through_inboxes(app: faust.App, steps: Mapping[Any, int]) -> dict[str, Inbox[Message]]:
    """Subscribe ``app`` to each topic of ``steps`` (Faust topics -> the most messages a step
    takes) through Faust's conductor, as an agent's would be, with its records going to an
    :class:`Inbox` of :data:`INBOX_STEPS` steps (``stream.transport``); return the inboxes by
    topic name, for :func:`consume`."""
    inboxes: dict[str, Inbox[Message]] = {}
    for topic, step in steps.items():
        app.topics.add(topic)
        name = topic.get_topic_name()
        inboxes[name] = Inbox(name, INBOX_STEPS * step)
    app.inboxes = inboxes  # type: ignore[attr-defined]
    return inboxes


class App(faust.App):
    """A Faust app whose Kafka consumer waits at most :data:`stream.transport.FETCH_MAX_WAIT_MS`
    per fetch.

    Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500``. aiokafka keeps one
    fetch in flight per broker, and once a partition's fetched records have waited 100 ms
    unconsumed it fetches the broker's *other* partitions without it: here the emails and
    labels topics, which may have no traffic, so that fetch can wait out the full 1.5 s at the
    broker, and the busy transactions partitions are not fetched again until it returns.
    Measured at 5,000 events/s: event-to-scored p50 1.4 s with Faust's 1500 ms, ~50 ms with
    10 ms (docs/benchmarks.md).
    """

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the Kafka security settings (``models.kafka_security``): its consumer,
    producer and topic creation all use them. None for PLAINTEXT."""
    context = kafka_security.ssl_context(settings)
    if settings.kafka_uses_sasl:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,  # None: SASL_PLAINTEXT; a context: SASL_SSL
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def consuming_config(settings: Settings) -> dict[str, Any]:
    """How the worker's Faust app connects and consumes: shared with the benchmark that
    measures Faust alone (``benchmarks/plumbing.py``), so that bound is this worker's."""
    return {
        "broker": ";".join(f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(",")),
        "broker_credentials": broker_credentials(settings),
        "store": "memory://",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": 1,
        "consumer_auto_offset_reset": "earliest",
        "web_host": "127.0.0.1",
        # Bigger fetches per partition (default 1 MiB): fewer round trips between Faust's
        # consumer thread and its event loop per message (Faust alone: 14k -> 16.7k/s here).
        "consumer_max_fetch_size": CONSUMER_FETCH_BYTES,
    }


async def follow_announcements(settings: Settings, topic: str, models: BatchModels) -> None:
    """Refresh ``models`` on each message of the model-updates topic, from its end on.

    A plain aiokafka consumer without a group: a Faust agent would share the topic's one
    partition among the workers, and every worker must hear every announcement. Missed
    messages (broker down, worker starting) are covered by the periodic check.
    """
    consumer = aiokafka.AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        **kafka_security.aiokafka_config(settings),
    )
    while True:
        try:
            await consumer.start()
            break
        except Exception as exc:  # retry; the periodic check covers the gap
            log.warning("model-updates consumer cannot start yet: %s", exc)
            await asyncio.sleep(5.0)
    try:
        async for message in consumer:
            try:
                update = decode(message.value, ModelUpdate)
            except InvalidEvent as exc:
                log.warning("ignored a bad model announcement: %s", exc.reason)
                continue
            log.info("model announcement: %s %s", update.kind, update.version)
            await models.refresh((update.kind,))
    finally:
        await consumer.stop()


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app of one namespace; nothing connects until the worker starts."""
    topics = Topics.for_namespace(settings.namespace)
    partitions = topic_partitions(settings)
    app = App(
        consumer_group(settings.namespace),
        **consuming_config(settings),
        web_port=settings.web_port,
        producer_linger_ms=5,
        # One step's outputs leave as a few large record batches (see BatchSink): the
        # producer accepts a new batch for a partition only once the previous one has been
        # sent, so 16 KiB batches (the default) made each step wait a round trip per 16 KiB.
        # Well below the broker's 1 MiB message.max.bytes.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
    )
    sources = {
        kind: app.topic(
            topics.events(kind),
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions[topics.events(kind)],
        )
        for kind in EVENT_KINDS
    }
    labels_topic = app.topic(
        topics.labels, key_serializer="raw", value_serializer="raw", partitions=1
    )
    tables = {
        kind: app.Table(
            history_table(kind),
            default=None,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,
            extra_topic_configs=changelog_topic_config(settings),
        )
        for kind in EVENT_KINDS
    }
    redis = aioredis.from_url(settings.redis_url)
    sink = BatchSink(app)
    histories = {kind: ChangelogTable(table, sink) for kind, table in tables.items()}
    for kind, history in histories.items():
        history.export_size(kind)
    worker = StreamWorker(settings, sink, dict(histories), redis)

    inboxes = read_through_inboxes(
        app,
        {
            **{source: settings.batch_size for source in sources.values()},
            labels_topic: settings.checkpoint_every_labels,
        },
    )

    def score_loop(kind: EventKind) -> None:
        async def score() -> None:
            settle_heap()

            await consume(
                app,
                inboxes[topics.events(kind)],
                settings.batch_size,
                settings.batch_within_s,
                worker.complete_step,
                sink.flush,
                worker.dead_letter,
                prepare=functools.partial(worker.prepare_step, kind),
            )

        score.__name__ = f"score_{kind}s"
        app.task(score)

    for kind in EVENT_KINDS:
        score_loop(kind)

    @app.task
    async def learn() -> None:
        async def handle(messages: list[RawMessage]) -> None:
            counts = await worker.handle_labels_retrying(messages)
            log.info("labels: %s", counts)

        await consume(
            app,
            inboxes[topics.labels],
            settings.checkpoint_every_labels,
            settings.checkpoint_interval_s,
            handle,
            sink.flush,
            worker.dead_letter,
        )

    async def rewind(topic: str, partition: int, offset: int) -> None:
        cast(Consumer, app.consumer).request_seek(TP(topic, partition), offset)

    worker.rewind = rewind

    @app.on_partitions_revoked.connect
    async def forget_offsets(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A rebalance: the consumer starts each partition again from its committed offset,
        and what waits in the inboxes is dropped and read again from where it starts (a
        partition with no committed offset would not be)."""
        worker.offsets.forget()
        consumer = cast(Consumer, app.consumer)
        consumer.forget_requested_seeks()
        for inbox in inboxes.values():
            dropped = inbox.clear()
            if dropped:
                await consumer.read_again(dropped)

    event_topics = {topics.events(kind) for kind in EVENT_KINDS}

    @app.timer(interval=STALL_CHECK_INTERVAL_S)
    async def read_again_what_never_came() -> None:
        """Event partitions the consumer read past what reached the worker, with nothing
        after it to show the gap (``stream.offsets``: ``OffsetGuard.stalled``)."""
        try:
            positions = {
                (tp.topic, tp.partition): await asyncio.wait_for(app.consumer.position(tp), 5.0)
                for tp in app.consumer.assignment()
                if tp.topic in event_topics
            }
        except Exception as exc:  # a rebalance under way: the next tick asks again
            log.debug("no consumer positions this time: %s", exc)
            return
        await worker.read_again_stalled(
            {tp: position for tp, position in positions.items() if position is not None}
        )

    @app.task
    async def follow_model_updates() -> None:
        """Every worker reads every model announcement (no consumer group) and loads the
        batch model the pointers name; see ``stream.batch_models``."""
        await follow_announcements(settings, topics.model_updates, worker.batch_models)

    changelogs = [table.changelog_topic.get_topic_name() for table in tables.values()]

    @app.task
    async def align_changelog_segments() -> None:
        """Changelogs made before the segment settings (or with other values) get them: see
        ``models.topology.align_changelog_configs``. A refusal is logged; the worker runs on
        (a restart then reads more records)."""
        try:
            changed = await asyncio.to_thread(align_changelog_configs, settings, changelogs)
        except Exception as exc:
            log.warning(
                "could not give the changelogs the segment settings "
                "(FRAUD_CHANGELOG_SEGMENT_*): %s; docs/operations.md says how by hand",
                exc,
            )
            return
        for topic, change in changed.items():
            log.info("changelog %s now has %s (FRAUD_CHANGELOG_SEGMENT_*)", topic, change)

    @app.timer(interval=settings.forget_sweep_interval_s)
    async def forget_idle_histories() -> None:
        for kind in EVENT_KINDS:
            dropped = await worker.forget_idle(kind)
            if dropped:
                log.info("dropped %d %s histories no event can use any more", dropped, kind)

    inputs = [*(topics.events(kind) for kind in EVENT_KINDS), topics.labels]
    consumer_lag = lag.ConsumerLag(inputs, on_assignment=worker.on_assignment)

    @app.timer(interval=lag.INTERVAL_S)
    async def report_consumer_lag() -> None:
        await consumer_lag.refresh(app.consumer)

    setup_metrics(app)
    return app


app = create_app(Settings.from_env())
