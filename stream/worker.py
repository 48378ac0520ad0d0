"""What a stream worker does with a batch of raw messages, between Kafka, Redis and the scorer.

The step loops in ``stream.app`` are thin: they hand each batch of raw messages to a
:class:`StreamWorker`, which

* decodes and validates every message, sending what is invalid to the dead-letter topic with
  its raw bytes and the reason, card numbers masked (the batch goes on);
* loads the entities' histories from the Faust tables and the label outcomes from Redis,
  calls :func:`stream.scoring.score_batch`, writes the histories back;
* keeps the features it served in Redis by event id (until the label comes), with the
  event's time and the scores given (for the label delay and the rolling quality);
* publishes scored events and alerts; an event id alerts at most once (a Redis marker);
* learns from labels with the served features and checkpoints the online models to Redis
  before the labels are acknowledged, so a crash never loses learning that Kafka considers
  done (see ``models.registry``);
* exports its Prometheus metrics (``stream.metrics``; rolling quality: ``stream.quality``).

It knows Kafka only through :class:`Sink` and plain :class:`RawMessage` objects, so tests can
drive it without a broker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from models import features as F
from models.events import (
    Alert,
    DeadLetter,
    E,
    InvalidEvent,
    Label,
    decode,
    encode,
    mask_card_numbers,
    redact_card_numbers,
    utc_from_timestamp,
)
from models.names import EVENT_KINDS, EventKind, RedisKeys, Topics
from models.online import OnlineModel
from models.registry import NO_OFFSET, CheckpointConflict, OnlineCheckpoints
from models.settings import Settings
from stream import metrics, quality
from stream.batch_models import BatchModels
from stream.offsets import OffsetGuard
from stream.outcomes import Outcome, OutcomeStore
from stream.scoring import (
    SPECS,
    HistoryMark,
    KindSpec,
    Thresholds,
    Verdict,
    score_batch,
)
from stream.step_histories import StepHistories

log = logging.getLogger(__name__)

T = TypeVar("T")

FORGET_LATENESS_S = F.DAY_S
"""How late an event may arrive and still find every history it could use: see
:meth:`StreamWorker.forget_idle`."""
CHECKPOINT_ATTEMPTS = 3
"""Times a learner re-learns a batch on top of a newer checkpoint before it gives up."""

MODEL_REFRESH_INTERVAL_S = 1.0
"""How often a worker asks Redis whether a newer online checkpoint exists."""

STALLED_AFTER_S = 10.0
"""How long an event partition's consumer may sit past what was handed to the worker, with
nothing handed over meanwhile, before those messages are read again (``stream.offsets``).
Buffered messages normally reach the worker within a batch's wait (``FRAUD_BATCH_WITHIN_S``);
a read again that was not needed costs only duplicates, which replays make harmless."""

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What an unreachable Redis raises (after the client's own few quick retries)."""
REDIS_RETRY_MAX_S = 2.0
"""Longest pause between two attempts at a batch while Redis cannot be reached."""

# A batch's per-event Redis commands run server-side in one script call each: one command
# and one reply instead of one per event, which is what a pipeline of thousands of commands
# costs in redis-py (packing, parsing, a timeout context per reply). The keys, values and
# TTLs written, and what is read, are exactly those of the per-event commands.
SET_SERVED_SCRIPT = """
local n = tonumber(ARGV[2])
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ARGV[1])
end
local waiting = {}
for i = n + 1, #KEYS do
  local label = redis.call('GET', KEYS[i])
  if label then
    waiting[#waiting + 1] = i - n
    waiting[#waiting + 1] = label
  end
end
return waiting
"""
"""SET KEYS[i] ARGV[i + 2] EX ARGV[1] for the first ARGV[2] keys (the served features of a
batch), then GET the remaining keys (labels waiting for these events), returned as (position
among them from 1, label) pairs for those found only. One script, so the write of the features
and the look for waiting labels are atomic: a label that the learner parks while this runs is
either seen here or sees the features there."""

GET_FOUND_SCRIPT = """
local found = {}
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if value then
    found[#found + 1] = i
    found[#found + 1] = value
  end
end
return found
"""
"""GET each key; return (position from 1, value) pairs for the keys found only. What MGET
reads, without a reply per missing key: a batch's events are mostly new, and redis-py parses
each of thousands of nulls in Python."""

