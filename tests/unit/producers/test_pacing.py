"""Pacing and time: the rate is kept, count and duration end a run, and simulated time has
its rhythm."""

from __future__ import annotations

import io
import random
import time

from producers.clock import SimulatedClock, activity, start_before, weekday
from producers.pacing import Pace, Progress


def test_count_ends_the_run():
    pace = Pace(count=3)
    assert [pace.next() for _ in range(5)] == [True, True, True, False, False]


def test_duration_ends_the_run():
    started = time.monotonic()  # before the Pace, whose clock starts when it is made
    pace = Pace(duration=0.05)
    while pace.next():
        pass
    assert 0.05 <= time.monotonic() - started < 1.0


def test_the_rate_is_kept():
    started = time.monotonic()
    pace = Pace(rate=200.0, count=40)
    while pace.next():
        pass
    assert 0.18 <= time.monotonic() - started < 1.0  # 40 events at 200/s: 0.2 s


def test_progress_prints_a_line_when_due_and_a_summary():
    out = io.StringIO()
    progress = Progress("transactions", every_s=0.0, out=out)
    progress.update(10, 1, 5, 1_767_225_600.0)
    progress.finish(20, 2, 10, 1_767_225_600.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "10 events (10.00% positive), 5 labels" in lines[0]
    assert "2026-01-01 00:00:00Z" in lines[0] and "done" in lines[1]


def test_a_simulated_run_started_by_start_before_ends_about_then():
    end = 1_767_225_600.0 + 13.5 * 3600
    start = start_before(end, 50_000, 2.0)
    clock = SimulatedClock(start, 2.0, random.Random(1))
    for _ in range(50_000):
        last = clock.tick()
    assert abs(last - end) < 600  # within ten minutes
    # Busy morning hours: the 50k arrivals take under the 6.9 h a flat 2/s would need.
    assert 4 * 3600 < end - start < 6 * 3600


def test_the_rhythm_is_busy_at_lunch_and_quiet_at_night():
    noon, night = 1_767_225_600.0 + 12.5 * 3600, 1_767_225_600.0 + 3.5 * 3600
    assert activity(noon) > 5 * activity(night)
    assert weekday(1_767_225_600.0) == 3  # 2026-01-01 is a Thursday
