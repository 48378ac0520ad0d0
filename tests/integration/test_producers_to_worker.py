"""The real producer CLI feeding a real worker: N produced, N scored, labels learned."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import polars as pl
import pytest
import redis

from models.events import ScoredEvent, decode
from models.names import RedisKeys, Topics
from models.settings import Settings
from tests.integration.harness import REPO, WorkerProcess, collect, scored_all

pytestmark = pytest.mark.integration


def produce(settings: Settings, kind: str, count: int, truth_path) -> pl.DataFrame:
    env = {**os.environ, "FRAUD_NAMESPACE": settings.namespace}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers",
            f"{kind}s",
            "--rate",
            "0",
            "--count",
            str(count),
            "--seed",
            "7",
            "--label-delay",
            "600",
            "--bootstrap-servers",
            settings.kafka_bootstrap,
            "--truth-out",
            str(truth_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return pl.read_csv(truth_path)


def test_produced_transactions_and_emails_are_all_scored_and_their_labels_learned(
    namespace, kafka_bootstrap, redis_url, tmp_path
):
    settings = Settings(namespace=namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url)
    truth = pl.concat(
        [
            produce(settings, "transaction", 3000, tmp_path / "txn.csv"),
            produce(settings, "email", 500, tmp_path / "email.csv"),
        ]
    )
    assert truth.height == 3500
    wanted = set(truth["event_id"].to_list())

    worker = WorkerProcess(settings, tmp_path).start()
    try:
        values = collect(
            settings,
            Topics.for_namespace(namespace).scored,
            scored_all(wanted),
            worker=worker,
        )
        scored = [decode(v, ScoredEvent) for v in values]
        assert {s.event_id for s in scored} == wanted
        assert {s.kind for s in scored} == {"transaction", "email"}
        assert all(0.0 <= s.score <= 1.0 and s.features for s in scored)

        # Every label the producer sent refers to a scored event; all get learned.
        r = redis.Redis.from_url(redis_url)
        keys = RedisKeys(namespace)
        deadline = time.monotonic() + 90
        while sum(1 for _ in r.scan_iter(keys.labelled("*"), count=1000)) < truth.height:
            assert worker.alive(), worker.log_tail()
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        assert int(r.hget(keys.online_checkpoint, "version")) >= 1
    finally:
        worker.stop()
