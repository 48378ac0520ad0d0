"""How fast and how long a producer runs, and what it tells the person watching.

``--rate`` is events per wall-clock second (0: as fast as possible), ``--count`` and
``--duration`` stop the run, whichever comes first. Pacing sleeps only when the run is more
than a millisecond ahead of schedule, so high rates do not pay a system call per event;
progress is one line on stderr every few seconds, which reads well in a terminal and in logs.
"""

from __future__ import annotations

import sys
import time
from typing import IO


class Pace:
    """Keeps a run at ``rate`` events/s and says when it is over."""

    def __init__(
        self, rate: float = 0.0, count: int | None = None, duration: float | None = None
    ) -> None:
        if rate < 0:
            raise ValueError("the rate cannot be negative")
        self.rate = rate
        self.count = count
        self.duration = duration
        self.started = time.monotonic()
        self.done = 0

    def next(self) -> bool:
        """Account for one more event, waiting for its turn; False when the run is over."""
        if self.count is not None and self.done >= self.count:
            return False
        if self.rate > 0 or self.duration is not None:
            now = time.monotonic()
            elapsed = now - self.started
            if self.duration is not None and elapsed >= self.duration:
                return False
            if self.rate > 0:
                ahead = self.done / self.rate - elapsed
                if ahead > 0.001:
                    time.sleep(ahead)
        self.done += 1
        return True

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Progress:
    """Prints a progress line every ``every_s`` seconds and a summary at the end."""

    def __init__(self, what: str, every_s: float = 5.0, out: IO[str] | None = None) -> None:
        self.what = what
        self.every_s = every_s
        self._out = out or sys.stderr
        self._started = time.monotonic()
        self._next = self._started + every_s
        self._last_n = 0
        self._last_t = self._started

    def update(self, events: int, positives: int, labels: int, event_time: float) -> None:
        """Call often; prints only when a line is due (one clock read otherwise)."""
        now = time.monotonic()
        if now < self._next:
            return
        rate = (events - self._last_n) / max(now - self._last_t, 1e-9)
        self._line(events, positives, labels, event_time, f"{rate:,.0f}/s")
        self._next = now + self.every_s
        self._last_n, self._last_t = events, now

    def finish(self, events: int, positives: int, labels: int, event_time: float) -> None:
        elapsed = time.monotonic() - self._started
        rate = events / elapsed if elapsed > 0 else 0.0
        self._line(events, positives, labels, event_time, f"{rate:,.0f}/s overall, done")

    def _line(self, events: int, positives: int, labels: int, event_time: float, rate: str) -> None:
        share = positives / events if events else 0.0
        clock = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event_time)) if event_time else "-"
        print(
            f"{self.what}: {events:,} events ({share:.2%} positive), {labels:,} labels, "
            f"{rate}, event time {clock}Z",
            file=self._out,
            flush=True,
        )
