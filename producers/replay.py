"""Replays a labelled dataset (CSV or Parquet) as a stream of events, in event-time order.

The column mapping (``--map amount=amt``), the defaults, the synthesized ids and times and
every check on the file live in :mod:`models.tabular`, which the backtest
(``python -m stream backtest``) uses too: a dataset becomes the same events whether it is
replayed into Kafka or scored offline. This module keeps the names the producers' CLI and
its tests know.
"""

from __future__ import annotations

from models.tabular import (
    EMAIL_FIELDS,
    FALSE_WORDS,
    MAX_AMOUNT,
    POSIX_MIN,
    TRANSACTION_FIELDS,
    TRUE_WORDS,
    load,
    parse_mapping,
    read_table,
)
from models.tabular import Table as Replay
from models.tabular import TableError as ReplayError

__all__ = [
    "EMAIL_FIELDS",
    "FALSE_WORDS",
    "MAX_AMOUNT",
    "POSIX_MIN",
    "TRANSACTION_FIELDS",
    "TRUE_WORDS",
    "Replay",
    "ReplayError",
    "load",
    "parse_mapping",
    "read_table",
]
