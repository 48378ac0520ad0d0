"""Every dashboard and where it lives: what ``provision`` uploads and ``export`` writes.

The dashboards depend on the namespace only through the recent-alerts stream in Redis;
metric names carry no namespace (one Prometheus scrapes one deployment).
"""

from __future__ import annotations

from dashboards import kinds, model_health, overview
from dashboards.panels import Json, alerts_table, dashboard
from models.names import RedisKeys

FOLDER_UID = "fraudstream"
FOLDER_TITLE = "Fraudstream"
LIVE_ALERTS_UID = "fraudstream-live-alerts"


def live_alerts(alerts_stream: str) -> Json:
    """One full-width table of the newest alerts of both kinds."""
    table = alerts_table(
        "Live alerts",
        "Newest first; decision, scores, reasons and model version of each.",
        stream_key=alerts_stream,
        kind=None,
    )
    return dashboard(
        LIVE_ALERTS_UID,
        "Fraudstream: live alerts",
        "The newest alerts, both kinds, from the workers' recent-alerts stream in Redis.",
        [(24, [(table, 24)])],
        refresh="5s",
        time_from="now-1h",
    )


def all_dashboards(namespace: str) -> list[Json]:
    """The dashboards of one deployment, Overview first."""
    stream = RedisKeys(namespace).alerts_stream
    return [
        overview.build(),
        kinds.build(kinds.FRAUD, stream),
        kinds.build(kinds.SPAM, stream),
        model_health.build(),
        live_alerts(stream),
    ]
