"""Every Kafka client of the project over SASL and TLS, against a real broker that requires it.

Three times: a broker (``local.kafka.KafkaBroker`` with ``sasl_users``) with one
SASL_PLAINTEXT listener and SASL/PLAIN, one with a SASL_SSL listener (TLS with a certificate
signed by a CA made for the test with openssl) and SCRAM-SHA-512 credentials, each accepting
one user, and one with an SSL listener and no SASL (``tls`` only).
With ``FRAUD_KAFKA_SECURITY_PROTOCOL``, ``FRAUD_KAFKA_SASL_MECHANISM``, that user's
credentials and (TLS) ``FRAUD_KAFKA_SSL_CAFILE``: topic creation (kafka-python admin), the
producers' publisher, the model announcement (kafka-python producers), the lake sink
(kafka-python consumer), a real ``python -m stream worker`` (Faust's consumer, producer and
changelogs, and the aiokafka consumer of model announcements) and a real alerts page
(aiokafka producer of verdicts) all authenticate and do their work. A wrong password is
refused at once, with a message that names the variables to check and never the password;
over TLS, a client that does not trust the broker's CA is refused too.

Not tested here: mutual TLS (the project has no client-certificate settings) and
SCRAM-SHA-256; the unit tests check what each client is given for them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from batch.announce import announce_model
from batch.lake import read_lake, run_sink
from local import BrokerTls, KafkaBroker
from models import weights
from models.batch_registry import BatchModelRegistry
from models.events import Alert, Label, ScoredEvent, decode
from models.names import RedisKeys, Topics
from models.settings import Settings
from models.topology import KafkaUnavailable, ensure_topics
from producers.publisher import Publisher
from tests import factories
from tests.integration.harness import REPO, AlertsPageProcess, TopicTail, WorkerProcess

pytestmark = pytest.mark.integration

USER = "fraud"
KEY = "sasl-test-signing-key"
TOKEN = "sasl-test-review-token-0123456789"


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_tls(base: Path) -> BrokerTls:
    """A CA and a broker certificate it signs for 127.0.0.1, made with openssl for the test."""
    ca_key, ca, key, csr, cert = (base / n for n in ("ca.key", "ca.pem", "b.key", "b.csr", "b.pem"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
            "-days", "2", "-subj", "/CN=fraudstream test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    san = base / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", san)  # fmt: skip
    return BrokerTls(certificate_chain=cert.read_text(), key=key.read_text(), ca=ca.read_text())


@pytest.fixture(scope="module", params=["plain", "scram-tls", "tls"])
def sasl_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KafkaBroker, str]]:
    """The broker and its user's password ("" for ``tls``, which has no SASL users)."""
    base = tmp_path_factory.mktemp(f"kafka-{request.param}")
    password = "" if request.param == "tls" else secrets.token_hex(16)
    broker = KafkaBroker(
        data_dir=base / "data",
        log_dir=base,
        sasl_users={USER: password} if password else None,
        scram=request.param == "scram-tls",
        tls=make_tls(base) if request.param.endswith("tls") else None,
    )
    broker.start()
    yield broker, password
    broker.stop()


def sasl_settings(
    broker: KafkaBroker, password: str, namespace: str, redis_url: str, **more: Any
) -> Settings:
    """What a deployment sets for this broker: its protocol, the SASL user if it has users,
    the CA if it speaks TLS."""
    sasl = (
        {
            "kafka_sasl_mechanism": "SCRAM-SHA-512" if broker.scram else "PLAIN",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": password,
        }
        if broker.sasl_users
        else {}
    )
    return Settings(
        namespace=namespace,
        kafka_bootstrap=broker.bootstrap,
        kafka_security_protocol=broker.listener,
        kafka_ssl_cafile=str(broker.ca_file or ""),
        redis_url=redis_url,
        **sasl,
        **more,
    )


def send(settings: Settings, topic: str, events: Iterable[Any]) -> None:
    """Publish with the producers' own publisher (kafka-python, over SASL or TLS)."""
    with Publisher.from_settings(settings, timeout_s=10) as publisher:
        for event in events:
            if isinstance(event, Label):
                publisher.publish_label(topic, event)
            else:
                publisher.publish(topic, event)


def read_until(
    settings: Settings, topic: str, done: Callable[[list[bytes]], bool], timeout_s: float = 90
) -> list[bytes]:
    tail = TopicTail(settings, topic)
    deadline = time.monotonic() + timeout_s
    try:
        while not done(tail.values):
            assert time.monotonic() < deadline, f"only {tail.describe()}"
            tail.poll(0.5)
        return tail.values
    finally:
        tail.close()


