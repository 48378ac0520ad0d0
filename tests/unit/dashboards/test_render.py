"""``python -m dashboards render`` against a FAKE Prometheus.

NOT A REAL PROMETHEUS: :class:`FakePrometheus` is a small ``http.server`` on 127.0.0.1 that
answers the three endpoints the renderer calls (build info, instant and range queries) with
canned series, and checks every request it gets: the method and form fields Prometheus's HTTP
API takes, and no Grafana variable (``$__rate_interval``...) left in the PromQL. The real
pictures in ``docs/img/dashboards/`` were drawn against Debian's Prometheus scraping a
running worker; these tests show that the renderer asks for every query of every panel,
writes one picture per dashboard of the size the grid gives, and fails in one clear line.
"""

from __future__ import annotations

import io
import json
import math
import re
import socket
import struct
import subprocess
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dashboards.catalog import all_dashboards
from dashboards.cli import main
from dashboards.render import render_dashboard, size_px
from dashboards.render_prometheus import Prometheus
from dashboards.render_queries import (
    INSTANT_PANELS,
    RANGE_PANELS,
    TimeRange,
    dashboard_variables,
    interpolate,
    is_prometheus,
    legend,
)
from dashboards.render_style import format_value

REPO = Path(__file__).resolve().parents[3]
BOARDS = all_dashboards("fraud")
ENV: dict[str, str] = {}

LABELS = [
    {"kind": "transaction", "decision": "block", "topic": "fraud.transactions.v1",
     "outcome": "learned", "feature": "amount_log", "score": "hybrid", "model": "online",
     "version": "3", "le": "0.1"},
    {"kind": "email", "decision": "review", "topic": "fraud.emails.v1", "outcome": "waiting",
     "feature": "is_new_device", "score": "online", "model": "batch", "version": "4",
     "le": "0.5"},
    {"kind": "email", "decision": "block", "topic": "fraud.labels.v1", "outcome": "duplicate",
     "feature": "card_countries_7d", "score": "hybrid", "model": "online", "version": "5",
     "le": "+Inf"},
]  # fmt: skip
"""Canned series: enough labels for every legend and a cumulative ``le`` ladder."""


@dataclass(frozen=True)
class Query:
    endpoint: str
    expr: str


class FakePrometheus:
    """A fake of Prometheus's query API on a free port of 127.0.0.1 (context manager).
    Queries containing one of ``refuse`` are answered 400 ``bad_data``, as Prometheus
    answers an expression it cannot parse."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = refuse
        self.queries: list[Query] = []
        self.violations: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlsplit(self.path).path == "/api/v1/status/buildinfo":
                    self._reply(200, {"status": "success", "data": {"version": "fake"}})
                else:
                    self._reply(404, None)

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(size).decode()).items()}
                path = urlsplit(self.path).path
                if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
                    fake.violations.append(f"{path}: not a form body")
                if path not in ("/api/v1/query", "/api/v1/query_range"):
                    self._reply(404, None)
                    return
                self._reply(*fake.answer(path, form))

            def _reply(self, code: int, body: Any) -> None:
                raw = b"404 page not found" if body is None else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakePrometheus:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, form: dict[str, str]) -> tuple[int, Any]:
        expr = form.get("query", "")
        self.queries.append(Query(path.rsplit("/", 1)[1], expr))
        if not expr or "$" in expr or "[[" in expr:
            self.violations.append(f"{path}: query not ready for Prometheus: {expr!r}")
        if any(word in expr for word in self.refuse):
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        try:
            if path.endswith("query_range"):
                start, end, step = (float(form[k]) for k in ("start", "end", "step"))
                if not (start < end and step > 0):
                    self.violations.append(f"range query from {start} to {end} by {step}")
                times = [start + i * step for i in range(int((end - start) / step) + 1)]
                result = [
                    {"metric": labels, "values": [[t, str(_wave(i, t))] for t in times]}
                    for i, labels in enumerate(LABELS)
                ]
                return 200, {
                    "status": "success",
                    "data": {"resultType": "matrix", "result": result},
                }
            at = float(form["time"])
        except (KeyError, ValueError) as exc:
            self.violations.append(f"{path}: bad form {form}: {exc}")
            return 400, {"status": "error", "errorType": "bad_data", "error": str(exc)}
        result = [
            {"metric": labels, "value": [at, str(i + 1.5)]} for i, labels in enumerate(LABELS)
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


def _wave(i: int, t: float) -> float:
    """Series ``i`` at time ``t``: above series ``i - 1`` always (a cumulative ladder)."""
    return (i + 1) * (2 + math.sin(t / 60))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk comes first)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@dataclass
class Run:
    code: int
    out: Path
    stdout: str
    stderr: str
    queries: list[Query]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Every dashboard rendered once against the fake (shared: rendering takes seconds)."""
    out = tmp_path_factory.mktemp("pictures")
    stdout, stderr = io.StringIO(), io.StringIO()
    with FakePrometheus() as fake, redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(["render", "--prometheus", fake.url, "--out", str(out)], environ=ENV)
    assert fake.violations == [], "requests Prometheus would not accept"
    return Run(code, out, stdout.getvalue(), stderr.getvalue(), fake.queries)


