"""Redis users per role, with the keys each may read or write: only the batch job writes the
batch models that workers load and trust once verified.

The key patterns come from :class:`models.names.RedisKeys` (``RedisKeys(ns).served("*")``
and so on), so a key renamed there is renamed here. Every role gets only the commands its
code sends; a command or key outside its rules is refused with ``NOPERM`` and recorded in
``ACL LOG``. The ``default`` user is switched off: every connection must log in as a role
(its rules: :data:`DEFAULT_USER_RULES`).

Users (docs/security.md has the full table):

* ``worker`` (stream workers): reads the batch models, never writes them; writes the
  recent-alerts stream without reading it; reads and writes its online checkpoint, the
  served features, the one-label and one-alert markers, parked labels and label outcomes.
* ``batch`` (retrain, rollback, the scheduler): reads and writes the batch models, nothing
  else.
* ``alerts-page``: reads the recent alerts; reads and writes verdicts and their stream.
* ``grafana`` (Grafana's Redis data source): reads the recent alerts.
* ``admin`` (operators: health check, backups, ``ACL LOG``): everything.

Two renderings of the same rules:

* :func:`render` writes an ACL file (``aclfile``) with the passwords stored as SHA-256
  hashes (``#<hex>``), so the file holds no password: ``python -m models.redis_acl render``.
* :func:`compose_template` writes the same lines with ``${REDIS_<ROLE>_PASSWORD:?...}`` and
  ``${FRAUD_NAMESPACE:-fraud}`` for docker compose to fill in (the ``redis-acl`` config of
  docker-compose.yml, which a unit test keeps equal to this output):
  ``python -m models.redis_acl compose``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from models.names import EVENT_KINDS, RedisKeys

__all__ = [
    "COMPOSE_NAMESPACE",
    "COMPOSE_REDIS_VERSION",
    "AclError",
    "Role",
    "compose_template",
    "main",
    "passwords_from_env",
    "redis_url",
    "render",
    "roles",
]

MIN_PASSWORD_CHARS = 16
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]+")
COMPOSE_NAMESPACE = "${FRAUD_NAMESPACE:-fraud}"
"""The namespace as docker compose interpolates it."""
COMPOSE_REDIS_VERSION = (7, 4)
"""The Redis that docker-compose.yml runs (``redis:7.4``): what its ACL is rendered for."""

NEWER_COMMANDS = {"client|setinfo": (7, 2)}
"""Commands a role uses that older Redis versions do not know (an ACL rule naming an unknown
command stops Redis from loading the file). redis-py sends ``CLIENT SETINFO`` on every new
connection and ignores a refusal, but a refusal would fill ``ACL LOG``."""

_CONNECTION = ("ping", "client|setinfo")
_TRANSACTIONS = ("watch", "unwatch", "multi", "exec", "discard")


class AclError(ValueError):
    """The ACL cannot be rendered (a password missing or too short); the message says which."""


@dataclass(frozen=True)
class Role:
    """One Redis user: who uses it, the keys it may read and write, the commands it may send."""

    user: str
    used_by: str
    read_write: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    write_only: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    everything: bool = False

    @property
    def password_variable(self) -> str:
        """The environment variable holding this user's password (``REDIS_WORKER_PASSWORD``)."""
        return f"REDIS_{self.user.upper().replace('-', '_')}_PASSWORD"

    def rules(self, redis_version: tuple[int, int] = COMPOSE_REDIS_VERSION) -> list[str]:
        """The ACL rules after ``user <name> reset on <password>``: keys, then commands
        (``%R~`` read-only and ``%W~`` write-only key patterns need Redis 7)."""
        if self.everything:
            return ["~*", "&*", "+@all"]
        commands = [
            c for c in self.commands if NEWER_COMMANDS.get(c, (0, 0)) <= tuple(redis_version)
        ]
        return [
            *(f"~{p}" for p in self.read_write),
            *(f"%R~{p}" for p in self.read_only),
            *(f"%W~{p}" for p in self.write_only),
            "-@all",
            *(f"+{c}" for c in commands),
        ]


def roles(namespace: str) -> tuple[Role, ...]:
    """The roles of one namespace, their key patterns derived from :class:`RedisKeys`."""
    if not _NAMESPACE.fullmatch(namespace) and namespace != COMPOSE_NAMESPACE:
        # Settings allows no more than this; a glob character would widen every pattern.
        raise AclError(f"namespace {namespace!r} must be letters, digits, '-' or '_'")
    keys = RedisKeys(namespace)
    every = "*"
    batch_models = tuple(keys.batch_model(kind, every) for kind in EVENT_KINDS)
    return (
        Role(
            user="worker",
            used_by="stream workers (python -m stream worker)",
            read_write=(
                keys.online_checkpoint,
                keys.served(every),
                keys.labelled(every),
                keys.waiting_label(every),
                keys.alerted(every),
                keys.label_outcomes(every, every),
                keys.label_positives(every, every),
            ),
            read_only=batch_models,
            write_only=(keys.alerts_stream,),
            commands=(
                *_CONNECTION,
                *_TRANSACTIONS,
                "get",
                "mget",
                "set",
                "del",
                "hget",
                "hgetall",
                "hset",
                "expire",
                "zadd",
                "zcount",
                "zrange",
                "zrem",
                "zremrangebyscore",
                "zremrangebyrank",
                "xadd",
                # The per-batch Lua scripts (stream/worker.py); the commands they run are
                # checked against these same rules.
                "evalsha",
                "script|load",
            ),
        ),
        Role(
            user="batch",
            used_by="python -m batch retrain / rollback / schedule",
            read_write=batch_models,
            commands=(
                *_CONNECTION,
                *_TRANSACTIONS,
                "get",
                "set",
                "exists",
                "lpush",
                "ltrim",
                "lrange",
                "lindex",
                "lpop",
            ),
        ),
        Role(
            user="alerts-page",
            used_by="python -m stream alerts-page",
            read_write=(keys.review(every), keys.reviews_stream),
            read_only=(keys.alerts_stream,),
            commands=(
                *_CONNECTION,
                "multi",
                "exec",
                "discard",
                "get",
                "mget",
                "set",
                "del",
                "xadd",
                "xread",
                "xrevrange",
            ),
        ),
        Role(
            user="grafana",
            used_by="Grafana's Redis data source (the live alerts tables)",
            read_only=(keys.alerts_stream,),
            commands=("ping", "xrevrange", "xrange", "xlen"),
        ),
        Role(
            user="admin",
            used_by="operators: health check, backups (BGSAVE), ACL LOG",
            everything=True,
        ),
    )


