"""How soon an alert reaches an open alerts page, through the real broker, Redis and worker.

A paced producer sends synthetic transactions stamped with the wall clock just before
``send``; a real ``python -m stream worker`` scores them with thresholds so low that every
event alerts (the most alerts a page will ever see at this rate); a real
``python -m stream alerts-page`` pushes them to a Server-Sent Events client in this process,
which notes when each arrives. Per alert:

event -> page
    arrival minus ``event_time``: what an analyst waits, from the payment to the row.
decision -> page
    arrival minus ``scored_at``: the page's own share (the worker's Redis write, the
    page server's blocking read, the push).

Usage: ``python -m benchmarks.alerts_page [--rate 200] [--duration 30]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

from benchmarks import stack
from benchmarks.latency import Produced, probe, produce_paced, summary
from models.names import Topics

ISO = datetime.fromisoformat


class PageListener(threading.Thread):
    """Reads the page's event stream; records (arrival, event_time, scored_at) per alert."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.arrivals: list[tuple[float, float, float]] = []
        self.connected = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("GET", "/api/events")
        response = conn.getresponse()
        self.connected.set()
        kind = ""
        while True:
            line = response.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: ") and kind == "alert":
                now = time.time()
                alert = json.loads(text[6:])
                self.arrivals.append(
                    (now, ISO(alert["event_time"]).timestamp(), ISO(alert["scored_at"]).timestamp())
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.alerts_page", description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s, all alerting (200)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (30)")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 5000 or not 1 <= args.duration <= 300:
        parser.error("--rate must be in (0, 5000] and --duration in [1, 300]")
    with contextlib.ExitStack() as cleanup:
        workdir = stack.workdir(cleanup, None)
        svc = cleanup.enter_context(stack.services(workdir))
        settings = stack.bench_settings(
            svc.bootstrap, svc.redis_url, txn_review_threshold=1e-6, txn_block_threshold=1.0
        )
        topics = Topics.for_namespace(settings.namespace)
        stack.create_topics(settings, [topics.scored, topics.transactions])
        worker = cleanup.enter_context(stack.FaustProcess("stream", "worker", settings, workdir))
        print(f"worker scored a probe {probe(settings, worker):.1f} s after it started")
        port = stack.free_port()
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        log = open(workdir / "alerts-page.log", "ab")  # noqa: SIM115 - closed by the stack
        cleanup.callback(log.close)
        page = subprocess.Popen(
            [sys.executable, "-m", "stream", "alerts-page", "--port", str(port)],
            cwd=stack.REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        cleanup.callback(page.wait, 15)
        cleanup.callback(page.terminate)
        deadline = time.monotonic() + 30
        while b"alerts page on" not in (workdir / "alerts-page.log").read_bytes():
            if time.monotonic() > deadline or page.poll() is not None:
                print("the alerts page did not start; see its log", file=sys.stderr)
                return 1
            time.sleep(0.1)
        listener = PageListener(port)
        listener.start()
        listener.connected.wait(10)
        ctx = multiprocessing.get_context("spawn")
        results: Any = ctx.Queue()
        producer = ctx.Process(
            target=produce_paced, args=(settings, args.rate, args.duration, results)
        )
        producer.start()
        produced: Produced = results.get(timeout=args.duration + 120)
        producer.join(timeout=30)
        print(f"sent {produced.sent:,} events in {produced.elapsed_s:.1f} s", flush=True)
        deadline = time.monotonic() + 60
        while len(listener.arrivals) < produced.sent and time.monotonic() < deadline:
            time.sleep(0.5)
    arrivals = [a for a in listener.arrivals if a[1] >= produced.first_sent_at]
    print(
        f"{stack.cpu_count()} cores; {len(arrivals):,} of {produced.sent:,} alerts reached the page"
    )
    print(f"  event -> page     {summary([a[0] - a[1] for a in arrivals])}")
    print(f"  decision -> page  {summary([a[0] - a[2] for a in arrivals])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
