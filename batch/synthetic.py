"""A lake filled with generated history, without running the stack for days.

The producers' simulators generate the events; the backtest engine scores them with the
exact worker code path (features, online model, labels learned after their delay), so the
rows are what the lake sink would have written had the stream run through that history:
served features, online scores, decisions, and labels at their arrival times. Used by the
retrain's tests and benchmarks, and by anyone who wants to try ``python -m batch retrain``
before their own stack has accumulated labels.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from batch.lake import label_row, next_offsets, scored_row, write_rows
from models.events import Label, LabelSource, ScoredEvent, Transaction, utc_from_timestamp
from models.names import EventKind, Topics
from models.online import OnlineModel
from models.settings import Settings
from stream.backtest import Backtest, Scored, generated_events
from stream.scoring import SPECS, Thresholds

CHUNK = 50_000
E = TypeVar("E")
L = TypeVar("L")


def fill_lake(
    lake_dir: Path | str,
    kind: EventKind,
    count: int,
    *,
    seed: int = 0,
    start: float = 1_767_225_600.0,  # 2026-01-01T00:00:00Z
    label_delay_s: float = 3 * 86_400.0,
    positive_rate: float | None = None,
    drift_at: float | None = None,
    truth: dict[str, float] | None = None,
    namespace: str = "fraud",
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Generate ``count`` events of ``kind``, score them and write them and their labels to
    the lake at ``lake_dir``. Label delays are uniform in [0.5, 1.5] x ``label_delay_s``;
    ``drift_at`` starts the simulator's drift scenario; ``truth``, when given, receives each
    event's true probability by event id (for evaluation only). Returns (scored, label rows).
    """
    settings = Settings(namespace=namespace)
    rng = random.Random(seed)
    spec = SPECS[kind]
    backtest: Backtest[Any, Any] = Backtest(
        spec,
        OnlineModel(kind, positive_weight=settings.positive_weight),
        Thresholds.for_kind(kind, settings),
        label_delay_s=label_delay_s,
    )

    def items() -> Iterator[tuple[Any, bool]]:
        for event, positive, p in generated_events(
            kind, count, seed, start, positive_rate, drift_at
        ):
            if truth is not None:
                truth[event.event_id] = p
            yield event, positive

    recorder = LakeRecorder(lake_dir, kind, namespace)
    for batch in backtest.run(recorder.feed(items())):
        for scored in batch:
            delay = label_delay_s * (0.5 + rng.random())
            recorder.add(scored, scored.event_time + delay)
        if progress is not None:
            progress(recorder.scored)
    return recorder.close()


class LakeRecorder:
    """Writes what the backtest engine scores to a lake, as the lake sink would have written
    it from the topics: one scored row per event as it comes (offsets in order, files of
    :data:`CHUNK` rows), and on :meth:`close` each label at its arrival time, in arrival
    order. Used by :func:`fill_lake` and by ``python -m stream backtest --batch-compare``.

    The events pass through :meth:`feed` on their way to the backtest engine, which scores
    them in order; :meth:`add` pairs each ``Scored`` with the event it belongs to."""

    def __init__(self, lake_dir: Path | str, kind: EventKind, namespace: str = "fraud") -> None:
        self._lake_dir = lake_dir
        self._kind: EventKind = kind
        self._topics = Topics.for_namespace(namespace)
        self._rows: list[dict[str, Any]] = []
        self._labels: list[tuple[float, str, bool]] = []
        self._first = self._offset = next_offsets(lake_dir, "scored").get(0, 0)
        self._fed: deque[Any] = deque()

    @property
    def scored(self) -> int:
        """Scored rows recorded so far."""
        return self._offset - self._first

    def feed(self, items: Iterable[tuple[E, L]]) -> Iterator[tuple[E, L]]:
        """``items`` (event, label) unchanged, each event kept until :meth:`add`."""
        for event, label in items:
            self._fed.append(event)
            yield event, label

    def add(self, scored: Scored, label_at: float | None) -> None:
        """Record the next fed event as the backtest scored it; with ``label_at``, its label
        (the backtest's ``scored.label``) arrives then."""
        event = self._fed.popleft()
        if label_at is not None:
            self._labels.append((label_at, scored.event_id, bool(scored.label)))
        self._rows.append(
            scored_row(
                _scored_event(self._kind, event, scored), self._topics.scored, 0, self._offset
            )
        )
        self._offset += 1
        if len(self._rows) >= CHUNK:
            write_rows(self._lake_dir, "scored", 0, self._rows)
            self._rows = []

    def close(self) -> tuple[int, int]:
        """Write what is left and the labels; return (scored rows, label rows)."""
        if self._rows:
            write_rows(self._lake_dir, "scored", 0, self._rows)
            self._rows = []
        self._labels.sort()
        label_first = next_offsets(self._lake_dir, "labels").get(0, 0)
        positive_source: LabelSource = (
            "chargeback" if self._kind == "transaction" else "spam_report"
        )
        label_rows = [
            label_row(
                Label(
                    event_id=event_id,
                    event_time=utc_from_timestamp(arrival),
                    kind=self._kind,
                    is_positive=positive,
                    source=positive_source if positive else "generator",
                ),
                self._topics.labels,
                0,
                label_first + n,
            )
            for n, (arrival, event_id, positive) in enumerate(self._labels)
        ]
        for i in range(0, len(label_rows), CHUNK):
            write_rows(self._lake_dir, "labels", 0, label_rows[i : i + CHUNK])
        return self.scored, len(label_rows)


def _scored_event(kind: EventKind, event: Any, scored: Scored) -> ScoredEvent:
    scope = event.terminal_id if isinstance(event, Transaction) else event.sender
    return ScoredEvent(
        event_id=scored.event_id,
        event_time=event.event_time,
        kind=kind,
        entity_id=scored.entity,
        scope_id=scope,
        scored_at=utc_from_timestamp(scored.event_time + 0.05),
        features=scored.features,
        online_score=scored.online_score,
        score=scored.online_score,
        decision=scored.decision,
        online_version="backtest",
    )
