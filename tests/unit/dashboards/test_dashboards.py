"""The dashboards and alert rules: Grafana's schema, PromQL that parses and selects only
metrics defined in one place, a layout that fits, and ``export``.

The schema check compiles each dashboard against ``@grafana/schema``'s TypeScript types with
``tsc --strict`` (see ``node_tools``); the PromQL check parses every query with Prometheus's
own grammar. Both need the Node tools that ``make setup`` installs, and fail (not skip)
without them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dashboards import alert_rules
from dashboards.catalog import all_dashboards
from dashboards.datasources import ALERTS_UID, PROMETHEUS_UID
from dashboards.metrics import HISTOGRAMS, INFOS, Pending, exposed_names, names
from dashboards.panels import SCHEMA_VERSION
from dashboards.provision import contains, duration_s
from models.names import Metrics
from tests.unit.dashboards.node_tools import NODE_MODULES, parse_promql, require_tools, typecheck

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS = all_dashboards("fraud")
RULES = alert_rules.all_rules(org_id=1)


def prometheus_queries() -> list[tuple[str, str]]:
    """``(where, expr)`` for every Prometheus query of every panel and alert rule."""
    found = []
    for board in DASHBOARDS:
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["uid"] == PROMETHEUS_UID:
                    found.append((f"{board['uid']} / {panel['title']}", target["expr"]))
    for rule in RULES:
        for query in rule["data"]:
            if query["datasourceUid"] == PROMETHEUS_UID:
                found.append((f"rule {rule['uid']}", query["model"]["expr"]))
    return found


# -- Grafana's dashboard schema --------------------------------------------------------------


def test_every_dashboard_satisfies_grafanas_schema(tmp_path):
    errors = typecheck(DASHBOARDS, tmp_path)
    assert errors == [], "\n".join(errors)


def _break(label: str, damage: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    board = copy.deepcopy(DASHBOARDS[0])
    board["uid"] = f"broken-{label}"
    damage(board)
    return board


def _first(board: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(panel for panel in board["panels"] if panel["type"] == kind)


DEFECTS: dict[str, Callable[[dict[str, Any]], None]] = {
    # label (also what tsc's message must name) -> the damage
    "refersh": lambda b: b.update(refersh="10s"),
    "placment": lambda b: _first(b, "timeseries")["options"]["legend"].update(placment="x"),
    "'tooltip'": lambda b: _first(b, "timeseries")["options"].pop("tooltip"),
    '"curve"': lambda b: _first(b, "timeseries")["fieldConfig"]["defaults"]["custom"].update(
        drawStyle="curve"
    ),
    "'y'": lambda b: _first(b, "stat")["gridPos"].pop("y"),
    "exprr": lambda b: _first(b, "stat")["targets"][0].update(exprr="up"),
    "'schemaVersion'": lambda b: b.pop("schemaVersion"),
}


def test_the_schema_check_rejects_what_grafana_would(tmp_path):
    """A control: the check above passes because the dashboards are right, not because it
    lets everything through. Each defect goes into its own copy, so each must be found."""
    broken = [_break(str(i), damage) for i, damage in enumerate(DEFECTS.values())]
    errors = typecheck(broken, tmp_path)
    for i, needle in enumerate(DEFECTS):
        found = [e for e in errors if f"broken-{i}.ts" in e]
        assert any(needle in e for e in found), f"the schema check missed {needle}: {found}"


def test_the_schema_version_is_the_one_the_schema_package_describes():
    require_tools()
    source = NODE_MODULES / "@grafana" / "schema" / "dist" / "esm" / "raw" / "dashboard"
    text = (source / "x" / "types.gen.mjs").read_text()
    match = re.search(r"schemaVersion: (\d+)", text)
    assert match and int(match.group(1)) == SCHEMA_VERSION


# -- PromQL ----------------------------------------------------------------------------------


def test_every_query_parses_and_selects_only_defined_metrics():
    queries = prometheus_queries()
    parsed = parse_promql([expr for _, expr in queries])
    allowed = exposed_names()
    problems = []
    for (where, expr), result in zip(queries, parsed, strict=True):
        problems += [f"{where}: {error} in {expr}" for error in result["errors"]]
        problems += [
            f"{where}: {name} is not in models.names.Metrics or dashboards.metrics.Pending"
            for name in result["metrics"]
            if name not in allowed
        ]
        if not result["metrics"]:
            problems.append(f"{where}: selects no metric: {expr}")
    assert problems == [], "\n".join(problems)


def test_the_metric_check_catches_an_undefined_name():
    (result,) = parse_promql(['sum(rate(fraud_undefined_total{kind="email"}[$__rate_interval]))'])
    assert result == {"metrics": ["fraud_undefined_total"], "errors": []}
    assert "fraud_undefined_total" not in exposed_names()
    (bad,) = parse_promql(["sum(rate(fraud_events_total[5m])"])
    assert bad["errors"]


def test_histograms_are_queried_through_their_series():
    """A histogram's bare name selects nothing in Prometheus."""
    exprs = " ".join(expr for _, expr in prometheus_queries())
    for histogram in HISTOGRAMS:
        assert f"{histogram}_bucket" in exprs
    for name in exposed_names():
        assert name not in HISTOGRAMS and name not in INFOS


