"""The per-role Redis users (``models.redis_acl``) against a real Redis that loads the ACL.

Not too loose: the workers' user gets NOPERM when it tries to publish, roll back or overwrite
a batch model, and every role is refused what is not its own. Not too tight: the batch
job's real registry publishes and rolls back as ``batch``, a real ``python -m stream worker``
process runs as ``worker`` (loads the batch model, scores, raises alerts, learns from labels
and checkpoints) with not one refusal in ``ACL LOG``, and the alerts page's own code reads
those alerts and records a verdict as ``alerts-page``.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError

from local import RedisServer
from local.redis import server_version
from models import redis_acl, weights
from models.batch_registry import BatchModelRegistry, load_current_async
from models.events import Alert, ScoredEvent, decode
from models.features import FEATURE_SET_VERSIONS
from models.names import EVENT_KINDS, RedisKeys, Topics
from models.online import OnlineModel
from models.registry import OnlineCheckpoints
from models.settings import Settings
from models.topology import ensure_topics
from stream.alerts_page.feed import AlertFeed
from stream.alerts_page.reviews import ReviewDesk
from tests import factories
from tests.integration.harness import WorkerProcess, collect, publish, scored_all

pytestmark = pytest.mark.integration

KEY = "acl-test-signing-key"


class AclRedis:
    """A Redis loading the ACL of one namespace, and a client per role."""

    def __init__(self, tmp: Path, *, persistent: bool = False) -> None:
        self.namespace = "acl" + uuid.uuid4().hex[:8]
        self.keys = RedisKeys(self.namespace)
        self.passwords = {r.user: secrets.token_hex(16) for r in redis_acl.roles("x")}
        acl = redis_acl.render(self.namespace, self.passwords, redis_version=server_version())
        self.server = RedisServer(
            acl=acl,
            user="admin",
            password=self.passwords["admin"],
            data_dir=tmp,
            log_dir=tmp,
            persistent=persistent,
        )

    def url(self, user: str) -> str:
        return self.server.url_for(user, self.passwords[user])

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user))

    def denials(self, user: str) -> list[dict[str, object]]:
        """What ``ACL LOG`` recorded as refused to ``user``."""
        return [e for e in self.client("admin").acl_log() if e["username"] == user]


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    target = AclRedis(tmp_path_factory.mktemp("redis-acl"))
    target.server.start()
    yield target
    target.server.stop()


@functools.cache
def signed(version: str) -> bytes:
    """The signed blob of ``version`` (made once: a model card holds its creation time)."""
    # Review threshold 0: with this model every transaction raises an alert.
    model = factories.batch_model(version, review=0.0, block=1.0)
    return weights.sign(model, KEY.encode())


def test_no_anonymous_access_and_wrong_passwords_are_refused(acl_redis: AclRedis):
    with pytest.raises(AuthenticationError):
        redis.Redis(port=acl_redis.server.port).ping()
    with pytest.raises(AuthenticationError):
        redis.Redis.from_url(acl_redis.server.url_for("batch", "not-the-password")).ping()
    with pytest.raises(AuthenticationError):  # the default user is off, whatever its rules
        redis.Redis.from_url(acl_redis.server.url_for("default", "any-password")).ping()
    assert acl_redis.client("worker").ping()


def test_what_scripts_wrote_survives_a_restart_from_the_append_only_file(tmp_path: Path):
    """Redis replays its append-only file as the default user (Redis 7.0) and checks the
    commands of each MULTI/EXEC block there (a script's writes) against that user's rules.
    With none (``user default reset off``), a restart dropped every script's writes: under
    ``make up`` the online checkpoint went back to its version before each restart."""
    target = AclRedis(tmp_path, persistent=True)
    target.server.start()
    try:

        async def save() -> int:
            client = aioredis.Redis.from_url(target.url("worker"))
            try:
                checkpoints = OnlineCheckpoints(client, target.keys, marker_ttl_s=3600)
                models = {kind: OnlineModel(kind) for kind in EVENT_KINDS}
                return await checkpoints.save(
                    models, base_version=0, label_offset=41, learned_ids=["txn-1", "txn-2"]
                )
            finally:
                await client.aclose()

        assert asyncio.run(save()) == 1
        target.server.stop()
        target.server.start()
        admin = target.client("admin")
        assert admin.hget(target.keys.online_checkpoint, "version") == b"1"
        assert admin.hget(target.keys.online_checkpoint, "label_offset") == b"41"
        assert admin.exists(target.keys.labelled("txn-1"), target.keys.labelled("txn-2")) == 2
        assert target.denials("default") == []
    finally:
        target.server.stop()


def test_only_the_batch_user_writes_batch_models_and_the_worker_reads_them(acl_redis: AclRedis):
    keys, kind = acl_redis.keys, "transaction"
    batch = BatchModelRegistry(acl_redis.client("batch"), keys)
    assert batch.publish(kind, "acl-v1", signed("acl-v1")) is None
    assert batch.publish(kind, "acl-v2", signed("acl-v2")) == "acl-v1"

    worker = acl_redis.client("worker")
    as_worker = BatchModelRegistry(worker, keys)
    with pytest.raises(NoPermissionError):
        as_worker.publish(kind, "acl-v3", signed("acl-v3"))
    with pytest.raises(NoPermissionError):
        as_worker.rollback(kind)
    for attempt in (
        lambda: worker.set(keys.batch_model_current(kind), "acl-v1"),
        lambda: worker.delete(keys.batch_model_current(kind)),
        lambda: worker.set(keys.batch_model(kind, "acl-v2"), b"tampered"),
    ):
        with pytest.raises(NoPermissionError):
            attempt()
    assert acl_redis.denials("worker"), "refusals are recorded in ACL LOG"

    # Nothing the worker tried changed anything.
    assert batch.versions(kind) == ["acl-v2", "acl-v1"]
    assert batch.blob(kind, "acl-v2") == signed("acl-v2")
    assert batch.blob(kind, "acl-v3") is None

    # The worker reads the current model, as its poll does, and it verifies.
    async def read() -> tuple[str, bytes] | None:
        client = aioredis.from_url(acl_redis.url("worker"))
        try:
            return await load_current_async(client, keys, kind)
        finally:
            await client.aclose()

    current = asyncio.run(read())
    assert current is not None and current[0] == "acl-v2"
    model = weights.verify(
        current[1], KEY.encode(), kind=kind, feature_set_version=FEATURE_SET_VERSIONS[kind]
    )
    assert model.version == "acl-v2"

    # Rolling back is the batch user's too.
    assert batch.rollback(kind) == ("acl-v2", "acl-v1")
    assert batch.publish(kind, "acl-v2", signed("acl-v2")) == "acl-v1"


@pytest.mark.parametrize(
    ("user", "allowed", "refused"),
    [
        (
            "batch",
            ["ping"],
            ["get served", "hset online", "xrevrange alerts", "get review", "flushall"],
        ),
        (
            "alerts-page",
            ["xrevrange alerts", "get review", "set review", "xadd reviews"],
            ["xadd alerts", "get batch", "get served", "hset online", "keys"],
        ),
        (
            "grafana",
            ["ping", "xrevrange alerts", "xlen alerts"],
            ["xadd alerts", "get review", "get batch", "get served", "config"],
        ),
        (
            "worker",
            ["get batch", "get served", "hget online", "xadd alerts"],
            ["xrevrange alerts", "get review", "set review", "flushall", "config"],
        ),
    ],
)
def test_each_role_is_refused_what_is_not_its_own(acl_redis, user, allowed, refused):
    keys = acl_redis.keys
    client = acl_redis.client(user)
    commands = {
        "ping": lambda: client.ping(),
        "get served": lambda: client.get(keys.served("e1")),
        "hget online": lambda: client.hget(keys.online_checkpoint, "version"),
        "hset online": lambda: client.hset(keys.online_checkpoint, "probe", "1"),
        "get batch": lambda: client.get(keys.batch_model_current("transaction")),
        "xrevrange alerts": lambda: client.xrevrange(keys.alerts_stream, count=1),
        "xlen alerts": lambda: client.xlen(keys.alerts_stream),
        "xadd alerts": lambda: client.xadd(keys.alerts_stream, {"alert": b"{}"}, maxlen=10),
        "get review": lambda: client.get(keys.review("a1")),
        "set review": lambda: client.set(keys.review("a1"), b"x", ex=5),
        "xadd reviews": lambda: client.xadd(keys.reviews_stream, {"review": b"{}"}, maxlen=10),
        "flushall": lambda: client.flushall(),
        "keys": lambda: client.keys("*"),
        "config": lambda: client.config_get("requirepass"),
    }
    for name in allowed:
        commands[name]()
    for name in refused:
        with pytest.raises(NoPermissionError):
            commands[name]()


def test_a_real_worker_runs_as_the_worker_user_and_the_alerts_page_as_its_own(
    acl_redis: AclRedis, kafka_bootstrap: str, tmp_path: Path
):
    ns, keys = acl_redis.namespace, acl_redis.keys
    topics = Topics.for_namespace(ns)
    base = Settings(
        namespace=ns,
        kafka_bootstrap=kafka_bootstrap,
        model_signing_key=KEY,
        partitions=4,
        checkpoint_interval_s=0.5,
    )
    ensure_topics(base)
    batch = BatchModelRegistry(acl_redis.client("batch"), keys)
    batch.publish("transaction", "acl-live", signed("acl-live"))
    admin = acl_redis.client("admin")
    admin.acl_log_reset()

    worker = WorkerProcess(base.replace(redis_url=acl_redis.url("worker")), tmp_path).start()
    try:
        txns = [factories.transaction(n) for n in range(300)]
        emails = [factories.email(n) for n in range(100)]
        # A label before its event: it is parked (waiting-label) and sent again later.
        publish(base, topics.labels, [factories.label(txns[-1].event_id, "transaction", True)])
        publish(base, topics.transactions, txns)
        publish(base, topics.emails, emails)
        wanted = {e.event_id for e in txns + emails}
        values = collect(
            base,
            topics.scored,
            scored_all(wanted),
            worker=worker,
        )
        scored = [decode(v, ScoredEvent) for v in values]
        assert len(scored) == len(wanted), "every event scored once"
        assert {s.batch_version for s in scored if s.kind == "transaction"} == {"acl-live"}, (
            "the worker read and verified the batch model as its own user"
        )

        labels = [factories.label(t.event_id, "transaction", t.amount > 60) for t in txns]
        labels += [factories.label(e.event_id, "email", e.event_id.endswith("7")) for e in emails]
        publish(base, topics.labels, labels)

        def learned(kind: str) -> int:
            state = admin.hget(keys.online_checkpoint, f"state:{kind}")
            if state is None:
                return 0
            return OnlineModel.from_state(msgspec.json.decode(state)).learned

        deadline = time.monotonic() + 60
        while (learned("transaction"), learned("email")) != (len(txns), len(emails)):
            assert worker.alive(), worker.log_tail()
            assert time.monotonic() < deadline, "labels were not learned\n" + worker.log_tail()
            time.sleep(0.5)
        assert int(admin.hget(keys.online_checkpoint, "version")) >= 1
        assert admin.exists(keys.labelled(txns[0].event_id))
        alerted = [
            decode(fields[b"alert"], Alert).event_id
            for _, fields in admin.xrange(keys.alerts_stream)
            if fields.get(b"alert", b"{}") != b"{}"  # not a probe of the test above
        ]
        assert set(alerted) >= {t.event_id for t in txns}, "the worker wrote the alerts"
        assert worker.alive()
    finally:
        worker.stop()
    assert "NOPERM" not in worker.log_path.read_text()
    assert acl_redis.denials("worker") == [], "the worker's ACL is too tight"
    assert batch.current("transaction") == "acl-live"

    # The alerts page's code, as its user: loads those alerts and records a verdict.
    async def review() -> str:
        client = aioredis.from_url(acl_redis.url("alerts-page"))
        sent: list[bytes] = []

        async def send_label(key: bytes, value: bytes) -> None:
            sent.append(value)

        try:
            feed = AlertFeed(client, keys, capacity=1000)
            await feed.load()
            assert len(feed) > 0
            _, fields = (await client.xrevrange(keys.alerts_stream, count=1))[0]
            alert = decode(fields[b"alert"], Alert)  # the newest: the worker's
            desk = ReviewDesk(client, keys, send_label, keep_s=60, stream_maxlen=100)
            done = await desk.record(alert, verdict="confirmed", reviewer="alice")
            assert len(sent) == 1
            return done.alert_id
        finally:
            await client.aclose()

    alert_id = asyncio.run(review())
    assert admin.get(keys.review(alert_id)) is not None
    assert acl_redis.denials("alerts-page") == [], "the alerts page's ACL is too tight"
