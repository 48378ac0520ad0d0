"""The producing loop: every event published, each label after the events that precede it in
event time, and a run that stops when its clock runs into the future."""

from __future__ import annotations

import io
import random
from collections.abc import Iterable

from models.events import Email, Label, Transaction
from producers.feed import Feed
from producers.labels import LabelQueue
from producers.pacing import Pace
from producers.transactions import TransactionSimulator

START = 1_767_225_600.0


class Recorder:
    """A sink that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Transaction | Email | Label]] = []

    def ensure_topics(self, topics: Iterable[str]) -> None:
        return None

    def publish(self, topic: str, event: Transaction | Email) -> None:
        self.sent.append((topic, event))

    def publish_label(self, topic: str, label: Label) -> None:
        self.sent.append((topic, label))

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


def feed_of(sink: Recorder, count: int, delay: float, **kwargs: object) -> Feed:
    return Feed(
        sink=sink,
        events_topic="t.events",
        labels_topic="t.labels",
        kind="transaction",
        labels=LabelQueue(random.Random(0), mean_delay_s=delay),
        pace=Pace(count=count),
        **kwargs,  # type: ignore[arg-type]
    )


def items(n: int):
    sim = TransactionSimulator(1, start=START, customers=500, merchants=100)
    for _ in range(n):
        item = next(sim)
        yield item.event, item.is_positive


def test_events_then_labels_in_event_time_order():
    sink = Recorder()
    feed = feed_of(sink, 2_000, delay=60.0)
    feed.run(items(5_000))
    feed.finish_labels(wait=False)
    events = [e for topic, e in sink.sent if topic == "t.events"]
    labels = [e for topic, e in sink.sent if topic == "t.labels"]
    assert feed.events == len(events) == 2_000 == len(labels)
    assert {label.event_id for label in labels} == {e.event_id for e in events}
    last_event = max(i for i, (topic, _) in enumerate(sink.sent) if topic == "t.events")
    clock = 0.0
    for i, (_, message) in enumerate(sink.sent):
        if isinstance(message, Label):
            if i < last_event:  # released during the run: only once the event clock passed it
                assert message.timestamp <= clock
        else:
            clock = message.timestamp
    released_early = sum(isinstance(m, Label) for _, m in sink.sent[:last_event])
    assert released_early > 1_500  # most labels came during the run, not in the final drain


def test_a_clock_running_into_the_future_stops_the_run():
    sink = Recorder()
    feed = feed_of(sink, 1_000, delay=1.0, latest_time=START + 60.0)
    feed.run(items(1_000))
    assert feed.stopped and "ahead of now" in feed.stopped
    assert 0 < feed.events < 1_000
    assert all(m.timestamp <= START + 60.0 for _, m in sink.sent)


def test_the_run_ends_with_its_items():
    feed = feed_of(Recorder(), 100, delay=1.0)
    feed.run(items(10))
    assert feed.events == 10 and feed.stopped is None


def test_labels_due_after_the_latest_time_are_not_sent_at_the_end():
    """A simulated run ending near now: its last labels would arrive more than a day ahead,
    and consumers refuse those; they are held back, and the count said."""
    sink = Recorder()
    feed = feed_of(sink, 500, delay=3_600.0, latest_time=START + 3_000.0)
    feed.run(items(500))
    assert feed.stopped is None and feed.last_time < START + 3_000.0
    out = io.StringIO()
    feed.finish_labels(wait=False, out=out)
    labels = [m for topic, m in sink.sent if topic == "t.labels"]
    assert labels and all(label.timestamp <= START + 3_000.0 for label in labels)
    assert feed.labels_held > 0 and len(labels) + feed.labels_held == 500
    assert f"{feed.labels_held:,} labels not sent" in out.getvalue()
