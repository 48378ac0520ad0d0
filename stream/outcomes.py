"""Label outcomes per terminal and sender in Redis: the learner records them, the scorer counts.

"Risk from recent labels" (``terminal_*_28d``, ``sender_*_28d``) needs, for each event, how
many labels of its terminal or sender arrived in ``t - 28 d < arrival <= t`` and how many of
them were positive (:func:`models.features.count_outcomes` defines it). A busy terminal holds
:data:`~models.features.OUTCOME_CAP` outcomes; reading them all for each of its transactions
cost 3-4 ms an event in Redis and redis-py's parser (512 members and scores each), which no
stream can afford. So each scope keeps two sorted sets scored by label arrival time, all its
outcomes and its positive ones only, and the scorer asks Redis for two ``ZCOUNT``\\ s per
event, O(log n) each, in one script call per batch.

The positive set always holds exactly the positive members of the other set: the record
script trims both by the window, and removes from the positive set the very members the cap
evicts from the other (the cap evicts by rank, so ties in arrival time follow Redis' member
order, as they did when one set was read whole). Both sets expire
:data:`~models.features.OUTCOME_WINDOW_S` after their last label: by then none of their
outcomes counts for a new event, and a terminal that stopped receiving labels no longer holds
memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from models import features as F
from models.features import OutcomeCounts
from models.names import RedisKeys

COUNT_SCRIPT = """
local out, n = {}, 0
for scope, lower, t in string.gmatch(ARGV[1], '(%d+) (%S+) (%S+)') do
  local all = 2 * tonumber(scope) - 1
  out[n + 1] = redis.call('ZCOUNT', KEYS[all + 1], '(' .. lower, t)
  out[n + 2] = redis.call('ZCOUNT', KEYS[all], '(' .. lower, t)
  n = n + 2
end
return table.concat(out, ' ')
"""
"""KEYS are (all, positives) pairs, one per scope of the batch; ARGV[1] holds, per event,
``scope lower t`` (the scope's pair number from 1, and the bounds), separated by spaces.
Returns ``positives labels`` per event, all in one string: ZCOUNT over ``lower < arrival <=
t``. Python prints both bounds with ``repr`` and Redis parses them with ``strtod``: the same
doubles, so the bounds are those of :func:`models.features.count_outcomes` exactly.

One string each way, and each scope's keys once: a batch of 2,000 events as separate
arguments and replies (8,000 arguments, 4,000 integers) took 11 % of the worker's busy
samples in a py-spy profile, in redis-py's packing and parsing (docs/benchmarks.md)."""

RECORD_SCRIPT = """
local cap = tonumber(ARGV[1])
local ttl = ARGV[2]
local served_ttl = ARGV[3]
for i = 0, #KEYS / 4 - 1 do
  local all, positives = KEYS[4 * i + 1], KEYS[4 * i + 2]
  local waiting, served = KEYS[4 * i + 3], KEYS[4 * i + 4]
  local member, arrival = ARGV[4 * i + 4], ARGV[4 * i + 5]
  local positive, lower = ARGV[4 * i + 6], ARGV[4 * i + 7]
  redis.call('ZADD', all, arrival, member)
  if positive == '1' then
    redis.call('ZADD', positives, arrival, member)
  end
  redis.call('ZREMRANGEBYSCORE', all, '-inf', lower)
  redis.call('ZREMRANGEBYSCORE', positives, '-inf', lower)
  local evicted = redis.call('ZRANGE', all, 0, -(cap + 1))
  if #evicted > 0 then
    redis.call('ZREMRANGEBYRANK', all, 0, -(cap + 1))
    for _, gone in ipairs(evicted) do
      redis.call('ZREM', positives, gone)
    end
  end
  redis.call('EXPIRE', all, ttl)
  redis.call('EXPIRE', positives, ttl)
  redis.call('DEL', waiting)
  redis.call('EXPIRE', served, served_ttl, 'LT')
end
"""
"""Per label learned, KEYS (all, positives, waiting label, served features) and ARGV (member,
arrival, '1' or '0', lower) after ARGV[1] = cap, ARGV[2] = TTL of the outcome sets and ARGV[3]
= TTL of served features once learned: add the outcome, drop what arrived at or before
``lower`` (the window behind this label), keep the latest ``cap`` (their positive twins go
too), refresh both TTLs, delete the label that waited for its event, and shorten the served
features' TTL (``EXPIRE ... LT``: never lengthen it)."""


@dataclass(frozen=True)
class Outcome:
    """One label to record for its terminal or sender."""

    scope_name: str
    scope: str
    event_id: str
    positive: bool
    arrival: float


class OutcomeStore:
    """The label outcomes of every terminal and sender, in Redis.

    ``served_after_label_s``: what is left of an event's served features' TTL once its label
    is recorded. The features were kept for the label; after it, only a replay of the event
    (a worker that crashed before committing its offset: seconds) still reads them, so they
    need not wait out the rest of ``FRAUD_SERVED_FEATURES_TTL_S``.
    """

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, served_after_label_s: int) -> None:
        self._keys = keys
        self._served_after_label_s = served_after_label_s
        self._count = redis.register_script(COUNT_SCRIPT)
        self._record = redis.register_script(RECORD_SCRIPT)

    async def count(
        self, scope_name: str, scoped_events: Sequence[tuple[str, float]]
    ) -> list[OutcomeCounts]:
        """(positives, labels) for each (scope, event time) at that time, in order."""
        if not scoped_events:
            return []
        numbers: dict[str, int] = {}
        keys: list[str] = []
        queries: list[str] = []
        for scope, t in scoped_events:
            number = numbers.get(scope)
            if number is None:
                number = numbers[scope] = len(numbers) + 1
                keys += (
                    self._keys.label_outcomes(scope_name, scope),
                    self._keys.label_positives(scope_name, scope),
                )
            queries.append(f"{number} {t - F.OUTCOME_WINDOW_S!r} {t!r}")
        reply: bytes = await self._count(keys=keys, args=[" ".join(queries)])
        flat = [int(count) for count in reply.split()]
        return list(zip(flat[0::2], flat[1::2], strict=True))

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Record the outcomes of labels just learned, in order (see :data:`RECORD_SCRIPT`)."""
        if not outcomes:
            return
        keys: list[str] = []
        args: list[str | int] = [
            F.OUTCOME_CAP,
            int(F.OUTCOME_WINDOW_S),
            self._served_after_label_s,
        ]
        for o in outcomes:
            keys += (
                self._keys.label_outcomes(o.scope_name, o.scope),
                self._keys.label_positives(o.scope_name, o.scope),
                self._keys.waiting_label(o.event_id),
                self._keys.served(o.event_id),
            )
            args += (
                f"{o.event_id}:{int(o.positive)}",
                repr(o.arrival),
                "1" if o.positive else "0",
                repr(o.arrival - F.OUTCOME_WINDOW_S),
            )
        await self._record(keys=keys, args=args)
