"""The producing loop every command shares: pace, publish each event, and release each label
once the event clock passes its arrival time.

Labels ride on the *event* clock, not the wall clock: in live mode the two are the same, and
in a simulated or replayed run a label due a day after its event is sent after the events of
that day, however fast the run goes. That is what keeps a fast run honest: a model never gets
a label before the events that came before it in event time.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from models.events import Email, Transaction
from models.names import EventKind
from producers.labels import LabelQueue
from producers.pacing import Pace, Progress
from producers.publisher import Sink


@dataclass
class Feed:
    """One run's loop and its tallies. ``latest_time`` stops the run at the first event
    stamped later than that (a simulated clock running into the future)."""

    sink: Sink
    events_topic: str
    labels_topic: str
    kind: EventKind
    labels: LabelQueue
    pace: Pace
    progress: Progress | None = None
    latest_time: float | None = None
    events: int = 0
    positives: int = 0
    last_time: float = 0.0
    stopped: str | None = None
    """Why the run ended early, in words (None when it ran its course)."""
    labels_held: int = 0
    """Labels not sent at the end because they were stamped after ``latest_time``."""

    def run(self, items: Iterator[tuple[Transaction | Email, bool | None]]) -> None:
        """Publish ``(event, label)`` pairs until the pace or the items run out."""
        publish, publish_label = self.sink.publish, self.sink.publish_label
        add, due = self.labels.add, self.labels.due
        events_topic, labels_topic, kind = self.events_topic, self.labels_topic, self.kind
        progress, latest = self.progress, self.latest_time
        # The pace is asked before the next event is drawn: no event is generated (or written
        # to the truth file) that is not sent, and live event times are stamped after the wait.
        while self.pace.next():
            item = next(items, None)
            if item is None:
                break
            event, label = item
            ts = event.timestamp
            if latest is not None and ts > latest:
                self.stopped = (
                    f"simulated time reached {event.event_time.isoformat()}, more than a day "
                    "ahead of now, which consumers refuse; start earlier with --simulate-start "
                    "or produce fewer events"
                )
                break
            publish(events_topic, event)
            self.events += 1
            if label is not None:
                self.positives += label
                add(event.event_id, kind, label, ts)
            for ready in due(ts):
                publish_label(labels_topic, ready)
            self.last_time = ts
            if progress is not None:
                progress.update(self.events, self.positives, self.labels.released, ts)

    def finish_labels(self, *, wait: bool, out: IO[str] | None = None) -> None:
        """Send the labels still waiting: on time when ``wait`` (live mode), else at once,
        except those stamped after ``latest_time``: a simulated run ending near now has
        labels due up to days later, which consumers would refuse as from the future (they
        were dead-lettered by the thousand at the end of a simulated soak)."""
        labels, sink, topic = self.labels, self.sink, self.labels_topic
        out = out or sys.stderr
        if not wait or not len(labels):
            limit = self.latest_time if self.latest_time is not None else math.inf
            for label in labels.due(limit):
                sink.publish_label(topic, label)
            if len(labels):
                self.labels_held = len(labels)
                print(
                    f"{len(labels):,} labels not sent: they would arrive more than a day "
                    "ahead of now, which consumers refuse (start the simulated clock earlier "
                    "with --simulate-start to send them)",
                    file=out,
                )
            return
        print(f"waiting for {len(labels):,} labels still due (Ctrl-C to skip)", file=out)
        try:
            while (arrival := labels.next_arrival) is not None:
                time.sleep(max(0.0, min(1.0, arrival - time.time())))
                for label in labels.due(time.time()):
                    sink.publish_label(topic, label)
        except KeyboardInterrupt:
            print(f"skipped {len(labels):,} labels", file=out)

    def summary(self) -> None:
        """The closing progress line (nothing in a dry run)."""
        if self.progress is not None:
            self.progress.finish(self.events, self.positives, self.labels.released, self.last_time)
