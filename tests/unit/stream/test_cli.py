"""``python -m stream``: help, and clear messages instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=60,
    )


def test_help_lists_every_setting():
    result = run("--help")
    assert result.returncode == 0
    assert "FRAUD_KAFKA_BOOTSTRAP" in result.stdout and "FRAUD_REDIS_URL" in result.stdout


def test_an_unknown_command_is_a_usage_error():
    result = run("wroker")
    assert result.returncode == 2
    assert "unknown command 'wroker'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_setting_is_named_without_a_traceback():
    result = run("worker", FRAUD_TXN_REVIEW_THRESHOLD="0.9", FRAUD_TXN_BLOCK_THRESHOLD="0.5")
    assert result.returncode == 1
    assert "FRAUD_TXN_REVIEW_THRESHOLD" in result.stderr
    assert "Traceback" not in result.stderr
