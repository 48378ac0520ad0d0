"""The lake: every scored event and every label as Parquet, partitioned by date.

Layout (``<lake>`` is ``Settings.lake_dir``)::

    <lake>/scored/date=YYYY-MM-DD/part-<partition>-<first offset>-<last offset>.parquet
    <lake>/labels/date=YYYY-MM-DD/part-<partition>-<first offset>-<last offset>.parquet

The date is the event time in UTC (for a label, its ``event_time``: when it arrived). The
offsets are those of the Kafka partition the rows came from; every row also keeps its
``topic``, ``partition`` and ``offset``.

**Exactly once.** The lake, not the consumer group, is the source of truth for offsets.
The sink cuts what it consumed from one partition into runs of consecutive messages of the
same date and writes one file per run, in offset order, each atomically (a hidden temp file,
then ``os.replace``). So whatever a crash interrupts, the files of a partition hold a prefix
of its messages, and :func:`next_offsets` (the highest last offset in the file names, plus
one) is exactly where to resume. Kafka commits are kept for monitoring, never trusted.

**Compaction** merges the files of one date and partition into one file named by the lowest
first and highest last offset. It writes the new file, then deletes the old ones; a crash in
between leaves both, and :func:`read_lake` ignores a file whose offset range is covered by
another file of the same date and partition. Within a date and partition, files written by
the sink never overlap, so only a compacted file can cover another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import msgspec
import polars as pl
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from models import kafka_security
from models.events import InvalidEvent, Label, ScoredEvent, decode
from models.names import Topics
from models.settings import Settings
from models.topology import KafkaUnavailable, ensure_topics

Table = Literal["scored", "labels"]
TABLES: tuple[Table, ...] = ("scored", "labels")

KAFKA_COLUMNS: dict[str, pl.DataType] = {
    "topic": pl.String(),
    "partition": pl.Int32(),
    "offset": pl.Int64(),
}
TIME = pl.Datetime("us", "UTC")
SCHEMAS: dict[Table, dict[str, pl.DataType]] = {
    "scored": {
        "event_id": pl.String(),
        "kind": pl.String(),
        "entity_id": pl.String(),
        "scope_id": pl.String(),
        "event_time": TIME,
        "scored_at": TIME,
        "online_score": pl.Float64(),
        "batch_score": pl.Float64(),
        "score": pl.Float64(),
        "decision": pl.String(),
        "online_version": pl.String(),
        "batch_version": pl.String(),
        "features": pl.String(),
        **KAFKA_COLUMNS,
    },
    "labels": {
        "event_id": pl.String(),
        "kind": pl.String(),
        "is_positive": pl.Boolean(),
        "label_time": TIME,
        "source": pl.String(),
        "reviewer": pl.String(),
        **KAFKA_COLUMNS,
    },
}
"""Column types of each table. ``features`` is the JSON object of the features served:
one stable string column whatever the kind or the feature set of the day (a struct column
would change schema with every new feature and differ between transactions and emails, so
files would no longer concatenate); ``pl.col("features").str.json_decode()`` gives the
struct back for one kind."""

_PART = re.compile(r"^part-(\d+)-(\d+)-(\d+)\.parquet$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, order=True)
class Part:
    """One Parquet file of the lake, as its path names it."""

    table: str
    date: str
    partition: int
    first: int
    last: int
    path: Path

    def covers(self, other: Part) -> bool:
        """Whether this file's range holds ``other``'s (same date and partition, another file)."""
        return (
            self is not other
            and self.path != other.path
            and (self.table, self.date, self.partition)
            == (other.table, other.date, other.partition)
            and self.first <= other.first
            and other.last <= self.last
        )


def part_name(partition: int, first: int, last: int) -> str:
    """File name of the rows of offsets ``first``..``last`` of one partition."""
    if not 0 <= first <= last or partition < 0:
        raise ValueError(f"bad part range: partition {partition}, offsets {first}..{last}")
    return f"part-{partition}-{first}-{last}.parquet"


def parse_part(path: Path, table: str = "") -> Part | None:
    """The :class:`Part` a path names, or None for anything else (temp files, strays)."""
    match = _PART.match(path.name)
    date = _DATE_DIR.match(path.parent.name)
    if match is None or date is None:
        return None
    partition, first, last = (int(g) for g in match.groups())
    if first > last:
        return None
    return Part(table or path.parent.parent.name, date.group(1), partition, first, last, path)


def list_parts(lake_dir: Path | str, table: Table) -> list[Part]:
    """Every file of a table, hidden or not, sorted by date, partition and offsets."""
    root = Path(lake_dir) / table
    if not root.is_dir():
        return []
    parts = [parse_part(path, table) for path in root.glob("date=*/part-*.parquet")]
    return sorted(p for p in parts if p is not None)


def visible_parts(parts: Iterable[Part]) -> list[Part]:
    """The files a reader sees: those whose range no other file of their date and partition
    covers (a compaction that crashed before deleting its inputs leaves them covered)."""
    groups: dict[tuple[str, str, int], list[Part]] = {}
    for part in parts:
        groups.setdefault((part.table, part.date, part.partition), []).append(part)
    visible = []
    for group in groups.values():
        # Widest first: a file is hidden as soon as a wider (or equal, earlier) file covers it.
        group.sort(key=lambda p: (p.first, -p.last, p.path.name))
        kept: list[Part] = []
        for part in group:
            if not any(k.covers(part) for k in kept):
                kept.append(part)
        visible.extend(kept)
    return sorted(visible)


def read_lake(lake_dir: Path | str, table: Table) -> pl.LazyFrame:
    """A lazy scan of one table: every row once, with a ``date`` column (the partition).

    Reads only the visible files (see :func:`visible_parts`); an empty lake gives an empty
    frame with the table's schema.
    """
    schema = {**SCHEMAS[table], "date": pl.Date()}
    parts = visible_parts(list_parts(lake_dir, table))
    if not parts:
        return pl.LazyFrame(schema=schema)
    scans = [
        _conform(pl.scan_parquet(part.path), table).with_columns(
            pl.lit(datetime.strptime(part.date, "%Y-%m-%d").date()).alias("date")
        )
        for part in parts
    ]
    return pl.concat(scans, how="vertical").select(list(schema))


def _conform(frame: pl.LazyFrame, table: Table) -> pl.LazyFrame:
    """``frame`` with the table's columns in order, a column that an older file lacks (added
    later, with a default in the event schema) filled with nulls."""
    present = frame.collect_schema()
    return frame.select(
        pl.col(name) if name in present else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in SCHEMAS[table].items()
    )


def next_offsets(lake_dir: Path | str, table: Table) -> dict[int, int]:
    """Per partition, the first offset the lake does not hold yet (highest last + 1)."""
    result: dict[int, int] = {}
    for part in list_parts(lake_dir, table):
        result[part.partition] = max(result.get(part.partition, 0), part.last + 1)
    return result


# -- rows ----------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def scored_row(event: ScoredEvent, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The flat row of one scored event."""
    return {
        "event_id": event.event_id,
        "kind": event.kind,
        "entity_id": event.entity_id,
        "scope_id": event.scope_id,
        "event_time": _utc(event.event_time),
        "scored_at": _utc(event.scored_at),
        "online_score": event.online_score,
        "batch_score": event.batch_score,
        "score": event.score,
        "decision": event.decision,
        "online_version": event.online_version,
        "batch_version": event.batch_version,
        "features": encode_features(event.features),
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }


