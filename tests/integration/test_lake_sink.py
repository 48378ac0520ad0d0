"""The lake sink against the real broker: every scored event and label once, across restarts,
a crash between writing and committing, and compaction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl

from batch.lake import LakeSink, Table, compact, list_parts, read_lake, run_sink
from models.events import Label, ScoredEvent
from models.names import Topics
from models.settings import Settings
from models.topology import ensure_topics
from tests import factories
from tests.integration.harness import REPO, publish

T0 = factories.T0
DAY = 86_400.0


def scored(n: int) -> ScoredEvent:
    """Over three dates; every other one has a batch score too."""
    return factories.scored(
        n,
        at=T0 + (n % 3) * DAY + n,
        features={"amount": float(n), "count_1h": float(n % 4)},
        batch_score=0.3 if n % 2 else None,
        batch_version="batch-1" if n % 2 else None,
    )


def label(n: int) -> Label:
    return factories.label(f"txn-{n:06d}", "transaction", n % 5 == 0, at=T0 + 2 * DAY + n)


def sink_once(settings: Settings, lake: Path, group_id: str | None = None) -> None:
    run_sink(settings, lake, once=True, idle_s=2.0, flush_every=7, group_id=group_id)


def ids(lake: Path, table: Table) -> list[str]:
    frame = read_lake(lake, table).collect()
    return sorted(frame["event_id"].to_list())


def expected(ns: range) -> list[str]:
    return sorted(f"txn-{n:06d}" for n in ns)


def test_sink_restart_crash_and_compaction(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    settings = Settings(namespace=namespace, kafka_bootstrap=kafka_bootstrap)
    ensure_topics(settings)
    topics = Topics.for_namespace(namespace)
    lake = tmp_path / "lake"

    publish(settings, topics.scored, [scored(n) for n in range(40)])
    publish(settings, topics.labels, [label(n) for n in range(15)])
    sink_once(settings, lake)
    assert ids(lake, "scored") == expected(range(40))
    assert ids(lake, "labels") == expected(range(15))
    frame = read_lake(lake, "scored").collect()
    row = frame.filter(pl.col("event_id") == "txn-000001").row(0, named=True)
    assert row["batch_score"] == 0.3 and row["online_version"] == "online-1"
    assert row["event_time"].isoformat() == "2026-01-02T00:00:01+00:00"
    assert str(row["date"]) == "2026-01-02"
    assert frame["features"].str.json_decode().struct.field("amount").sum() == sum(range(40))

    # A restart with more messages: new rows arrive, nothing twice.
    publish(settings, topics.scored, [scored(n) for n in range(40, 60)])
    publish(settings, topics.labels, [label(n) for n in range(15, 20)])
    sink_once(settings, lake)
    assert ids(lake, "scored") == expected(range(60))
    assert ids(lake, "labels") == expected(range(20))

    # A crash after writing files, before committing: the write step without the commit.
    publish(settings, topics.scored, [scored(n) for n in range(60, 75)])
    sink = LakeSink(settings, lake)
    try:
        deadline_polls = 40
        while sink.pending < 15 and deadline_polls:
            sink.poll(timeout_s=0.5)
            deadline_polls -= 1
        assert sink.pending == 15
        sink.write()
    finally:
        sink.close()
    publish(settings, topics.scored, [scored(n) for n in range(75, 80)])
    sink_once(settings, lake)  # same group: its committed offsets lag behind the lake
    assert ids(lake, "scored") == expected(range(80))
    sink_once(settings, lake, group_id=f"{namespace}-other")  # a group with no commits at all
    assert ids(lake, "scored") == expected(range(80))
    assert ids(lake, "labels") == expected(range(20))

    # Compaction: fewer files, the same rows.
    before = read_lake(lake, "scored").collect().sort("partition", "offset")
    files_before = len(list_parts(lake, "scored"))
    compact(lake)
    after = read_lake(lake, "scored").collect().sort("partition", "offset")
    assert after.equals(before)
    assert len(list_parts(lake, "scored")) < files_before
    assert ids(lake, "labels") == expected(range(20))

    # The sink resumes after compaction without duplicates.
    publish(settings, topics.scored, [scored(n) for n in range(80, 85)])
    sink_once(settings, lake)
    assert ids(lake, "scored") == expected(range(85))


def test_cli_once_and_unreachable_kafka(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    settings = Settings(namespace=namespace, kafka_bootstrap=kafka_bootstrap)
    ensure_topics(settings)
    publish(settings, Topics.for_namespace(namespace).labels, [label(n) for n in range(3)])
    lake = tmp_path / "lake"
    env = {"FRAUD_NAMESPACE": namespace, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "batch", "sink", "--once", "--lake-dir", str(lake),
         "--bootstrap-servers", kafka_bootstrap],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "labels 3 rows" in done.stderr
    assert ids(lake, "labels") == expected(range(3))

    failed = subprocess.run(
        [sys.executable, "-m", "batch", "sink", "--once", "--lake-dir", str(lake),
         "--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in failed.stderr
    assert "Traceback" not in failed.stderr
