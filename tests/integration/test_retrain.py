"""The nightly retrain end to end on generated history, with the real Redis and Kafka.

The lake is filled by ``batch.synthetic`` (the producers' simulators scored by the worker's
own code path), so the retrain sees what a running stack would have written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import redis
from kafka import KafkaConsumer

from batch import cli
from batch.retrain import Options, run
from batch.synthetic import fill_lake
from models import weights
from models.batch_registry import BatchModelRegistry
from models.events import ModelUpdate
from models.names import RedisKeys, Topics
from models.settings import Settings

pytestmark = pytest.mark.integration

KEY = "retrain-test-key"
START = datetime(2026, 1, 1, tzinfo=UTC)
CUTOFF = datetime(2026, 1, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lake")
    fill_lake(path, "transaction", 25_000, seed=3, positive_rate=0.02, label_delay_s=1800)
    fill_lake(path, "email", 2_500, seed=3, label_delay_s=600)
    return path


def configured(settings: Settings, lake: Path, tmp_path: Path) -> Settings:
    return settings.replace(
        lake_dir=str(lake),
        runs_dir=str(tmp_path / "runs"),
        model_signing_key=KEY,
        retrain_budget_s=1.0,
    )


def options(kind: str = "transaction", **changes: object) -> Options:
    return Options(kind=kind, cutoff=CUTOFF, profile_period_s=3600.0, **changes)  # type: ignore[arg-type]


def test_retrain_publishes_then_the_gate_keeps_production_then_force_and_rollback(
    settings: Settings, lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    s = configured(settings, lake, tmp_path)
    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    registry = BatchModelRegistry(redis.Redis.from_url(s.redis_url), RedisKeys(s.namespace))
    announced: list[tuple[str, str]] = []

    first = run(s, options(), announce=lambda k, v: announced.append((k, v)))
    assert first.promoted, first.reason
    assert registry.current("transaction") == first.version
    assert announced == [("transaction", first.version)]
    scores = first.metrics["scores"]
    assert "production_hybrid" not in scores  # the incumbent was the online score alone
    assert scores["new_hybrid"]["average_precision"] > scores["online_logged"]["average_precision"]
    for name in (
        "report.md",
        "metrics.json",
        "card.json",
        "pr.png",
        "roc.png",
        "confusion.png",
        "importances.png",
        "scores.png",
    ):
        assert (first.run_dir / name).stat().st_size > 0, name
    report = (first.run_dir / "report.md").read_text()
    assert "PROMOTED" in report and "online (as served)" in report

    # What was published is what was evaluated: signed, and it verifies with the key.
    _, blob = registry.current_blob("transaction")
    model = weights.verify(
        blob, KEY.encode(), kind="transaction", feature_set_version=model_fsv("transaction")
    )
    assert model.version == first.version
    assert model.card.review_threshold <= model.card.block_threshold
    assert {lookup.key for lookup in model.lookups} == {"entity_id", "scope_id"}

    # Same data, same cut-off: the new model cannot beat production by the margin.
    second = run(s.replace(promotion_margin=0.05), options())
    assert not second.promoted
    assert "not better by the margin" in second.reason
    assert "production_hybrid" in second.metrics["scores"]
    assert registry.current("transaction") == first.version, "production must be untouched"
    assert "NOT promoted" in (second.run_dir / "report.md").read_text()

    forced = run(s.replace(promotion_margin=0.05), options(force=True))
    assert forced.promoted and "forced" in forced.reason
    assert registry.current("transaction") == forced.version

    assert cli.main(["rollback", "--kind", "transaction", "--no-announce"]) == 0
    assert registry.current("transaction") == first.version


def model_fsv(kind: str) -> str:
    from models.features import FEATURE_SET_VERSIONS

    return FEATURE_SET_VERSIONS[kind]  # type: ignore[index]


def test_email_retrain_trains_a_text_model(settings: Settings, lake: Path, tmp_path: Path):
    s = configured(settings, lake, tmp_path)
    outcome = run(s, options("email", dry_run=True))
    assert not outcome.promoted and outcome.reason.startswith("dry run")
    new = outcome.metrics["scores"]["new_batch"]
    assert new["average_precision"] > 0.9, new
    card = json.loads((outcome.run_dir / "card.json").read_text())
    assert any(name.startswith("tok_") for name in card["feature_names"])
    assert RedisKeys(s.namespace).batch_model_current("email")
    assert (
        BatchModelRegistry(redis.Redis.from_url(s.redis_url), RedisKeys(s.namespace)).current(
            "email"
        )
        is None
    ), "a dry run publishes nothing"


def test_cli_retrain_announces_on_kafka(
    settings: Settings, lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    s = configured(settings, lake, tmp_path)
    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    code = cli.main(
        ["retrain", "--kind", "transaction", "--cutoff", "2026-01-03", "--profile-period-s", "3600"]
    )
    assert code == 0
    consumer = KafkaConsumer(
        Topics.for_namespace(s.namespace).model_updates,
        bootstrap_servers=s.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    updates = [msgspec.json.decode(m.value, type=ModelUpdate) for m in consumer]
    consumer.close()
    current = BatchModelRegistry(redis.Redis.from_url(s.redis_url), RedisKeys(s.namespace)).current(
        "transaction"
    )
    assert [(u.kind, u.version) for u in updates] == [("transaction", current)]
    assert cli.main(["rollback", "--kind", "transaction", "--no-announce"]) == 1  # nothing before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lake-dir", "/nonexistent/lake"], "no lake at /nonexistent/lake"),
        (["--since", "2026-01-05", "--cutoff", "2026-01-03"], "is not before the cut-off"),
        (["--cutoff", "2025-06-01"], "holds no scored transactions before the cut-off"),
        (["--min-positives", "100000"], "too few labels"),
    ],
)
def test_cli_retrain_refuses_with_a_clear_message(
    settings: Settings,
    lake: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
):
    s = configured(settings, lake, tmp_path)
    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    base = ["retrain", "--kind", "transaction", "--no-announce", "--dry-run"]
    if "--cutoff" not in argv:
        base += ["--cutoff", "2026-01-03"]
    assert cli.main(base + argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_empty_lake_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "lake").mkdir()
    assert cli.main(["retrain", "--lake-dir", str(tmp_path / "lake"), "--dry-run"]) == 1
    assert "is empty" in capsys.readouterr().err
