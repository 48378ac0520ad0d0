"""What the local Kafka broker and Redis server have in common: a child process that must
either become ready within a bounded time or fail loudly with the tail of its log.

Tests and ``make up`` depend on these services; a hang or a silent skip would hide the real
problem, so every failure path raises :class:`ServiceError` with a message saying what to do.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = REPO_ROOT / ".run"


class ServiceError(RuntimeError):
    """A local service cannot be started, or did not become ready; the message says why."""


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct ports that were free a moment ago (all sockets are held at once,
    so two calls in a row cannot hand out the same port)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ensure_port_free(port: int, what: str) -> None:
    """Fail before launching if ``port`` is taken: a server that cannot bind dies with a
    buried log line, or worse, a client would talk to whatever already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Servers set SO_REUSEADDR too, so a port in TIME_WAIT is not reported as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ServiceError(
                f"port {port} is already in use ({exc.strerror}); {what} cannot listen there. "
                f"Stop whatever holds it (e.g. `ss -ltnp | grep :{port}`) or pick another port."
            ) from None


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def require_binary(name: str, hint: str) -> str:
    """The absolute path of ``name`` on PATH (or ``name`` itself if it is a path)."""
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"`{name}` not found on PATH. {hint}")
    return found


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, for error messages (empty text if there is no log)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _die_with_parent_fn() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when the parent dies.

    Test sessions killed hard (CI timeout, SIGKILL) would otherwise leave a JVM or Redis
    behind holding memory and ports. The libc lookup happens here, in the parent, so the
    child only makes one plain system call between fork and exec.
    """
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


class Service:
    """A server process started by :meth:`start` and stopped by :meth:`stop`.

    ``detached=True`` (used by ``make up``) puts the server in its own session so it outlives
    the Python process; otherwise it dies with its parent. Subclasses supply the command,
    the preparation and the readiness probe.
    """

    name = "service"
    start_timeout_s = 60.0

    def __init__(self, data_dir: Path | str | None, log_dir: Path | str | None) -> None:
        self._own_data_dir = data_dir is None
        self.data_dir = Path(
            tempfile.mkdtemp(prefix=f"{self.name}-") if data_dir is None else data_dir
        )
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir
        self.log_file = self.log_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- for subclasses ---------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Check prerequisites and write configuration; raise ServiceError if impossible."""

    def ready(self) -> bool:
        """True once clients can use the server."""
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, *, detached: bool = False, timeout_s: float | None = None) -> Self:
        """Launch the server and wait until it is ready, or raise ServiceError (never hang)."""
        if self.process is not None:
            raise ServiceError(f"{self.name} is already started (pid {self.process.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.prepare()
        except ServiceError:
            self.stop()  # removes a temporary data dir; nothing was launched
            raise
        cmd = self.command()
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=detached,
                preexec_fn=None if detached else _die_with_parent_fn(),
            )
        timeout = self.start_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                problem = f"exited with code {code} while starting"
                break
            if self.ready():
                return self
            if time.monotonic() > deadline:
                problem = f"was not ready after {timeout:.0f} s"
                break
            time.sleep(0.2)
        message = (
            f"{self.name} {problem}. Last lines of {self.log_file}:\n{log_tail(self.log_file)}"
        )
        self.stop()  # kills a half-started server; removes a temporary data dir
        raise ServiceError(message)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Ask the server to shut down cleanly; kill it if it does not within ``timeout_s``."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def process_alive(pid: int) -> bool:
    """True if a process with this pid exists (and is not a zombie we could reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
