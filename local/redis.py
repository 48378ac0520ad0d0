"""A Redis server from the distribution's ``redis-server`` binary.

Tests want a throwaway in-memory server; ``make up`` wants one that keeps the online models
across restarts (append-only file in ``.run/redis``). Both are the same class.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import redis

from local._service import Service, ensure_port_free, free_ports, port_open, require_binary

REDIS_HINT = "apt-get install -y redis-server (or make setup)"


class RedisServer(Service):
    """``redis-server`` bound to 127.0.0.1. ``port`` None picks a free port; ``persistent``
    turns on the append-only file in ``data_dir``; ``password`` sets ``requirepass``."""

    name = "redis"
    start_timeout_s = 15.0

    def __init__(
        self,
        port: int | None = None,
        *,
        persistent: bool = False,
        password: str | None = None,
        data_dir: Path | str | None = None,
        log_dir: Path | str | None = None,
        binary: str = "redis-server",
    ) -> None:
        super().__init__(data_dir, log_dir)
        self.port = free_ports(1)[0] if port is None else port
        self.persistent = persistent
        self.password = password
        self.binary = binary
        self._binary_path = binary

    @property
    def url(self) -> str:
        """The ``redis://`` URL clients (and ``FRAUD_REDIS_URL``) use."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def prepare(self) -> None:
        self._binary_path = require_binary(self.binary, REDIS_HINT)
        ensure_port_free(self.port, "Redis")

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
        if self.password:
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
