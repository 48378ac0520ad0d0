"""``python -m benchmarks [COMMAND] [options]``: run the benchmarks (``--help`` lists them).

Each one starts its own Kafka broker and Redis on free ports (``local/``) unless given
``--bootstrap-servers`` / ``--redis-url``; ``all`` (the default, what ``make bench`` runs)
starts one pair and runs the three against it. Figures and how they were measured:
docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

USAGE = """usage: python -m benchmarks [COMMAND] [options]

commands (default: all):

  worker     throughput of the stream worker next to its ceiling (scoring in memory) and
             its floor (a per-event Faust agent), on 200,000 synthetic transactions
  latency    event-to-scored latency p50/p99 at a steady 5,000 events/s
  producer   synthetic transactions per second one producer process sends
  retrain    time and peak memory of a transaction retrain on a lake of --events events
             (not part of all: it builds a lake of millions of events first)
  features   batch feature building, Polars (batch/features.py) against pandas on the same
             --events transactions: outputs checked equal, then wall time and peak memory
             (needs no broker; not part of all)
  swap       hot swap: from publishing a batch model (registry + announcement) to the first
             event scored with it, with a worker scoring a steady stream (not part of all)
  outcomes   "risk from recent labels" per event on real Redis, terminals at the outcome cap:
             counted in Redis against the sets read whole (needs no broker; not part of all)
  soak       twice the nominal rate for ten minutes: worker memory, Redis memory and consumer
             lag over time (not part of all)
  restart    changelog records a restarted worker recovers and its time to score again, with
             Kafka's default changelog segments and the project's (not part of all)
  all        the three in turn, sharing one broker and Redis (the default)

`python -m benchmarks COMMAND --help` lists a command's options. Each run starts its own
Kafka broker and Redis on free ports unless given --bootstrap-servers / --redis-url.
"""


def _worker(argv: list[str]) -> int:
    from benchmarks import worker

    return worker.main(argv)


def _latency(argv: list[str]) -> int:
    from benchmarks import latency

    return latency.main(argv)


def _producer(argv: list[str]) -> int:
    """benchmarks/producer.py needs a broker: start one unless it was given one."""
    import os

    from benchmarks import producer, stack

    def run(args: list[str]) -> int:
        saved = sys.argv
        sys.argv = ["python -m benchmarks producer", *args]
        try:
            return producer.main()
        finally:
            sys.argv = saved

    given = any(a.startswith("--bootstrap-servers") for a in argv)
    if given or os.environ.get("FRAUD_KAFKA_BOOTSTRAP") or {"-h", "--help"} & set(argv):
        return run(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        stack.services(Path(tmp), with_redis=False) as svc,
    ):
        return run(["--bootstrap-servers", svc.bootstrap, *argv])


def _retrain(argv: list[str]) -> int:
    from benchmarks import retrain

    return retrain.main(argv)


def _features(argv: list[str]) -> int:
    from benchmarks import features

    return features.main(argv)


def _swap(argv: list[str]) -> int:
    from benchmarks import swap

    return swap.main(argv)


def _outcomes(argv: list[str]) -> int:
    from benchmarks import outcomes

    return outcomes.main(argv)


def _soak(argv: list[str]) -> int:
    from benchmarks import soak

    return soak.main(argv)


def _restart(argv: list[str]) -> int:
    from benchmarks import restart

    return restart.main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "worker": _worker,
    "latency": _latency,
    "producer": _producer,
    "retrain": _retrain,
    "features": _features,
    "swap": _swap,
    "outcomes": _outcomes,
    "soak": _soak,
    "restart": _restart,
}


def _all(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m benchmarks all\n\nRuns worker, latency and producer in turn.")
        return 0
    if argv:
        print(f"python -m benchmarks all: takes no options (got {' '.join(argv)})", file=sys.stderr)
        return 2
    from benchmarks import stack

    status = 0
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, stack.services(Path(tmp)) as svc:
        shared = ["--bootstrap-servers", svc.bootstrap]
        for name, args in (
            ("worker", [*shared, "--redis-url", svc.redis_url]),
            ("latency", [*shared, "--redis-url", svc.redis_url]),
            ("producer", shared),
        ):
            print(f"\n=== python -m benchmarks {name}", flush=True)
            status = max(status, COMMANDS[name](args))
    return status


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = (argv[0], argv[1:]) if argv else ("all", [])
    run: Callable[[list[str]], int] | None = _all if command == "all" else COMMANDS.get(command)
    if run is None:
        print(f"python -m benchmarks: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from local import ServiceError
    from models.settings import SettingsError

    try:
        return run(rest)
    except (ServiceError, SettingsError) as exc:
        print(f"python -m benchmarks {command}: {exc}", file=sys.stderr)
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"python -m benchmarks {command}: {type(exc).__name__}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"python -m benchmarks {command}: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