DEFAULT_USER_RULES = "~* &* +@all"
"""The ``default`` user is off: no connection can log in as it. Its rules are for Redis
itself: Redis 7.0 replays the append-only file as the default user, and checks every command
of each MULTI/EXEC block there (what a Lua script's writes become in the file) against that
user's rules. With none, a restart dropped the writes of every script (checkpoints, label
outcomes, served features): seen under ``make up``, where the online checkpoint went back to
the version it had before each restart (``tests/integration/test_redis_acl.py``)."""


def _lines(
    namespace: str, password: Callable[[Role], str], redis_version: tuple[int, int]
) -> list[str]:
    lines = [f"user default reset off {DEFAULT_USER_RULES}"]  # no anonymous access at all
    for role in roles(namespace):
        rules = " ".join(role.rules(redis_version))
        lines.append(f"user {role.user} reset on {password(role)} {rules}")
    return lines


def render(
    namespace: str,
    passwords: Mapping[str, str],
    *,
    redis_version: tuple[int, int] = COMPOSE_REDIS_VERSION,
) -> str:
    """The ACL file of ``namespace`` for Redis ``redis_version``. ``passwords`` maps each
    role's user to its password (at least 16 characters); the file holds only their
    SHA-256 hashes."""
    missing = [r.user for r in roles(namespace) if not passwords.get(r.user)]
    if missing:
        raise AclError(f"no password for Redis user(s) {', '.join(missing)}")
    for user, secret in passwords.items():
        if len(secret) < MIN_PASSWORD_CHARS:
            raise AclError(
                f"the password of Redis user {user} must have at least {MIN_PASSWORD_CHARS} "
                "characters (make one: openssl rand -hex 32)"
            )

    def hashed(role: Role) -> str:
        return "#" + hashlib.sha256(passwords[role.user].encode()).hexdigest()

    return "\n".join(_lines(namespace, hashed, redis_version)) + "\n"


def compose_template() -> str:
    """The ACL lines for docker-compose.yml's ``redis-acl`` config: passwords and namespace
    as compose interpolations, required (``:?``) for every password."""

    def variable(role: Role) -> str:
        name = role.password_variable
        return f">${{{name}:?set {name} in .env (see .env.example)}}"

    return "\n".join(_lines(COMPOSE_NAMESPACE, variable, COMPOSE_REDIS_VERSION)) + "\n"


def passwords_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each role's password from its ``REDIS_<ROLE>_PASSWORD`` variable (absent ones left
    out: :func:`render` names them)."""
    env = os.environ if environ is None else environ
    found = {}
    for role in roles("x"):
        value = env.get(role.password_variable, "")
        if value:
            found[role.user] = value
    return found


def redis_url(user: str, password: str, host: str = "127.0.0.1", port: int = 6379) -> str:
    """The ``FRAUD_REDIS_URL`` of one role (database 0, the only one ACLs are written for)."""
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/0"


def _version(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"a Redis version looks like 7.4, not {text!r}")
    return int(match[1]), int(match[2])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.redis_acl",
        description="Render the Redis ACL (one user per role; only the batch job writes "
        "batch models). See docs/security.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rend = sub.add_parser(
        "render",
        help="an ACL file with hashed passwords, from REDIS_<ROLE>_PASSWORD variables",
        description="Write the ACL file (aclfile) of a namespace. Passwords come from "
        + ", ".join(r.password_variable for r in roles("x"))
        + "; the file holds only their SHA-256 hashes.",
    )
    rend.add_argument("--namespace", default=None, help="default: FRAUD_NAMESPACE or fraud")
    rend.add_argument("--out", type=Path, help="file to write (mode 0600); default: stdout")
    rend.add_argument(
        "--redis-version",
        type=_version,
        default=COMPOSE_REDIS_VERSION,
        help="the server's version, e.g. 7.0 (default 7.4): leaves out commands it lacks",
    )
    sub.add_parser(
        "compose",
        help="the ACL lines of docker-compose.yml's redis-acl config (with ${...} variables)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "compose":
        sys.stdout.write(compose_template())
        return 0
    namespace = args.namespace or os.environ.get("FRAUD_NAMESPACE") or "fraud"
    try:
        text = render(namespace, passwords_from_env(), redis_version=args.redis_version)
    except AclError as exc:
        print(f"python -m models.redis_acl: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.touch(mode=0o600)
    args.out.write_text(text)
    print(f"wrote the Redis ACL of namespace {namespace!r} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
