"""Two workers in one consumer group share the partitions; together they score everything."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from models.events import ScoredEvent, decode
from models.names import Topics
from models.settings import Settings
from models.topology import ensure_topics
from tests import factories
from tests.integration.harness import WorkerProcess, collect, publish, scored_all

pytestmark = pytest.mark.integration


def events_scored_by(worker: WorkerProcess) -> float:
    """``fraud_events_total`` from the worker's own /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as page:
        text = page.read().decode()
    return sum(
        float(v) for v in re.findall(r'^fraud_events_total\{kind="\w+"\} (\S+)$', text, re.M)
    )


def test_two_workers_share_the_partitions_and_lose_nothing(
    namespace, kafka_bootstrap, redis_url, tmp_path
):
    settings = Settings(
        namespace=namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, partitions=4
    )
    ensure_topics(settings)
    first = WorkerProcess(settings, tmp_path, "a").start()
    second = WorkerProcess(settings, tmp_path, "b").start()
    try:
        time.sleep(15)  # let both join the group before the events arrive
        txns = [factories.transaction(n) for n in range(2000)]
        publish(settings, Topics.for_namespace(namespace).transactions, txns)
        wanted = {t.event_id for t in txns}
        values = collect(
            settings,
            Topics.for_namespace(namespace).scored,
            scored_all(wanted),
            worker=first,
            timeout_s=120,
        )
        assert {decode(v, ScoredEvent).event_id for v in values} == wanted
        assert second.alive(), second.log_tail()
        shares = [events_scored_by(first), events_scored_by(second)]
        assert all(share > 0 for share in shares), f"one worker scored nothing: {shares}"
        assert sum(shares) >= len(wanted)
    finally:
        first.stop()
        second.stop()
