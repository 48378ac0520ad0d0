"""The backtest scores exactly what the live worker scores.

A real ``python -m stream worker`` (real Kafka, real Redis) and ``python -m stream backtest``
start from the same online-model state (a checkpoint in Redis; the same state as a file for
the backtest) and see the same events. Transactions come in two phases with labels between
them, so the second phase depends on everything the worker keeps: card histories (Faust
tables), the model learned from the served features, and the terminals' label outcomes in
Redis. Every event's served features, online score and decision must be equal, not close.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
import redis
import redis.asyncio as aioredis

from models.events import Email, ScoredEvent, Transaction, decode
from models.names import EventKind, RedisKeys, Topics
from models.online import OnlineModel
from models.registry import NO_OFFSET, OnlineCheckpoints
from models.settings import Settings
from models.tabular import events_frame
from stream import backtest
from stream.scoring import TRANSACTIONS, Thresholds
from tests import factories
from tests.integration.harness import WorkerProcess, collect, publish

pytestmark = pytest.mark.integration

LABEL_DELAY_S = 400.0
PHASE_B_AT = factories.T0 + 800.0


def is_fraud(i: int) -> bool:
    return i % 6 == 2 and i % 4 == 0


def txn(i: int, at: float) -> Transaction:
    """Forty cards over six terminals; terminal 2 sees frauds (large amounts) now and then."""
    return factories.transaction(
        i,
        at=at,
        card_id=f"card-{i % 40:02d}",
        terminal_id=f"term-{i % 6}",
        amount=900.0 + i % 11 if is_fraud(i) else 5.0 + (i * 7) % 60,
        country="FR" if i % 9 else "DE",
        device_id=f"dev-{i % 40}" if i % 13 else f"dev-new-{i}",
        channel="online" if i % 5 == 0 else "pos",
    )


def warm_model(kind: str) -> OnlineModel:
    """A model that has learned something, so that scores differ from event to event."""
    model = OnlineModel(kind)  # type: ignore[arg-type]
    if kind == "transaction":
        warm = [(txn(10_000 + i, factories.T0 - 90_000 + 60 * i), is_fraud(i)) for i in range(600)]
        engine: backtest.Backtest[Any, Any] = backtest.Backtest(
            spec=TRANSACTIONS, model=model, thresholds=Thresholds(0.5, 0.85), label_delay_s=0.0
        )
        for _ in engine.run(warm):
            pass
        engine.finish()
    else:
        for i in range(300):
            spam = i % 3 == 0
            x = {"link_count": float(spam * 3 + i % 2), "urgency_cue_count": float(spam)}
            model.learn_one({**x, f"tok_{i % 50}": 1.0}, spam)
    return model


def save_checkpoint(settings: Settings, models: dict[EventKind, OnlineModel]) -> None:
    async def save() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            checkpoints = OnlineCheckpoints(
                client, RedisKeys(settings.namespace), marker_ttl_s=3600
            )
            await checkpoints.save(
                models,
                base_version=0,
                label_offset=NO_OFFSET,
                learned_ids=[],
            )
        finally:
            await client.aclose()

    asyncio.run(save())


def latest_scored(values: list[bytes]) -> dict[str, ScoredEvent]:
    return {e.event_id: e for e in (decode(v, ScoredEvent) for v in values)}


def run_backtest(
    path: Path, state: Path, out: Path, kind: str, delay: float, capsys: Any
) -> dict[str, dict[str, Any]]:
    code = backtest.main(
        [
            str(path),
            "--kind",
            kind,
            "--label-delay",
            str(delay),
            "--model-state",
            str(state),
            "--scores-out",
            str(out),
            "--with-features",
            "--quiet",
            "--json",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    return {row["event_id"]: row for row in pl.read_parquet(out).iter_rows(named=True)}


def test_backtest_and_live_worker_give_the_same_features_scores_and_decisions(
    settings, tmp_path, capsys
):
    topics, keys = Topics.for_namespace(settings.namespace), RedisKeys(settings.namespace)
    models: dict[EventKind, OnlineModel] = {
        "transaction": warm_model("transaction"),
        "email": warm_model("email"),
    }
    save_checkpoint(settings, models)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({k: m.to_state() for k, m in models.items()}))

    phase_a = [txn(i, factories.T0 + i) for i in range(300)]
    phase_b = [txn(300 + i, PHASE_B_AT + i) for i in range(200)]
    mails: list[Email] = []
    for i in range(120):
        spam = i % 4 == 0
        mails.append(
            factories.email(
                i,
                at=factories.T0 + 2 * i,
                sender=f"sender{i % 9}@{'paypa1-secure.com' if spam else 'example.org'}",
                recipient=f"user{i % 17}@example.com",
                subject="URGENT verify your account now" if spam else f"Notes {i}",
                body=("Click http://192.168.0.7/login to avoid suspension!" if spam else "See you.")
                + f" ref {i}",
            )
        )

    publish(settings, topics.transactions, phase_a)
    publish(settings, topics.emails, mails)
    worker = WorkerProcess(settings, tmp_path).start()
    try:
        wanted = {e.event_id for e in phase_a + mails}
        scored = latest_scored(
            collect(
                settings, topics.scored, lambda v: wanted <= set(latest_scored(v)), worker=worker
            )
        )
        # Labels of phase A arrive LABEL_DELAY_S after their events, all before phase B.
        labels = [
            factories.label(t.event_id, "transaction", is_fraud(i), at=t.timestamp + LABEL_DELAY_S)
            for i, t in enumerate(phase_a)
        ]
        publish(settings, topics.labels, labels)
        r = redis.Redis.from_url(settings.redis_url)
        deadline = time.monotonic() + 90
        while True:
            raw = r.hget(keys.online_checkpoint, "state:transaction")
            if raw and OnlineModel.from_state(msgspec.json.decode(raw)).learned == 600 + 300:
                break
            assert worker.alive(), worker.log_tail()
            assert time.monotonic() < deadline, "labels not learned\n" + worker.log_tail()
            time.sleep(0.3)
        publish(settings, topics.transactions, phase_b)
        wanted |= {t.event_id for t in phase_b}
        scored = latest_scored(
            collect(
                settings, topics.scored, lambda v: wanted <= set(latest_scored(v)), worker=worker
            )
        )
    finally:
        worker.stop()

    txn_file = tmp_path / "txns.parquet"
    events_frame(
        phase_a + phase_b, [is_fraud(i) for i in range(300)] + [None] * len(phase_b)
    ).write_parquet(txn_file)
    offline = run_backtest(
        txn_file, state, tmp_path / "t-scores.parquet", "transaction", LABEL_DELAY_S, capsys
    )
    mail_file = tmp_path / "mails.parquet"
    events_frame(mails, [i % 4 == 0 for i in range(len(mails))]).write_parquet(mail_file)
    offline |= run_backtest(mail_file, state, tmp_path / "m-scores.parquet", "email", 1e9, capsys)

    assert set(offline) == set(scored) == wanted
    for event_id, live in scored.items():
        row = offline[event_id]
        assert json.loads(row["features"]) == live.features, event_id
        assert row["online_score"] == live.online_score, event_id
        assert row["decision"] == live.decision, event_id
    # The second phase really depended on the labels: terminal outcomes and a learned model.
    b_scores = [scored[t.event_id] for t in phase_b]
    assert any(e.features["terminal_fraud_count_28d"] > 0 for e in b_scores)
    assert any(e.features["card_count_7d"] > 0 for e in b_scores)
    assert len({e.online_version for e in b_scores}) == 1
    assert b_scores[0].online_version != scored[phase_a[0].event_id].online_version
    assert len({e.online_score for e in scored.values()}) > 100
