"""The batch models in Redis: immutable signed blobs per version, a ``current`` pointer per
kind, and a history of the versions that were current before (newest first).

A blob is written once under its version and never changed: a reader that saw the pointer
name a version always gets the same bytes for it, even if the pointer moves between its two
reads, so readers need no transaction. The pointer and the history move together in one
MULTI/EXEC under WATCH on the pointer: two jobs publishing at once (or a publish racing a
rollback) cannot lose a version from the history; the loser sees a WatchError and retries
against the new state.

The registry files blobs; it does not trust them. Workers verify every blob they load
(``models.weights.verify``). ``publish`` only peeks at the unsigned envelope to refuse a blob
filed under the wrong kind or version, which is a mistake, not an attack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import redis
import redis.asyncio as aioredis
from redis.client import Pipeline
from redis.exceptions import WatchError

from models.names import EVENT_KINDS, EventKind, RedisKeys
from models.weights import InvalidWeights, check_version, peek

__all__ = [
    "BatchModelRegistry",
    "NothingToRollBack",
    "RegistryConflict",
    "RegistryError",
    "VersionExists",
    "current_version_async",
    "load_current_async",
]

MAX_ATTEMPTS: Final = 20
"""WATCH retries before a publish or rollback gives up (each retry means another writer won)."""
HISTORY_LIMIT: Final = 100
"""Previous versions kept in the history list (their blobs are kept regardless)."""

T = TypeVar("T")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says why."""


class VersionExists(RegistryError):
    """A version is published already with other bytes: versions are immutable."""


class NothingToRollBack(RegistryError):
    """There is no previous version to return to."""


