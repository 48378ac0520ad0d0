"""The live alerts page against the real stack: a real worker raises alerts from events on a
real Kafka broker, the page server (a real ``python -m stream alerts-page`` process) shows
them, and a verdict travels as a label back to the worker, which learns from it.

The API is tested over HTTP; the last test drives the page itself in a real headless
Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by ``make setup``).
Set ``FRAUD_SCREENSHOT_DIR`` to keep its screenshot (how the README's picture is made).
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from local.screenshot import BrowserMissing, headless_chromium
from models.events import Label, Transaction, decode
from models.names import RedisKeys, Topics
from models.settings import Settings
from models.topology import ensure_topics
from tests import factories
from tests.integration.harness import AlertsPageProcess, WorkerProcess, collect, publish

pytestmark = pytest.mark.integration

ALICE = "alice-token-0123456789"
BOB = "bob-token-9876543210abc"


@dataclass
class Stack:
    settings: Settings
    worker: WorkerProcess
    page: AlertsPageProcess
    redis: redis.Redis
    sent: int = 0

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.namespace)

    def send(self, count: int) -> list[Transaction]:
        """Publish ``count`` new transactions; every one alerts (the thresholds are tiny)."""
        now = time.time()
        txns = [
            factories.transaction(
                self.sent + i, at=now - 1 + i * 0.001, event_id=f"txn-{uuid.uuid4().hex[:12]}"
            )
            for i in range(count)
        ]
        self.sent += count
        publish(self.settings, Topics.for_namespace(self.settings.namespace).transactions, txns)
        return txns

    def wait_for_alerts(self, ids: set[str], timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            shown = {a["event_id"]: a for a in get(self, "/api/alerts?limit=2000")["alerts"]}
            if ids <= set(shown):
                return shown
            assert self.worker.alive(), self.worker.log_tail()
            time.sleep(0.2)
        raise AssertionError(f"alerts not shown in {timeout_s}s\n{self.worker.log_tail()}")

    def wait_learned(self, event_id: str, timeout_s: float = 60.0) -> None:
        """The worker learned the label: its labels-count-once marker for the event is set."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.redis.exists(self.keys.labelled(event_id)):
                return
            time.sleep(0.2)
        raise AssertionError(
            f"worker never learned the label of {event_id}\n{self.worker.log_tail()}"
        )


def stack_settings(kafka_bootstrap: str, redis_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "namespace": "t" + uuid.uuid4().hex[:10],
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "partitions": 2,
        "checkpoint_interval_s": 0.5,
        "txn_review_threshold": 0.001,
        "txn_block_threshold": 0.999,
        "review_tokens": f"alice:{ALICE},bob:{BOB}",
    }
    settings = Settings(**{**values, **changes})
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("alerts-page")
    settings = stack_settings(kafka_bootstrap, redis_url)
    worker = WorkerProcess(settings, workdir).start()
    page = AlertsPageProcess(settings, workdir).start()
    try:
        stack = Stack(settings, worker, page, redis.Redis.from_url(redis_url))
        teach(stack)
        yield stack
    finally:
        page.stop()
        worker.stop()


def teach(stack: Stack) -> None:
    """Label a first batch so the online model has weights: a fresh model's alerts have no
    reasons (every contribution is zero), and an analyst would see an empty "why"."""
    txns = stack.send(60)
    stack.wait_for_alerts({t.event_id for t in txns})
    labels = [
        factories.label(t.event_id, "transaction", t.amount > 40.0, at=time.time()) for t in txns
    ]
    publish(stack.settings, Topics.for_namespace(stack.settings.namespace).labels, labels)
    stack.wait_learned(txns[-1].event_id)


