"""``python -m dashboards``: see :mod:`dashboards.cli`."""

from dashboards.cli import run

run()
