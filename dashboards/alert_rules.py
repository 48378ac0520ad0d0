"""Grafana-managed alert rules (unified alerting), in the provisioning API's JSON model.

Three rules, each one instant Prometheus query (``A``) and a threshold on it (``C``):

* **Alert-rate spike**: a kind's alerts per second over the last 10 minutes against its own
  rate over the day before. An attack (card testing, a spam campaign) or a broken model both
  should show up here first.
* **Quality drop**: the hybrid score's rolling average precision against its mean over the
  previous day. Labels arrive late, so this fires late: it confirms what drift suggested.
* **Consumer lag**: messages the workers have not read yet; the workers are down, stalled or
  too few for the traffic.

Rules are grouped in one rule group of the dashboards' folder. The rules set no evaluation
interval (the group's is left to Grafana); a rule is meant to fire once its condition has held
for ``for``. None of this was tried against a running Grafana: the tests check the rules'
shape and PromQL, and provision them into an imitation server.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboards import model_health, overview
from dashboards.catalog import FOLDER_UID
from dashboards.datasources import PROMETHEUS_REF, PROMETHEUS_UID
from dashboards.panels import Json
from dashboards.promql import rate, selector, summed
from models.names import Metrics

RULE_GROUP = "fraudstream"
EXPRESSIONS_UID = "__expr__"

SPIKE_FACTOR = 3.0
"""Fire when the recent alert rate is this many times the day's rate..."""
SPIKE_FLOOR_PER_S = 0.01
"""...where a day's rate below this counts as this, so a near-silent baseline cannot turn
a handful of alerts into a spike."""
QUALITY_DROP_RATIO = 0.8
"""Fire when average precision falls below this share of its previous day's mean."""
LAG_MESSAGES = 10_000
"""Fire when the workers are this many messages behind on any topic."""

_HYBRID_AP = selector(Metrics.AVERAGE_PRECISION, model_health.HYBRID)


@dataclass(frozen=True)
class Rule:
    uid: str
    title: str
    expr: str
    comparison: str
    """``gt`` or ``lt``: how ``A`` compares with ``threshold`` when the rule fires."""
    threshold: float
    pending_for: str
    summary: str
    description: str
    severity: str
    panel: tuple[str, str]
    """The dashboard (uid) and panel (title) that show what the rule watches, named in the
    rule's ``__dashboardUid__`` and ``__panelId__`` annotations for Grafana to link to."""
    no_data: str = "OK"
    """Grafana's state when the query returns nothing: ``OK`` where silence is normal."""


RULES = (
    Rule(
        uid="fraudstream-alert-rate-spike",
        title="Alert-rate spike",
        expr=(
            f"{summed(rate(Metrics.ALERTS, window='10m'), 'kind')} / clamp_min("
            f"{summed(rate(Metrics.ALERTS, window='1d', offset='10m'), 'kind')}, "
            f"{SPIKE_FLOOR_PER_S})"
        ),
        comparison="gt",
        threshold=SPIKE_FACTOR,
        pending_for="5m",
        summary="{{ $labels.kind }} alerts at {{ humanize $values.A.Value }}x the day's rate",
        description=(
            "The alert rate of {{ $labels.kind }} events over the last 10 minutes is more than "
            f"{SPIKE_FACTOR:g} times its rate over the day before: an attack or campaign, or "
            "a model or threshold change gone wrong. Check the top alert reasons."
        ),
        severity="warning",
        panel=(overview.UID, "Alerts/s by decision"),
    ),
    Rule(
        uid="fraudstream-quality-drop",
        title="Quality drop",
        expr=(
            f"max by (kind) ({_HYBRID_AP}) / clamp_min("
            f"max by (kind) (avg_over_time({_HYBRID_AP}[1d] offset 1h)), 0.01)"
        ),
        comparison="lt",
        threshold=QUALITY_DROP_RATIO,
        pending_for="30m",
        summary="{{ $labels.kind }} average precision at {{ humanizePercentage $values.A.Value }}"
        " of yesterday's",
        description=(
            "The rolling average precision of the hybrid {{ $labels.kind }} score fell below "
            f"{QUALITY_DROP_RATIO:.0%} of its mean over the previous day: drift, a bad batch "
            "model, or a label problem. Compare the online and hybrid scores on Model health."
        ),
        severity="warning",
        panel=(model_health.UID, "Average precision"),
    ),
    Rule(
        uid="fraudstream-consumer-lag",
        title="Consumer lag",
        expr=overview.LAG,
        comparison="gt",
        threshold=LAG_MESSAGES,
        pending_for="5m",
        summary="workers {{ humanize $values.A.Value }} messages behind on {{ $labels.topic }}",
        description=(
            "The stream workers are more than "
            f"{LAG_MESSAGES:,} messages behind on {{{{ $labels.topic }}}}: workers down, "
            "stalled, or too few for the traffic (add workers, up to the partition count). "
            "No data means no worker reports lag at all."
        ),
        severity="critical",
        panel=(overview.UID, "Consumer lag by topic"),
        no_data="NoData",
    ),
)


_DASHBOARDS = {overview.UID: overview.build, model_health.UID: model_health.build}


def panel_id(dashboard_uid: str, title: str) -> int:
    """The id of the panel titled ``title`` on a dashboard (ids come from the layout)."""
    for panel in _DASHBOARDS[dashboard_uid]()["panels"]:
        if panel.get("title") == title:
            return int(panel["id"])
    raise LookupError(f"no panel {title!r} on {dashboard_uid}")


def rule_json(rule: Rule, org_id: int) -> Json:
    """The rule as ``/api/v1/provisioning/alert-rules`` takes it."""
    dashboard_uid, panel_title = rule.panel
    return {
        "uid": rule.uid,
        "title": rule.title,
        "orgID": org_id,
        "folderUID": FOLDER_UID,
        "ruleGroup": RULE_GROUP,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "queryType": "",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": PROMETHEUS_UID,
                "model": {
                    "refId": "A",
                    "datasource": PROMETHEUS_REF,
                    "editorMode": "code",
                    "expr": rule.expr,
                    "instant": True,
                    "range": False,
                    "legendFormat": "__auto",
                    "intervalMs": 1000,
                    "maxDataPoints": 43200,
                },
            },
            {
                "refId": "C",
                "queryType": "",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": EXPRESSIONS_UID,
                "model": {
                    "refId": "C",
                    "datasource": {"type": EXPRESSIONS_UID, "uid": EXPRESSIONS_UID},
                    "type": "threshold",
                    "expression": "A",
                    "conditions": [
                        {"evaluator": {"type": rule.comparison, "params": [rule.threshold]}}
                    ],
                },
            },
        ],
        "noDataState": rule.no_data,
        "execErrState": "Error",
        "for": rule.pending_for,
        "annotations": {
            "summary": rule.summary,
            "description": rule.description,
            # Both or neither: Grafana's rule validation rejects one alone (read in its source,
            # not run; the tests' imitation server does the same).
            "__dashboardUid__": dashboard_uid,
            "__panelId__": str(panel_id(dashboard_uid, panel_title)),
        },
        "labels": {"service": "fraudstream", "severity": rule.severity},
        "isPaused": False,
    }


def all_rules(org_id: int) -> list[Json]:
    return [rule_json(rule, org_id) for rule in RULES]