def request(
    stack: Stack,
    path: str,
    *,
    method: str = "GET",
    body: Any = None,
    token: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(stack.page.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(stack: Stack, path: str) -> Any:
    status, body = request(stack, path)
    assert status == 200, body
    return body


def test_alerts_show_with_score_reasons_and_features_and_filters_apply(stack: Stack) -> None:
    txns = stack.send(6)
    shown = stack.wait_for_alerts({t.event_id for t in txns})
    alert = shown[txns[0].event_id]
    assert alert["kind"] == "transaction"
    assert alert["decision"] in ("review", "block")
    assert alert["alert_id"] == f"alert-{txns[0].event_id}"
    assert 0.0 <= alert["score"] <= 1.0
    assert alert["reasons"] and {"feature", "value", "contribution"} <= set(alert["reasons"][0])
    assert "amount_log" in alert["features"]
    assert alert["review"] is None

    one = get(stack, f"/api/alerts/{alert['alert_id']}")
    assert one == alert
    assert get(stack, "/api/alerts?kind=email")["alerts"] == []
    decisions = {a["decision"] for a in get(stack, "/api/alerts?decision=review")["alerts"]}
    assert decisions <= {"review"}
    future = get(stack, "/api/alerts?since=2100-01-01")["alerts"]
    assert future == []
    assert len(get(stack, "/api/alerts?limit=2")["alerts"]) == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("kind=card", "kind must be one or more of transaction, email"),
        ("decision=allow", "decision must be one or more of review, block"),
        ("since=yesterday", "since: not an ISO time"),
        ("since=2026-02-01&until=2026-01-01", "since must be before until"),
        ("status=done", "status must be one of all, open, reviewed"),
        ("limit=0", "limit must be a whole number from 1 to 2000"),
        ("colour=red", "unknown parameter(s): colour"),
    ],
)
def test_bad_filters_get_a_clear_error(stack: Stack, query: str, message: str) -> None:
    status, body = request(stack, f"/api/alerts?{query}")
    assert status == 400
    assert message in body["error"]


def test_marking_needs_a_token_is_recorded_once_and_teaches_the_worker(stack: Stack) -> None:
    (txn,) = stack.send(1)
    stack.wait_for_alerts({txn.event_id})
    path = f"/api/alerts/alert-{txn.event_id}/review"

    status, body = request(stack, path, method="POST", body={"verdict": "confirmed"})
    assert (status, body["error"]) == (401, "sign in with a reviewer token to mark alerts")
    status, body = request(
        stack, path, method="POST", body={"verdict": "confirmed"}, token="x" * 20
    )
    assert (status, body["error"]) == (401, "unknown reviewer token")
    status, body = request(stack, path, method="POST", body={"verdict": "maybe"}, token=ALICE)
    assert status == 400 and "verdict is confirmed or false_positive" in body["error"]
    status, body = request(stack, path, method="POST", raw=b"{not json", token=ALICE)
    assert status == 400 and "must be JSON" in body["error"]
    status, body = request(
        stack,
        "/api/alerts/alert-nope/review",
        method="POST",
        body={"verdict": "confirmed"},
        token=ALICE,
    )
    assert status == 404 and "no alert 'alert-nope'" in body["error"]
    status, body = request(stack, "/api/whoami", token=BOB)
    assert (status, body) == (200, {"reviewer": "bob"})

    status, review = request(
        stack,
        path,
        method="POST",
        body={"verdict": "confirmed", "note": "card reported stolen"},
        token=ALICE,
    )
    assert status == 201, review
    assert (review["reviewer"], review["verdict"]) == ("alice", "confirmed")
    status, body = request(
        stack, path, method="POST", body={"verdict": "false_positive"}, token=BOB
    )
    assert status == 409 and "already marked confirmed by alice" in body["error"]

    # The verdict went out as one analyst label, with who and when ...
    topic = Topics.for_namespace(stack.settings.namespace).labels
    values = collect(stack.settings, topic, lambda vs: any(txn.event_id.encode() in v for v in vs))
    labels = [decode(v, Label) for v in values if txn.event_id.encode() in v]
    assert len(labels) == 1
    assert (labels[0].source, labels[0].reviewer, labels[0].is_positive) == (
        "analyst",
        "alice",
        True,
    )
    assert labels[0].event_time.isoformat().startswith(review["reviewed_at"][:19])
    # ... the worker learned from it, and the page shows the verdict.
    stack.wait_learned(txn.event_id)
    shown = get(stack, f"/api/alerts/alert-{txn.event_id}")
    assert shown["review"]["reviewer"] == "alice"
    reviewed = get(stack, "/api/alerts?status=reviewed")["alerts"]
    assert [a["event_id"] for a in reviewed] == [txn.event_id]


