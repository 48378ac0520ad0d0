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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batch.lake import label_row, next_offsets, scored_row, write_rows
from models.events import Label, ScoredEvent, Transaction, utc_from_timestamp
from models.names import EventKind, Topics
from models.online import OnlineModel
from models.settings import Settings
from stream.backtest import Backtest, generated_events
from stream.scoring import SPECS, Thresholds

CHUNK = 50_000


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
    topics = Topics.for_namespace(namespace)
    rng = random.Random(seed)
    spec = SPECS[kind]
    backtest: Backtest[Any, Any] = Backtest(
        spec,
        OnlineModel(kind, positive_weight=settings.positive_weight),
        Thresholds.for_kind(kind, settings),
        label_delay_s=label_delay_s,
    )
    fed: deque[Any] = deque()
    labels: list[tuple[float, str, bool]] = []

    def items() -> Iterator[tuple[Any, bool]]:
        for event, positive, p in generated_events(
            kind, count, seed, start, positive_rate, drift_at
        ):
            if truth is not None:
                truth[event.event_id] = p
            fed.append(event)
            yield event, positive

    rows: list[dict[str, Any]] = []
    first = offset = next_offsets(lake_dir, "scored").get(0, 0)  # append after what is there
    for batch in backtest.run(items()):
        for scored in batch:
            event = fed.popleft()
            delay = label_delay_s * (0.5 + rng.random())
            labels.append((scored.event_time + delay, scored.event_id, bool(scored.label)))
            rows.append(scored_row(_scored_event(kind, event, scored), topics.scored, 0, offset))
            offset += 1
        if len(rows) >= CHUNK:
            write_rows(lake_dir, "scored", 0, rows)
            rows = []
        if progress is not None:
            progress(offset - first)
    if rows:
        write_rows(lake_dir, "scored", 0, rows)
    labels.sort()
    label_first = next_offsets(lake_dir, "labels").get(0, 0)
    label_rows = [
        label_row(
            Label(
                event_id=event_id,
                event_time=utc_from_timestamp(arrival),
                kind=kind,
                is_positive=positive,
                source=("chargeback" if kind == "transaction" else "spam_report")
                if positive
                else "generator",
            ),
            topics.labels,
            0,
            label_first + n,
        )
        for n, (arrival, event_id, positive) in enumerate(labels)
    ]
    for i in range(0, len(label_rows), CHUNK):
        write_rows(lake_dir, "labels", 0, label_rows[i : i + CHUNK])
    return offset - first, len(label_rows)


def _scored_event(kind: EventKind, event: Any, scored: Any) -> ScoredEvent:
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
