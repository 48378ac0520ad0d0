"""Create or update the data sources, folder, dashboards and alert rules in a Grafana.

Idempotent by uid: every object is read first and written only when it differs from its
definition, so a second run changes nothing and says so, object by object (shown against the
tests' imitation of Grafana's API; no real Grafana ran). "Differs" means a value the
definition sets is not what Grafana holds; fields Grafana adds by itself (ids, versions,
defaults) do not count. Two limits follow from Grafana's API: a secret (the Redis
password) cannot be read back, so only its presence is compared; and a key dropped from a
definition is not noticed until something else in that object changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from dashboards import alert_rules
from dashboards.catalog import FOLDER_TITLE, FOLDER_UID
from dashboards.datasources import DataSource

Json = dict[str, Any]
Outcome = Literal["created", "updated", "unchanged", "skipped"]

MESSAGE = "provisioned by python -m dashboards"


class ProvisionError(Exception):
    """Grafana could not be reached, refused the credentials, or refused a change."""


@dataclass(frozen=True)
class Result:
    what: str
    uid: str
    outcome: Outcome
    note: str = ""

    def line(self) -> str:
        text = f"{self.what:<11} {self.uid:<32} {self.outcome}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Plan:
    """Everything to provision, already built (nothing here reads the environment)."""

    datasources: Sequence[DataSource]
    dashboards: Sequence[Json]


class Provisioner:
    """Applies a :class:`Plan` to one Grafana through ``grafana_client``.

    ``dry_run`` reads everything and reports what would change, writing nothing.
    """

    def __init__(self, api: GrafanaApi, url: str, *, dry_run: bool = False) -> None:
        self.api = api
        self.url = url
        self.dry_run = dry_run

    def run(self, plan: Plan) -> list[Result]:
        org = self._call(
            "read the current organization", self.api.organization.get_current_organization
        )
        org_id = int(org["id"])
        results = [self._datasource(source) for source in plan.datasources]
        results.append(self._folder())
        results.extend(self._dashboard(board) for board in plan.dashboards)
        results.extend(self._rule(rule) for rule in alert_rules.all_rules(org_id))
        return results

    # -- objects --------------------------------------------------------------------------

    def _datasource(self, source: DataSource) -> Result:
        what = "datasource"
        if source.plugin is not None and not self._plugin_installed(source.plugin):
            return Result(
                what,
                source.uid,
                "skipped",
                f"plugin {source.plugin} is not installed in Grafana "
                f"(GF_PLUGINS_PREINSTALL={source.plugin}); the live-alerts tables stay empty "
                "until it is and this runs again",
            )
        actual = self._read(
            f"read datasource {source.uid}",
            lambda: self.api.datasource.get_datasource_by_uid(source.uid),
        )
        if actual is None:
            self._write(
                f"create datasource {source.uid}",
                lambda: self.api.datasource.create_datasource(source.payload()),
            )
            return Result(what, source.uid, "created")
        present = actual.get("secureJsonFields") or {}
        secrets_set = all(present.get(name) for name in source.secrets)
        if contains(actual, source.body) and secrets_set:
            return Result(what, source.uid, "unchanged")
        self._write(
            f"update datasource {source.uid}",
            lambda: self.api.datasource.update_datasource_by_uid(source.uid, source.payload()),
        )
        return Result(what, source.uid, "updated")

    def _folder(self) -> Result:
        what = "folder"
        actual = self._read(
            f"read folder {FOLDER_UID}", lambda: self.api.folder.get_folder(FOLDER_UID)
        )
        if actual is None:
            self._write(
                f"create folder {FOLDER_UID}",
                lambda: self.api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID),
            )
            return Result(what, FOLDER_UID, "created")
        if actual.get("title") == FOLDER_TITLE:
            return Result(what, FOLDER_UID, "unchanged")
        self._write(
            f"rename folder {FOLDER_UID}",
            lambda: self.api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True),
        )
        return Result(what, FOLDER_UID, "updated")

    def _dashboard(self, board: Json) -> Result:
        what, uid = "dashboard", str(board["uid"])
        actual = self._read(f"read dashboard {uid}", lambda: self.api.dashboard.get_dashboard(uid))
        if actual is not None:
            same = contains(actual.get("dashboard", {}), board)
            in_folder = (actual.get("meta") or {}).get("folderUid") == FOLDER_UID
            if same and in_folder:
                return Result(what, uid, "unchanged")
        self._write(
            f"save dashboard {uid}",
            lambda: self.api.dashboard.update_dashboard(
                {
                    "dashboard": {**board, "id": None},
                    "folderUid": FOLDER_UID,
                    "overwrite": True,
                    "message": MESSAGE,
                }
            ),
        )
        return Result(what, uid, "created" if actual is None else "updated")

    def _rule(self, rule: Json) -> Result:
        what, uid = "alert rule", str(rule["uid"])
        provisioning = self.api.alertingprovisioning
        actual = self._read(f"read alert rule {uid}", lambda: provisioning.get_alertrule(uid))
        if actual is None:
            self._write(f"create alert rule {uid}", lambda: provisioning.create_alertrule(rule))
            return Result(what, uid, "created")
        if contains(actual, rule):
            return Result(what, uid, "unchanged")
        self._write(f"update alert rule {uid}", lambda: provisioning.update_alertrule(uid, rule))
        return Result(what, uid, "updated")

    def _plugin_installed(self, plugin: str) -> bool:
        settings = self._read(
            f"look up plugin {plugin}",
            lambda: self.api.client.GET(f"/plugins/{plugin}/settings"),
        )
        return settings is not None

    # -- calls ----------------------------------------------------------------------------

    def _read(self, action: str, call: Callable[[], Any]) -> Any:
        """The object, or ``None`` when Grafana answers 404 (it does not exist)."""
        try:
            return call()
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise self._error(action, exc) from None
        except (GrafanaException, niquests.exceptions.RequestException) as exc:
            raise self._error(action, exc) from None

    def _write(self, action: str, call: Callable[[], Any]) -> None:
        if not self.dry_run:
            self._call(action, call)

    def _call(self, action: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (GrafanaException, niquests.exceptions.RequestException) as exc:
            raise self._error(action, exc) from None

    def _error(self, action: str, exc: Exception) -> ProvisionError:
        if isinstance(exc, GrafanaUnauthorizedError):
            return ProvisionError(
                f"Grafana at {self.url} rejected the credentials (401): check GRAFANA_TOKEN, "
                "or GRAFANA_USER and GRAFANA_PASSWORD"
            )
        if isinstance(exc, (GrafanaTimeoutError, niquests.exceptions.Timeout)):
            return ProvisionError(f"Grafana at {self.url} did not answer in time ({action})")
        if isinstance(exc, niquests.exceptions.ConnectionError):
            return ProvisionError(f"cannot reach Grafana at {self.url}: {_reason(exc)}")
        if isinstance(exc, GrafanaException) and exc.status_code == 403:
            return ProvisionError(
                f"Grafana at {self.url} refused to {action} (403): the credentials need the "
                "Admin role (data sources) or Editor (folders, dashboards, alert rules)"
            )
        if isinstance(exc, GrafanaException) and exc.status_code:
            return ProvisionError(
                f"Grafana at {self.url} refused to {action}: {exc.status_code} "
                f"{_grafana_message(exc)}"
            )
        return ProvisionError(f"cannot {action} at {self.url}: {_reason(exc)}")


def contains(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` holds every value ``wanted`` sets: dictionaries may carry more keys
    (Grafana's own), lists must match item by item, and ``for`` durations compare by value
    (``5m`` is ``5m0s``)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            _holds(actual, key, value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return actual is wanted
    if isinstance(wanted, int | float) and isinstance(actual, int | float):
        return float(actual) == float(wanted)
    return bool(actual == wanted)


def _holds(actual: dict[str, Any], key: str, value: Any) -> bool:
    """Whether ``actual[key]`` holds ``value`` (a key left out holds ``None``)."""
    if key not in actual:
        return value is None
    if key == "for" and isinstance(value, str):
        return duration_s(str(actual[key])) == duration_s(value)
    return contains(actual[key], value)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}


def duration_s(text: str) -> float | None:
    """Seconds in a Go or Prometheus duration (``5m``, ``1h30m``, ``5m0s``), else ``None``."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _grafana_message(exc: GrafanaException) -> str:
    response = exc.response
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return str(exc.message or exc)


def _reason(exc: Exception) -> str:
    """The innermost cause of a connection failure, on one line."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        nested = exc.__cause__ or exc.__context__
        if not isinstance(nested, Exception):
            break
        exc = nested
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
