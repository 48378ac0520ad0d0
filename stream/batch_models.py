"""The batch models a worker scores with, swapped in while it runs.

The batch job publishes a signed payload and moves a "current" pointer in Redis, then
announces it on the model-updates topic. A worker:

- checks the pointers when it starts, when an announcement arrives, and every
  ``POLL_INTERVAL_S`` anyway (an announcement can be missed; Redis is the truth);
- verifies the signature and the feature-set version, and builds the new model, in a thread
  off the event loop, so scoring goes on meanwhile;
- swaps by replacing one reference between two batches: a batch is scored wholly by the old
  or wholly by the new model, never by a mix, and no event waits or is dropped;
- keeps the models it verified by version, so a rollback to the previous one is immediate;
- refuses a tampered or incompatible payload, logs why, counts it, and goes on scoring with
  the model it had (and does not try the same refused version again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from models import weights
from models.batch_registry import load_current_async
from models.features import FEATURE_SET_VERSIONS
from models.names import EVENT_KINDS, EventKind, RedisKeys
from models.settings import Settings
from stream import metrics

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 5.0
KEEP_VERSIONS = 3


class BatchModels:
    """The batch model in use per kind (None until one is published)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self._key = settings.model_signing_key.encode()
        self._redis = redis
        self._keys = RedisKeys(settings.namespace)
        self._current: dict[EventKind, weights.BatchModel | None] = dict.fromkeys(EVENT_KINDS)
        self._verified: dict[EventKind, dict[str, weights.BatchModel]] = {
            kind: {} for kind in EVENT_KINDS
        }
        self._refused: dict[EventKind, str] = {}
        self._last_poll = 0.0
        self._lock = asyncio.Lock()

    def get(self, kind: EventKind) -> weights.BatchModel | None:
        return self._current[kind]

    async def maybe_refresh(self) -> None:
        """Check the pointers if the last check is older than ``POLL_INTERVAL_S``."""
        if time.monotonic() - self._last_poll >= POLL_INTERVAL_S:
            await self.refresh()

    async def refresh(self, kinds: tuple[EventKind, ...] = EVENT_KINDS) -> None:
        """Load whatever the "current" pointers name now; never raises for a bad payload."""
        self._last_poll = time.monotonic()
        async with self._lock:
            for kind in kinds:
                try:
                    await self._refresh_one(kind)
                except Exception as exc:  # keep scoring with the model we have
                    log.warning("could not check the %s batch model: %s", kind, exc)

    async def _refresh_one(self, kind: EventKind) -> None:
        current = await load_current_async(self._redis, self._keys, kind)
        held = self._current[kind]
        if current is None:
            if held is not None:
                log.warning("no current %s batch model any more: online score only", kind)
                self._swap(kind, None)
            return
        version, blob = current
        if held is not None and held.version == version:
            return
        cached = self._verified[kind].get(version)
        if cached is not None:
            self._swap(kind, cached)
            return
        if self._refused.get(kind) == version:
            return
        try:
            model = await asyncio.get_running_loop().run_in_executor(None, self._verify, kind, blob)
        except weights.InvalidWeights as exc:
            self._refused[kind] = version
            metrics.MODEL_SWAPS.labels(kind, "refused").inc()
            log.error(
                "refused %s batch model %s: %s; still scoring with %s",
                kind,
                version,
                exc.reason,
                held.version if held else "the online model only",
            )
            return
        verified = self._verified[kind]
        verified[version] = model
        while len(verified) > KEEP_VERSIONS:
            verified.pop(next(iter(verified)))
        self._swap(kind, model)

    def _verify(self, kind: EventKind, blob: bytes) -> weights.BatchModel:
        return weights.verify(
            blob, self._key, kind=kind, feature_set_version=FEATURE_SET_VERSIONS[kind]
        )

    def _swap(self, kind: EventKind, model: weights.BatchModel | None) -> None:
        old = self._current[kind]
        self._current[kind] = model
        metrics.MODEL_SWAPS.labels(kind, "swapped").inc()
        metrics.BATCH_MODEL.labels(kind).info({"version": model.version if model else "none"})
        log.info(
            "%s batch model: %s -> %s",
            kind,
            old.version if old else "none",
            model.version if model else "none",
        )

    def versions(self) -> dict[str, Any]:
        return {k: (m.version if m else None) for k, m in self._current.items()}