def test_one_picture_per_dashboard_of_the_size_its_grid_gives(full_run):
    assert full_run.code == 0, full_run.stderr
    assert full_run.stderr == ""
    for board in BOARDS:
        path = full_run.out / f"{board['uid']}.png"
        assert str(path) in full_run.stdout.splitlines()
        assert png_size(path) == size_px(board)
        assert path.stat().st_size < 400_000
    assert sorted(p.name for p in full_run.out.iterdir()) == sorted(
        f"{b['uid']}.png" for b in BOARDS
    )


def _as_sent(expr: str) -> re.Pattern[str]:
    """``expr`` with each Grafana macro standing for any PromQL duration or number."""
    parts = re.split(r"\$__\w+", expr)
    return re.compile(r"\d+(?:ms|s)?".join(re.escape(part) for part in parts))


def test_every_prometheus_target_of_every_panel_is_queried(full_run):
    sent = {(q.endpoint, q.expr) for q in full_run.queries}
    expected = 0
    for board in BOARDS:
        for panel in board["panels"]:
            if not is_prometheus(panel):
                continue
            endpoint = "query_range" if panel["type"] in RANGE_PANELS else "query"
            assert panel["type"] in RANGE_PANELS | INSTANT_PANELS, panel["type"]
            for target in panel["targets"]:
                expected += 1
                pattern = _as_sent(target["expr"])
                assert any(e == endpoint and pattern.fullmatch(x) for e, x in sent), (
                    f"{board['uid']} / {panel['title']}: never asked {endpoint} {target['expr']}"
                )
    assert expected > 40
    assert len(full_run.queries) == expected, "each target is asked once"


def test_grafanas_macros_become_durations_from_the_scrape_interval():
    fifteen_minutes = TimeRange(end=1_000_000.0, span_s=900, scrape_s=15)
    assert fifteen_minutes.interval_s(max_points=784) == 15  # never below the scrape interval
    macros = fifteen_minutes.macros(15)
    assert macros["__rate_interval"] == "60s"  # four scrapes
    assert macros["__range"] == "900s"
    day = TimeRange(end=1_000_000.0, span_s=86_400, scrape_s=15)
    assert day.macros(day.interval_s(784))["__rate_interval"] == "126s"  # 111 s + one scrape
    expr = "rate(x[$__rate_interval]) + ${__range_s} + [[__interval]] + $missing"
    assert interpolate(expr, macros) == "rate(x[60s]) + 900 + 15s + $missing"


def test_series_are_named_like_grafanas_legends():
    labels = {"__name__": "fraud_events_total", "kind": "email", "decision": "block"}
    assert legend("{{kind}} {{ decision }}", labels, "x") == "email block"
    assert legend("__auto", labels, "x") == 'fraud_events_total{decision="block", kind="email"}'
    assert legend("", {}, "sum(x)") == "sum(x)"


