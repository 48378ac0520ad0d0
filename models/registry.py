"""Online-model checkpoints in Redis: versioned, JSON, written in one transaction.

A checkpoint holds every online model's state, the offset of the last label it learned and
a version number. It is written only over the version it was learned from (a compare and set
in one script, :data:`SAVE_SCRIPT`): a learner that lost its labels partition to another
worker during a rebalance cannot overwrite the newer checkpoint of its successor. The
markers of the labels learned since the previous checkpoint are written by the same script,
so "this label was learned" and "the model that learned it is saved" are never out of step:
after a crash, a label is learned again exactly when the learning it caused was lost.

States are JSON and are validated by ``OnlineModel.from_state``; nothing read from Redis is
ever unpickled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from models.names import EVENT_KINDS, EventKind, RedisKeys
from models.online import FeatureSetMismatch, OnlineModel

NO_OFFSET = -1


SAVE_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  for i = 2, #KEYS do
    redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
  end
end
return current
"""
"""KEYS[1] the checkpoint hash, then one "labelled" marker key per label learned; ARGV[1] the
version the learner started from, ARGV[2] the markers' TTL, then the hash's fields and values.
Writes the hash and the markers only when the saved version is still ARGV[1]; returns the
saved version it found. One script instead of WATCH/MULTI/EXEC: the transaction queued a SET
per marker, and redis-py packed and parsed each of them in Python. ``python -m benchmarks
worker --learning``: 6,413-6,805 events/s and 46.6-47.0 worker CPU s with the transaction,
7,331-7,613 and 43.4-43.9 with the script (docs/benchmarks.md)."""


class CheckpointConflict(RuntimeError):
    """Another learner saved a newer checkpoint than the one this learner started from."""


class CorruptCheckpoint(ValueError):
    """The checkpoint in Redis cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class Checkpoint:
    """A saved set of online models and how far into the labels topic they learned."""

    version: int
    label_offset: int
    saved_at: float
    models: dict[EventKind, OnlineModel]
    started_afresh: tuple[str, ...] = ()
    """Why a kind's model is new rather than loaded: its saved state was trained on another
    feature set (an upgrade changed a feature's definition). One message per kind."""


class OnlineCheckpoints:
    """Load and save :class:`Checkpoint` objects under one Redis hash."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, *, marker_ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._marker_ttl_s = marker_ttl_s
        self._save = redis.register_script(SAVE_SCRIPT)

    async def version(self) -> int:
        """The version saved now, 0 when there is none (cheap: one HGET)."""
        raw = await self._redis.hget(self._keys.online_checkpoint, "version")
        return int(raw) if raw is not None else 0

    async def load(
        self, fresh: Callable[[EventKind], OnlineModel] = OnlineModel
    ) -> Checkpoint | None:
        """The saved checkpoint, or None when nothing was saved yet.

        A kind whose saved state was trained on another feature set than this code computes
        (an upgrade changed a feature's definition) gets ``fresh(kind)`` instead, said in
        ``started_afresh``; the other kinds and the label offset load as saved. Anything
        else unusable raises :class:`CorruptCheckpoint`."""
        raw = await self._redis.hgetall(self._keys.online_checkpoint)
        if not raw:
            return None
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        try:
            models: dict[EventKind, OnlineModel] = {}
            afresh: list[str] = []
            for kind in EVENT_KINDS:
                try:
                    models[kind] = OnlineModel.from_state(orjson.loads(fields[f"state:{kind}"]))
                except FeatureSetMismatch as exc:
                    models[kind] = fresh(kind)
                    afresh.append(f"{kind}: {exc}")
            return Checkpoint(
                version=int(fields["version"]),
                label_offset=int(fields["label_offset"]),
                saved_at=float(fields["saved_at"]),
                models=models,
                started_afresh=tuple(afresh),
            )
        except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
            raise CorruptCheckpoint(
                f"online checkpoint at {self._keys.online_checkpoint} is unusable: {exc}"
            ) from exc

    async def save(
        self,
        models: Mapping[EventKind, OnlineModel],
        *,
        base_version: int,
        label_offset: int,
        learned_ids: Iterable[str],
    ) -> int:
        """Save ``models`` as version ``base_version + 1``; return that version.

        Raises :class:`CheckpointConflict` when the saved version is no longer
        ``base_version``.
        """
        mapping: dict[str, bytes | str | int | float] = {
            f"state:{kind}": orjson.dumps(model.to_state()) for kind, model in models.items()
        }
        new_version = base_version + 1
        mapping.update(version=new_version, label_offset=label_offset, saved_at=time.time())
        found = await self._save(
            keys=[self._keys.online_checkpoint, *map(self._keys.labelled, learned_ids)],
            args=[base_version, self._marker_ttl_s, *(x for item in mapping.items() for x in item)],
        )
        if int(found) != base_version:
            raise CheckpointConflict(
                f"checkpoint is at version {int(found)}, this learner started from {base_version}"
            )
        return new_version
