"""``python -m batch``: see :mod:`batch.cli`."""

from batch.cli import run

run()
