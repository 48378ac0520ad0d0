"""A stand-in for the part of Grafana's HTTP API that ``python -m dashboards provision`` calls.

THIS IS NOT A REAL GRAFANA: no Grafana can run on the machines these tests run on. It is a
small ``http.server`` on 127.0.0.1 that keeps data sources, folders, dashboards and alert
rules in memory and answers after Grafana's documented API (status codes, the shape of the
replies, fields Grafana adds on its own such as ids and versions), so that the provisioning
code meets the situations it is expected to meet in a real one, as far as this imitation
reproduces them. It also *checks* every request: method and path must be a known route, the
``Authorization`` header must carry the expected credentials, and request bodies must have
the shape Grafana's API documentation asks for (required fields, known enum values,
references to objects that exist). Anything else is recorded in
:attr:`FakeGrafana.violations`, which the tests require to stay empty.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Json = dict[str, Any]
Reply = tuple[int, Any]

NO_DATA_STATES = {"NoData", "Alerting", "OK", "KeepLast"}
EXEC_ERR_STATES = {"Error", "Alerting", "OK", "KeepLast"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
EXPRESSIONS = "__expr__"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    authorization: str | None
    body: Any


class FakeGrafana:
    """Start with :meth:`start` (a free port on 127.0.0.1), stop with :meth:`stop`; or use it
    as a context manager, which does both."""

    def __init__(
        self,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        plugins: frozenset[str] = frozenset({"redis-datasource"}),
        forbid: frozenset[str] = frozenset(),
    ) -> None:
        self.accepted = set()
        if token is not None:
            self.accepted.add(f"Bearer {token}")
        if basic is not None:
            raw = f"{basic[0]}:{basic[1]}".encode()
            self.accepted.add(f"Basic {base64.b64encode(raw).decode()}")
        self.plugins = plugins
        self.forbid = forbid
        """``"METHOD path-prefix"`` entries answered 403, like a role without permission."""
        self.datasources: dict[str, Json] = {}
        self.secrets: dict[str, Json] = {}
        self.folders: dict[str, Json] = {}
        self.dashboards: dict[str, Json] = {}
        self.rules: dict[str, Json] = {}
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self._next_id = 1
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeGrafana:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def do_PUT(self) -> None:
                fake._handle(self)

            def do_DELETE(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeGrafana:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def writes(self) -> list[Call]:
        return [call for call in self.calls if call.method != "GET"]

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        body: Any = None
        path = request.path.split("?", 1)[0]
        with self._lock:
            if raw:
                if "application/json" not in (request.headers.get("Content-Type") or ""):
                    self.violations.append(f"{request.command} {path}: body is not JSON-typed")
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.violations.append(f"{request.command} {path}: body is not JSON")
            auth = request.headers.get("Authorization")
            self.calls.append(Call(request.command, path, auth, body))
            status, reply = self._route(request.command, path, auth, body)
        data = json.dumps(reply).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _route(self, method: str, path: str, auth: str | None, body: Any) -> Reply:
        if auth not in self.accepted:
            return 401, {"message": "Unauthorized", "statusCode": 401}
        if any(f"{method} {path}".startswith(rule) for rule in self.forbid):
            return 403, {"message": "You'll need additional permissions to perform this action."}
        routes: list[tuple[str, str, Callable[..., Reply]]] = [
            ("GET", r"/api/org", self._org),
            ("GET", r"/api/plugins/([^/]+)/settings", self._plugin),
            ("GET", r"/api/datasources/uid/([^/]+)", self._get_datasource),
            ("POST", r"/api/datasources", self._create_datasource),
            ("PUT", r"/api/datasources/uid/([^/]+)", self._update_datasource),
            ("GET", r"/api/folders/([^/]+)", self._get_folder),
            ("POST", r"/api/folders", self._create_folder),
            ("PUT", r"/api/folders/([^/]+)", self._update_folder),
            ("GET", r"/api/dashboards/uid/([^/]+)", self._get_dashboard),
            ("POST", r"/api/dashboards/db", self._save_dashboard),
            ("GET", r"/api/v1/provisioning/alert-rules/([^/]+)", self._get_rule),
            ("POST", r"/api/v1/provisioning/alert-rules", self._create_rule),
            ("PUT", r"/api/v1/provisioning/alert-rules/([^/]+)", self._update_rule),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and method == route_method:
                if method == "GET" and body is not None:
                    self.violations.append(f"GET {path} with a body")
                if method != "GET" and not isinstance(body, dict):
                    self.violations.append(f"{method} {path} without a JSON object body")
                    return 400, {"message": "bad request data"}
                return (
                    handler(*match.groups(), body) if method != "GET" else handler(*match.groups())
                )
        self.violations.append(f"unexpected call: {method} {path}")
        return 404, {"message": "Not found"}

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _expect(self, condition: bool, violation: str) -> bool:
        """``condition``, recording ``violation`` when it does not hold."""
        if not condition:
            self.violations.append(violation)
        return condition

    def _require(self, where: str, body: Json, keys: dict[str, type | tuple[type, ...]]) -> bool:
        ok = True
        for key, kind in keys.items():
            ok &= self._expect(
                isinstance(body.get(key), kind), f"{where}: {key!r} missing or not {kind}"
            )
        return ok

    # -- org and plugins ------------------------------------------------------------------

    def _org(self) -> Reply:
        return 200, {"id": 1, "name": "Main Org.", "address": {}}

    def _plugin(self, plugin_id: str) -> Reply:
        if plugin_id not in self.plugins:
            return 404, {"message": "Plugin not found, no installed plugin with that id"}
        return 200, {"id": plugin_id, "type": "datasource", "enabled": True, "pinned": False}

    # -- data sources ---------------------------------------------------------------------

    def _datasource_reply(self, uid: str) -> Json:
        stored = self.datasources[uid]
        fields = {name: True for name in self.secrets.get(uid, {})}
        return {**stored, "secureJsonFields": fields}

    def _get_datasource(self, uid: str) -> Reply:
        if uid not in self.datasources:
            return 404, {"message": "Data source not found"}
        return 200, self._datasource_reply(uid)

    def _check_datasource(self, where: str, body: Json) -> bool:
        ok = self._require(
            where, body, {"name": str, "type": str, "uid": str, "url": str, "access": str}
        )
        ok &= self._expect(
            body.get("access") in ("proxy", "direct"), f"{where}: access must be proxy or direct"
        )
        ok &= self._expect(
            isinstance(body.get("jsonData", {}), dict), f"{where}: jsonData is not an object"
        )
        secure = body.get("secureJsonData", {})
        ok &= self._expect(
            isinstance(secure, dict) and all(isinstance(v, str) for v in secure.values()),
            f"{where}: secureJsonData must map names to strings",
        )
        return ok

    def _store_datasource(self, body: Json, datasource_id: int, version: int) -> None:
        uid = body["uid"]
        secrets = body.get("secureJsonData") or {}
        if secrets:
            self.secrets[uid] = dict(secrets)
        stored = {key: value for key, value in body.items() if key != "secureJsonData"}
        self.datasources[uid] = {
            "basicAuth": False,
            "withCredentials": False,
            "readOnly": False,
            "typeLogoUrl": f"public/plugins/{body['type']}/logo.svg",
            "jsonData": {},
            **stored,
            "id": datasource_id,
            "orgId": 1,
            "version": version,
        }

    def _create_datasource(self, body: Json) -> Reply:
        if not self._check_datasource("POST /api/datasources", body):
            return 400, {"message": "bad request data"}
        names = {ds["name"] for ds in self.datasources.values()}
        if body["uid"] in self.datasources or body["name"] in names:
            return 409, {"message": "data source with the same name already exists"}
        self._store_datasource(body, self._id(), 1)
        return 200, {
            "datasource": self._datasource_reply(body["uid"]),
            "id": self.datasources[body["uid"]]["id"],
            "message": "Datasource added",
            "name": body["name"],
        }

    def _update_datasource(self, uid: str, body: Json) -> Reply:
        if uid not in self.datasources:
            return 404, {"message": "Data source not found"}
        if not self._check_datasource(f"PUT /api/datasources/uid/{uid}", body):
            return 400, {"message": "bad request data"}
        if body["uid"] != uid:
            self.violations.append(f"PUT /api/datasources/uid/{uid}: body uid differs")
        old = self.datasources[uid]
        self._store_datasource(body, old["id"], old["version"] + 1)
        return 200, {"datasource": self._datasource_reply(uid), "message": "Datasource updated"}

    # -- folders --------------------------------------------------------------------------

    def _get_folder(self, uid: str) -> Reply:
        if uid not in self.folders:
            return 404, {"message": "folder not found", "status": "not-found"}
        return 200, self.folders[uid]

    def _create_folder(self, body: Json) -> Reply:
        if not self._require("POST /api/folders", body, {"title": str, "uid": str}):
            return 400, {"message": "bad request data"}
        if body["uid"] in self.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        folder = {
            "id": self._id(),
            "uid": body["uid"],
            "title": body["title"],
            "url": f"/dashboards/f/{body['uid']}/",
            "version": 1,
            "canSave": True,
        }
        self.folders[body["uid"]] = folder
        return 200, folder

    def _update_folder(self, uid: str, body: Json) -> Reply:
        if uid not in self.folders:
            return 404, {"message": "folder not found"}
        if not self._require(f"PUT /api/folders/{uid}", body, {"title": str}):
            return 400, {"message": "bad request data"}
        if not body.get("overwrite") and body.get("version") != self.folders[uid]["version"]:
            return 412, {"message": "the folder has been changed by someone else"}
        folder = self.folders[uid]
        folder.update(title=body["title"], version=folder["version"] + 1)
        return 200, folder

    # -- dashboards -----------------------------------------------------------------------

    def _get_dashboard(self, uid: str) -> Reply:
        if uid not in self.dashboards:
            return 404, {"message": "Dashboard not found"}
        stored = self.dashboards[uid]
        return 200, {"dashboard": stored["dashboard"], "meta": stored["meta"]}

    def _save_dashboard(self, body: Json) -> Reply:
        where = "POST /api/dashboards/db"
        dashboard = body.get("dashboard")
        if not isinstance(dashboard, dict) or not self._require(
            where, dashboard, {"uid": str, "title": str, "schemaVersion": int, "panels": list}
        ):
            return 400, {"message": "bad request data"}
        if not 1 <= len(dashboard["uid"]) <= 40:
            self.violations.append(f"{where}: uid longer than 40 characters")
        folder = body.get("folderUid")
        if folder not in self.folders:
            self.violations.append(f"{where}: folderUid {folder!r} is not a folder")
            return 400, {"message": "folder not found"}
        uid = dashboard["uid"]
        existing = self.dashboards.get(uid)
        if existing is not None and not body.get("overwrite"):
            return 412, {"message": "A dashboard with the same uid already exists"}
        if dashboard.get("id") not in (None, existing and existing["dashboard"]["id"]):
            self.violations.append(f"{where}: a stale dashboard id")
        number = existing["dashboard"]["id"] if existing else self._id()
        version = existing["dashboard"]["version"] + 1 if existing else 1
        self.dashboards[uid] = {
            "dashboard": {**dashboard, "id": number, "version": version},
            "meta": {"folderUid": folder, "slug": uid, "canSave": True, "version": version},
        }
        return 200, {
            "id": number,
            "uid": uid,
            "url": f"/d/{uid}/{uid}",
            "status": "success",
            "version": version,
        }

    # -- alert rules ----------------------------------------------------------------------

    def _check_rule(self, where: str, body: Json) -> bool:
        ok = self._require(
            where,
            body,
            {
                "title": str,
                "ruleGroup": str,
                "folderUID": str,
                "condition": str,
                "data": list,
                "noDataState": str,
                "execErrState": str,
                "for": str,
                "orgID": int,
            },
        )
        if not ok:
            return False
        folder, no_data, exec_err, pending = (
            body[key] for key in ("folderUID", "noDataState", "execErrState", "for")
        )
        ok &= self._expect(folder in self.folders, f"{where}: folder {folder!r} does not exist")
        ok &= self._expect(no_data in NO_DATA_STATES, f"{where}: noDataState {no_data!r}")
        ok &= self._expect(exec_err in EXEC_ERR_STATES, f"{where}: execErrState {exec_err!r}")
        ok &= self._expect(
            bool(DURATION.match(pending)), f"{where}: for {pending!r} is not a duration"
        )
        ref_ids = set()
        for query in body["data"]:
            if not isinstance(query, dict) or not self._require(
                where, query, {"refId": str, "datasourceUid": str, "model": dict}
            ):
                return False
            ref, source = query["refId"], query["datasourceUid"]
            ref_ids.add(ref)
            if source == EXPRESSIONS:
                ok &= self._expect(
                    query["model"].get("expression") in ref_ids,
                    f"{where}: expression {ref} reads no query",
                )
                continue
            ok &= self._expect(
                source in self.datasources, f"{where}: data source {source!r} does not exist"
            )
            ok &= self._expect(
                isinstance(query.get("relativeTimeRange"), dict),
                f"{where}: query {ref} has no time range",
            )
        annotations = body.get("annotations") or {}
        ok &= self._expect(
            ("__dashboardUid__" in annotations) == ("__panelId__" in annotations),
            f"{where}: both annotations __dashboardUid__ and __panelId__ must be specified",
        )
        ok &= self._expect(
            str(annotations.get("__panelId__", "0")).isdigit(),
            f"{where}: __panelId__ is not a panel id",
        )
        ok &= self._expect(
            body["condition"] in ref_ids, f"{where}: condition {body['condition']!r} is no refId"
        )
        return ok

    def _rule_reply(self, uid: str) -> Json:
        return {
            "id": self.rules[uid]["id"],
            "updated": "2025-01-01T00:00:00Z",
            "provenance": "api",
            "notification_settings": None,
            "record": None,
            "keep_firing_for": "0s",
            **{k: v for k, v in self.rules[uid].items() if k != "id"},
        }

    def _get_rule(self, uid: str) -> Reply:
        if uid not in self.rules:
            return 404, {"message": "rule not found"}
        return 200, self._rule_reply(uid)

    def _create_rule(self, body: Json) -> Reply:
        if not self._check_rule("POST /api/v1/provisioning/alert-rules", body):
            return 400, {"message": "invalid alert rule"}
        uid = body.get("uid") or f"generated-{self._id()}"
        if uid in self.rules:
            return 409, {"message": "a rule with this UID already exists"}
        self.rules[uid] = {**body, "uid": uid, "id": self._id()}
        return 201, self._rule_reply(uid)

    def _update_rule(self, uid: str, body: Json) -> Reply:
        if uid not in self.rules:
            return 404, {"message": "rule not found"}
        if not self._check_rule(f"PUT /api/v1/provisioning/alert-rules/{uid}", body):
            return 400, {"message": "invalid alert rule"}
        self.rules[uid] = {**body, "uid": uid, "id": self.rules[uid]["id"]}
        return 200, self._rule_reply(uid)
