"""The label outcomes in Redis (stream.outcomes) count what models.features.count_outcomes counts.

The worker no longer reads a terminal's outcomes: it asks Redis for two ZCOUNTs per event. These
tests record seeded random outcomes through the real scripts on a real Redis, with the window
and the cap both evicting and many arrival-time ties at the cap's edge, and compare every
count with the one definition applied to a plain-Python model of the sorted set.
"""

from __future__ import annotations

import asyncio
import bisect
import random

import pytest
import redis.asyncio as aioredis

from models.features import OUTCOME_CAP, OUTCOME_WINDOW_S, count_outcomes
from models.names import RedisKeys
from stream.outcomes import Outcome, OutcomeStore

pytestmark = pytest.mark.integration

DAY = 86_400.0
T0 = 1_700_000_000.0


class SortedSetModel:
    """What the record script keeps for one scope: members ordered by (arrival, member) as
    Redis orders a sorted set, the window trimmed behind each new label, the latest CAP kept."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, str]] = []
        self.expired = self.capped = 0

    def record(self, member: str, arrival: float) -> None:
        bisect.insort(self.entries, (arrival, member))
        lower = arrival - OUTCOME_WINDOW_S
        kept = [e for e in self.entries if e[0] > lower]
        self.expired += len(self.entries) - len(kept)
        self.capped += max(0, len(kept) - OUTCOME_CAP)
        self.entries = kept[-OUTCOME_CAP:]

    def outcomes(self) -> list[tuple[float, bool]]:
        return [(arrival, member.endswith(":1")) for arrival, member in self.entries]


def test_redis_counts_equal_the_definition(namespace, redis_url):
    rng = random.Random(7)
    keys = RedisKeys(namespace)
    scopes = ["term-a", "term-b"]
    models = {scope: SortedSetModel() for scope in scopes}

    async def scenario() -> None:
        r = aioredis.from_url(redis_url)
        store = OutcomeStore(r, keys, served_after_label_s=3600)
        arrival = T0
        for step in range(80):
            batch = []
            for _ in range(rng.randint(1, 60)):
                # Whole seconds, often the same (ties at the cap's edge), and now and then
                # ten days later (the window expires what came before).
                arrival += rng.choices([0.0, 1.0, 10 * DAY], weights=[60, 339, 1])[0]
                scope = rng.choice(scopes)
                outcome = Outcome(
                    "terminal", scope, f"evt-{step}-{len(batch)}", rng.random() < 0.3, arrival
                )
                batch.append(outcome)
                models[scope].record(f"{outcome.event_id}:{int(outcome.positive)}", arrival)
            await store.record(batch)
            probes = [
                (scope, arrival + rng.choice([-40 * DAY, -28 * DAY, -DAY, -1.0, 0.0, 5.0]))
                for scope in [*scopes, "term-never-labelled"]
            ]
            # Event times exactly on the window's lower edge, too.
            probes += [(s, a + OUTCOME_WINDOW_S) for s in scopes for a, _ in models[s].entries[:2]]
            got = await store.count("terminal", probes)
            expected = [
                count_outcomes(t, models[s].outcomes() if s in models else []) for s, t in probes
            ]
            assert got == expected, f"step {step}"
        for scope in scopes:
            every = await r.zrange(keys.label_outcomes("terminal", scope), 0, -1)
            positives = await r.zrange(keys.label_positives("terminal", scope), 0, -1)
            assert positives == [m for m in every if m.endswith(b":1")]
            assert len(every) == len(models[scope].entries)
            assert models[scope].expired > 0 and models[scope].capped > 0  # both evicted
            ttl = await r.ttl(keys.label_positives("terminal", scope))
            assert 0 < ttl <= OUTCOME_WINDOW_S
        await r.aclose()

    asyncio.run(scenario())


def test_recording_deletes_the_waiting_label_and_shortens_the_served_features_ttl(
    namespace, redis_url
):
    keys = RedisKeys(namespace)

    async def scenario() -> None:
        r = aioredis.from_url(redis_url)
        await r.set(keys.waiting_label("evt-1"), b"label bytes")
        await r.set(keys.served("evt-1"), b"{}", ex=30 * 86_400)
        await r.set(keys.served("evt-2"), b"{}", ex=60)  # already shorter: left as it is
        store = OutcomeStore(r, keys, served_after_label_s=3600)
        await store.record(
            [
                Outcome("sender", "s@x.org", "evt-1", True, T0),
                Outcome("sender", "s@x.org", "evt-2", False, T0 + 1),
            ]
        )
        assert await r.get(keys.waiting_label("evt-1")) is None
        assert await r.zscore(keys.label_positives("sender", "s@x.org"), "evt-1:1") == T0
        assert 3590 < await r.ttl(keys.served("evt-1")) <= 3600
        assert 0 < await r.ttl(keys.served("evt-2")) <= 60
        await r.aclose()

    asyncio.run(scenario())
