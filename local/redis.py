"""A Redis server from the distribution's ``redis-server`` binary.

Tests want a throwaway in-memory server; ``make up`` wants one that keeps the online models
across restarts (append-only file in ``.run/redis``). Both are the same class. Given an ACL
(``models.redis_acl.render``), the server loads it as its ``aclfile`` and this class logs in
as the ``user`` it is given (an ``admin``), as the tests of the per-role users do.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import redis

from local._service import (
    Service,
    ServiceError,
    ensure_port_free,
    free_ports,
    port_open,
    require_binary,
)

REDIS_HINT = "apt-get install -y redis-server (or make setup)"


def server_version(binary: str = "redis-server") -> tuple[int, int]:
    """(major, minor) of the ``redis-server`` on PATH: what an ACL must be rendered for
    (``models.redis_acl.render(..., redis_version=...)``)."""
    path = require_binary(binary, REDIS_HINT)
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"v=(\d+)\.(\d+)", out)
    if match is None:
        raise ServiceError(f"cannot read the version of {path} from {out!r}")
    return int(match[1]), int(match[2])


class RedisServer(Service):
    """``redis-server`` bound to 127.0.0.1. ``port`` None picks a free port; ``persistent``
    turns on the append-only file in ``data_dir``; ``password`` sets ``requirepass``.

    ``acl`` (the text of an ACL file) replaces ``requirepass``: the server loads it from
    ``<data_dir>/users.acl``, and ``user``/``password`` are then the credentials that
    :attr:`url`, :meth:`client` and the readiness probe use."""

    name = "redis"
    start_timeout_s = 15.0

    def __init__(
        self,
        port: int | None = None,
        *,
        persistent: bool = False,
        password: str | None = None,
        user: str | None = None,
        acl: str | None = None,
        data_dir: Path | str | None = None,
        log_dir: Path | str | None = None,
        binary: str = "redis-server",
    ) -> None:
        if user is not None and acl is None:
            raise ServiceError("a Redis user needs an ACL that defines it (acl=...)")
        super().__init__(data_dir, log_dir)
        self.port = free_ports(1)[0] if port is None else port
        self.persistent = persistent
        self.password = password
        self.user = user
        self.acl = acl
        self.acl_file = self.data_dir / "users.acl"
        self.binary = binary
        self._binary_path = binary

    @property
    def url(self) -> str:
        """The ``redis://`` URL clients (and ``FRAUD_REDIS_URL``) use."""
        return self.url_for(self.user, self.password)

    def url_for(self, user: str | None, password: str | None) -> str:
        """The ``redis://`` URL of this server for another user (one of the ACL's roles)."""
        auth = ""
        if password:
            auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def prepare(self) -> None:
        self._binary_path = require_binary(self.binary, REDIS_HINT)
        ensure_port_free(self.port, "Redis")
        if self.acl is not None:
            self.acl_file.touch(mode=0o600)  # hashes only, but nobody else's business
            self.acl_file.write_text(self.acl)

    def command(self) -> list[str]:
        cmd = [
            self._binary_path,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--daemonize", "no",
            "--logfile", "",  # stdout, which goes to the log file
            "--save", "",  # no RDB snapshots: either AOF or nothing
        ]  # fmt: skip
        if self.persistent:
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            cmd += ["--appendonly", "no"]
        if self.acl is not None:
            cmd += ["--aclfile", str(self.acl_file.resolve())]
        elif self.password:
            cmd += ["--requirepass", self.password]
        return cmd

    def client(self) -> redis.Redis:
        """A redis-py client for this server."""
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    def ready(self) -> bool:
        """Ready when PING answers (Redis loads the AOF before it answers)."""
        if not port_open(self.port):
            return False
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False