def test_every_metric_the_worker_exports_is_on_a_dashboard():
    exprs = " ".join(expr for _, expr in prometheus_queries())
    for name in names(Metrics):
        assert name in exprs, f"{name} is on no dashboard"


def test_pending_names_are_not_yet_defined_in_models_names():
    """When a pending name moves to ``models.names.Metrics``, delete it from ``Pending``."""
    assert set(names(Pending)).isdisjoint(names(Metrics))


# -- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("board", DASHBOARDS, ids=[b["uid"] for b in DASHBOARDS])
def test_layout_and_references(board: dict[str, Any]):
    assert 1 <= len(board["uid"]) <= 40
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"]
        targets = panel["targets"]
        assert targets and len({t["refId"] for t in targets}) == len(targets)
        for target in [panel, *targets]:
            assert target["datasource"]["uid"] in {PROMETHEUS_UID, ALERTS_UID}


def test_the_dashboards_cover_what_operators_asked_for():
    titles = {board["uid"]: {p["title"] for p in board["panels"]} for board in DASHBOARDS}
    assert {
        "Events/s by kind",
        "Scoring latency (worker)",
        "Alerts/s by decision",
        "Consumer lag by topic",
        "Dead letters/s by topic",
    } <= titles["fraudstream-overview"]
    for uid in ("fraudstream-fraud", "fraudstream-spam"):
        assert {
            "Alerts/s by decision",
            "Decisions",
            "Top alert reasons",
            "Label arrival delay",
            "Average precision",
        } <= titles[uid]
    assert {
        "Model versions",
        "Hot swaps",
        "Average precision",
        "Precision at the review threshold",
        "Recall at the review threshold",
        "Mean hybrid score shift",
    } <= titles["fraudstream-model-health"]
    tables = [p for b in DASHBOARDS for p in b["panels"] if p["type"] == "table"]
    assert tables and all(t["targets"][0]["keyName"] == "fraud:alerts" for t in tables)


def test_alert_rules_are_well_formed():
    uids = {"__expr__", PROMETHEUS_UID}
    for rule in RULES:
        refs = [query["refId"] for query in rule["data"]]
        assert rule["condition"] in refs
        assert {query["datasourceUid"] for query in rule["data"]} <= uids
        assert duration_s(rule["for"]) and rule["noDataState"] in {"OK", "NoData", "Alerting"}
        board = next(b for b in DASHBOARDS if b["uid"] == rule["annotations"]["__dashboardUid__"])
        panel_ids = {str(panel["id"]) for panel in board["panels"]}
        assert rule["annotations"]["__panelId__"] in panel_ids
    assert {rule["title"] for rule in RULES} == {"Alert-rate spike", "Quality drop", "Consumer lag"}


# -- comparison used for idempotency ----------------------------------------------------------


def test_comparison_ignores_what_grafana_adds_and_sees_what_differs():
    wanted = {"a": 1, "b": {"c": [1, {"d": "x"}]}, "for": "5m", "flag": False}
    assert contains({**wanted, "id": 7, "b": {"c": [1, {"d": "x", "e": 0}]}}, wanted)
    assert contains({**wanted, "for": "5m0s"}, wanted)
    assert not contains({**wanted, "for": "10m"}, wanted)
    assert not contains({**wanted, "b": {"c": [1]}}, wanted)
    assert not contains({**wanted, "flag": 0}, wanted)
    assert not contains({k: v for k, v in wanted.items() if k != "a"}, wanted)


# -- export ------------------------------------------------------------------------------------


def test_export_writes_one_json_file_per_dashboard(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    result = subprocess.run(
        [sys.executable, "-m", "dashboards", "export", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**clean, "FRAUD_NAMESPACE": "demo"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / "out").glob("*.json"))
    assert [p.stem for p in written] == sorted(b["uid"] for b in DASHBOARDS)
    assert [json.loads(p.read_text()) for p in sorted(written)] == sorted(
        all_dashboards("demo"), key=lambda b: b["uid"]
    )
    assert (
        '"keyName": "demo:alerts"'
        in (tmp_path / "out" / "fraudstream-live-alerts.json").read_text()
    )


def test_export_into_a_file_is_a_usage_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "dashboards", "export", str(target)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr
