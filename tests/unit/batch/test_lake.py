"""The lake without Kafka: file names, the covered-range rule, writing and compaction."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batch.lake import (
    compact,
    label_row,
    list_parts,
    next_offsets,
    parse_part,
    part_name,
    read_lake,
    scored_row,
    visible_parts,
    write_rows,
)
from tests import factories

DAY = 86_400.0
T0 = factories.T0


def rows(offsets: list[int], at: list[float], partition: int = 0) -> list[dict[str, object]]:
    return [
        scored_row(factories.scored(o, at=t), "ns.scored.v1", partition, o)
        for o, t in zip(offsets, at, strict=True)
    ]


def test_part_names_round_trip(tmp_path: Path) -> None:
    name = part_name(3, 10, 42)
    assert name == "part-3-10-42.parquet"
    part = parse_part(tmp_path / "scored" / "date=2026-01-01" / name)
    assert part is not None
    assert (part.table, part.date, part.partition, part.first, part.last) == (
        "scored",
        "2026-01-01",
        3,
        10,
        42,
    )


@pytest.mark.parametrize(
    "path",
    [
        "scored/date=2026-01-01/.part-0-1-2.parquet.tmp",
        "scored/date=2026-01-01/part-0-5-2.parquet",
        "scored/2026-01-01/part-0-1-2.parquet",
        "scored/date=2026-01-01/part-x-1-2.parquet",
    ],
)
def test_other_files_are_not_parts(tmp_path: Path, path: str) -> None:
    assert parse_part(tmp_path / path) is None


def test_part_name_refuses_backwards_range() -> None:
    with pytest.raises(ValueError):
        part_name(0, 5, 4)


def test_rows_are_cut_by_date_into_files_in_offset_order(tmp_path: Path) -> None:
    day1, day2 = T0 + 100, T0 + DAY + 100
    paths = write_rows(tmp_path, "scored", 2, rows([5, 6, 7, 8], [day1, day1, day2, day1], 2))
    assert [(p.parent.name, p.name) for p in paths] == [
        ("date=2026-01-01", "part-2-5-6.parquet"),
        ("date=2026-01-02", "part-2-7-7.parquet"),
        ("date=2026-01-01", "part-2-8-8.parquet"),
    ]
    assert next_offsets(tmp_path, "scored") == {2: 9}
    frame = read_lake(tmp_path, "scored").collect()
    assert sorted(frame["offset"]) == [5, 6, 7, 8]
    assert frame.filter(pl.col("offset") == 7)["date"].to_list()[0].isoformat() == "2026-01-02"
    features = frame.sort("offset")["features"].str.json_decode()
    assert features.struct.field("amount").to_list() == [15.0, 16.0, 17.0, 18.0]


def test_last_offset_covers_trailing_messages_without_rows(tmp_path: Path) -> None:
    write_rows(tmp_path, "scored", 0, rows([0, 1], [T0, T0]), last=4)
    assert next_offsets(tmp_path, "scored") == {0: 5}


def test_crash_mid_write_leaves_a_prefix_and_resume_point(tmp_path: Path) -> None:
    """Files are written in offset order: whatever is on disk is a prefix of the offsets."""
    batch = rows([0, 1, 2, 3], [T0, T0 + DAY, T0 + DAY, T0])
    write_rows(tmp_path, "scored", 0, batch[:1])  # the crash came after the first file
    assert next_offsets(tmp_path, "scored") == {0: 1}
    write_rows(tmp_path, "scored", 0, batch[1:])  # the restart re-reads from offset 1
    frame = read_lake(tmp_path, "scored").collect()
    assert sorted(frame["offset"]) == [0, 1, 2, 3]


def test_covered_files_are_hidden(tmp_path: Path) -> None:
    d = tmp_path / "scored" / "date=2026-01-01"
    d.mkdir(parents=True)
    names = ["part-0-0-9.parquet", "part-0-0-4.parquet", "part-0-5-9.parquet", "part-0-10-12"]
    names[-1] += ".parquet"
    names += ["part-1-0-4.parquet"]  # another partition: never covered by partition 0
    for name in names:
        (d / name).touch()
    other_day = tmp_path / "scored" / "date=2026-01-02"
    other_day.mkdir()
    (other_day / "part-0-3-3.parquet").touch()  # another date: not covered either
    visible = {(p.date, p.path.name) for p in visible_parts(list_parts(tmp_path, "scored"))}
    assert visible == {
        ("2026-01-01", "part-0-0-9.parquet"),
        ("2026-01-01", "part-0-10-12.parquet"),
        ("2026-01-01", "part-1-0-4.parquet"),
        ("2026-01-02", "part-0-3-3.parquet"),
    }


def test_read_lake_ignores_inputs_of_a_crashed_compaction(tmp_path: Path) -> None:
    day = [T0 + i for i in range(6)]
    write_rows(tmp_path, "scored", 0, rows([0, 1, 2], day[:3]))
    write_rows(tmp_path, "scored", 0, rows([3, 4, 5], day[3:]))
    d = tmp_path / "scored" / "date=2026-01-01"
    merged = pl.concat([pl.read_parquet(p) for p in sorted(d.glob("part-*"))])
    merged.write_parquet(d / "part-0-0-5.parquet")  # new file written, old not deleted yet
    frame = read_lake(tmp_path, "scored").collect()
    assert frame.height == 6
    assert frame["event_id"].n_unique() == 6


def test_compaction_merges_and_keeps_every_row_once(tmp_path: Path) -> None:
    day1, day2 = T0 + 10, T0 + DAY + 10
    for start in range(0, 30, 3):  # ten small flushes, dates alternating within them
        write_rows(tmp_path, "scored", 0, rows([start, start + 1, start + 2], [day1, day2, day1]))
    write_rows(tmp_path, "scored", 1, rows([0, 1], [day1, day1], 1))
    labels = [
        label_row(
            factories.label(f"txn-{i:06d}", "transaction", i % 2 == 0, at=day2),
            "ns.labels.v1",
            0,
            i,
        )
        for i in range(4)
    ]
    write_rows(tmp_path, "labels", 0, labels[:2])
    write_rows(tmp_path, "labels", 0, labels[2:])
    before = read_lake(tmp_path, "scored").collect().sort("partition", "offset")
    resume = next_offsets(tmp_path, "scored")

    report = compact(tmp_path)

    after = read_lake(tmp_path, "scored").collect().sort("partition", "offset")
    assert after.equals(before)
    assert after.height == 32
    names = sorted((p.date, p.path.name) for p in list_parts(tmp_path, "scored"))
    assert names == [
        ("2026-01-01", "part-0-0-29.parquet"),
        ("2026-01-01", "part-1-0-1.parquet"),
        ("2026-01-02", "part-0-1-28.parquet"),
    ]
    assert next_offsets(tmp_path, "scored") == resume
    assert [p.path.name for p in list_parts(tmp_path, "labels")] == ["part-0-0-3.parquet"]
    assert read_lake(tmp_path, "labels").collect()["event_id"].n_unique() == 4
    assert report.written_files == 3
    assert compact(tmp_path).written_files == 0  # nothing left to merge


def test_compaction_finishes_a_crashed_one(tmp_path: Path) -> None:
    write_rows(tmp_path, "scored", 0, rows([0], [T0]))
    write_rows(tmp_path, "scored", 0, rows([1], [T0]))
    d = tmp_path / "scored" / "date=2026-01-01"
    pl.concat([pl.read_parquet(p) for p in sorted(d.glob("part-*"))]).write_parquet(
        d / "part-0-0-1.parquet"
    )
    compact(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["part-0-0-1.parquet"]
    assert read_lake(tmp_path, "scored").collect().height == 2


def test_empty_lake_reads_as_empty_frame(tmp_path: Path) -> None:
    frame = read_lake(tmp_path, "labels").collect()
    assert frame.height == 0
    assert "is_positive" in frame.columns and "date" in frame.columns


def test_one_sink_per_lake(tmp_path):
    from batch.lake import SinkError, read_lake, sink_lock

    with (
        sink_lock(tmp_path),
        pytest.raises(SinkError, match="another sink is writing"),
        sink_lock(tmp_path),
    ):
        pass
    with sink_lock(tmp_path):  # released when the first sink ends
        pass
    assert read_lake(tmp_path, "scored").collect().height == 0  # the lock file is no data


def test_files_from_before_a_new_column_read_and_compact_with_nulls(tmp_path: Path) -> None:
    """A column added later (``scope_id``) is null in older files, never an error."""
    write_rows(tmp_path, "scored", 0, rows([0, 1], [T0, T0 + 1]))
    old = next(iter(list_parts(tmp_path, "scored"))).path
    pl.read_parquet(old).drop("scope_id").write_parquet(old)
    write_rows(tmp_path, "scored", 0, rows([2], [T0 + 2]))

    frame = read_lake(tmp_path, "scored").collect()
    assert frame["scope_id"].to_list() == [None, None, ""]
    compact(tmp_path)
    assert read_lake(tmp_path, "scored").collect()["scope_id"].to_list() == [None, None, ""]