@pytest.mark.parametrize("sasl_broker", ["plain", "scram-tls"], indirect=True)
def test_a_wrong_password_is_refused_at_once_with_a_clear_error(sasl_broker, namespace, tmp_path):
    broker, password = sasl_broker
    wrong = "not-the-password-" + secrets.token_hex(4)
    settings = sasl_settings(broker, wrong, namespace, "redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as refused:
        ensure_topics(settings)
    assert time.monotonic() - started < 10, "no retrying against a refusal"
    message = str(refused.value)
    assert f"Kafka at {broker.bootstrap} refused the credentials of SASL user 'fraud'" in message
    assert "Authentication failed" in message  # the broker's own words
    assert "FRAUD_KAFKA_SASL_USERNAME and FRAUD_KAFKA_SASL_PASSWORD" in message
    assert wrong not in message and password not in message

    with pytest.raises(KafkaUnavailable, match="refused the credentials"):
        Publisher.from_settings(settings, timeout_s=3)

    # The worker stops before Faust starts, with the same message and exit code 1.
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    worker = subprocess.run(
        [sys.executable, "-m", "stream", "--datadir", str(tmp_path), "worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert "refused the credentials of SASL user 'fraud'" in worker.stderr
    assert wrong not in worker.stdout + worker.stderr


@pytest.mark.parametrize("sasl_broker", ["scram-tls", "tls"], indirect=True)
def test_a_client_that_does_not_trust_the_brokers_ca_is_refused(sasl_broker, namespace):
    broker, password = sasl_broker
    untrusting = sasl_settings(broker, password, namespace, "redis://127.0.0.1:1/0").replace(
        kafka_ssl_cafile=""  # the system's CAs, which never signed the test CA
    )
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as refused:
        ensure_topics(untrusting)
    assert time.monotonic() - started < 15
    message = str(refused.value)
    assert "certificate" in message and "FRAUD_KAFKA_SSL_CAFILE" in message, message
    assert not password or password not in message


def test_every_client_authenticates_a_worker_scores_and_the_alerts_page_sends_verdicts(
    sasl_broker, namespace, redis_url, tmp_path: Path
):
    broker, password = sasl_broker
    settings = sasl_settings(
        broker,
        password,
        namespace,
        redis_url,
        model_signing_key=KEY,
        checkpoint_interval_s=0.5,
        txn_review_threshold=1e-6,  # every transaction raises an alert
        txn_block_threshold=1.0,
        review_tokens=f"alice:{TOKEN}",
    )
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    assert ensure_topics(settings), "the admin client created the topics"

    worker = WorkerProcess(settings, tmp_path).start()
    page: AlertsPageProcess | None = None
    try:
        txns = [factories.transaction(n) for n in range(200)]
        send(settings, topics.transactions, txns)
        wanted = {t.event_id for t in txns}
        scored = read_until(
            settings,
            topics.scored,
            lambda v: wanted <= {decode(x, ScoredEvent).event_id for x in v} or not worker.alive(),
        )
        assert worker.alive(), worker.log_tail()
        assert len(scored) == len(wanted), f"every event scored once, over {broker.listener}"

        # A batch model announced on Kafka (kafka-python producer) reaches the worker's
        # aiokafka consumer of announcements.
        r = redis.Redis.from_url(redis_url)
        blob = weights.sign(factories.batch_model("sasl-v1"), KEY.encode())
        BatchModelRegistry(r, keys).publish("transaction", "sasl-v1", blob)
        announce_model(settings, "transaction", "sasl-v1")
        deadline = time.monotonic() + 30
        while "model announcement: transaction sasl-v1" not in worker.log_path.read_text():
            assert time.monotonic() < deadline, "no announcement heard\n" + worker.log_tail()
            time.sleep(0.3)

        # The alerts page's aiokafka producer publishes a verdict as a label.
        page = AlertsPageProcess(settings, tmp_path).start()
        _, fields = r.xrange(keys.alerts_stream, count=1)[0]
        alert = msgspec.json.decode(fields[b"alert"], type=Alert)
        request = urllib.request.Request(
            f"{page.url}/api/alerts/{alert.alert_id}/review",
            data=json.dumps({"verdict": "confirmed"}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 201  # created: the verdict is recorded
        labels = read_until(settings, topics.labels, lambda v: len(v) >= 1)
        verdict = decode(labels[0], Label)
        assert (verdict.event_id, verdict.source) == (alert.event_id, "analyst")
    finally:
        if page is not None:
            page.stop()
        worker.stop()

    # The lake sink's kafka-python consumer reads the scored events and the verdict.
    stats = run_sink(settings, tmp_path / "lake", once=True, connect_timeout_s=10)
    assert stats.rows == {"scored": len(txns), "labels": 1}
    assert read_lake(tmp_path / "lake", "scored").collect().height == len(txns)
