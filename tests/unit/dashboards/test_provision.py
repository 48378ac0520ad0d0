"""``python -m dashboards provision`` against a local imitation of Grafana's HTTP API.

NOT A REAL GRAFANA: none can run where these tests run. :class:`FakeGrafana` is a small HTTP
server on 127.0.0.1 that imitates the calls provisioning makes and checks each of them
(method, path, credentials, body shape). What these tests show is that the provisioning code
makes well-formed calls, writes only what differs, and fails with one clear line; that a
real Grafana accepts the objects is shown, as far as it can be here, by the schema tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from grafana_client import GrafanaApi

from dashboards import alert_rules
from dashboards.catalog import FOLDER_UID, all_dashboards
from dashboards.cli import build_parser, grafana_connection, main
from dashboards.datasources import ALERTS_UID, PROMETHEUS_UID
from tests.unit.dashboards.fake_grafana import FakeGrafana

REPO = Path(__file__).resolve().parents[3]
TOKEN = "glsa_test-token"
ENV = {
    "GRAFANA_TOKEN": TOKEN,
    "PROMETHEUS_URL": "http://prometheus:9090",
    "FRAUD_REDIS_URL": "redis://:s3cret@redis:6379/0",
}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana(token=TOKEN) as fake:
        yield fake
    assert fake.violations == [], "calls Grafana would not accept"


def provision(grafana: FakeGrafana, *args: str, env: dict[str, str] | None = None) -> int:
    return main(["provision", "--grafana-url", grafana.url, *args], environ=env or ENV)


def report(output: str) -> dict[str, str]:
    """``uid -> outcome`` from provision's report (one object per line)."""
    result = {}
    for line in output.splitlines():
        what = "alert rule" if line.startswith("alert rule") else line.split()[0]
        uid, outcome = line[len(what) :].split()[:2]
        result[uid] = outcome
    return result


EXPECTED = {
    PROMETHEUS_UID,
    ALERTS_UID,
    FOLDER_UID,
    *(board["uid"] for board in all_dashboards("fraud")),
    *(rule.uid for rule in alert_rules.RULES),
}


def test_the_first_run_creates_everything(grafana, capsys):
    """Against FakeGrafana, which is not a real Grafana: it imitates and checks the API."""
    assert provision(grafana) == 0
    out, err = capsys.readouterr()
    assert report(out) == dict.fromkeys(EXPECTED, "created")
    assert err.strip() == f"{len(EXPECTED)} created"

    assert set(grafana.datasources) == {PROMETHEUS_UID, ALERTS_UID}
    assert grafana.datasources[PROMETHEUS_UID]["url"] == "http://prometheus:9090"
    assert grafana.datasources[ALERTS_UID]["url"] == "redis:6379"
    assert grafana.secrets[ALERTS_UID] == {"password": "s3cret"}
    assert "s3cret" not in str(grafana.datasources)  # only in secureJsonData
    assert set(grafana.folders) == {FOLDER_UID}
    assert set(grafana.dashboards) == {board["uid"] for board in all_dashboards("fraud")}
    assert all(d["meta"]["folderUid"] == FOLDER_UID for d in grafana.dashboards.values())
    assert set(grafana.rules) == {rule.uid for rule in alert_rules.RULES}
    assert all(call.authorization == f"Bearer {TOKEN}" for call in grafana.calls)
    # Everything is read before it is written, and written once.
    assert len(grafana.writes) == len(EXPECTED)


def test_a_second_run_changes_nothing(grafana, capsys):
    """Against FakeGrafana (not a real Grafana): the rerun reads everything, writes nothing."""
    assert provision(grafana) == 0
    capsys.readouterr()
    grafana.calls.clear()

    assert provision(grafana) == 0
    out, err = capsys.readouterr()
    assert grafana.writes == []
    assert report(out) == dict.fromkeys(EXPECTED, "unchanged")
    assert err.strip() == f"{len(EXPECTED)} unchanged"


def test_only_what_differs_is_written(grafana, capsys):
    assert provision(grafana) == 0
    grafana.dashboards["fraudstream-spam"]["dashboard"]["title"] = "edited in the UI"
    grafana.datasources[PROMETHEUS_UID]["url"] = "http://elsewhere:9090"
    rule = grafana.rules["fraudstream-consumer-lag"]
    rule["data"][1]["model"]["conditions"][0]["evaluator"]["params"] = [1]
    capsys.readouterr()
    grafana.calls.clear()

    assert provision(grafana) == 0
    out, _ = capsys.readouterr()
    changed = {uid for uid, outcome in report(out).items() if outcome != "unchanged"}
    assert changed == {"fraudstream-spam", PROMETHEUS_UID, "fraudstream-consumer-lag"}
    assert {(c.method, c.path) for c in grafana.writes} == {
        ("POST", "/api/dashboards/db"),
        ("PUT", f"/api/datasources/uid/{PROMETHEUS_UID}"),
        ("PUT", "/api/v1/provisioning/alert-rules/fraudstream-consumer-lag"),
    }
    assert grafana.dashboards["fraudstream-spam"]["dashboard"]["title"] == "Fraudstream: spam"
    assert grafana.dashboards["fraudstream-spam"]["dashboard"]["version"] == 2


def test_a_dry_run_reads_but_writes_nothing(grafana, capsys):
    assert provision(grafana, "--dry-run") == 0
    out, err = capsys.readouterr()
    assert grafana.writes == []
    assert set(report(out).values()) == {"created"}
    assert "dry run: nothing written" in err


