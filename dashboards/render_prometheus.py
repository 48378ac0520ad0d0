"""The few calls of Prometheus's HTTP API that ``python -m dashboards render`` makes.

Plain ``urllib``: three endpoints do not justify a client library. Queries go as POST form
bodies, as Grafana sends them (``httpMethod: POST`` in :mod:`dashboards.datasources`), so a
long PromQL expression never meets a URL length limit. Two kinds of failure are kept apart:
:class:`PrometheusError` (nothing usable answers at the URL) stops the whole run, while
:class:`QueryError` (Prometheus refused one expression) only marks the panel that asked.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


class PrometheusError(Exception):
    """Prometheus cannot be reached at the URL, or what answers there is not Prometheus."""


class QueryError(Exception):
    """Prometheus answered, but refused or failed one query (its own message)."""


@dataclass(frozen=True)
class Series:
    """One series of a result: its labels, and its samples (one for an instant query)."""

    labels: dict[str, str]
    times: list[float]
    values: list[float]

    @property
    def last(self) -> float:
        """The newest sample that is a number (Grafana's ``lastNotNull``), or NaN."""
        for value in reversed(self.values):
            if not math.isnan(value):
                return value
        return math.nan


class Prometheus:
    """One Prometheus server, by base URL (``http://host:port``, with any path prefix)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def check(self) -> str:
        """Prometheus's version: fails early, before any picture, when the URL is wrong."""
        data = self._call("/api/v1/status/buildinfo", None)
        if not isinstance(data, dict) or "version" not in data:
            raise PrometheusError(f"{self.url} does not answer like Prometheus's HTTP API")
        return str(data["version"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """``/api/v1/query_range``: a matrix of samples every ``step`` seconds."""
        params = {"query": expr, "start": _number(start), "end": _number(end)}
        data = self._call("/api/v1/query_range", {**params, "step": _number(step)})
        return _series(data, "matrix")

    def query(self, expr: str, at: float) -> list[Series]:
        """``/api/v1/query``: one sample per series, at ``at``."""
        data = self._call("/api/v1/query", {"query": expr, "time": _number(at)})
        return _series(data, "vector")

    def _call(self, path: str, form: dict[str, str] | None) -> Any:
        """The ``data`` of a successful reply; GET without a form, POST with one."""
        body = None if form is None else urlencode(form).encode()
        request = urllib.request.Request(self.url + path, data=body)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = _json(response.read())
        except urllib.error.HTTPError as exc:
            # Prometheus answers a bad query with 400 or 422 and a JSON error body.
            reply = _json(exc.read())
            if exc.code not in (400, 422, 503) or not isinstance(reply, dict):
                raise PrometheusError(
                    f"{self.url}{path} answered HTTP {exc.code}: is this Prometheus's URL?"
                ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {reason}") from None
        if not isinstance(reply, dict) or "status" not in reply:
            raise PrometheusError(f"{self.url}{path} did not answer with Prometheus's JSON")
        if reply["status"] != "success":
            raise QueryError(f"{reply.get('errorType', 'error')}: {reply.get('error', '?')}")
        return reply.get("data")


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _series(data: Any, kind: str) -> list[Series]:
    """The series of a ``matrix`` or ``vector`` result (a ``scalar`` is one unlabelled
    series, as Grafana shows it)."""
    if not isinstance(data, dict):
        raise QueryError("reply without data")
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        return [Series({}, [float(result[0])], [float(result[1])])]
    if data.get("resultType") != kind or not isinstance(result, list):
        raise QueryError(f"expected a {kind}, got {data.get('resultType')!r}")
    found = []
    for item in result:
        samples = item["values"] if kind == "matrix" else [item["value"]]
        found.append(
            Series(
                labels=dict(item.get("metric", {})),
                times=[float(t) for t, _ in samples],
                values=[float(v) for _, v in samples],
            )
        )
    return found
