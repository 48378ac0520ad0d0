"""``python -m local {kafka,redis} {start,stop,status}``: the services behind ``make up``.

``start`` launches the server in its own session (it outlives this command), waits until it
is ready and records its pid in ``.run/<service>.pid``; the log is ``.run/<service>.log``.
``stop`` and ``status`` go by that pid file, so they work from any later shell.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from local._service import RUN_DIR, Service, ServiceError, process_alive
from local.kafka import KafkaBroker
from local.redis import RedisServer, server_version
from models import redis_acl

DEFAULT_PORTS = {"kafka": 9092, "redis": 6379}
# A pid file may outlive its process and the pid may be reused: only signal a process whose
# command line shows it is the service we started.
CMDLINE_MARKERS = {"kafka": "kafka.Kafka", "redis": "redis-server"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Start, stop or query the local Kafka broker / Redis server (no Docker).",
        epilog="Pid files and logs live in --run-dir; data in --dir (default <run-dir>/<service>).",
    )
    parser.add_argument("service", choices=sorted(DEFAULT_PORTS), help="which server")
    parser.add_argument("action", choices=["start", "stop", "status"], help="what to do")
    parser.add_argument("--port", type=int, help="listen port (default: 9092 kafka, 6379 redis)")
    parser.add_argument(
        "--controller-port", type=int, help="Kafka KRaft controller port (default: port + 1)"
    )
    parser.add_argument("--dir", type=Path, help="data directory (default: .run/<service>)")
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for readiness (default 90)"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=RUN_DIR, help="pid files and logs (default: .run)"
    )
    parser.add_argument(
        "--acl-from-env",
        action="store_true",
        help="redis: one user per role, as docker compose runs it (models.redis_acl), with "
        "the passwords in REDIS_<ROLE>_PASSWORD; no anonymous access",
    )
    return parser


def _pid_file(args: argparse.Namespace) -> Path:
    return Path(args.run_dir) / f"{args.service}.pid"


def _log_file(args: argparse.Namespace) -> Path:
    return Path(args.run_dir) / f"{args.service}.log"


def _running_pid(args: argparse.Namespace) -> int | None:
    """The pid from the pid file if that process is alive and is our service."""
    try:
        pid = int(_pid_file(args).read_text().strip())
    except (OSError, ValueError):
        return None
    if not process_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return pid if CMDLINE_MARKERS[args.service] in cmdline else None


def _start(args: argparse.Namespace) -> int:
    pid = _running_pid(args)
    if pid is not None:
        print(f"{args.service}: already running (pid {pid}), log {_log_file(args)}")
        return 0
    port = args.port or DEFAULT_PORTS[args.service]
    data_dir = args.dir or Path(args.run_dir) / args.service
    server: Service
    if args.service == "kafka":
        server = KafkaBroker(
            port, args.controller_port or port + 1, data_dir=data_dir, log_dir=args.run_dir
        )
        where = f"bootstrap 127.0.0.1:{port}"
    elif args.acl_from_env:
        server = _redis_with_users(port, data_dir, Path(args.run_dir))
        where = f"redis://<role>:<password>@127.0.0.1:{port}/0 (users: models.redis_acl)"
    else:
        server = RedisServer(port, persistent=True, data_dir=data_dir, log_dir=args.run_dir)
        where = f"redis://127.0.0.1:{port}/0"
    server.start(detached=True, timeout_s=args.timeout)
    _pid_file(args).write_text(f"{server.pid}\n")
    print(f"{args.service}: ready at {where} (pid {server.pid}), log {server.log_file}")
    return 0


def _redis_with_users(port: int, data_dir: Path, run_dir: Path) -> RedisServer:
    """Redis with the users of ``models.redis_acl`` for the namespace in ``FRAUD_NAMESPACE``
    (default fraud), rendered for the local ``redis-server``; this command logs in as admin."""
    namespace = os.environ.get("FRAUD_NAMESPACE") or "fraud"
    passwords = redis_acl.passwords_from_env()
    try:
        acl = redis_acl.render(namespace, passwords, redis_version=server_version())
    except redis_acl.AclError as exc:
        raise ServiceError(str(exc)) from None
    return RedisServer(
        port,
        persistent=True,
        data_dir=data_dir,
        log_dir=run_dir,
        acl=acl,
        user="admin",
        password=passwords["admin"],
    )


def _stop(args: argparse.Namespace) -> int:
    pid = _running_pid(args)
    _pid_file(args).unlink(missing_ok=True)
    if pid is None:
        print(f"{args.service}: not running")
        return 0
    os.killpg(pid, signal.SIGTERM)  # its own session: the group is the server alone
    deadline = time.monotonic() + 30
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if process_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        print(f"{args.service}: did not stop within 30 s, killed (pid {pid})")
    else:
        print(f"{args.service}: stopped (pid {pid})")
    return 0


def _status(args: argparse.Namespace) -> int:
    pid = _running_pid(args)
    if pid is None:
        print(f"{args.service}: not running")
        return 1
    print(f"{args.service}: running (pid {pid}), log {_log_file(args)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        _parser().error(f"--port {args.port} is not a valid port")
    if args.acl_from_env and (args.service, args.action) != ("redis", "start"):
        _parser().error("--acl-from-env goes with: redis start")
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    action = {"start": _start, "stop": _stop, "status": _status}[args.action]
    try:
        return action(args)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
