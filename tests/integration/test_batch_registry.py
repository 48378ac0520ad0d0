"""The batch-model registry against the session's real Redis: publish, history, rollback,
immutable versions, and writers racing each other under WATCH."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio as aioredis

from models import weights as W
from models.batch_registry import (
    BatchModelRegistry,
    NothingToRollBack,
    RegistryConflict,
    RegistryError,
    VersionExists,
    current_version_async,
    load_current_async,
)
from models.features import FEATURE_SET_VERSIONS
from models.names import EventKind, RedisKeys

KEY = b"registry-test-key"


def _model(kind: EventKind, version: str, intercept: float = -2.0) -> W.BatchModel:
    card = W.ModelCard(
        kind=kind,
        version=version,
        feature_set_version=FEATURE_SET_VERSIONS[kind],
        feature_names=["a", "b"],
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        trained_until=datetime(2026, 1, 1, tzinfo=UTC),
        library_versions=W.library_versions(),
        metrics={"average_precision": 0.5},
        review_threshold=0.5,
        block_threshold=0.9,
        hybrid=W.Blend(),
    )
    return W.BatchModel(card, W.Linear(weights={"a": 1.0, "b": -0.5}, intercept=intercept))


def _blob(version: str, kind: EventKind = "transaction", intercept: float = -2.0) -> bytes:
    return W.sign(_model(kind, version, intercept), KEY)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def keys(namespace: str) -> RedisKeys:
    return RedisKeys(namespace)


@pytest.fixture
def registry(client: redis.Redis, keys: RedisKeys) -> BatchModelRegistry:
    return BatchModelRegistry(client, keys)


def test_publish_moves_current_and_keeps_history(registry: BatchModelRegistry) -> None:
    assert registry.current("transaction") is None
    assert registry.current_blob("transaction") is None
    assert registry.versions("transaction") == []

    v1, v2 = _blob("v1"), _blob("v2", intercept=-1.0)
    assert registry.publish("transaction", "v1", v1) is None
    assert registry.current("transaction") == "v1"
    assert registry.publish("transaction", "v2", v2) == "v1"
    assert registry.current_blob("transaction") == ("v2", v2)
    assert registry.blob("transaction", "v1") == v1
    assert registry.versions("transaction") == ["v2", "v1"]
    assert registry.versions("email") == []  # kinds are separate

    version, blob = registry.current_blob("transaction") or ("", b"")
    model = W.verify(blob, KEY, kind="transaction")
    assert model.version == version == "v2"


def test_rollback_restores_the_previous_version(registry: BatchModelRegistry) -> None:
    with pytest.raises(NothingToRollBack, match="no model was published"):
        registry.rollback("transaction")
    for version in ("v1", "v2", "v3"):
        registry.publish("transaction", version, _blob(version))
    assert registry.rollback("transaction") == ("v3", "v2")
    assert registry.current_blob("transaction") == ("v2", _blob("v2"))
    assert registry.versions("transaction") == ["v2", "v1"]
    assert registry.rollback("transaction") == ("v2", "v1")
    with pytest.raises(NothingToRollBack, match="history is empty"):
        registry.rollback("transaction")
    assert registry.current("transaction") == "v1"
    # a rolled-back version can be published again (same bytes)
    assert registry.publish("transaction", "v3", _blob("v3")) == "v1"
    assert registry.versions("transaction") == ["v3", "v1"]


def test_versions_are_immutable(registry: BatchModelRegistry) -> None:
    registry.publish("transaction", "v1", _blob("v1"))
    registry.publish("transaction", "v2", _blob("v2"))
    with pytest.raises(VersionExists, match="other bytes"):
        registry.publish("transaction", "v1", _blob("v1", intercept=5.0))
    assert registry.blob("transaction", "v1") == _blob("v1")
    assert registry.versions("transaction") == ["v2", "v1"]
    # the same bytes again (a retried job) change nothing
    assert registry.publish("transaction", "v2", _blob("v2")) == "v2"
    assert registry.versions("transaction") == ["v2", "v1"]


def test_publish_refuses_misfiled_blobs(registry: BatchModelRegistry) -> None:
    with pytest.raises(W.InvalidWeights, match="cannot be published as email/v1"):
        registry.publish("email", "v1", _blob("v1", kind="transaction"))
    with pytest.raises(W.InvalidWeights, match="cannot be published as transaction/v2"):
        registry.publish("transaction", "v2", _blob("v1"))
    with pytest.raises(W.InvalidWeights, match="bad envelope"):
        registry.publish("transaction", "v1", b"not a blob")
    with pytest.raises(ValueError, match="reserved"):
        registry.publish("transaction", "current", _blob("v1"))
    assert registry.versions("email") == registry.versions("transaction") == []


class _RacedRegistry(BatchModelRegistry):
    """A registry whose first ``races`` pointer reads (inside WATCH) are each followed by a
    rival publish: the deterministic form of two jobs publishing at the same moment."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        rival: BatchModelRegistry,
        races: int,
        **kwargs: int,
    ) -> None:
        super().__init__(client, keys, **kwargs)
        self.rival = rival
        self.races = races
        self.reads = 0

    def _read_pointer(self, pipe: redis.client.Pipeline, pointer: str) -> str | None:
        version = super()._read_pointer(pipe, pointer)
        self.reads += 1
        if self.reads <= self.races:
            rival_version = f"rival{self.reads}"
            self.rival.publish("transaction", rival_version, _blob(rival_version))
        return version


