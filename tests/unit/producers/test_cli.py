"""``python -m producers``: help, dry runs, the truth file, and clear messages (never a
traceback) for bad arguments, bad files and an unreachable Kafka."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[3]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.parametrize("command", [[], ["transactions"], ["emails"], ["replay"]])
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m producers" in result.stdout
    assert "FRAUD_KAFKA_BOOTSTRAP" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["transfers"], "invalid choice: 'transfers'"),
        (["transactions", "--rate", "-1"], "argument --rate: must be zero or more"),
        (["transactions", "--fraud-rate", "1.5"], "argument --fraud-rate: must be below 1"),
        (["emails", "--count", "many"], "argument --count: not a whole number"),
        (["emails", "--simulate-start", "yesterday"], "argument --simulate-start: not an ISO"),
        (["transactions", "--seed", "-3"], "argument --seed: must be zero or more"),
        (
            ["emails", "--dry-run", "--truth-out", "/nonexistent/dir/t.csv"],
            "cannot write --truth-out /nonexistent/dir/t.csv",
        ),
        (["replay", "x.csv"], "the following arguments are required: --kind"),
        (["replay", "/nonexistent.csv", "--kind", "transaction"], "no such file"),
        (
            ["replay", "x.csv", "--kind", "email", "--map", "amount=amt"],
            "'amount' is not an email field",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_replay_file_exits_2_naming_the_problem(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("amount,label\n1,0\n2,7\n")
    result = run("replay", str(path), "--kind", "transaction", "--dry-run")
    assert result.returncode == 2
    assert "label column 'label' is not binary: found [7.0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_kafka_exits_1_naming_the_servers():
    result = run(
        "transactions",
        "--count",
        "1",
        "--seed",
        "1",
        "--connect-timeout",
        "1",
        "--bootstrap-servers",
        "127.0.0.1:1",
    )
    assert result.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_environment_variable_exits_1_naming_it():
    result = run("emails", "--dry-run", FRAUD_PARTITIONS="four")
    assert result.returncode == 1
    assert "FRAUD_PARTITIONS" in result.stderr and "Traceback" not in result.stderr


def test_a_dry_run_prints_events_and_labels_as_json_and_is_reproducible(tmp_path):
    truth = tmp_path / "truth.csv"
    args = [
        "transactions",
        "--dry-run",
        "--rate",
        "0",
        "--count",
        "20",
        "--seed",
        "3",
        "--simulate-start",
        "2025-06-02T08:00:00Z",
        "--label-delay",
        "5",
        "--truth-out",
        str(truth),
        "--customers",
        "500",
    ]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    events = [r for r in records if r["topic"] == "fraud.transactions.v1"]
    labels = [r for r in records if r["topic"] == "fraud.labels.v1"]
    assert len(events) == 20 and len(labels) == 20
    assert events[0]["value"]["event_id"] == "tx-3-0000000000"
    assert events[0]["value"]["event_time"].startswith("2025-06-02T08:00")
    assert all(r["key"] == r["value"]["card_id"] for r in events)
    assert all(r["key"] == r["value"]["event_id"] for r in labels)
    frame = pl.read_csv(truth)
    assert frame["event_id"].to_list() == [e["value"]["event_id"] for e in events]
    assert run(*args).stdout == result.stdout  # same seed, same stream


def test_a_namespace_sets_the_topics():
    result = run("emails", "--dry-run", "--count", "2", "--seed", "1", FRAUD_NAMESPACE="demo")
    assert result.returncode == 0, result.stderr
    topics = {json.loads(line)["topic"] for line in result.stdout.splitlines()}
    assert topics == {"demo.emails.v1", "demo.labels.v1"}


def test_a_dry_run_replay(tmp_path):
    path = tmp_path / "cc.csv"
    path.write_text("Time,V1,Amount,Class\n0,-1.3,149.62,0\n1,1.2,2.69,1\n")
    result = run(
        "replay",
        str(path),
        "--kind",
        "transaction",
        "--map",
        "event_time=Time",
        "--map",
        "amount=Amount",
        "--map",
        "label=Class",
        "--extra",
        "all",
        "--dry-run",
        "--start",
        "2025-01-01",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["value"]["extra"] for r in records[:2]] == [{"V1": -1.3}, {"V1": 1.2}]
    assert records[0]["value"]["event_time"] == "2025-01-01T00:00:00Z"
    assert [r["value"]["source"] for r in records[2:]] == ["replay", "replay"]
    assert "note: event ids synthesized" in result.stderr


CARD_FILE = "amt,cc_num,is_fraud\n1.5,4111 1111 1111 1111,0\n2.5,4111111111111111,1\n"


def test_a_replay_of_card_numbers_without_the_key_exits_2_naming_the_setting(tmp_path):
    path = tmp_path / "cards.csv"
    path.write_text(CARD_FILE)
    args = ["replay", str(path), "--kind", "transaction", "--map", "amount=amt",
            "--map", "card_id=cc_num", "--map", "label=is_fraud", "--dry-run"]  # fmt: skip
    result = run(*args, FRAUD_CARD_TOKEN_KEY="")
    assert result.returncode == 2
    assert "column 'cc_num' holds card numbers" in result.stderr
    assert "set FRAUD_CARD_TOKEN_KEY" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "4111111111111111" not in result.stderr.replace(" ", "")

    key = "cli-card-key-0123456789"
    result = run(*args, FRAUD_CARD_TOKEN_KEY=key)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()][:2]
    assert events[0]["key"] == events[0]["value"]["card_id"] == events[1]["value"]["card_id"]
    assert events[0]["key"].startswith("card_") and len(events[0]["key"]) == 5 + 32
    assert "4111111111111111" not in result.stdout.replace(" ", "")
    assert key not in result.stdout + result.stderr  # a secret is never printed
    assert "keyed tokens" in result.stderr


def test_sigterm_stops_a_live_run_cleanly():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producers",
            "emails",
            "--dry-run",
            "--rate",
            "50",
            "--duration",
            "60",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    process.stdout.readline()  # running: the first event is out
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "stopping (interrupted)" in err and "Traceback" not in err