def encode_features(features: dict[str, float]) -> str:
    """The JSON object of the served features, exactly as msgspec writes floats."""
    return msgspec.json.encode(features).decode()


def label_row(label: Label, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The flat row of one label; ``label_time`` is when it arrived (its event time)."""
    return {
        "event_id": label.event_id,
        "kind": label.kind,
        "is_positive": label.is_positive,
        "label_time": _utc(label.event_time),
        "source": label.source,
        "reviewer": label.reviewer,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }


def row_date(table: Table, row: dict[str, Any]) -> str:
    """The date partition of a row: its event time (labels: arrival time) in UTC."""
    moment: datetime = row["event_time" if table == "scored" else "label_time"]
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


# -- writing -------------------------------------------------------------------------------


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` all or nothing: a hidden temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        frame.write_parquet(out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def runs(table: Table, rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Cut one partition's rows (in offset order) into runs of consecutive rows of one date."""
    result: list[list[dict[str, Any]]] = []
    current_date = None
    for row in rows:
        date = row_date(table, row)
        if not result or date != current_date:
            result.append([])
            current_date = date
        result[-1].append(row)
    return result


def write_rows(
    lake_dir: Path | str,
    table: Table,
    partition: int,
    rows: Sequence[dict[str, Any]],
    *,
    last: int | None = None,
) -> list[Path]:
    """Write one partition's rows (in offset order) as one file per run of one date, in
    offset order, each atomically. Returns the paths written.

    ``last`` widens the range named by the last file to messages after it that gave no row
    (undecodable ones), so the resume point moves past them too.
    """
    paths = []
    pieces = runs(table, rows)
    for i, piece in enumerate(pieces):
        lo = piece[0]["offset"]
        hi = piece[-1]["offset"]
        if i == len(pieces) - 1 and last is not None:
            hi = max(hi, last)
        date = row_date(table, piece[0])
        path = Path(lake_dir) / table / f"date={date}" / part_name(partition, lo, hi)
        frame = pl.DataFrame(piece, schema=SCHEMAS[table], orient="row")
        _write_atomic(frame, path)
        paths.append(path)
    return paths


# -- compaction ----------------------------------------------------------------------------


@dataclass
class CompactionReport:
    merged_files: int = 0
    written_files: int = 0
    deleted_files: int = 0


def compact(
    lake_dir: Path | str, tables: Sequence[Table] = TABLES, *, progress: TextIO | None = None
) -> CompactionReport:
    """Merge the files of each date and partition into one; delete what it replaces.

    The new file is written (atomically) before the old ones are deleted; until they are,
    readers ignore them because the new file's range covers theirs.
    """
    report = CompactionReport()
    for table in tables:
        parts = list_parts(lake_dir, table)
        groups: dict[tuple[str, int], list[Part]] = {}
        for part in parts:
            groups.setdefault((part.date, part.partition), []).append(part)
        for (date, partition), group in sorted(groups.items()):
            visible = visible_parts(group)
            hidden = [p for p in group if p not in visible]
            if len(visible) > 1:
                frame = (
                    pl.concat([_conform(pl.scan_parquet(p.path), table) for p in visible])
                    .sort("offset")
                    .collect()
                )
                first = min(p.first for p in visible)
                last = max(p.last for p in visible)
                target = Path(lake_dir) / table / f"date={date}" / part_name(partition, first, last)
                _write_atomic(frame, target)
                report.merged_files += len(visible)
                report.written_files += 1
                hidden.extend(p for p in visible if p.path != target)
                if progress is not None:
                    print(
                        f"compact: {table} date={date} partition {partition}: "
                        f"{len(visible)} files -> {target.name} ({frame.height} rows)",
                        file=progress,
                    )
            for old in hidden:
                old.path.unlink(missing_ok=True)
                report.deleted_files += 1
            if hidden:
                _fsync_dir(Path(lake_dir) / table / f"date={date}")
    return report


# -- the sink ------------------------------------------------------------------------------


class SinkError(RuntimeError):
    """Kafka cannot be reached or refuses, or another sink holds the lake; the message says
    what to check."""


LOCK_FILE = ".sink.lock"


@contextlib.contextmanager
def sink_lock(lake_dir: Path | str) -> Iterator[None]:
    """Hold the lake's writer lock: the lake's offsets are the sink's only bookkeeping, so a
    second sink on the same lake (a cron ``--once`` overlapping a long-running sink) would
    write every row twice. The lock is an OS file lock: it goes away with its process, even
    after ``kill -9``."""
    path = Path(lake_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise SinkError(
                f"another sink is writing {lake_dir} (pid {holder}); run one sink per lake"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class SinkStats:
    rows: dict[str, int]
    files: int = 0
    invalid: int = 0

    @classmethod
    def empty(cls) -> SinkStats:
        return cls(rows=dict.fromkeys(TABLES, 0))


class LakeSink:
    """Consumes the scored and labels topics of a namespace into the lake.

    Partitions are assigned by hand (one sink per namespace) and each starts where the lake
    ends (:func:`next_offsets`), or at the beginning for a partition the lake has nothing of.
    The consumer group ``<namespace>-lake`` only receives commits, for monitoring the lag.
    """

    def __init__(
        self,
        settings: Settings,
        lake_dir: Path | str,
        *,
        group_id: str | None = None,
        connect_timeout_s: float = 10.0,
        progress: TextIO | None = None,
    ) -> None:
        self.lake_dir = Path(lake_dir)
        self.progress = progress
        topics = Topics.for_namespace(settings.namespace)
        self.tables: dict[str, Table] = {topics.scored: "scored", topics.labels: "labels"}
        self.stats = SinkStats.empty()
        self._pending: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._consumed_to: dict[tuple[str, int], int] = {}
        config: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap.split(","),
            "group_id": group_id or f"{settings.namespace}-lake",
            "client_id": f"{settings.namespace}-lake",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "request_timeout_ms": max(int(connect_timeout_s * 1000), 1000) + 30_000,
        }
        config.update(kafka_security.kafka_python_config(settings))
        if "bootstrap_timeout_ms" in KafkaConsumer.DEFAULT_CONFIG:
            config["bootstrap_timeout_ms"] = int(connect_timeout_s * 1000)
        hint = "; is the broker running? (set --bootstrap-servers or FRAUD_KAFKA_BOOTSTRAP)"
        try:
            self.consumer = KafkaConsumer(**config)
        except KafkaError as exc:
            raise SinkError(kafka_security.unreachable_message(settings, exc, hint)) from None
        try:
            ensure_topics(settings, only=list(self.tables), timeout_s=connect_timeout_s)
            assignment: list[TopicPartition] = []
            for topic in self.tables:
                partitions = self.consumer.partitions_for_topic(topic) or set()
                assignment.extend(TopicPartition(topic, p) for p in sorted(partitions))
            if not assignment:
                raise SinkError(f"topics {sorted(self.tables)} have no partitions")
            self.consumer.assign(assignment)
            for tp in assignment:
                start = next_offsets(self.lake_dir, self.tables[tp.topic]).get(tp.partition)
                if start is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, start)
                self._say(
                    f"{self.tables[tp.topic]} partition {tp.partition}: from offset "
                    f"{'beginning' if start is None else start}"
                )
        except KafkaUnavailable as exc:
            self.consumer.close()
            raise SinkError(str(exc)) from None
        except KafkaError as exc:
            self.consumer.close()
            raise SinkError(kafka_security.unreachable_message(settings, exc, hint)) from None

    def _say(self, message: str) -> None:
        if self.progress is not None:
            print(f"lake: {message}", file=self.progress, flush=True)

    @property
    def pending(self) -> int:
        """Rows consumed and not written yet."""
        return sum(len(rows) for rows in self._pending.values())

    def poll(self, timeout_s: float = 0.5, max_records: int = 5000) -> int:
        """Consume what arrives within ``timeout_s``; return the number of messages."""
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        n = 0
        for tp, records in batches.items():
            table = self.tables[tp.topic]
            key = (tp.topic, tp.partition)
            pending = self._pending.setdefault(key, [])
            for record in records:
                n += 1
                self._consumed_to[key] = record.offset
                try:
                    if table == "scored":
                        event = decode(record.value, ScoredEvent)
                        row = scored_row(event, tp.topic, tp.partition, record.offset)
                    else:
                        label = decode(record.value, Label)
                        row = label_row(label, tp.topic, tp.partition, record.offset)
                except InvalidEvent as exc:
                    self.stats.invalid += 1
                    self._say(f"skipping {tp.topic}[{tp.partition}]@{record.offset}: {exc.reason}")
                    continue
                pending.append(row)
        return n

    def write(self) -> int:
        """Write every pending row to the lake (no commit); return the files written."""
        files = 0
        for (topic, partition), rows in sorted(self._pending.items()):
            if not rows:
                continue
            table = self.tables[topic]
            last = self._consumed_to.get((topic, partition))
            paths = write_rows(self.lake_dir, table, partition, rows, last=last)
            files += len(paths)
            self.stats.rows[table] += len(rows)
        self.stats.files += files
        self._pending.clear()
        return files

    def commit(self) -> None:
        """Commit the consumed positions to the group (monitoring only; the lake decides)."""
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset + 1, "", -1)
            for (topic, partition), offset in self._consumed_to.items()
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # harmless: the next start reads the lake, not the group
            self._say(f"offset commit failed ({exc}); the lake keeps the true position")

    def flush(self) -> int:
        """Write, then commit. Returns the files written."""
        written = self.pending
        files = self.write()
        self.commit()
        if files:
            self._say(
                f"wrote {written} rows in {files} files (total: scored "
                f"{self.stats.rows['scored']}, labels {self.stats.rows['labels']})"
            )
        return files

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def run_sink(
    settings: Settings,
    lake_dir: Path | str,
    *,
    once: bool = False,
    flush_every: int = 10_000,
    flush_seconds: float = 60.0,
    idle_s: float = 2.0,
    group_id: str | None = None,
    connect_timeout_s: float = 10.0,
    progress: TextIO | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SinkStats:
    """Consume into the lake; with ``once``, stop when nothing arrives for ``idle_s``.

    Flushes every ``flush_every`` rows or ``flush_seconds``, and when stopping.
    ``should_stop`` is a callable polled between batches (a signal handler sets it).
    """
    with sink_lock(lake_dir):
        return _consume(
            settings,
            lake_dir,
            once=once,
            flush_every=flush_every,
            flush_seconds=flush_seconds,
            idle_s=idle_s,
            group_id=group_id,
            connect_timeout_s=connect_timeout_s,
            progress=progress,
            should_stop=should_stop,
        )


def _consume(
    settings: Settings,
    lake_dir: Path | str,
    *,
    once: bool,
    flush_every: int,
    flush_seconds: float,
    idle_s: float,
    group_id: str | None,
    connect_timeout_s: float,
    progress: TextIO | None,
    should_stop: Callable[[], bool] | None,
) -> SinkStats:
    sink = LakeSink(
        settings,
        lake_dir,
        group_id=group_id,
        connect_timeout_s=connect_timeout_s,
        progress=progress,
    )
    try:
        last_flush = last_message = time.monotonic()
        while not (should_stop is not None and should_stop()):
            n = sink.poll(timeout_s=min(0.5, idle_s))
            now = time.monotonic()
            if n:
                last_message = now
            if sink.pending >= flush_every or (sink.pending and now - last_flush >= flush_seconds):
                sink.flush()
                last_flush = now
            if once and now - last_message >= idle_s:
                break
        sink.flush()
        sink._say(
            f"done: scored {sink.stats.rows['scored']} rows, labels "
            f"{sink.stats.rows['labels']} rows, {sink.stats.files} files, "
            f"{sink.stats.invalid} invalid messages skipped"
        )
        return sink.stats
    finally:
        sink.close()
