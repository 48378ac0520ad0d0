"""``python -m producers``: see :mod:`producers.cli`."""

from producers.cli import run

run()
