"""The Redis ACL rendered from the key layout: who may read and write which key.

Patterns are matched here the way Redis matches them (``*`` globs; the namespace has no
other glob character); tests/integration/test_redis_acl.py loads the same rules into a real
Redis and runs a real worker under them.
"""

from __future__ import annotations

import hashlib
import inspect
from fnmatch import fnmatchcase

import pytest

from models import redis_acl
from models.names import EVENT_KINDS, RedisKeys

NS = "fraud"
PASSWORDS = {role.user: f"{role.user}-password-0123456789" for role in redis_acl.roles(NS)}


ARGUMENTS = {
    "event_id": "e1",
    "alert_id": "alert-e1",
    "kind": "transaction",
    "version": "v1",
    "scope": "terminal",
    "entity_id": "term-1",
}


def sample_keys(keys: RedisKeys) -> dict[str, str]:
    """One concrete key of every kind RedisKeys defines (properties and methods alike), so a
    key added there and forgotten here fails :func:`test_every_key_has_an_owner`."""
    samples = {}
    for name, member in inspect.getmembers(type(keys)):
        if name.startswith("_") or name == "namespace":
            continue
        if isinstance(member, property):
            samples[name] = getattr(keys, name)
        elif callable(member):
            params = list(inspect.signature(member).parameters)[1:]
            samples[name] = getattr(keys, name)(*(ARGUMENTS[p] for p in params))
    return samples


def can(user: str, access: str, key: str) -> bool:
    """Whether ``user`` may ``access`` ("read" or "write") ``key`` under the rendered rules."""
    role = {r.user: r for r in redis_acl.roles(NS)}[user]
    if role.everything:
        return True
    patterns = role.read_write + (role.read_only if access == "read" else role.write_only)
    return any(fnmatchcase(key, pattern) for pattern in patterns)


# Who reads and who writes each kind of key (admin: everyone's keys, not listed).
EXPECTED = {
    "online_checkpoint": ({"worker"}, {"worker"}),
    "served": ({"worker"}, {"worker"}),
    "labelled": ({"worker"}, {"worker"}),
    "waiting_label": ({"worker"}, {"worker"}),
    "alerted": ({"worker"}, {"worker"}),
    "label_outcomes": ({"worker"}, {"worker"}),
    "label_positives": ({"worker"}, {"worker"}),
    "alerts_stream": ({"alerts-page", "grafana"}, {"worker"}),
    "review": ({"alerts-page"}, {"alerts-page"}),
    "reviews_stream": ({"alerts-page"}, {"alerts-page"}),
    "batch_model": ({"worker", "batch"}, {"batch"}),
    "batch_model_current": ({"worker", "batch"}, {"batch"}),
    "batch_model_history": ({"worker", "batch"}, {"batch"}),
}


def test_every_key_has_an_owner():
    assert set(sample_keys(RedisKeys(NS))) == set(EXPECTED), "a new key needs a role"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_who_reads_and_writes_each_key(name):
    key = sample_keys(RedisKeys(NS))[name]
    readers, writers = EXPECTED[name]
    users = {r.user for r in redis_acl.roles(NS)} - {"admin"}
    assert {u for u in users if can(u, "read", key)} == readers, key
    assert {u for u in users if can(u, "write", key)} == writers, key
    assert can("admin", "write", key)


def test_only_the_batch_job_writes_batch_models_of_either_kind():
    keys = RedisKeys(NS)
    for kind in EVENT_KINDS:
        for key in (
            keys.batch_model(kind, "2026-01-01"),
            keys.batch_model_current(kind),
            keys.batch_model_history(kind),
        ):
            writers = {r.user for r in redis_acl.roles(NS) if can(r.user, "write", key)}
            assert writers == {"batch", "admin"}, key
            assert can("worker", "read", key)


def test_patterns_stay_inside_their_namespace():
    for role in redis_acl.roles("fraud"):
        if role.everything:
            continue
        for pattern in role.read_write + role.read_only + role.write_only:
            assert pattern.startswith("fraud:"), pattern
            assert not fnmatchcase("fraud2:served:x", pattern)
            assert not fnmatchcase("other:model:batch:transaction:current", pattern)


def test_render_stores_only_password_hashes_and_switches_the_default_user_off():
    text = redis_acl.render(NS, PASSWORDS)
    lines = text.splitlines()
    assert lines[0] == "user default reset off ~* &* +@all"  # off: nobody logs in as it
    assert [line.split()[1] for line in lines[1:]] == [r.user for r in redis_acl.roles(NS)]
    for role in redis_acl.roles(NS):
        password = PASSWORDS[role.user]
        assert password not in text
        digest = hashlib.sha256(password.encode()).hexdigest()
        assert f"user {role.user} reset on #{digest} " in text
    worker = next(line for line in lines if line.startswith("user worker "))
    assert "%R~fraud:model:batch:transaction:*" in worker
    assert "~fraud:model:batch" not in worker.replace("%R~fraud:model:batch", "")
    assert "-@all" in worker and "+@all" not in worker
    assert lines[-1].endswith("~* &* +@all"), "admin has everything"


def test_commands_older_redis_lacks_are_left_out():
    assert "+client|setinfo" in redis_acl.render(NS, PASSWORDS, redis_version=(7, 4))
    assert "+client|setinfo" not in redis_acl.render(NS, PASSWORDS, redis_version=(7, 0))


def test_render_refuses_missing_or_short_passwords_and_glob_namespaces():
    with pytest.raises(redis_acl.AclError, match=r"no password for Redis user\(s\) grafana"):
        redis_acl.render(NS, {k: v for k, v in PASSWORDS.items() if k != "grafana"})
    with pytest.raises(redis_acl.AclError, match="batch must have at least 16"):
        redis_acl.render(NS, {**PASSWORDS, "batch": "short"})
    with pytest.raises(redis_acl.AclError, match="namespace"):
        redis_acl.roles("fraud*")


def test_compose_template_requires_every_password():
    text = redis_acl.compose_template()
    for role in redis_acl.roles(NS):
        variable = role.password_variable
        assert f">${{{variable}:?set {variable} in .env" in text
    assert "${FRAUD_NAMESPACE:-fraud}:model:batch:transaction:*" in text
    assert "#" not in text


def test_the_command_line_writes_a_private_acl_file(tmp_path, monkeypatch, capsys):
    for role in redis_acl.roles(NS):
        monkeypatch.setenv(role.password_variable, PASSWORDS[role.user])
    out = tmp_path / "users.acl"
    assert redis_acl.main(["render", "--namespace", "abc", "--out", str(out)]) == 0
    assert out.read_text() == redis_acl.render("abc", PASSWORDS)
    assert out.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv("REDIS_ADMIN_PASSWORD")
    assert redis_acl.main(["render"]) == 1
    assert "no password for Redis user(s) admin" in capsys.readouterr().err


def test_redis_url_quotes_the_credentials():
    url = redis_acl.redis_url("alerts-page", "p@ss/word", "redis", 6379)
    assert url == "redis://alerts-page:p%40ss%2Fword@redis:6379/0"
