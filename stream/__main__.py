"""``python -m stream worker [faust worker options]``: start a stream worker.

A thin alias of ``faust -A stream.app worker`` so users need one entry point per part.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m stream [--datadir DIR] worker [worker options: -l info --web-port N]

Starts a stream worker (same as: faust -A stream.app [--datadir DIR] worker ...). Two workers
on one machine need distinct --web-port and --datadir. Configure it with FRAUD_* environment
variables:
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        from models.settings import Settings

        print(USAGE + Settings.describe())
        return 0
    if "worker" not in argv:
        print(f"python -m stream: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from faust.cli.faust import cli

    sys.argv = ["faust", "-A", "stream.app", *argv]
    cli()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
