"""Shared fixtures: one real Kafka broker and one real Redis per test session, and a fresh
namespace per test.

The services are started lazily (only when an integration test asks for them) and shared,
because a broker costs seconds to start; isolation comes from the namespace instead: every
test gets its own topics, Redis keys and consumer group. A service that cannot start FAILS
the tests that need it: a skipped integration suite looks green while testing nothing.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `local` is dev tooling, importable from the repo root
    sys.path.insert(0, str(REPO_ROOT))

from local import KafkaBroker, RedisServer, ServiceError  # noqa: E402

SERVICE_FIXTURES = {"kafka_broker", "redis_server"}


def _start_or_fail(service: KafkaBroker | RedisServer, what: str) -> None:
    """Start ``service``; on failure fail the test with the service's own explanation
    (outside the ``except`` so the report shows one clear message, not a chained one)."""
    try:
        service.start()
        return
    except ServiceError as exc:
        reason = str(exc)
    pytest.fail(f"the test {what} could not start: {reason}", pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a real service are integration tests even if nobody marked them,
    so ``-m "not integration"`` really leaves out everything that starts a server."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node KRaft broker on a free port with a fresh data dir, for the session."""
    base = tmp_path_factory.mktemp("kafka")
    broker = KafkaBroker(data_dir=base / "data", log_dir=base)
    _start_or_fail(broker, "Kafka broker")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """An in-memory Redis (no RDB, no AOF) on a free port, for the session."""
    base = tmp_path_factory.mktemp("redis")
    server = RedisServer(persistent=False, data_dir=base / "data", log_dir=base)
    _start_or_fail(server, "Redis server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``host:port`` of the session's broker (what ``FRAUD_KAFKA_BOOTSTRAP`` would hold)."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://`` URL of the session's Redis (what ``FRAUD_REDIS_URL`` would hold)."""
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses: its topics, keys and consumer group are its own.
    Starts with a letter and is alphanumeric, as ``Settings.validate`` requires."""
    return "t" + uuid.uuid4().hex[:10]
