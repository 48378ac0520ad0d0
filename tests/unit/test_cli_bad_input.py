"""Every command line refuses bad input with a message naming the problem, never a traceback.

One place that runs each entry point (``python -m ...``) as a user would; the per-package CLI
tests go deeper into their own options.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

CASES = [
    (["producers", "transactions", "--rate", "abc"], "argument --rate: not a number: 'abc'"),
    (["producers", "emails", "--spam-rate", "2"], "--spam-rate"),
    (["stream", "backtest", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["stream", "alerts-page", "--port", "99999"], "must be at most 65535, got 99999"),
    (["stream", "no-such-command"], "no-such-command"),
    (["batch", "retrain", "--cutoff", "yesterday"], "not an ISO time: 'yesterday'"),
    (["batch", "retrain", "--kind", "goats"], "must be transaction, email or both"),
    (["batch", "retrain", "--valid-share", "2"], "must be below 1, got 2"),
    (["batch", "sink", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["batch", "schedule", "--at", "25:99"], "argument --at: must be HH:MM (UTC)"),
    (["dashboards", "render", "--prometheus", "http://127.0.0.1:9"], "required: --out"),
    (["models.redis_acl"], "required: command"),
    (["benchmarks", "soak", "--rate", "x"], "invalid float value: 'x'"),
    (["benchmarks", "outcomes", "--batch", "0"], "must be at least 1"),
    (["benchmarks", "restart", "--probes", "0"], "--count and --probes must be at least 1"),
    (["local"], "required: service, action"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_a_message_not_a_traceback(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode in (1, 2), output
    assert "Traceback" not in output
    assert message in output