CLAIM_ALERTS_SCRIPT = """
local n = tonumber(ARGV[4])
local won, again = {}, {}
for i = 1, n do
  local alert = ARGV[i + 4]
  if redis.call('SET', KEYS[i], alert, 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', ARGV[1], 'MAXLEN', '~', ARGV[3], '*', 'alert', alert)
    won[i] = 1
  else
    won[i] = 0
  end
end
for i = n + 1, #KEYS do
  again[i - n] = redis.call('GET', KEYS[i])
end
return {won, again}
"""
"""KEYS are the claim keys of the batch's ARGV[4] alerts, then those of its replayed events.
Each alert (ARGV[i + 4]) is claimed (SET NX EX ARGV[2]: the claim holds the alert itself)
and, only if the claim is won, added to the recent-alerts stream ARGV[1] (MAXLEN ~ ARGV[3])
in the same step, so a crash cannot leave a claimed alert out of the stream. Returns the won
flags and the alerts held by the replayed events' claims (nil where none).

The stream is not a declared key on purpose: Redis wants read and write permission on every
declared key of EVALSHA, and the worker's ACL user may only write the stream
(``models.redis_acl``); the XADD itself is checked against the ACL like any command. Like
the other scripts here, this assumes one Redis, not a cluster."""


SCORING_CHUNK = 250
"""Events scored, then encoded, together within a step. The scored events and served
features are encoded right after their chunk is scored, while their objects are still in
the CPU caches: 2,000 events' features and verdicts outgrow a core's 1 MiB L2. In memory,
scoring and encoding took 21.7-24.7 µs an event in one chunk of 2,000, 19.2-19.4 in chunks of
250 (the worker benchmark's events). Redis and Kafka still see the whole step at once."""


def scoring_chunks(events: Sequence[T]) -> list[Sequence[T]]:
    """A step's events in the chunks of :data:`SCORING_CHUNK` they are scored in."""
    return [events[i : i + SCORING_CHUNK] for i in range(0, len(events), SCORING_CHUNK)]


def _served_record(spec: KindSpec[Any, Any], event: Any, verdict: Verdict) -> bytes:
    """What the worker keeps of a served event until its label comes (``served`` keys).

    k, s: kind and scope (terminal, sender); f: the features served; t: event time (label
    delay); o, h: online and final score; a: flagged (the final score reached the review
    threshold in use): what the rolling quality judges; m: the mark of the entity's history
    before the event (``scoring.history_mark``). Records written before these fields existed
    have k, s, f only.
    """
    scored = verdict.scored
    return orjson.dumps(
        {
            "k": spec.kind,
            "s": spec.scope(event),
            "f": scored.features,
            "t": event.timestamp,
            "o": scored.online_score,
            "h": scored.score,
            "a": int(scored.decision != "allow"),
            "m": verdict.history_mark,
        }
    )


def _pairs(flat: Sequence[Any]) -> Iterator[tuple[int, bytes]]:
    """The (position, value) pairs of a script's flat reply (:data:`GET_FOUND_SCRIPT`)."""
    return zip(flat[0::2], flat[1::2], strict=True)


@dataclass(frozen=True)
class RawMessage:
    """A message as it came off Kafka, before decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class LookedUp:
    """A step of event messages decoded, with what Redis held for them when looked up."""

    kind: EventKind
    messages: Sequence[RawMessage]
    """The step's messages, invalid ones included (dead-lettered when decoded)."""
    events: list[Any]
    served_before: dict[str, dict[str, Any]]
    """Event id -> the record served before (``_served_record``'s fields), for replays."""
    outcomes: dict[str, F.OutcomeCounts]
    look_up_s: float
    """Seconds the decoding and look-ups took (part of the step's scoring latency)."""


