"""Where the generators' event times come from: the wall clock, or a simulated clock.

A live demo stamps each event with *now*, so a running worker sees a stream that looks like
production. A fast run (``--rate 0`` or ``--simulate-start``) instead advances a simulated
clock by random gaps, a few events per simulated second, so that a minute of CPU covers days
of traffic with its daily and weekly rhythm, and label delays of days stay cheap to wait for.

The rhythm (busy lunch hours and evenings, quiet nights, busier weekends) is a property of
the simulated world, so it lives here and the generators share it. Hours are UTC: the
synthetic population lives in one time zone, which keeps the rhythm visible in dashboards.
"""

from __future__ import annotations

import random
import time
from typing import Protocol

from models.features import DAY_S, HOUR_S

_HOURLY_SHAPE = (
    0.25,
    0.15,
    0.10,
    0.08,
    0.08,
    0.15,  # 00-05: night
    0.40,
    0.75,
    1.05,
    1.15,
    1.20,
    1.35,  # 06-11: morning
    1.60,
    1.45,
    1.20,
    1.20,
    1.30,
    1.55,  # 12-17: lunch, afternoon
    1.75,
    1.70,
    1.40,
    1.05,
    0.70,
    0.40,  # 18-23: evening
)
HOURLY_ACTIVITY: tuple[float, ...] = tuple(x * 24 / sum(_HOURLY_SHAPE) for x in _HOURLY_SHAPE)
"""Relative arrival intensity per hour of day, mean 1."""

WEEKDAY_ACTIVITY: tuple[float, ...] = (0.95, 0.95, 1.0, 1.0, 1.1, 1.2, 0.8)
"""Relative intensity Monday..Sunday: Friday and Saturday busy, Sunday quiet."""


def hour_of_day(ts: float) -> int:
    """The UTC hour (0-23) of POSIX time ``ts``."""
    return int(ts % DAY_S // HOUR_S)


def weekday(ts: float) -> int:
    """The UTC weekday of POSIX time ``ts``, Monday = 0 (1970-01-01 was a Thursday)."""
    return int((ts // DAY_S + 3) % 7)


def activity(ts: float) -> float:
    """Relative arrival intensity at ``ts``: the product of the hourly and weekly rhythms."""
    return HOURLY_ACTIVITY[hour_of_day(ts)] * WEEKDAY_ACTIVITY[weekday(ts)]


def start_before(end: float, events: int, events_per_s: float) -> float:
    """The simulated start from which ``events`` arrivals, at ``events_per_s`` shaped by the
    rhythm, are expected to end at ``end``: a fast run that ends about now."""
    t, need = end, float(events)
    while need > 0:
        hour_start = t - (t % HOUR_S or HOUR_S)
        rate = events_per_s * activity(hour_start)
        expected = (t - hour_start) * rate
        if expected >= need:
            return t - need / rate
        need -= expected
        t = hour_start
    return t


class Clock(Protocol):
    """Gives the event time of the next generated event, never earlier than the previous one."""

    def tick(self) -> float: ...


class WallClock:
    """Live mode: every event happens now."""

    def tick(self) -> float:
        return time.time()


class SimulatedClock:
    """Simulated time: exponential gaps at ``events_per_s`` scaled by the daily rhythm.

    The intensity is looked up once per simulated minute rather than per event: it only
    changes hourly, and the lookup would otherwise cost as much as the gap itself.
    """

    def __init__(
        self,
        start: float,
        events_per_s: float,
        rng: random.Random,
        *,
        rhythm: bool = True,
    ) -> None:
        if events_per_s <= 0:
            raise ValueError("a simulated clock needs a positive arrival rate")
        self.now = start
        self._rate = events_per_s
        self._rng = rng
        self._rhythm = rhythm
        self._next_lookup = start
        self._current_rate = events_per_s

    def tick(self) -> float:
        if self._rhythm and self.now >= self._next_lookup:
            self._current_rate = self._rate * activity(self.now)
            self._next_lookup = self.now + 60.0
        self.now += self._rng.expovariate(self._current_rate)
        return self.now
