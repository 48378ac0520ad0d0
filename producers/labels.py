"""Ground truth that arrives late, like chargebacks and spam reports do.

A fraud is only known when the card holder disputes it, days later; a spam only when someone
reports it. The queue models that: each labelled event gets an arrival time of event time +
a random delay (by default uniform between half and one and a half times the mean, so no
label can overtake its own event in a running system), a configurable share never arrives at
all, and labels are released in arrival order once the producer's clock passes their arrival time.

Both classes get labels: online learning needs negatives too. A legit transaction's label
means "no chargeback came" and a ham's "nobody reported it"; their source is ``generator``.
"""

from __future__ import annotations

import heapq
import random
from typing import Literal

from models.events import Label, utc_from_timestamp
from models.names import EventKind

Source = Literal["chargeback", "spam_report", "analyst", "replay", "generator"]
POSITIVE_SOURCE: dict[EventKind, Source] = {"transaction": "chargeback", "email": "spam_report"}


class LabelQueue:
    """Holds labels until their arrival time; ``due(now)`` releases those that arrived."""

    def __init__(
        self,
        rng: random.Random,
        *,
        mean_delay_s: float = 30.0,
        missing_rate: float = 0.0,
        source: Source | None = None,
        jitter: float = 0.5,
    ) -> None:
        """``source`` forces one source for every label (``replay``); by default positives
        come as ``chargeback``/``spam_report`` and negatives from the ``generator``. Delays
        are uniform in ``mean * (1 +- jitter)``; a replay uses ``jitter=0``."""
        if mean_delay_s < 0:
            raise ValueError("the label delay cannot be negative")
        if not 0.0 <= missing_rate <= 1.0:
            raise ValueError("the missing-label rate must be in [0, 1]")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("the delay jitter must be in [0, 1]")
        self._rng = rng
        self.mean_delay_s = mean_delay_s
        self.missing_rate = missing_rate
        self._source = source
        self._low = mean_delay_s * (1.0 - jitter)
        self._span = mean_delay_s * 2.0 * jitter
        self._heap: list[tuple[float, int, str, EventKind, bool]] = []
        self._seq = 0
        self.dropped = 0
        self.released = 0

    def add(self, event_id: str, kind: EventKind, is_positive: bool, event_time: float) -> None:
        """Schedule the label of one event (or decide now that it will never come)."""
        rand = self._rng.random
        if self.missing_rate and rand() < self.missing_rate:
            self.dropped += 1
            return
        arrival = event_time + self._low
        if self._span:
            arrival += self._span * rand()
        self._seq += 1
        heapq.heappush(self._heap, (arrival, self._seq, event_id, kind, is_positive))

    @property
    def next_arrival(self) -> float | None:
        """When the next label arrives, or None when none is waiting."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[Label]:
        """Labels that have arrived by ``now``, in arrival order."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return []
        out = []
        while heap and heap[0][0] <= now:
            out.append(self._label(*heapq.heappop(heap)))
        return out

    def drain(self) -> list[Label]:
        """Every label still waiting, in arrival order (the end of a simulated run)."""
        return self.due(float("inf"))

    def __len__(self) -> int:
        return len(self._heap)

    def _label(
        self, arrival: float, _seq: int, event_id: str, kind: EventKind, is_positive: bool
    ) -> Label:
        self.released += 1
        source: Source
        if self._source is not None:
            source = self._source
        elif is_positive:
            source = POSITIVE_SOURCE[kind]
        else:
            source = "generator"
        return Label(
            event_id=event_id,
            event_time=utc_from_timestamp(arrival),
            kind=kind,
            is_positive=is_positive,
            source=source,
        )
