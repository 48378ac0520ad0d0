"""What the nightly job learns from: scored events joined to the labels known at the cut-off.

The lake holds every scored event with the exact features the worker served, and every label
with the time it arrived. A retrain at cut-off ``C`` may only use what was known at ``C``:

- events scored before ``C`` (and, optionally, not before ``since``);
- labels that had *arrived* before ``C`` — a chargeback filed after the cut-off does not
  exist yet, whatever the event's time. When an event has several labels (an analyst
  overturned a chargeback), the last one to arrive before ``C`` counts.
- Events without a label by ``C`` are left out of training, not taken as negatives: the
  producers and analysts label both classes, so "no label" means "not known yet". They still
  count in the batch-only profiles (``batch.profiles``): a card's spending is known without
  a verdict.

An event the worker scored twice (a replay after a crash) appears twice in the lake with
the same served features; the first serving is kept.

The split is by event time, never random: train on the past, choose on the recent past,
judge on the most recent window, as the model will be used.

Memory. The served features are stored as JSON text (about 0.9 kB a transaction), so a lake
of ten million events holds 9 GB of it. :func:`load_history` never keeps that text: one
streaming scan decodes it into one ``Float32`` column per feature (84 bytes a transaction),
and the order and labels are worked out on the narrow key columns first. Float32 rounds a
feature by at most 6e-8 of its value; the trees split between observed values, so a served
float64 lands on the same side unless it lies within that rounding of a split. Emails keep
their JSON as well: their hashed token features are sparse and many.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import polars as pl

from batch.lake import TABLES, list_parts, read_lake
from models.features import EXTRA_FEATURE_PREFIX, dense_feature_names
from models.names import EventKind

FEATURE_DTYPE = pl.Float32
SAMPLE_FOR_EXTRAS = 10_000
"""Rows whose served features are searched for a replayed dataset's ``extra_*`` names."""


class RetrainError(RuntimeError):
    """A retrain that cannot go on; the message says why and what to do."""


class DatasetError(RetrainError):
    """The lake cannot give a training set; the message says why and what to do."""


@dataclass(frozen=True)
class History:
    """Every scored event of one kind before the cut-off, once, in event-time order.

    ``frame`` columns: ``event_id``, ``entity_id``, ``scope_id`` ("" when none),
    ``event_time``, ``online_score``, the label known at the cut-off (``is_positive`` and
    ``label_time``, null when none had arrived), one ``Float32`` column per name in
    ``served`` (null where the event lacked it), and for emails the ``features`` JSON.
    """

    kind: EventKind
    frame: pl.DataFrame
    served: list[str]

    def labels(self) -> pl.LazyFrame:
        """The labels known at the cut-off, each scoped like its event: ``event_id``,
        ``scope_id``, ``is_positive``, ``label_time``."""
        return (
            self.frame.lazy()
            .filter(pl.col("is_positive").is_not_null())
            .select("event_id", "scope_id", "is_positive", "label_time")
        )

    def labelled(self, since: datetime | None = None) -> pl.DataFrame:
        """The events with a label (at or after ``since``): the examples, in time order.

        When every event is labelled and nothing is cut, this is the frame itself, not a
        copy (a synthetic lake labels every event, and a copy would double the memory)."""
        if since is None and self.frame["is_positive"].null_count() == 0:
            return self.frame
        keep = pl.col("is_positive").is_not_null()
        if since is not None:
            keep &= pl.col("event_time") >= since
        examples = self.frame.filter(keep)
        if examples.height == 0:
            raise DatasetError(
                f"none of the {self.frame.height} scored {self.kind}s "
                f"{'since --since ' if since is not None else ''}has a label yet: "
                "wait for labels (or mark alerts) and retrain"
            )
        return examples


@dataclass(frozen=True)
class Split:
    """Time-ordered train / validation / test windows of labelled examples."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per window: events, positives, first and last event time (for the report)."""
        out = {}
        for name in ("train", "valid", "test"):
            frame: pl.DataFrame = getattr(self, name)
            out[name] = {
                "events": frame.height,
                "positives": int(frame["is_positive"].sum()),
                "from": str(frame["event_time"].min()),
                "until": str(frame["event_time"].max()),
            }
        return out

    def describe(self) -> str:
        return "; ".join(
            f"{name} {w['events']} ({w['positives']} positive) {w['from']} .. {w['until']}"
            for name, w in self.summary().items()
        )


def scored_before(lake_dir: Path | str, kind: EventKind, cutoff: datetime) -> pl.LazyFrame:
    """The lake's scored events of ``kind`` before ``cutoff`` (duplicates included; a retrain's
    ``--since`` cuts the examples, not the history the profiles are built from)."""
    return read_lake(lake_dir, "scored").filter(
        (pl.col("kind") == kind) & (pl.col("event_time") < cutoff)
    )


def labels_before(lake_dir: Path | str, kind: EventKind, cutoff: datetime) -> pl.DataFrame:
    """The labels of ``kind`` that arrived before ``cutoff``: the last per event (by arrival
    time, then offset), in no particular order."""
    labels = (
        read_lake(lake_dir, "labels")
        .filter((pl.col("kind") == kind) & (pl.col("label_time") < cutoff))
        .select("event_id", "is_positive", "label_time", "offset")
        .collect(engine="streaming")
    )
    return one_per_event(labels, ("label_time", "offset"), keep="last").drop("offset")


