"""The generator's ground truth about each event, kept apart from what goes to Kafka.

A simulator knows more than any model can: whether an event is fraud or spam, which
scenario produced it, and how likely an event *like it* is to be positive given the
generator's own mixture. That knowledge is for evaluation only (the truth file), never
published: the stream must only learn from the delayed labels, as in production.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any, Generic, NamedTuple, TypeVar

from models.events import Email, Transaction
from models.names import EventKind
from producers.closing import Closing

E = TypeVar("E", Transaction, Email)

TRUTH_COLUMNS = ("event_id", "kind", "is_positive", "scenario", "true_probability")


class Generated(NamedTuple, Generic[E]):
    """One generated event and what the generator knows about it."""

    event: E
    is_positive: bool
    scenario: str
    """``legit``/``ham``, or the fraud scenario / spam campaign that produced the event."""
    true_probability: float
    """The generator's probability that an event with these observables is positive."""


def kind_of(event: Transaction | Email) -> EventKind:
    """The event kind of a generated event, as topics and labels name it."""
    return "transaction" if isinstance(event, Transaction) else "email"


class TruthWriter(Closing):
    """Appends truth rows to a CSV or Parquet file (chosen by the extension).

    Rows are written as they come (CSV) or in row groups (Parquet), so an endless live run
    does not hold its whole history in memory.
    """

    ROW_GROUP = 100_000

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows = 0
        self._parquet = self.path.suffix.lower() in (".parquet", ".pq")
        self._buffer: list[tuple[str, str, bool, str, float]] = []
        self._csv_file: IO[str] | None = None
        self._pq_writer: Any = None
        if self._parquet:
            self.path.open("wb").close()  # fail now, not after a long run, if it cannot be written
        else:
            self._csv_file = self.path.open("w", newline="", encoding="utf-8")
            self._csv_rows = csv.writer(self._csv_file)
            self._csv_rows.writerow(TRUTH_COLUMNS)

    def write(self, item: Generated[Transaction] | Generated[Email]) -> None:
        """Record one generated event."""
        event = item.event
        self._buffer.append(
            (
                event.event_id,
                kind_of(event),
                item.is_positive,
                item.scenario,
                round(item.true_probability, 6),
            )
        )
        self.rows += 1
        if len(self._buffer) >= (self.ROW_GROUP if self._parquet else 1000):
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._parquet:
            self._write_parquet_group()
        else:  # booleans as true/false, which polars and pandas both read back as booleans
            self._csv_rows.writerows(
                (eid, kind, "true" if positive else "false", scenario, p)
                for eid, kind, positive, scenario, p in self._buffer
            )
        self._buffer.clear()

    def _write_parquet_group(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _parquet_schema()
        columns = list(zip(*self._buffer, strict=True))
        table = pa.table(
            [pa.array(col, field.type) for col, field in zip(columns, schema, strict=True)],
            schema=schema,
        )
        if self._pq_writer is None:
            self._pq_writer = pq.ParquetWriter(str(self.path), schema)
        self._pq_writer.write_table(table)

    def close(self) -> None:
        """Write what is buffered and close the file (an empty Parquet file keeps its schema)."""
        if self._parquet and self._pq_writer is None and not self._buffer:
            import pyarrow.parquet as pq

            pq.write_table(_parquet_schema().empty_table(), str(self.path))
            return
        self._flush()
        if self._pq_writer is not None:
            self._pq_writer.close()
            self._pq_writer = None
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("event_id", pa.string()),
            ("kind", pa.string()),
            ("is_positive", pa.bool_()),
            ("scenario", pa.string()),
            ("true_probability", pa.float64()),
        ]
    )
