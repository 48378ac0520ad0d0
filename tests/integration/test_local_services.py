"""The local Kafka and Redis that every other integration test stands on: they work, and
when they cannot work they say why, quickly, instead of hanging or skipping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from local import KafkaBroker, RedisServer, ServiceError
from models import redis_acl

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_broker_creates_topics_and_round_trips_a_message(kafka_broker: KafkaBroker, namespace):
    topic = f"{namespace}.roundtrip.v1"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    producer.send(topic, key=b"card-1", value=b"hello kafka").get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=f"{namespace}-group",
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    received: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while not received and time.monotonic() < deadline:
            received += [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()
    assert received == [(b"card-1", b"hello kafka")]


def test_broker_auto_creates_topics_with_four_partitions(kafka_broker: KafkaBroker, namespace):
    topic = f"{namespace}.auto.v1"
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    producer.send(topic, value=b"x").get(timeout=20)
    assert producer.partitions_for(topic) == {0, 1, 2, 3}
    producer.close()


def test_redis_answers_ping_and_set_get(redis_server: RedisServer, redis_url: str, namespace):
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.set(f"{namespace}:greeting", "hello redis")
    assert client.get(f"{namespace}:greeting") == b"hello redis"
    assert client.config_get("appendonly") == {"appendonly": "no"}
    client.close()


def _check_quick_failure(start, match: str, within_s: float = 10.0) -> ServiceError:
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match=match) as info:
        start()
    assert time.monotonic() - t0 < within_s, "a failure must be reported quickly"
    return info.value


def test_taken_port_is_named():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        _check_quick_failure(RedisServer(port).start, f"port {port} is already in use")
        _check_quick_failure(KafkaBroker(port).start, f"port {port} is already in use")


def test_missing_java_says_how_to_install_it():
    broker = KafkaBroker(java="no-such-java-binary")
    _check_quick_failure(broker.start, "Java 17\\+ is required: apt-get install -y openjdk-17")


def test_missing_jars_say_run_make_setup(tmp_path):
    _check_quick_failure(KafkaBroker(jars_dir=tmp_path).start, "run `make setup`")


def test_missing_redis_server_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    _check_quick_failure(RedisServer().start, "apt-get install -y redis-server")


def test_server_that_dies_at_startup_reports_its_log(tmp_path):
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot load config'\nexit 3\n")
    fake.chmod(0o755)
    error = _check_quick_failure(
        RedisServer(binary=str(fake), data_dir=tmp_path / "d").start, "exited with code 3"
    )
    assert "FATAL: cannot load config" in str(error)


def test_server_that_never_gets_ready_times_out_and_is_killed(tmp_path):
    fake = tmp_path / "silent-redis-server"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    server = RedisServer(binary=str(fake), data_dir=tmp_path / "d")
    _check_quick_failure(lambda: server.start(timeout_s=1), "not ready after 1 s")
    assert server.process is None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_help_and_bad_arguments():
    assert _cli("--help").returncode == 0
    bad = _cli("redis", "frobnicate")
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_starts_reports_and_stops_a_detached_redis(tmp_path):
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    where = ["--port", str(free), "--dir", str(tmp_path / "data"), "--run-dir", str(tmp_path)]
    started = _cli("redis", "start", *where)
    try:
        assert started.returncode == 0, started.stderr
        assert (tmp_path / "redis.pid").exists()
        assert redis.Redis(port=free).ping()
        assert _cli("redis", "status", *where).returncode == 0
    finally:
        stopped = _cli("redis", "stop", *where)
    assert stopped.returncode == 0, stopped.stderr
    assert _cli("redis", "status", *where).returncode == 1
    assert (tmp_path / "data" / "appendonlydir").is_dir()  # make up's Redis persists


def test_make_ups_redis_has_one_user_per_role_and_no_anonymous_access(tmp_path):
    """``make up`` starts Redis with ``--acl-from-env``: the users of ``models.redis_acl``,
    as docker compose runs it, so only the batch job may write batch models."""
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    passwords = {role.user: f"{role.user}-password-0123456789" for role in redis_acl.roles("fraud")}
    env = {
        **os.environ,
        "FRAUD_NAMESPACE": "fraud",
        **{role.password_variable: passwords[role.user] for role in redis_acl.roles("fraud")},
    }
    where = ["--port", str(port), "--dir", str(tmp_path / "data"), "--run-dir", str(tmp_path)]
    started = _cli("redis", "start", *where, "--acl-from-env", env=env)
    try:
        assert started.returncode == 0, started.stderr
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        worker = redis.Redis(port=port, username="worker", password=passwords["worker"])
        assert worker.set("fraud:served:e1", b"{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.set("fraud:model:batch:transaction:current", b"v9")
        batch = redis.Redis(port=port, username="batch", password=passwords["batch"])
        assert batch.set("fraud:model:batch:transaction:current", b"v9")
    finally:
        stopped = _cli("redis", "stop", *where)
    assert stopped.returncode == 0, stopped.stderr


def test_acl_from_env_without_the_passwords_says_which_are_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    where = ["--dir", str(tmp_path / "data"), "--run-dir", str(tmp_path)]
    started = _cli("redis", "start", *where, "--acl-from-env", env=env)
    assert started.returncode == 1
    assert "no password for Redis user(s)" in started.stderr and "worker" in started.stderr
    assert "Traceback" not in started.stderr
    misplaced = _cli("kafka", "start", *where, "--acl-from-env")
    assert misplaced.returncode == 2 and "--acl-from-env goes with" in misplaced.stderr
