"""The Grafana data sources the dashboards read, with the fixed uids the panels reference.

Fixed uids make the dashboards portable: a panel names ``fraudstream-prometheus``, never a
numeric id that differs from one Grafana to the next, and provisioning updates the data
source in place when its URL changes. Secrets (a Redis password) travel only in
``secureJsonData``, which Grafana documents as stored encrypted and never returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

PROMETHEUS_UID = "fraudstream-prometheus"
ALERTS_UID = "fraudstream-alerts"
REDIS_PLUGIN = "redis-datasource"
"""Grafana's Redis data source plugin (by Redis Ltd.); the live alerts tables need it:
``GF_PLUGINS_PREINSTALL=redis-datasource`` in Grafana's environment (Grafana 11.5 or later,
per Grafana's documentation; ``GF_INSTALL_PLUGINS`` in older images)."""

PROMETHEUS_REF = {"type": "prometheus", "uid": PROMETHEUS_UID}
ALERTS_REF = {"type": REDIS_PLUGIN, "uid": ALERTS_UID}

DEFAULT_PROMETHEUS_URL = "http://prometheus:9090"
DEFAULT_SCRAPE_INTERVAL = "15s"

_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h)$")


class DataSourceError(ValueError):
    """A URL or setting that cannot make a working data source."""


@dataclass(frozen=True)
class DataSource:
    """One data source as Grafana's ``/api/datasources`` takes it."""

    body: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    plugin: str | None = None
    """A plugin Grafana must have installed for this type (``None``: built in)."""

    @property
    def uid(self) -> str:
        return str(self.body["uid"])

    def payload(self) -> dict[str, Any]:
        """What is sent: the body, plus the secrets when there are any."""
        if not self.secrets:
            return dict(self.body)
        return {**self.body, "secureJsonData": dict(self.secrets)}


def prometheus(url: str, scrape_interval: str = DEFAULT_SCRAPE_INTERVAL) -> DataSource:
    """The Prometheus that scrapes the workers, as Grafana's server (not a browser) reaches it.

    ``scrape_interval`` must match Prometheus's ``scrape_interval``: Grafana documents
    ``$__rate_interval`` as derived from it, and a rate over less than two scrapes is empty.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataSourceError(f"Prometheus URL must be http(s)://host[:port], not {url!r}")
    if parts.username or parts.password:
        raise DataSourceError("Prometheus URL must not carry credentials")
    if not _DURATION.match(scrape_interval):
        raise DataSourceError(f"scrape interval must look like 15s or 1m, not {scrape_interval!r}")
    return DataSource(
        body={
            "uid": PROMETHEUS_UID,
            "name": "Fraudstream Prometheus",
            "type": "prometheus",
            "access": "proxy",
            "url": url.rstrip("/"),
            "isDefault": False,
            "jsonData": {"httpMethod": "POST", "timeInterval": scrape_interval},
        }
    )


def alerts(redis_url: str) -> DataSource:
    """The Redis whose capped stream holds the recent alerts (``FRAUD_REDIS_URL``)."""
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise DataSourceError(
            f"Redis URL must be redis[s]://[[user]:password@]host[:port][/db], not {redis_url!r}"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise DataSourceError(f"Redis URL has an invalid port: {redis_url!r}") from None
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise DataSourceError(f"Redis database must be a number, not {db!r}")
    address = f"{parts.hostname}:{port}"
    # The plugin dials its URL as host:port (read in its source, not tried here); a redis://
    # URL is for another database, which its client library is expected to parse.
    url = address if db == "0" else f"redis://{address}/{db}"
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    return DataSource(
        body={
            "uid": ALERTS_UID,
            "name": "Fraudstream alerts (Redis)",
            "type": REDIS_PLUGIN,
            "access": "proxy",
            "url": url,
            "isDefault": False,
            "jsonData": {
                "client": "standalone",
                "poolSize": 5,
                "timeout": 10,
                "pingInterval": 0,
                "pipelineWindow": 0,
                "tlsAuth": parts.scheme == "rediss",
                "acl": bool(user),
                "user": user,
            },
        },
        secrets={"password": password} if password else {},
        plugin=REDIS_PLUGIN,
    )