def test_user_and_password_are_sent_as_basic_auth(capsys):
    with FakeGrafana(basic=("admin", "pw with spaces")) as fake:
        env = {**ENV, "GRAFANA_TOKEN": "", "GRAFANA_USER": "admin"}
        assert provision(fake, "--password", "pw with spaces", env=env) == 0
        assert all(c.authorization and c.authorization.startswith("Basic ") for c in fake.calls)
        assert fake.violations == []


def test_without_the_redis_plugin_the_alerts_source_is_skipped(capsys):
    with FakeGrafana(token=TOKEN, plugins=frozenset()) as fake:
        assert provision(fake) == 0
        out, _ = capsys.readouterr()
        line = next(line for line in out.splitlines() if ALERTS_UID in line)
        assert "skipped" in line and "GF_PLUGINS_PREINSTALL=redis-datasource" in line
        assert set(fake.datasources) == {PROMETHEUS_UID}
        assert len(fake.dashboards) == len(all_dashboards("fraud"))
        assert fake.violations == []


def test_a_permission_error_names_what_was_refused(capsys):
    with FakeGrafana(token=TOKEN, forbid=frozenset({"POST /api/datasources"})) as fake:
        assert provision(fake) == 1
        _, err = capsys.readouterr()
        assert err.count("\n") == 1
        assert "refused to create datasource fraudstream-prometheus (403)" in err
        assert "Admin role" in err


# -- through the command line, as a user runs it: one line, no traceback --------------------


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFANA_", "FRAUD_"))}
    return subprocess.run(
        [sys.executable, "-m", "dashboards", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


def test_wrong_credentials_are_one_clear_line(grafana):
    result = run_cli("provision", "--grafana-url", grafana.url, GRAFANA_TOKEN="wrong")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: Grafana at {grafana.url} rejected the credentials (401): check "
        "GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD\n"
    )
    assert grafana.writes == []
    assert [call.authorization for call in grafana.calls] == ["Bearer wrong"]


def test_an_unreachable_grafana_is_one_clear_line():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = run_cli("provision", "--grafana-url", url, GRAFANA_TOKEN=TOKEN)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach Grafana at {url}: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_credentials_in_the_url_are_used_but_never_printed():
    result = run_cli("provision", "--grafana-url", "http://admin:hunter2@127.0.0.1:1/")
    assert result.returncode == 1
    assert "hunter2" not in result.stderr and "admin" not in result.stderr
    assert "cannot reach Grafana at http://127.0.0.1:1" in result.stderr


def test_missing_credentials_are_a_usage_error_without_default_password():
    result = run_cli("provision", "--grafana-url", "http://127.0.0.1:3000")
    assert result.returncode == 2
    assert "no Grafana credentials: set GRAFANA_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--grafana-url", "ftp://grafana"], {}, "Grafana URL must be http(s)://"),
        ([], {}, "no Grafana URL"),
        (["--grafana-url", "http://g:3000", "--user", "admin"], {}, "needs a password"),
        (
            ["--grafana-url", "http://g:3000", "--prometheus-url", "prometheus:9090"],
            {"GRAFANA_TOKEN": "t"},
            "Prometheus URL must be http(s)://",
        ),
        (
            ["--grafana-url", "http://g:3000"],
            {"GRAFANA_TOKEN": "t", "FRAUD_REDIS_URL": "http://redis"},
            "Redis URL must be redis",
        ),
        (
            ["--grafana-url", "http://g:3000", "--timeout", "0"],
            {"GRAFANA_TOKEN": "t"},
            "more than zero",
        ),
    ],
)
def test_bad_arguments_are_usage_errors(args, env, message):
    result = run_cli("provision", *args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_describes_the_commands_and_the_environment():
    top = run_cli("--help")
    assert top.returncode == 0
    assert "provision" in top.stdout and "export" in top.stdout
    provision_help = run_cli("provision", "--help")
    assert provision_help.returncode == 0
    for needle in (
        "--grafana-url",
        "--prometheus-url",
        "--dry-run",
        "GRAFANA_TOKEN",
        "GRAFANA_PASSWORD",
        "PROMETHEUS_URL",
    ):
        assert needle in provision_help.stdout
    assert run_cli("export", "--help").returncode == 0


def grafana_of(*args: str, **env: str) -> tuple[str, object]:
    parsed = build_parser().parse_args(["provision", *args])
    return grafana_connection(parsed, env)


def test_a_grafana_behind_a_sub_path_keeps_its_path():
    url, _ = grafana_of("--grafana-url", "https://example.org/grafana", GRAFANA_TOKEN="t")
    assert url == "https://example.org/grafana/"
    api = GrafanaApi.from_url(url, credential="t")
    assert api.client.url == "https://example.org/grafana/api"  # not .../grafanaapi


def test_flags_win_and_a_token_wins_over_a_user_in_the_environment():
    env = {"GRAFANA_TOKEN": "tok", "GRAFANA_USER": "u", "GRAFANA_PASSWORD": "p"}
    assert grafana_of("--grafana-url", "http://g", **env)[1] == "tok"
    flagged = grafana_of("--grafana-url", "http://g", "--user", "admin", **env)
    assert flagged[1] == ("admin", "p")
    assert grafana_of("--grafana-url", "http://u:pw@g")[1] == ("u", "pw")
