"""``python -m benchmarks outcomes``: what "risk from recent labels" costs per event on real Redis.

Every transaction's ``terminal_*_28d`` features (and every email's ``sender_*_28d``) need its
terminal's label outcomes at the event's time. A terminal that takes labels fills its sorted
set to :data:`~models.features.OUTCOME_CAP` and stays there, so that is the steady state this
measures: ``--scopes`` terminals with a full set each, then batches of ``--batch`` events
spread over them, counted as the worker counts them (:class:`stream.outcomes.OutcomeStore`:
two ZCOUNTs per event in one script call) and, for comparison, as the worker did before
(every set read whole with ZRANGEBYSCORE in one script call, parsed by redis-py, counted in
Python by :func:`models.features.count_outcomes`). Both must give the same counts; the
script checks it before printing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from models.features import OUTCOME_CAP, OUTCOME_WINDOW_S, OutcomeCounts, count_outcomes
from models.names import RedisKeys
from stream.outcomes import Outcome, OutcomeStore

READ_WHOLE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZRANGEBYSCORE', key, ARGV[1], '+inf', 'WITHSCORES')
end
return out
"""
"""The worker's read before stream.outcomes: each scope's whole window, members and scores."""

NOW = 1_735_689_600.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks outcomes",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--scopes", type=int, default=3000, help="terminals (3000)")
    parser.add_argument("--batch", type=int, default=300, help="events per batch (300)")
    parser.add_argument("--repeats", type=int, default=20, help="batches timed per method (20)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    return parser


async def _fill(store: OutcomeStore, scopes: int, rng: random.Random) -> float:
    """Give every scope a full set (1 % positive) spread over 20 days; return s per label."""
    started = time.perf_counter()
    step = 20 * 86_400.0 / OUTCOME_CAP
    for k in range(scopes):
        await store.record(
            [
                Outcome("terminal", f"term-{k}", f"evt-{k}-{i}", rng.random() < 0.01, t)
                for i in range(OUTCOME_CAP)
                for t in [NOW - 20 * 86_400.0 + i * step]
            ]
        )
    return (time.perf_counter() - started) / (scopes * OUTCOME_CAP)


async def _read_whole(
    redis: aioredis.Redis, keys: RedisKeys, probes: list[tuple[str, float]]
) -> list[OutcomeCounts]:
    script = redis.register_script(READ_WHOLE_SCRIPT)
    scopes = sorted({scope for scope, _ in probes})
    since = min(t for _, t in probes) - OUTCOME_WINDOW_S
    flat = await script(keys=[keys.label_outcomes("terminal", s) for s in scopes], args=[since])
    outcomes = {
        scope: [(float(ts), m.endswith(b":1")) for m, ts in zip(f[::2], f[1::2], strict=True)]
        for scope, f in zip(scopes, flat, strict=True)
    }
    return [count_outcomes(t, outcomes[scope]) for scope, t in probes]


async def _run(args: argparse.Namespace, redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    keys = RedisKeys("bench-outcomes")
    store = OutcomeStore(redis, keys, served_after_label_s=3600)
    rng = random.Random(42)
    print(f"filling {args.scopes:,} terminals with {OUTCOME_CAP} outcomes each ...", flush=True)
    per_label = await _fill(store, args.scopes, rng)
    print(f"  recording: {per_label * 1e6:.1f} us per label (batches of {OUTCOME_CAP})")
    batches = [
        [(f"term-{rng.randrange(args.scopes)}", NOW) for _ in range(args.batch)]
        for _ in range(args.repeats)
    ]
    for probes in batches[:2]:
        if await store.count("terminal", probes) != await _read_whole(redis, keys, probes):
            raise SystemExit("the two methods disagree: not timing them")
    for name, method in (
        ("ZCOUNT in Redis (stream.outcomes)", lambda p: store.count("terminal", p)),
        ("whole sets read and counted in Python (before)", lambda p: _read_whole(redis, keys, p)),
    ):
        started = time.perf_counter()
        for probes in batches:
            await method(probes)
        per_batch = (time.perf_counter() - started) / len(batches)
        print(
            f"  {name}: {per_batch * 1e3:.1f} ms per batch of {args.batch}, "
            f"{per_batch / args.batch * 1e6:.1f} us per event"
        )
    await redis.aclose()


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if min(args.scopes, args.batch, args.repeats) < 1:
        parser.error("--scopes, --batch and --repeats must be at least 1")
    if args.redis_url:
        asyncio.run(_run(args, args.redis_url))
        return 0
    from local import RedisServer

    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        RedisServer(data_dir=Path(tmp) / "data", log_dir=Path(tmp) / "log") as server,
    ):
        asyncio.run(_run(args, server.url))
    return 0
