"""Fixtures shared by the integration tests (the services themselves: tests/conftest.py)."""

from __future__ import annotations

import pytest

from models.settings import Settings
from models.topology import ensure_topics


@pytest.fixture
def settings(namespace: str, kafka_bootstrap: str, redis_url: str) -> Settings:
    """Settings of this test's own namespace on the session's broker and Redis, with its
    topics created; checkpoints every half second so learning shows up quickly."""
    s = Settings(
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        partitions=4,
        checkpoint_interval_s=0.5,
    )
    ensure_topics(s)
    return s
