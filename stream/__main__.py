"""``python -m stream worker [faust worker options]``: start a stream worker.
``python -m stream backtest FILE [options]``: score a labelled dataset offline.
``python -m stream alerts-page [--host H] [--port N]``: serve the live alerts page.

``worker`` is a thin alias of ``faust -A stream.app worker`` so users need one entry point per
part; ``backtest`` runs :mod:`stream.backtest` (no Kafka, no Redis, no Faust).
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m stream [--datadir DIR] worker [worker options: -l info --web-port N]
       python -m stream backtest FILE|--generate KIND [options]   (backtest --help)
       python -m stream alerts-page [--host H] [--port N]            (alerts-page --help)

Starts a stream worker (same as: faust -A stream.app [--datadir DIR] worker ...). Two workers
on one machine need distinct --web-port and --datadir. Configure it with FRAUD_* environment
variables:
"""


def main(argv: list[str]) -> int:
    if argv and argv[0] == "backtest":
        from stream.backtest import main as backtest

        return backtest(argv[1:])
    if argv and argv[0] == "alerts-page":
        from stream.alerts_page.cli import main as alerts_page

        return alerts_page(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        from models.settings import Settings

        print(USAGE + Settings.describe())
        return 0
    if "worker" not in argv:
        print(f"python -m stream: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from faust.cli.faust import cli

    from models.settings import Settings, SettingsError
    from models.topology import KafkaUnavailable, ensure_topics

    # Create the topics before Faust subscribes: a broker that auto-creates them would give
    # the labels topic several partitions, and learning relies on it having exactly one.
    try:
        ensure_topics(Settings.from_env())
    except (KafkaUnavailable, SettingsError) as exc:
        print(f"python -m stream: {exc}", file=sys.stderr)
        return 1
    sys.argv = ["faust", "-A", "stream.app", *argv]
    cli()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