class Sink(Protocol):
    """Where the worker's outputs go (Kafka topics in production)."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...


class StreamWorker:
    """Scores events and learns from labels; one per worker process."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        histories: dict[EventKind, MutableMapping[bytes, Any]],
        redis: aioredis.Redis,
    ) -> None:
        self.settings = settings
        self.topics = Topics.for_namespace(settings.namespace)
        self.keys = RedisKeys(settings.namespace)
        self._sink = sink
        self._histories = histories
        self._redis = redis
        self._set_served = redis.register_script(SET_SERVED_SCRIPT)
        self._get_found = redis.register_script(GET_FOUND_SCRIPT)
        self._outcome_store = OutcomeStore(redis, self.keys, settings.served_after_label_s)
        self._claim_alerts = redis.register_script(CLAIM_ALERTS_SCRIPT)
        self._checkpoints = OnlineCheckpoints(
            redis, self.keys, marker_ttl_s=settings.served_features_ttl_s
        )
        self._thresholds = {k: Thresholds.for_kind(k, settings) for k in EVENT_KINDS}
        self.quality = {k: quality.RollingQuality() for k in EVENT_KINDS}
        self.batch_models = BatchModels(settings, redis)
        self.models: dict[EventKind, OnlineModel] = {}
        self.version = 0
        self.label_offset = NO_OFFSET
        self._started = asyncio.Lock()
        self._checkpoint_lock = asyncio.Lock()
        self._last_refresh = 0.0
        self.rewind: Callable[[str, int, int], Awaitable[None]] | None = None
        """Seeks a partition (topic, partition) to an offset, so that its messages from there
        come again (set by ``stream.app``): for gaps in the offsets handed to the worker
        (:attr:`offsets`)."""
        self.offsets = OffsetGuard()
        """Offsets handed to the worker, events and labels alike (``stream.offsets``)."""
        self._oldest_since_sweep: dict[EventKind, float] = {}
        """The oldest event time scored since the last :meth:`forget_idle`, by kind."""
        self._ids_last_step: dict[EventKind, frozenset[str]] = {}
        """The ids of the events the last step scored or replayed, by kind: see
        :meth:`_with_served_just_before`."""

    # ------------------------------------------------------------------ models

    async def start(self) -> None:
        """Load the latest checkpoint (or start fresh models) once, before the first batch."""
        async with self._started:
            if not self.models:
                await self._load_checkpoint()
                await self.batch_models.refresh()

    def _fresh_model(self, kind: EventKind) -> OnlineModel:
        return OnlineModel(kind, positive_weight=self.settings.positive_weight)

    async def _load_checkpoint(self) -> None:
        checkpoint = await self._checkpoints.load(fresh=self._fresh_model)
        if checkpoint is None:
            self.models = {kind: self._fresh_model(kind) for kind in EVENT_KINDS}
            self.version, self.label_offset = 0, NO_OFFSET
        else:
            self.models = checkpoint.models
            self.version, self.label_offset = checkpoint.version, checkpoint.label_offset
            for reason in checkpoint.started_afresh:
                log.warning("online model starts afresh: %s", reason)
        for kind in EVENT_KINDS:
            metrics.MODEL_VERSION.labels(kind, "online").set(self.version)
        log.info("online models at checkpoint version %d", self.version)

    def model_version(self, kind: EventKind) -> str:
        return f"online-{kind}-{self.version}"

    async def _refresh_models(self) -> None:
        """Reload the checkpoint when another worker (the learner) saved a newer one."""
        now = time.monotonic()
        if now - self._last_refresh < MODEL_REFRESH_INTERVAL_S:
            return
        self._last_refresh = now
        if await self._checkpoints.version() > self.version:
            async with self._checkpoint_lock:
                await self._load_checkpoint()

    # ------------------------------------------------------------------ events

    async def handle_events(self, kind: EventKind, messages: Sequence[RawMessage]) -> list[Verdict]:
        """Score one batch of raw event messages; return the verdicts (for tests): its
        look-ups (:meth:`_look_up`), then its scoring (:meth:`_score_step`), without retries."""
        return await self._score_step(await self._look_up(kind, messages))

    async def _look_up(self, kind: EventKind, messages: Sequence[RawMessage]) -> LookedUp:
        """Decode a step's messages (dead-lettering what is invalid) and read from Redis what
        scoring them needs: the records of those served before, the outcome counts."""
        started = time.perf_counter()
        await self.start()
        spec = SPECS[kind]
        events = self._decode_all(spec.schema, messages)
        if not events:
            return LookedUp(kind, messages, [], {}, {}, time.perf_counter() - started)
        ids = [event.event_id for event in events]
        # Two independent reads: redis-py packs and parses one while Redis runs the other.
        before, outcomes = await asyncio.gather(
            self._served_before(ids), self._outcomes(spec, events)
        )
        return LookedUp(kind, messages, events, before, outcomes, time.perf_counter() - started)

    async def _score_step(self, step: LookedUp) -> list[Verdict]:
        """Score a looked-up step, keep its served features, move its histories, publish."""
        started = time.perf_counter()
        kind, events = step.kind, step.events
        await self._refresh_models()
        await self.batch_models.maybe_refresh()
        if not events:
            return []
        spec = SPECS[kind]
        before = await self._with_served_just_before(kind, step)
        served = {eid: record["f"] for eid, record in before.items()}
        marks: dict[str, HistoryMark] = {
            eid: (r["m"][0], r["m"][1], r["m"][2]) for eid, r in before.items() if r.get("m")
        }
        table = self._histories[kind]
        histories = StepHistories(table, spec.history)
        model, version = self.models[kind], self.model_version(kind)
        batch_model = self.batch_models.get(kind)  # one model for the whole step
        verdicts: list[Verdict] = []
        records: list[bytes | None] = []  # the served features to keep (None: a replay)
        payloads: list[bytes] = []  # the scored events to publish
        for chunk in scoring_chunks(events):
            scored = score_batch(
                spec,
                chunk,
                histories,
                step.outcomes,
                model,
                version,
                self._thresholds[kind],
                scored_at=time.time(),
                served=served,
                batch=batch_model,
                served_marks=marks,
            )
            for event, verdict in zip(chunk, scored, strict=True):
                payloads.append(encode(verdict.scored))
                if verdict.replayed:
                    records.append(None)
                else:
                    records.append(_served_record(spec, event, verdict))
                    # The same event again later in this step is a replay of this one.
                    served[event.event_id] = verdict.scored.features
            verdicts += scored
        await self._remember_served(events, records)
        # The histories move only once the served features are saved: a batch retried
        # after a Redis error (see complete_step) must not count its events twice.
        for entity, stored in histories.encoded.items():  # the histories that advanced
            table[entity.encode()] = stored
        self._ids_last_step[kind] = frozenset(served)  # strings: nothing for the GC to scan
        oldest = min(event.event_time for event in events).timestamp()  # one conversion
        if oldest < self._oldest_since_sweep.get(kind, math.inf):
            self._oldest_since_sweep[kind] = oldest
        await self._publish(kind, verdicts, payloads)
        elapsed = step.look_up_s + time.perf_counter() - started
        self._observe(kind, verdicts, elapsed)
        return verdicts

    async def _with_served_just_before(
        self, kind: EventKind, step: LookedUp
    ) -> dict[str, dict[str, Any]]:
        """The records of the step's events served before, those of the step scored just
        before it included: a step's look-ups may run while that step still saves its
        served features (``stream.app.consume`` overlaps them), and an event sent twice
        (redelivered after a rebalance) may fall in both steps. Those few are looked up
        again, now that the step before is saved: scored from the record, each is the
        replay it would have been had the first look-up come later."""
        last = self._ids_last_step.get(kind)
        before = step.served_before
        if not last:
            return before
        missed = [
            e.event_id for e in step.events if e.event_id in last and e.event_id not in before
        ]
        if not missed:
            return before
        return {**before, **await self._served_before(missed)}

    async def forget_idle(self, kind: EventKind, chunk: int = 2_000) -> int:
        """Drop from memory the histories that no event can use any more; return how many.

        What the worker holds would otherwise only grow: every card and sender it ever saw.
        ``models.features`` says which histories can go (``card_forgettable``,
        ``sender_forgettable``: no event stamped at or after a given time could tell them
        from none). The time asked about is :data:`FORGET_LATENESS_S` before the OLDEST event
        scored since the previous sweep (or before now, if that is earlier: an event may be
        stamped up to a day ahead). The oldest, not the newest: while old events flow (a
        replay of last month next to live traffic, or one live event amid a simulation) the
        horizon stays with them, and their entities keep their histories. An event stamped
        more than a day before the previous sweep's horizon may find a history gone. No
        event since the previous sweep: nothing to do. The sweep yields to scoring every
        ``chunk`` histories."""
        oldest = self._oldest_since_sweep.pop(kind, None)
        if oldest is None:
            return 0
        horizon = min(oldest, time.time()) - FORGET_LATENESS_S
        spec = SPECS[kind]
        table = self._histories[kind]
        dropped = 0
        for i, key in enumerate(list(table)):
            if i and i % chunk == 0:
                await asyncio.sleep(0)
            stored = table.get(key)
            if stored is None:
                continue
            if spec.forgettable(F.decode_history(stored, spec.history), horizon):
                del table[key]
                dropped += 1
        if dropped:
            metrics.STATE_FORGOTTEN.labels(kind).inc(dropped)
        return dropped

    async def handle_events_retrying(
        self, kind: EventKind, messages: Sequence[RawMessage]
    ) -> list[Verdict]:
        """:meth:`handle_events`, attempted again on the same batch until Redis answers, on
        the messages that follow on from those handed before (``stream.offsets``): the
        partitions with a gap are read again from it.

        An attempt that fails on Redis has moved no history and acknowledged nothing; the
        next one scores the events it had served already from their served features, so the
        outputs are those of a replay (the same scored event may be sent twice)."""
        return await self.complete_step(await self.prepare_step(kind, messages))

    async def prepare_step(self, kind: EventKind, messages: Sequence[RawMessage]) -> LookedUp:
        """The first half of :meth:`handle_events_retrying`: the messages that follow on
        from those handed before, decoded, with their Redis look-ups done (attempted again
        until Redis answers). ``stream.app.consume`` runs it while the step before is being
        scored; :meth:`complete_step` does the rest."""
        admitted = self.offsets.admit(messages, time.monotonic())
        for (topic, partition), offset in admitted.rewinds.items():
            await self._read_again(topic, partition, offset, f"{admitted.held} later held back")
        kept = admitted.messages
        return await self._while_redis_down(
            f"looking up {len(kept)} {kind} messages", lambda: self._look_up(kind, kept)
        )

    async def complete_step(self, step: LookedUp) -> list[Verdict]:
        """Score a step :meth:`prepare_step` prepared. An attempt that fails for want of
        Redis is made again on the same messages from their look-ups: what it saved before
        failing is then read back (its events are replays)."""
        current = step

        async def look_up_again() -> None:
            nonlocal current
            current = await self._look_up(step.kind, step.messages)

        return await self._while_redis_down(
            f"scoring {len(step.messages)} {step.kind} messages",
            lambda: self._score_step(current),
            before_retry=look_up_again,
        )

    async def read_again_stalled(self, positions: Mapping[tuple[str, int], int]) -> int:
        """Have the event partitions read again whose consumer ``positions`` are past what
        was handed over while nothing came for :data:`STALLED_AFTER_S`
        (``OffsetGuard.stalled``); return how many."""
        stalled = self.offsets.stalled(positions, time.monotonic(), STALLED_AFTER_S)
        for (topic, partition), offset in stalled.items():
            await self._read_again(topic, partition, offset, "the consumer is past them")
        return len(stalled)

    async def _read_again(self, topic: str, partition: int, offset: int, why: str) -> None:
        log.warning(
            "%s[%d]: messages from offset %d were not handed over; reading them again (%s)",
            topic,
            partition,
            offset,
            why,
        )
        metrics.OFFSET_GAPS.labels(topic).inc()
        if self.rewind is not None:
            await self.rewind(topic, partition, offset)

    async def handle_labels_retrying(self, messages: Sequence[RawMessage]) -> dict[str, int]:
        """:meth:`handle_labels`, attempted again on the same batch until Redis answers.

        Before another attempt the worker goes back to the checkpoint saved in Redis: what
        the failed attempt learned in memory was not saved (or was, with its offset, and is
        then skipped), so no label is learned twice."""
        return await self._while_redis_down(
            f"learning {len(messages)} labels",
            lambda: self.handle_labels(messages),
            before_retry=self._reload_checkpoint,
        )

    async def _while_redis_down(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        before_retry: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """``attempt()`` until it does not fail for want of Redis, pausing between attempts.

        Without this the error would fail the step: its messages would go to the dead-letter
        topic (``stream.app.consume``) while Redis is only restarting."""
        pause = 0.1
        failed = False
        while True:
            try:
                if failed and before_retry is not None:
                    await before_retry()
                return await attempt()
            except REDIS_DOWN as exc:
                log.warning("Redis unreachable while %s (%s); again in %.1f s", what, exc, pause)
                failed = True
                await asyncio.sleep(pause)
                pause = min(2 * pause, REDIS_RETRY_MAX_S)

    async def _reload_checkpoint(self) -> None:
        async with self._checkpoint_lock:
            await self._load_checkpoint()

    def _decode_all(self, schema: type[Any], messages: Sequence[RawMessage]) -> list[Any]:
        decoded = (self._decode_or_dead_letter(message, schema) for message in messages)
        return [event for event in decoded if event is not None]

    def _decode_or_dead_letter(self, message: RawMessage, schema: type[E]) -> E | None:
        """The message as ``schema``, or None once it is on the dead-letter topic with why."""
        try:
            return decode(message.value, schema)
        except InvalidEvent as exc:
            self.dead_letter(message, exc.reason)
        except Exception as exc:  # a decoder bug must not make the message a poison pill
            log.exception(
                "decoding %s[%d]@%d failed", message.topic, message.partition, message.offset
            )
            self.dead_letter(message, f"could not be decoded ({type(exc).__name__})")
        return None

    def dead_letter(self, message: RawMessage, reason: str) -> None:
        """Keep an unusable message, with why, on the dead-letter topic; never raise.

        Card numbers in it are masked first, in the raw bytes, the key (a transaction's key
        is its card_id) and the reason: the dead letter of an event refused for holding a
        card number in clear must not store that number (``models.events``)."""
        key = None if message.key is None else redact_card_numbers(message.key, json=False)
        reason = mask_card_numbers(reason)
        letter = DeadLetter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key,
            raw=redact_card_numbers(message.value),
            reason=reason,
            failed_at=utc_from_timestamp(time.time()),
        )
        self._sink.send(self.topics.dead_letters, key, encode(letter))
        metrics.DEAD_LETTERS.labels(message.topic).inc()
        log.warning(
            "dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
        )

    async def _served_before(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The records of the events served before (see :meth:`_remember_served`)."""
        found = await self._get_found(keys=[self.keys.served(eid) for eid in ids])
        return {ids[i - 1]: orjson.loads(value) for i, value in _pairs(found)}

    async def _outcomes(
        self, spec: KindSpec[Any, Any], events: Sequence[Any]
    ) -> dict[str, F.OutcomeCounts]:
        """Event id -> label outcomes of its terminal/sender counted at its time."""
        counts = await self._outcome_store.count(
            spec.scope_name, [(spec.scope(event), event.timestamp) for event in events]
        )
        return {event.event_id: c for event, c in zip(events, counts, strict=True)}

    async def _remember_served(
        self, events: Sequence[Any], records: Sequence[bytes | None]
    ) -> None:
        """Keep the served features by event id (the records of :func:`_served_record`, None
        for a replay), and send again any label that arrived before its event was scored
        (see :meth:`handle_labels`)."""
        keys: list[str] = []
        values: list[bytes] = []
        for event, record in zip(events, records, strict=True):
            if record is not None:
                keys.append(self.keys.served(event.event_id))
                values.append(record)
        # Replayed events are looked up too: a crash may have lost the label's second sending.
        waiting_keys = [self.keys.waiting_label(event.event_id) for event in events]
        waiting = await self._set_served(
            keys=keys + waiting_keys,
            args=[self.settings.served_features_ttl_s, len(keys), *values],
        )
        for i, label in _pairs(waiting):
            self._sink.send(self.topics.labels, events[i - 1].event_id.encode(), label)

    async def _publish(
        self, kind: EventKind, verdicts: Sequence[Verdict], payloads: Sequence[bytes]
    ) -> None:
        """Send the scored events (``payloads``: their bytes) and claim and send the alerts."""
        for verdict, payload in zip(verdicts, payloads, strict=True):
            self._sink.send(self.topics.scored, verdict.scored.entity_id.encode(), payload)
        alerting = [v for v in verdicts if v.alert is not None]
        replayed = [v for v in verdicts if v.replayed]
        if not alerting and not replayed:
            return
        # One event, one alert: a claim holding the alert is set atomically with its entry
        # in the recent-alerts stream (CLAIM_ALERTS_SCRIPT); the Kafka copy goes out for the
        # claims won. A replayed event was scored before by a worker that may have crashed
        # before its alert reached Kafka: the alert its claim holds goes out again, the
        # same bytes (at least once on the topic, one alert id per event).
        payloads = [encode(cast(Alert, v.alert)) for v in alerting]
        won, again = await self._claim_alerts(
            keys=[
                *(self.keys.alerted(v.scored.event_id) for v in alerting),
                *(self.keys.alerted(v.scored.event_id) for v in replayed),
            ],
            args=[
                self.keys.alerts_stream,
                self.settings.served_features_ttl_s,
                self.settings.alerts_stream_maxlen,
                len(alerting),
                *payloads,
            ],
        )
        new_ids: set[str] = set()
        reasons: Counter[str] = Counter()
        for verdict, payload, claimed in zip(alerting, payloads, won, strict=True):
            if not claimed:
                continue
            alert = cast(Alert, verdict.alert)
            new_ids.add(alert.event_id)
            reasons.update(reason.feature for reason in alert.reasons)
            self._sink.send(self.topics.alerts, alert.entity_id.encode(), payload)
            metrics.ALERTS.labels(kind, alert.decision).inc()
        for verdict, held in zip(replayed, again, strict=True):
            # Claims set before claims held the alert hold its id only: nothing to resend.
            if held and held.startswith(b"{") and verdict.scored.event_id not in new_ids:
                self._sink.send(self.topics.alerts, verdict.scored.entity_id.encode(), held)
        for feature, n in reasons.items():
            metrics.ALERT_REASONS.labels(kind, feature).inc(n)

    def _observe(self, kind: EventKind, verdicts: Sequence[Verdict], elapsed: float) -> None:
        """Per-batch metrics; the per-event histograms are filled in bulk (one increment per
        bucket, ``metrics.observe_many``), not one ``observe`` per event and series."""
        n = len(verdicts)
        metrics.EVENTS.labels(kind).inc(n)
        metrics.SCORING_LATENCY.labels(kind).observe(elapsed / n)
        now = time.time()
        scored = [verdict.scored for verdict in verdicts]
        metrics.observe_many(
            metrics.EVENT_TO_DECISION.labels(kind),
            [max(0.0, now - s.event_time.timestamp()) for s in scored],
        )
        metrics.observe_many(metrics.SCORE.labels(kind, "online"), [s.online_score for s in scored])
        metrics.observe_many(metrics.SCORE.labels(kind, "hybrid"), [s.score for s in scored])
        batch = [s.batch_score for s in scored if s.batch_score is not None]
        if batch:
            metrics.observe_many(metrics.SCORE.labels(kind, "batch"), batch)

    # ------------------------------------------------------------------ labels

    async def handle_labels(self, messages: Sequence[RawMessage]) -> dict[str, int]:
        """Learn from a batch of labels, then checkpoint; return counts by outcome.

        Call it only with messages of the single labels partition, in offset order. The
        caller acknowledges the messages after this returns: by then the checkpoint holding
        what they taught is saved.

        A label can overtake its event: a worker catching up on a backlog reads the labels
        topic alongside the event topics. Such a label waits in Redis (``waiting``), and the
        worker that scores its event sends it to the labels topic again.
        """
        await self.start()
        counts = dict.fromkeys(("learned", "waiting", "duplicate", "replayed", "invalid"), 0)
        messages, counts["ahead"] = await self._up_to_gap(messages)
        labels: list[tuple[int, Label, bytes]] = []
        for message in messages:
            if message.offset <= self.label_offset:
                counts["replayed"] += 1
                continue
            label = self._decode_or_dead_letter(message, Label)
            if label is None:
                counts["invalid"] += 1
            else:
                labels.append((message.offset, label, message.value))
        for _ in range(CHECKPOINT_ATTEMPTS):
            labels = [item for item in labels if item[0] > self.label_offset]
            if not labels:
                return counts
            outcome_counts, learned, outcomes = await self._learn_batch(labels)
            learned_ids = [label.event_id for label, _ in learned]
            if await self._checkpoint(labels[-1][0], learned_ids):
                await self._outcome_store.record(outcomes)
                for (kind, outcome), n in outcome_counts.items():
                    counts[outcome] += n
                    metrics.LABELS.labels(kind, outcome).inc(n)
                self._observe_labels(learned)
                return counts
            # Another learner saved first; this worker now holds its checkpoint: learn the
            # batch again on top of it (labels it learned already are duplicates now).
        raise CheckpointConflict(f"no checkpoint saved after {CHECKPOINT_ATTEMPTS} attempts")

    async def _up_to_gap(self, messages: Sequence[RawMessage]) -> tuple[list[RawMessage], int]:
        """The messages up to the first offset gap after the checkpoint, and how many were
        held back beyond it; the labels are read again from the gap (:attr:`offsets`, the
        guard the event partitions go through).

        The checkpoint's offset is where learning stands. Around a rebalance Faust can hand
        the stream a label beyond one it skips (issue #221 of faust-streaming: messages
        fetched while partitions resume); learned, it would move the offset past the
        skipped one, which would then count as replayed and never be learned. Offsets after
        the checkpoint must therefore follow on from it; labels at or before it are replayed
        and pass. Before the first checkpoint the first label handed over is the anchor (the
        kill-a-worker fault test lost label 238 of a first batch of 644 without one)."""
        tp = (self.topics.labels, 0)
        if self.label_offset != NO_OFFSET:
            self.offsets.expect(tp, self.label_offset + 1)
        replayed = [m for m in messages if m.offset <= self.label_offset]
        ahead = [m for m in messages if m.offset > self.label_offset]
        admitted = self.offsets.admit(ahead, time.monotonic())
        if tp in admitted.rewinds:
            await self._read_again(*tp, admitted.rewinds[tp], f"{admitted.held} later held back")
        return replayed + admitted.messages, admitted.held

    async def _learn_batch(
        self, labels: Sequence[tuple[int, Label, bytes]]
    ) -> tuple[Counter[tuple[str, str]], list[tuple[Label, dict[str, Any]]], list[Outcome]]:
        """Learn what ``labels`` teach into the in-memory models; return the counts by
        (kind, outcome), the labels learned with their served records, and the outcomes
        to record for their terminals and senders once saved."""
        ids = [label.event_id for _, label, _ in labels]
        served_raw, done_found = await asyncio.gather(
            self._redis.mget([self.keys.served(eid) for eid in ids]),
            self._get_found(keys=[self.keys.labelled(eid) for eid in ids]),  # mostly absent
        )
        done = {ids[i - 1] for i, _ in _pairs(done_found)}  # learned before
        counts: Counter[tuple[str, str]] = Counter()
        learned: list[tuple[Label, dict[str, Any]]] = []
        seen: set[str] = set()
        early: list[tuple[Label, bytes]] = []
        outcomes: list[Outcome] = []
        for (_, label, raw), served in zip(labels, served_raw, strict=True):
            if label.event_id in done or label.event_id in seen:
                counts[label.kind, "duplicate"] += 1
            elif served is None:
                early.append((label, raw))
            else:
                learned.append((label, self._learn(label, served, outcomes, counts)))
            seen.add(label.event_id)
        for label, served in await self._park(early):
            if served is None:
                counts[label.kind, "waiting"] += 1
            else:  # its event was scored while the label was being parked
                learned.append((label, self._learn(label, served, outcomes, counts)))
        return counts, learned, outcomes

    async def _park(self, early: list[tuple[Label, bytes]]) -> list[tuple[Label, bytes | None]]:
        """Park labels whose events are not scored yet; return each with its served features
        as read right after parking (atomically), which closes the race with the scorer."""
        if not early:
            return []
        pipe = self._redis.pipeline(transaction=True)
        for label, raw in early:
            pipe.set(
                self.keys.waiting_label(label.event_id), raw, ex=self.settings.served_features_ttl_s
            )
            pipe.get(self.keys.served(label.event_id))
        results = await pipe.execute()
        return [(label, served) for (label, _), served in zip(early, results[1::2], strict=True)]

    def _learn(
        self,
        label: Label,
        served: bytes | str,
        outcomes: list[Outcome],
        counts: Counter[tuple[str, str]],
    ) -> dict[str, Any]:
        """Learn one label from the features served for its event; record its outcome.
        Return the served record."""
        record: dict[str, Any] = orjson.loads(served)
        kind: EventKind = record["k"]
        self.models[kind].learn_one(record["f"], label.is_positive)
        counts[kind, "learned"] += 1
        outcomes.append(
            Outcome(
                SPECS[kind].scope_name,
                record["s"],
                label.event_id,
                label.is_positive,
                label.timestamp,
            )
        )
        return record

    def _observe_labels(self, learned: Sequence[tuple[Label, dict[str, Any]]]) -> None:
        """Label delays and rolling quality of the labels just learned (and saved).

        Records served before they held the event time and the scores count in
        ``fraud_labels_total`` only."""
        delays: dict[EventKind, list[float]] = {}
        judged: set[EventKind] = set()
        for label, record in learned:
            kind: EventKind = record["k"]
            event_time = record.get("t")
            if event_time is not None:
                delays.setdefault(kind, []).append(max(0.0, label.timestamp - event_time))
            if "h" in record:
                online = record["o"]
                self.quality[kind].add(
                    online,
                    record["h"],
                    online >= self._thresholds[kind].review,
                    bool(record["a"]),
                    label.is_positive,
                )
                judged.add(kind)
        for kind, values in delays.items():
            metrics.observe_many(metrics.LABEL_DELAY.labels(kind), values)
        for kind in judged:
            quality.publish(kind, self.quality[kind])

    def on_assignment(self, topics: Collection[str]) -> None:
        """Told which input topics this worker reads now (``stream.lag``'s timer): one that
        no longer reads the labels topic drops its rolling quality, window and gauges, so
        only the learner's figures are on ``/metrics``."""
        if self.topics.labels in topics:
            return
        for kind in EVENT_KINDS:
            if len(self.quality[kind]):
                self.quality[kind].clear()
                quality.forget(kind)

    async def _checkpoint(self, label_offset: int, learned_ids: list[str]) -> bool:
        """Save the models; on a conflict load the newer checkpoint and return False."""
        async with self._checkpoint_lock:
            try:
                self.version = await self._checkpoints.save(
                    self.models,
                    base_version=self.version,
                    label_offset=label_offset,
                    learned_ids=learned_ids,
                )
                self.label_offset = label_offset
            except CheckpointConflict as exc:
                # Another worker learned meanwhile (a rebalance moved the labels partition).
                log.warning("checkpoint conflict (%s); loading the newer checkpoint", exc)
                await self._load_checkpoint()
                return False
        for kind in EVENT_KINDS:
            metrics.CHECKPOINTS.labels(kind).inc()
            metrics.MODEL_VERSION.labels(kind, "online").set(self.version)
        return True