def test_watch_conflict_is_retried(client: redis.Redis, keys: RedisKeys) -> None:
    rival = BatchModelRegistry(client, keys)
    rival.publish("transaction", "v1", _blob("v1"))
    raced = _RacedRegistry(client, keys, rival, races=1)
    # the first attempt read "v1", then the rival published; the retry sees "rival1"
    assert raced.publish("transaction", "v2", _blob("v2")) == "rival1"
    assert raced.reads == 2
    assert rival.versions("transaction") == ["v2", "rival1", "v1"]

    rival.publish("transaction", "v3", _blob("v3"))
    raced = _RacedRegistry(client, keys, rival, races=1)
    # the first attempt read "v3", then the rival made "rival1" current again: the retry
    # rolls back what is current now, not what was current when the rollback began
    assert raced.rollback("transaction") == ("rival1", "v3")
    assert rival.versions("transaction") == ["v3", "v2", "rival1", "v1"]


def test_endless_conflicts_give_up(client: redis.Redis, keys: RedisKeys) -> None:
    rival = BatchModelRegistry(client, keys)
    raced = _RacedRegistry(client, keys, rival, races=10, max_attempts=3)
    with pytest.raises(RegistryConflict, match="3 times in a row"):
        raced.publish("transaction", "v1", _blob("v1"))
    assert rival.versions("transaction") == ["rival3", "rival2", "rival1"]


def test_concurrent_publishers_lose_nothing(redis_url: str, keys: RedisKeys) -> None:
    blobs = {f"w{i}": _blob(f"w{i}") for i in range(8)}
    previous: dict[str, str | None] = {}
    start = threading.Barrier(len(blobs))

    def publish(version: str) -> None:
        with redis.Redis.from_url(redis_url) as c:
            start.wait()
            previous[version] = BatchModelRegistry(c, keys).publish(
                "transaction", version, blobs[version]
            )

    threads = [threading.Thread(target=publish, args=(v,)) for v in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    with redis.Redis.from_url(redis_url) as c:
        versions = BatchModelRegistry(c, keys).versions("transaction")
    assert sorted(versions) == sorted(blobs)  # every version once: none lost, none twice
    # the publishes form one chain: each replaced the version published just before it
    assert [previous[v] for v in versions] == [*versions[1:], None]


def test_async_readers(redis_url: str, registry: BatchModelRegistry, keys: RedisKeys) -> None:
    async def read() -> tuple[str | None, tuple[str, bytes] | None]:
        c = aioredis.Redis.from_url(redis_url)
        try:
            return await current_version_async(c, keys, "email"), await load_current_async(
                c, keys, "email"
            )
        finally:
            await c.aclose()

    assert asyncio.run(read()) == (None, None)
    blob = _blob("e1", kind="email")
    registry.publish("email", "e1", blob)
    assert asyncio.run(read()) == ("e1", ("e1", blob))


def test_needs_bytes_responses(redis_url: str, keys: RedisKeys) -> None:
    BatchModelRegistry(redis.Redis.from_url(redis_url), keys).publish(
        "email", "e1", _blob("e1", "email")
    )
    text_client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(RegistryError, match="decode_responses=False"):
        BatchModelRegistry(text_client, keys).current_blob("email")
    text_client.close()