class RegistryConflict(RegistryError):
    """Other writers kept changing the pointer for :data:`MAX_ATTEMPTS` attempts."""


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _blob(value: object, key: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise RegistryError(
            f"{key} came back as {type(value).__name__}: the registry needs a Redis client "
            "created with decode_responses=False"
        )
    return value


def _kind(kind: EventKind) -> EventKind:
    if kind not in EVENT_KINDS:
        raise ValueError(f"kind must be one of {EVENT_KINDS}, not {kind!r}")
    return kind


class BatchModelRegistry:
    """Publish, read and roll back the signed batch models of one namespace.

    ``client`` is a synchronous ``redis.Redis`` created with ``decode_responses=False``
    (blobs are bytes). The worker reads with :func:`load_current_async` instead.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        history_limit: int = HISTORY_LIMIT,
    ) -> None:
        if max_attempts < 1 or history_limit < 1:
            raise ValueError("max_attempts and history_limit must be >= 1")
        self._redis = client
        self._keys = keys
        self._max_attempts = max_attempts
        self._history_limit = history_limit

    # --- reading ----------------------------------------------------------------------

    def current(self, kind: EventKind) -> str | None:
        """The version in production, None when none was published."""
        return _text(self._redis.get(self._keys.batch_model_current(_kind(kind))))

    def blob(self, kind: EventKind, version: str) -> bytes | None:
        """The signed blob of ``version``, None when there is none."""
        key = self._keys.batch_model(_kind(kind), check_version(version))
        return _blob(self._redis.get(key), key)

    def current_blob(self, kind: EventKind) -> tuple[str, bytes] | None:
        """``(version, blob)`` of the model in production, None when none was published."""
        version = self.current(kind)
        if version is None:
            return None
        blob = self.blob(kind, version)
        if blob is None:
            raise RegistryError(f"{kind} current points to {version!r}, which has no blob")
        return version, blob

    def versions(self, kind: EventKind) -> list[str]:
        """Current version then the history, newest first (empty when none was published)."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.batch_model_current(_kind(kind)))
            pipe.lrange(self._keys.batch_model_history(kind), 0, -1)
            current, history = pipe.execute()
        found = [] if current is None else [_text(current)]
        return [v for v in (*found, *map(_text, history)) if v is not None]

    # --- writing ----------------------------------------------------------------------

    def publish(self, kind: EventKind, version: str, blob: bytes) -> str | None:
        """Store ``blob`` as ``version`` and make it current; return the previous current
        version (None for the first model). The previous one goes to the head of the history.

        Publishing the same bytes again is harmless (a retried job): when ``version`` is
        current already, nothing changes and ``version`` itself is returned. Raises
        :class:`VersionExists` when ``version`` holds other bytes, and ``InvalidWeights`` /
        ``ValueError`` when the envelope names another kind or version.
        """
        check_version(version)
        claimed = peek(blob)
        if claimed != (_kind(kind), version):
            raise InvalidWeights(
                f"blob is {claimed[0]}/{claimed[1]}, it cannot be published as {kind}/{version}"
            )
        key = self._keys.batch_model(kind, version)
        if not self._redis.set(key, blob, nx=True):
            existing = self._redis.get(key)
            if existing != bytes(blob):
                raise VersionExists(
                    f"{kind} model {version!r} is published already with other bytes; "
                    "publish the new model under a new version"
                )
        pointer = self._keys.batch_model_current(kind)
        history = self._keys.batch_model_history(kind)

        def move(pipe: Pipeline) -> str | None:
            previous = self._read_pointer(pipe, pointer)
            if previous == version:
                pipe.unwatch()
                return previous
            pipe.multi()
            if previous is not None:
                pipe.lpush(history, previous)
                pipe.ltrim(history, 0, self._history_limit - 1)
            pipe.set(pointer, version)
            pipe.execute()
            return previous

        return self._transaction(pointer, move, f"publish {kind} {version}")

    def rollback(self, kind: EventKind) -> tuple[str, str]:
        """Make the head of the history current again; return ``(from, to)``.

        The version rolled back from leaves the chain (its blob stays; publish it again to
        return to it). Raises :class:`NothingToRollBack` when there is no current model or
        no earlier one.
        """
        pointer = self._keys.batch_model_current(_kind(kind))
        history = self._keys.batch_model_history(kind)

        def move(pipe: Pipeline) -> tuple[str, str]:
            pipe.watch(history)
            current = self._read_pointer(pipe, pointer)
            target = _text(pipe.lindex(history, 0))
            if current is None or target is None:
                pipe.unwatch()
                what = "no model was published" if current is None else "the history is empty"
                raise NothingToRollBack(f"cannot roll back the {kind} batch model: {what}")
            if not pipe.exists(self._keys.batch_model(kind, target)):
                pipe.unwatch()
                raise RegistryError(f"cannot roll back {kind} to {target!r}: its blob is missing")
            pipe.multi()
            pipe.lpop(history)
            pipe.set(pointer, target)
            pipe.execute()
            return current, target

        return self._transaction(pointer, move, f"roll back {kind}")

    def _read_pointer(self, pipe: Pipeline, pointer: str) -> str | None:
        """The pointer as read inside a WATCH (a seam for tests that race another writer)."""
        return _text(pipe.get(pointer))

    def _transaction(self, watched: str, body: Callable[[Pipeline], T], what: str) -> T:
        """Run ``body`` under WATCH on ``watched``, retrying when another writer got there
        first (``body`` reads, then MULTI/EXEC)."""
        for _ in range(self._max_attempts):
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(watched)
                    return body(pipe)
                except WatchError:
                    continue
        raise RegistryConflict(
            f"could not {what}: other writers changed it {self._max_attempts} times in a row"
        )


async def current_version_async(
    client: aioredis.Redis, keys: RedisKeys, kind: EventKind
) -> str | None:
    """The version in production (one GET): what a worker polls to notice a new model."""
    return _text(await client.get(keys.batch_model_current(_kind(kind))))


async def load_current_async(
    client: aioredis.Redis, keys: RedisKeys, kind: EventKind
) -> tuple[str, bytes] | None:
    """``(version, blob)`` of the model in production, read with ``redis.asyncio``; None
    when none was published. The blob still has to be verified."""
    version = await current_version_async(client, keys, kind)
    if version is None:
        return None
    key = keys.batch_model(kind, check_version(version))
    blob = _blob(await client.get(key), key)
    if blob is None:
        raise RegistryError(f"{kind} current points to {version!r}, which has no blob")
    return version, blob
