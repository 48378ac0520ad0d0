"""What the nightly job learns from: scored events joined to the labels known at the cut-off.

The lake holds every scored event with the exact features the worker served, and every label
with the time it arrived. A retrain at cut-off ``C`` may only use what was known at ``C``:

- events scored before ``C`` (and, optionally, not before ``since``);
- labels that had *arrived* before ``C`` — a chargeback filed after the cut-off does not
  exist yet, whatever the event's time. When an event has several labels (an analyst
  overturned a chargeback), the last one to arrive before ``C`` counts.
- Events without a label by ``C`` are left out, not taken as negatives: the producers and
  analysts label both classes, so "no label" means "not known yet".

An event the worker scored twice (a replay after a crash) appears twice in the lake with
the same served features; the first serving is kept.

The split is by event time, never random: train on the past, choose on the recent past,
judge on the most recent window, as the model will be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from batch.lake import TABLES, list_parts, read_lake
from models.names import EventKind


class RetrainError(RuntimeError):
    """A retrain that cannot go on; the message says why and what to do."""


class DatasetError(RetrainError):
    """The lake cannot give a training set; the message says why and what to do."""


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


def scored_before(
    lake_dir: Path | str, kind: EventKind, cutoff: datetime, since: datetime | None = None
) -> pl.LazyFrame:
    """The lake's scored events of ``kind`` in ``[since, cutoff)``, each event once."""
    scored = read_lake(lake_dir, "scored").filter(
        (pl.col("kind") == kind) & (pl.col("event_time") < cutoff)
    )
    if since is not None:
        scored = scored.filter(pl.col("event_time") >= since)
    return scored.sort("scored_at", "partition", "offset").unique(
        "event_id", keep="first", maintain_order=True
    )


def labels_before(lake_dir: Path | str, kind: EventKind, cutoff: datetime) -> pl.LazyFrame:
    """The labels of ``kind`` that arrived before ``cutoff``: the last per event."""
    return (
        read_lake(lake_dir, "labels")
        .filter((pl.col("kind") == kind) & (pl.col("label_time") < cutoff))
        .sort("label_time", "offset")
        .unique("event_id", keep="last", maintain_order=True)
        .select("event_id", "is_positive", "label_time", "source")
    )


def labelled_examples(
    lake_dir: Path | str, kind: EventKind, cutoff: datetime, since: datetime | None = None
) -> pl.DataFrame:
    """Scored events with the label known at ``cutoff``, in event-time order.

    Raises :class:`DatasetError` for a missing or empty lake and a bad date range.
    """
    check_lake(lake_dir)
    if since is not None and since >= cutoff:
        raise DatasetError(f"--since ({since:%Y-%m-%dT%H:%M:%SZ}) is not before the cut-off")
    scored = scored_before(lake_dir, kind, cutoff, since)
    frame = (
        scored.join(labels_before(lake_dir, kind, cutoff), on="event_id", how="inner")
        .sort("event_time", "event_id")
        .collect()
    )
    if frame.height == 0:
        total = scored.select(pl.len()).collect().item()
        if total == 0:
            raise DatasetError(
                f"the lake at {lake_dir} holds no scored {kind}s before the cut-off "
                f"{cutoff:%Y-%m-%dT%H:%M:%SZ}: publish events and run the lake sink first"
            )
        raise DatasetError(
            f"none of the {total} scored {kind}s before the cut-off has a label yet: "
            "wait for labels (or mark alerts) and retrain"
        )
    return frame


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
    Each window must hold at least ``min_positives`` positives and ``min_negatives``
    negatives, or there is nothing honest to train on or judge by.
    """
    if not (0 < valid_share < 1 and 0 < test_share < 1 and valid_share + test_share < 1):
        raise DatasetError("the validation and test shares must be in (0, 1) with a sum below 1")
    times = frame["event_time"]
    n = frame.height
    valid_start = times[min(n - 1, int(n * (1 - valid_share - test_share)))]
    test_start = times[min(n - 1, int(n * (1 - test_share)))]
    train = frame.filter(pl.col("event_time") < valid_start)
    valid = frame.filter(
        (pl.col("event_time") >= valid_start) & (pl.col("event_time") < test_start)
    )
    test = frame.filter(pl.col("event_time") >= test_start)
    split = Split(train=train, valid=valid, test=test)
    for name, part in (("train", train), ("validation", valid), ("test", test)):
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