def test_dashboard_variables_and_other_panel_types_render(tmp_path):
    """A board the catalog does not have (yet): a variable, a Prometheus table and gauge, a
    panel type the renderer does not draw."""
    board = {
        "uid": "made-up",
        "title": "Made up",
        "templating": {
            "list": [
                {"name": "kind", "type": "custom", "query": "email,transaction"},
                {"name": "topic", "type": "query", "current": {"value": "$__all"}},
            ]
        },
        "panels": [
            _panel("table", 'sum by (kind) (fraud_events_total{kind="$kind"})', x=0, w=12),
            _panel("gauge", 'sum(fraud_consumer_lag{topic=~"${topic}"})', x=12, w=6),
            _panel("piechart", "sum(fraud_alerts_total)", x=18, w=6),
        ],
    }
    assert dashboard_variables(board) == {"kind": "email", "topic": ".*"}
    with FakePrometheus() as fake:
        span = TimeRange(end=1_700_000_000.0, span_s=600, scrape_s=15)
        failed = render_dashboard(board, Prometheus(fake.url), span, tmp_path / "made-up.png")
    assert failed == [] and fake.violations == []
    assert [q.expr for q in fake.queries] == [
        'sum by (kind) (fraud_events_total{kind="email"})',
        'sum(fraud_consumer_lag{topic=~".*"})',
    ]
    assert png_size(tmp_path / "made-up.png") == size_px(board)


def _panel(kind: str, expr: str, *, x: int, w: int) -> dict[str, Any]:
    source = {"type": "prometheus", "uid": "fraudstream-prometheus"}
    return {
        "type": kind,
        "title": kind,
        "datasource": source,
        "targets": [{"datasource": source, "expr": expr, "refId": "A", "legendFormat": ""}],
        "gridPos": {"x": x, "y": 0, "w": w, "h": 6},
    }


def test_a_refused_query_is_shown_on_its_panel_and_fails_the_run(tmp_path, capsys):
    with FakePrometheus(refuse=("fraud_consumer_lag",)) as fake:
        argv = ["render", "--prometheus", fake.url, "--out", str(tmp_path)]
        code = main([*argv, "--dashboard", "fraudstream-overview"], environ=ENV)
    err = capsys.readouterr().err
    assert code == 1
    assert "fraudstream-overview / Consumer lag: A: bad_data: parse error" in err
    assert "error: 2 queries failed (shown on their panels)" in err
    assert (tmp_path / "fraudstream-overview.png").exists()  # the rest is still worth seeing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_prometheus_is_one_line_and_exit_1(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    argv = ["render", "--prometheus", url, "--out", str(tmp_path / "pictures")]
    result = subprocess.run(
        [sys.executable, "-m", "dashboards", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach Prometheus at {url}: "), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "pictures").exists()  # checked before anything is written


def test_a_url_that_is_not_prometheus_is_one_line_and_exit_1(tmp_path, capsys):
    with FakePrometheus() as fake:
        code = main(["render", "--prometheus", fake.url + "/grafana", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    where = f"{fake.url}/grafana/api/v1/status/buildinfo"
    assert err == f"error: {where} answered HTTP 404: is this Prometheus's URL?\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--range", "15x"], "not a duration"),
        (["--range", "0s"], "not a duration"),
        (["--dashboard", "nope"], "no dashboard nope; known: fraudstream-overview"),
        (["--prometheus", "ftp://host"], "Prometheus URL must be http(s)://"),
        (["--timeout", "0"], "more than zero"),
    ],
)
def test_bad_arguments_exit_2(args, message, tmp_path, capsys):
    argv = ["render", "--prometheus", "http://127.0.0.1:9", "--out", str(tmp_path), *args]
    with pytest.raises(SystemExit) as exit_:
        main(argv, environ=ENV)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["render", "--help"], environ=ENV)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--prometheus", "--out", "--range", "--dashboard", "--scrape-interval"):
        assert option in out


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.075, "s", "75 ms"),
        (0.0005, "s", "500 µs"),
        (0.0444, "percentunit", "4.44%"),
        (13_900, "short", "13.9 K"),
        (220.3, "ops", "220 ops/s"),
        (math.nan, "short", "NaN"),
    ],
)
def test_values_read_as_grafana_shows_them(value, unit, shown):
    assert format_value(value, unit) == shown