def test_new_alerts_and_verdicts_are_pushed_to_open_pages(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.page.port, timeout=30)
    conn.request("GET", "/api/events")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    (txn,) = stack.send(1)

    def next_event() -> tuple[str, dict[str, Any]]:
        kind = ""
        while True:
            line = response.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: ") and kind:
                return kind, json.loads(line[len("data: ") :])

    kind, data = next_event()
    while data["event_id"] != txn.event_id:
        kind, data = next_event()
    assert kind == "alert"
    status, _ = request(
        stack,
        f"/api/alerts/{data['alert_id']}/review",
        method="POST",
        body={"verdict": "false_positive"},
        token=BOB,
    )
    assert status == 201
    kind, data = next_event()
    while kind != "review":
        kind, data = next_event()
    assert data["event_id"] == txn.event_id
    assert data["review"]["verdict"] == "false_positive" and data["review"]["reviewer"] == "bob"
    conn.close()


def test_page_is_read_only_without_tokens_and_sends_security_headers(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(kafka_bootstrap, redis_url, review_tokens="")
    page = AlertsPageProcess(settings, tmp_path).start()
    try:
        req = urllib.request.Request(
            page.url + "/api/alerts/alert-x/review",
            data=b'{"verdict":"confirmed"}',
            method="POST",
            headers={"Authorization": f"Bearer {ALICE}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403
        assert "read-only" in json.loads(refused.value.read())["error"]
        with urllib.request.urlopen(page.url + "/", timeout=10) as response:
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert b'id="alerts"' in response.read()
        with urllib.request.urlopen(page.url + "/api/status", timeout=10) as response:
            assert json.loads(response.read()) == {"reviews_enabled": False, "held": 0}
    finally:
        page.stop()


def chromium(tmp_path: Path) -> Any:
    """Debian's headless Chromium (``local.screenshot`` drives it the same way); a missing
    browser fails the test, never skips it."""
    try:
        return headless_chromium(tmp_path / "chromium")
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def test_browser_shows_a_new_alert_live_and_marks_it_confirmed(
    stack: Stack, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = chromium(tmp_path)
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(stack.page.url + "/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))

        # A new event becomes an alert on the open page, without a reload.
        (txn,) = stack.send(1)
        row_at = (By.CSS_SELECTOR, f'tr[data-alert-id="alert-{txn.event_id}"]')
        wait.until(ec.presence_of_element_located(row_at))

        # Its detail: score, reasons, features; read-only until signed in.
        driver.find_element(*row_at).click()
        wait.until(ec.visibility_of_element_located((By.ID, "detail")))
        assert driver.find_element(By.ID, "detail-title").text == f"alert-{txn.event_id}"
        assert driver.find_elements(By.CSS_SELECTOR, "#detail-reasons tbody tr")
        assert "amount_log" in driver.find_element(By.ID, "detail-features").text
        assert not driver.find_element(By.ID, "mark-confirmed").is_enabled()
        assert "Sign in" in driver.find_element(By.ID, "review-hint").text

        # Filters apply: emails only hides it, all kinds shows it again.
        Select(driver.find_element(By.ID, "filter-kind")).select_by_value("email")
        wait.until(ec.invisibility_of_element_located(row_at))
        Select(driver.find_element(By.ID, "filter-kind")).select_by_value("")
        wait.until(ec.presence_of_element_located(row_at))

        # A wrong token is refused with the server's reason; the right one signs in.
        driver.find_element(By.ID, "token").send_keys("not-a-reviewer-token")
        driver.find_element(By.ID, "sign-in").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "unknown reviewer token"))
        driver.find_element(By.ID, "token").send_keys(ALICE)
        driver.find_element(By.ID, "sign-in").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "Signed in as alice"))

        driver.find_element(*row_at).click()
        wait.until(ec.element_to_be_clickable((By.ID, "mark-confirmed"))).click()
        wait.until(
            ec.text_to_be_present_in_element((By.ID, "review-status"), "Marked confirmed by alice")
        )
        assert "confirmed" in driver.find_element(*row_at).text
        if os.environ.get("FRAUD_SCREENSHOT_DIR"):
            out = Path(os.environ["FRAUD_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out / "alerts-page.png"))
    finally:
        driver.quit()
    # The verdict reached the worker as a label, and it learned from it.
    stack.wait_learned(txn.event_id)
