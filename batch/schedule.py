"""The nightly retrain: a small loop for the compose scheduler service (or any terminal).

Deliberately not cron: one long-running process whose log shows every run, which stops
cleanly on SIGTERM, and which needs nothing installed in the container. Each night at
``FRAUD_RETRAIN_AT`` (UTC) it retrains both kinds; a failed run (too few labels, Redis
down) is logged and leaves production as it was, and the next night tries again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from models.names import EVENT_KINDS
from models.settings import Settings

POLL_S = 1.0


def next_run(now: datetime, at: str) -> datetime:
    """The first ``HH:MM`` UTC strictly after ``now``."""
    hours, minutes = (int(part) for part in at.split(":"))
    candidate = now.astimezone(UTC).replace(hour=hours, minute=minutes, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


def run_nightly(
    settings: Settings,
    *,
    run_now: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    nights: int | None = None,
) -> int:
    """Retrain at every ``settings.retrain_at`` until ``should_stop()``; returns 0.

    ``nights`` bounds the number of runs (tests); ``clock`` and ``sleep`` can be replaced.
    """
    runs = 0
    due = datetime.fromtimestamp(clock(), UTC) if run_now else None
    while not should_stop() and (nights is None or runs < nights):
        if due is None:
            due = next_run(datetime.fromtimestamp(clock(), UTC), settings.retrain_at)
            log(f"schedule: next retrain at {due:%Y-%m-%dT%H:%M}Z")
        if clock() < due.timestamp():
            sleep(min(POLL_S, due.timestamp() - clock()))
            continue
        retrain_all(settings, log)
        runs += 1
        due = None
    return 0


def retrain_all(settings: Settings, log: Callable[[str], None]) -> None:
    """One night's run: every kind, each on its own (one failing does not stop the other)."""
    from batch.announce import announce_model
    from batch.retrain import Options, run

    cutoff = datetime.now(UTC)
    for kind in EVENT_KINDS:
        try:
            outcome = run(
                settings,
                Options(kind=kind, cutoff=cutoff),
                log=log,
                announce=lambda k, v: announce_model(settings, k, v),
            )
            verdict = "published" if outcome.promoted else "kept production"
            log(f"schedule: {kind} {outcome.version} {verdict}: {outcome.reason}")
        except Exception as exc:
            log(f"schedule: {kind} retrain failed, production unchanged: {exc}")