def one_per_event(
    frame: pl.DataFrame, order: tuple[str, ...], keep: Literal["first", "last"]
) -> pl.DataFrame:
    """``frame`` with one row per ``event_id``: the first or last in ``order``.

    Events with several rows are rare (a replay after a crash, an overturned label), so only
    those rows are sorted; sorting ten million rows to drop a handful would double the
    memory. The result's row order is not the input's."""
    repeated = frame["event_id"].is_duplicated()
    if not repeated.any():
        return frame
    chosen = frame.filter(repeated).sort(*order).unique("event_id", keep=keep)
    return pl.concat([frame.filter(~repeated), chosen])


def served_names(scored: pl.LazyFrame, kind: EventKind) -> list[str]:
    """The served feature names a model of ``kind`` reads from the lake: the kind's dense
    features, plus for transactions the ``extra_*`` names a replayed dataset brought (found
    in the first :data:`SAMPLE_FOR_EXTRAS` events, sorted)."""
    names = list(dense_feature_names(kind))
    if kind == "transaction":
        extras: set[str] = set()
        sample = scored.select("features").head(SAMPLE_FOR_EXTRAS).collect()
        for raw in sample["features"]:
            extras.update(k for k in orjson.loads(raw) if k.startswith(EXTRA_FEATURE_PREFIX))
        names += sorted(extras)
    return names


def load_history(lake_dir: Path | str, kind: EventKind, cutoff: datetime) -> History:
    """Every scored event of ``kind`` before ``cutoff`` with its label known then.

    Three passes, none holding the served features as text: the narrow key columns give
    which rows to keep (the first serving of each event) in event-time order and their
    labels; a streaming scan decodes the served features; each column is then put in order
    and its unordered copy dropped before the next, so the peak is one frame and a column.
    Raises :class:`DatasetError` for a missing or empty lake.
    """
    check_lake(lake_dir)
    scored = scored_before(lake_dir, kind, cutoff)
    keys = (
        scored.select("event_id", "event_time", "scored_at", "partition", "offset")
        .with_row_index("_row")
        .collect(engine="streaming")
    )
    if keys.height == 0:
        raise DatasetError(
            f"the lake at {lake_dir} holds no scored {kind}s before the cut-off "
            f"{cutoff:%Y-%m-%dT%H:%M:%SZ}: publish events and run the lake sink first"
        )
    first_serving = one_per_event(keys, ("scored_at", "partition", "offset"), keep="first")
    del keys
    ordered = (
        first_serving.select("_row", "event_id", "event_time")
        .sort("event_time", "event_id")
        .join(
            labels_before(lake_dir, kind, cutoff), on="event_id", how="left", maintain_order="left"
        )
    )
    del first_serving
    names = served_names(scored, kind)
    struct = pl.Struct({name: FEATURE_DTYPE for name in names})
    wide = scored.select(
        "entity_id",
        pl.col("scope_id").fill_null(""),
        "online_score",
        pl.col("features").str.json_decode(struct).alias("_served"),
        *(["features"] if kind == "email" else []),
    ).collect(engine="streaming")
    rows = ordered["_row"]
    columns = [ordered[name] for name in ("event_id", "event_time")]
    for name in ("entity_id", "scope_id", "online_score"):
        columns.append(wide.drop_in_place(name).gather(rows))
    columns += [ordered[name] for name in ("is_positive", "label_time")]
    served = wide.drop_in_place("_served").struct.unnest()
    for name in names:
        columns.append(served.drop_in_place(name).gather(rows))
    del served
    if kind == "email":
        columns.append(wide.drop_in_place("features").gather(rows))
    return History(kind, pl.DataFrame(columns), names)


def check_lake(lake_dir: Path | str) -> None:
    """A clear error when ``lake_dir`` is not a lake at all."""
    path = Path(lake_dir)
    if not path.is_dir():
        raise DatasetError(
            f"no lake at {path}: run `python -m batch sink` (or `make up`) to fill it, "
            "or point FRAUD_LAKE_DIR / --lake-dir at it"
        )
    if not any(list_parts(path, table) for table in TABLES):
        raise DatasetError(
            f"the lake at {path} is empty: no Parquet files under scored/ or labels/"
        )


def time_split(
    frame: pl.DataFrame,
    *,
    valid_share: float = 0.2,
    test_share: float = 0.2,
    min_positives: int = 5,
    min_negatives: int = 5,
) -> Split:
    """Cut ``frame`` (sorted by event time) into train / validation / test by time.

    The boundaries are event times, so events at the same instant always fall on one side.
    The windows are slices of ``frame`` (no copies). Each must hold at least
    ``min_positives`` positives and ``min_negatives`` negatives, or there is nothing honest
    to train on or judge by.
    """
    if not (0 < valid_share < 1 and 0 < test_share < 1 and valid_share + test_share < 1):
        raise DatasetError("the validation and test shares must be in (0, 1) with a sum below 1")
    times = frame["event_time"]
    n = frame.height
    valid_start = times[min(n - 1, int(n * (1 - valid_share - test_share)))]
    test_start = times[min(n - 1, int(n * (1 - test_share)))]
    valid_at = int(times.search_sorted(valid_start, side="left"))
    test_at = int(times.search_sorted(test_start, side="left"))
    split = Split(
        train=frame.slice(0, valid_at),
        valid=frame.slice(valid_at, test_at - valid_at),
        test=frame.slice(test_at),
    )
    for name, part in (("train", split.train), ("validation", split.valid), ("test", split.test)):
        positives = int(part["is_positive"].sum()) if part.height else 0
        negatives = part.height - positives
        if positives < min_positives or negatives < min_negatives:
            raise DatasetError(
                f"too few labels: the {name} window has {positives} positive and {negatives} "
                f"negative labelled events (at least {min_positives} and {min_negatives} "
                f"needed; {n} labelled events in all). Wait for more labels or lower "
                "--min-positives"
            )
    return split
