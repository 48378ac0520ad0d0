"""The backtest: prequential scoring through the worker's scoring path, label timing and
outcomes as in the worker, every input mistake answered with a message and status 2, and
its outputs (scores file, JSON metrics, report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from models.events import Transaction
from models.features import count_outcomes
from models.online import OnlineModel
from models.tabular import events_frame
from stream import backtest as bt
from stream.scoring import EMAILS, TRANSACTIONS, Thresholds, score_batch
from tests import factories

REPO = Path(__file__).resolve().parents[3]
THRESHOLDS = Thresholds(0.5, 0.85)


def stream(n: int = 400) -> list[tuple[Transaction, bool]]:
    """Transactions a minute apart on 20 cards and 5 terminals; terminal 3 is compromised."""
    out = []
    for i in range(n):
        terminal = i % 5
        fraud = terminal == 3 and i % 3 == 0
        txn = factories.transaction(
            i,
            at=factories.T0 + 60.0 * i,
            card_id=f"card-{i % 20}",
            terminal_id=f"term-{terminal}",
            amount=400.0 + i % 7 if fraud else 10.0 + i % 13,
        )
        out.append((txn, fraud))
    return out


def run_engine(items: list[Any], **options: Any) -> tuple[list[bt.Scored], bt.Backtest[Any, Any]]:
    engine: bt.Backtest[Any, Any] = bt.Backtest(
        spec=TRANSACTIONS,
        model=OnlineModel("transaction", lr=0.1),
        thresholds=THRESHOLDS,
        **options,
    )
    scored = [s for batch in engine.run(items) for s in batch]
    return scored, engine


# --- the engine ---------------------------------------------------------------------------


def test_each_score_is_given_before_its_label_and_later_labels_are_learned():
    items = stream(300)
    scored, engine = run_engine(items, label_delay_s=600.0)
    assert [s.event_id for s in scored] == [e.event_id for e, _ in items]
    # Reference: the same scoring function, one event at a time, learning each label
    # (from the served features) once 600 s of event time have passed.
    model = OnlineModel("transaction", lr=0.1)
    histories: dict[str, Any] = {}
    outcomes: dict[str, list[tuple[float, bool]]] = {}
    pending: list[tuple[float, dict[str, float], str, bool]] = []
    expected = []
    for event, label in items:
        while pending and pending[0][0] <= event.timestamp:
            arrival, x, terminal, positive = pending.pop(0)
            model.learn_one(x, positive)
            outcomes.setdefault(terminal, []).append((arrival, positive))
        counts = {
            event.event_id: count_outcomes(event.timestamp, outcomes.get(event.terminal_id, []))
        }
        (verdict,) = score_batch(
            TRANSACTIONS, [event], histories, counts, model, "v", THRESHOLDS, 0.0
        )
        expected.append(verdict.scored.online_score)
        pending.append((event.timestamp + 600.0, verdict.scored.features, event.terminal_id, label))
    assert [s.online_score for s in scored] == expected
    assert engine.learned == 290 and engine.waiting == 10  # the last 10 labels are still due
    engine.finish()
    assert engine.learned == 300 and engine.model.learned == 300


def test_batches_never_hide_a_label_that_arrived_so_the_batch_size_changes_nothing():
    items = stream(300)
    one, _ = run_engine(items, label_delay_s=150.0, batch_size=1)
    many, _ = run_engine(items, label_delay_s=150.0, batch_size=10_000)
    assert [(s.online_score, s.features) for s in one] == [
        (s.online_score, s.features) for s in many
    ]
    zero_delay, _ = run_engine(items, label_delay_s=0.0, batch_size=10_000)
    assert zero_delay[1].online_score != one[1].online_score  # a label at t counts at t


def test_terminal_outcomes_count_labels_that_arrived_by_the_event_time_only():
    items = stream(100)
    scored, engine = run_engine(items, label_delay_s=1800.0)  # 30 events later
    by_id = {s.event_id: s for s in scored}
    fraud_at_3 = [e for e, label in items if label]
    first = fraud_at_3[0]
    arrival = first.timestamp + 1800.0
    at_terminal = [e for e, _ in items if e.terminal_id == "term-3"]
    before = [e for e in at_terminal if e.timestamp < arrival]
    after = [e for e in at_terminal if e.timestamp >= arrival]
    assert all(by_id[e.event_id].features["terminal_fraud_count_28d"] == 0 for e in before)
    assert by_id[after[0].event_id].features["terminal_fraud_count_28d"] >= 1
    assert all(
        by_id[e.event_id].features["terminal_fraud_count_28d"] == 0
        for e, _ in items
        if e.terminal_id == "term-1"
    )
    assert [t for t, _ in engine.outcomes["term-3"]] == sorted(
        t for t, _ in engine.outcomes["term-3"]
    )


def test_a_repeated_event_id_is_scored_from_its_first_features_and_learned_once():
    first = factories.transaction(1, at=factories.T0, card_id="c", amount=50.0)
    again = factories.transaction(1, at=factories.T0 + 10, card_id="c", amount=999.0)
    other = factories.transaction(2, at=factories.T0 + 20, card_id="c", amount=20.0)
    items = [(first, True), (again, False), (other, False)]
    scored, engine = run_engine(items, label_delay_s=1e6, repeated_ids=frozenset({first.event_id}))
    assert scored[1].replayed and scored[1].features == scored[0].features
    assert scored[2].features["card_count_1h"] == 1.0  # the replay did not count twice
    engine.finish()
    assert engine.learned == 2 and engine.duplicate_labels == 1


def test_forgetting_one_off_entities_changes_no_score():
    items = [
        (e.__class__(**{**_fields(e), "card_id": f"row-{i}"}), y)
        for i, (e, y) in enumerate(stream(200))
    ]
    kept, engine_kept = run_engine(items, label_delay_s=300.0)
    dropped, engine_dropped = run_engine(items, label_delay_s=300.0, forget_entities=True)
    assert [s.online_score for s in kept] == [s.online_score for s in dropped]
    assert len(engine_kept.histories) == 200 and not engine_dropped.histories


def _fields(event: Any) -> dict[str, Any]:
    return {f: getattr(event, f) for f in event.__struct_fields__}


def test_emails_go_through_the_same_path():
    mails = [(factories.email(i, at=factories.T0 + 30.0 * i), i % 4 == 0) for i in range(60)]
    engine: bt.Backtest[Any, Any] = bt.Backtest(
        spec=EMAILS, model=OnlineModel("email"), thresholds=THRESHOLDS, label_delay_s=60.0
    )
    scored = [s for batch in engine.run(mails) for s in batch]
    assert len(scored) == 60 and any(k.startswith("tok_") for k in scored[0].features)
    assert scored[-1].features["sender_spam_count_28d"] >= 1  # person7's earlier spam


# --- the command --------------------------------------------------------------------------


def write_stream(tmp_path: Path, name: str = "txns.csv", n: int = 400) -> Path:
    items = stream(n)
    frame = events_frame([e for e, _ in items], [y for _, y in items])
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.write_parquet(path)
    else:
        frame.drop("event_time").with_columns(
            event_time=frame["event_time"].dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
        ).write_csv(path)
    return path


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = bt.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_file_end_to_end_writes_scores_metrics_and_a_report(tmp_path, capsys):
    path = write_stream(tmp_path, "txns.parquet")
    scores, report = tmp_path / "scores.csv", tmp_path / "report"
    code, out, err = run_main(
        capsys,
        str(path),
        "--label-delay",
        "600",
        "--scores-out",
        str(scores),
        "--report",
        str(report),
        "--json",
        "--top-k",
        "3",
    )
    assert code == 0, err
    result = json.loads(out)
    frame = pl.read_csv(scores, try_parse_dates=True)
    assert frame.columns == [
        "event_id",
        "event_time",
        "entity_id",
        "label",
        "online_score",
        "batch_score",
        "hybrid_score",
        "decision",
    ]
    assert frame.height == result["events"] == 400
    assert frame["batch_score"].null_count() == 400 and frame["hybrid_score"].null_count() == 400
    # The file's events are the engine's, scored from the fresh model a worker starts with...
    engine: bt.Backtest[Any, Any] = bt.Backtest(
        spec=TRANSACTIONS,
        model=OnlineModel("transaction"),
        thresholds=THRESHOLDS,
        label_delay_s=600.0,
    )
    expected = [s.online_score for batch in engine.run(stream(400)) for s in batch]
    assert frame["online_score"].to_list() == expected
    # ...and the metrics are scikit-learn's on the scores written.
    y = frame["label"].to_numpy()
    s = frame["online_score"].to_numpy()
    online = result["metrics"]["scores"]["online"]
    assert online["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert online["average_precision"] == pytest.approx(skm.average_precision_score(y, s))
    assert online["at_threshold"]["threshold"] == 0.5
    assert online["at_threshold"]["tp"] == int(((s >= 0.5) & y).sum())
    assert online["precision_top_k_per_day"]["k"] == 3
    assert result["learned"] == 400 and result["batch"] is None and result["hybrid"] is None
    assert result["events_per_second"] > 0 and result["peak_rss_mb"] > 0
    assert (report / "report.md").read_text().startswith("# Backtest")
    assert (report / "pr.png").stat().st_size > 1000 and (report / "roc.png").exists()


def test_a_csv_with_mapped_names_and_string_labels(tmp_path, capsys):
    base = write_stream(tmp_path)
    frame = pl.read_csv(base).rename({"card_id": "cc_num", "amount": "amt", "label": "y"})
    frame = frame.with_columns(
        pl.when(pl.col("y")).then(pl.lit("bad")).otherwise(pl.lit("good")).alias("y")
    )
    path = tmp_path / "mapped.csv"
    frame.write_csv(path)
    code, out, err = run_main(
        capsys,
        str(path),
        "--map",
        "card_id=cc_num",
        "--map",
        "amount=amt",
        "--map",
        "label=y",
        "--positive",
        "bad",
        "--json",
        "--quiet",
    )
    assert code == 0, err
    assert json.loads(out)["metrics"]["positives"] == sum(y for _, y in stream(400))


def test_a_mapping_file_with_categorical_columns(tmp_path, capsys):
    path = tmp_path / "data.csv"
    pl.DataFrame(
        {
            "when": [f"2025-01-01T00:{m:02d}:00Z" for m in range(40)],
            "card": [f"c{i % 4}" for i in range(40)],
            "amt": [float(i) for i in range(40)],
            "category": ["food", "travel", "food", None] * 10,
            "is_fraud": [i % 10 == 0 for i in range(40)],
        }
    ).write_csv(path)
    spec = tmp_path / "map.toml"
    spec.write_text(
        'kind = "transaction"\ncategorical = ["category"]\n'
        '[map]\nevent_time = "when"\ncard_id = "card"\namount = "amt"\nlabel = "is_fraud"\n'
    )
    scores = tmp_path / "s.parquet"
    code, _, err = run_main(
        capsys,
        str(path),
        "--mapping",
        str(spec),
        "--scores-out",
        str(scores),
        "--with-features",
        "--quiet",
    )
    assert code == 0, err
    features = [json.loads(f) for f in pl.read_parquet(scores)["features"]]
    assert features[0]["extra_category=food"] == 1.0 and features[0]["extra_category=travel"] == 0.0
    assert features[3]["extra_category=food"] == features[3]["extra_category=travel"] == 0.0


def test_a_numeric_only_file_synthesizes_ids_and_times_and_says_so(tmp_path, capsys):
    path = tmp_path / "numbers.csv"
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    pl.DataFrame({"f1": x[:, 0], "f2": x[:, 1], "f3": x[:, 2], "label": x[:, 0] > 1.0}).write_csv(
        path
    )
    code, out, err = run_main(capsys, str(path), "--json", "--label-delay", "0", "--quiet")
    assert code == 0, err
    assert "event ids synthesized" in err and "times synthesized" in err
    assert "3 numeric columns are the features" in err
    result = json.loads(out)
    assert "precision_top_k_per_day" not in result["metrics"]["scores"]["online"]
    assert result["metrics"]["scores"]["online"]["roc_auc"] > 0.8  # f1 carries the label


def test_the_model_state_goes_out_and_comes_back(tmp_path, capsys):
    path = write_stream(tmp_path, "t.parquet", n=100)
    state = tmp_path / "state.json"
    code, _, err = run_main(capsys, str(path), "--model-state-out", str(state), "--quiet")
    assert code == 0, err
    saved = json.loads(state.read_text())
    assert OnlineModel.from_state(saved["transaction"]).learned == 100
    code, out, err = run_main(capsys, str(path), "--model-state", str(state), "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["model"]["learned_at_start"] == 100
    state.write_text('{"email": {}}')
    code, _, err = run_main(capsys, str(path), "--model-state", str(state))
    assert code == 2 and "holds no transaction model" in err


def test_a_generated_stream_reports_the_true_probability_beside_the_model(tmp_path, capsys):
    scores = tmp_path / "g.csv"
    code, out, err = run_main(
        capsys,
        "--generate",
        "emails",
        "--count",
        "300",
        "--seed",
        "3",
        "--json",
        "--scores-out",
        str(scores),
        "--quiet",
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result["metrics"]["scores"]) == {"online", "true_probability"}
    assert result["metrics"]["scores"]["true_probability"]["roc_auc"] > 0.9
    frame = pl.read_csv(scores)
    truth = [p for _, _, p in bt.generated_events("email", 300, 3, bt.DEFAULT_START)]
    assert frame["true_probability"].to_list() == truth


def test_the_stream_package_does_not_import_the_producers():
    code = (
        "import sys, stream.backtest, stream.scoring; "
        "sys.exit(any(m.split('.')[0] == 'producers' for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("amount,label\n1,0\n", ["--map", "amount=amt"], "no column 'amt'"),
        ("amount,label\n1,0\n2,3\n", [], "label column 'label' is not binary: found [3.0]"),
        ("amount,label\n1,maybe\n2,no\n", [], "is not binary: found ['maybe']"),
        ("amount,label\n1,a\n2,b\n3,c\n", ["--positive", "a"], "3 distinct values"),
        ("amount,label\n1,a\n2,b\n", ["--positive", "z"], "'z' is not a value"),
        ("amount,is_fraud\n1,0\n", [], "no 'label' column"),
        ("amount,label\n", [], "no rows"),
        ("", [], "is empty"),
        ("amount,label\n1,\n2,\n", [], "label column 'label' is empty"),
        ("amount,label\n1,0\n", ["--extra", "nope"], "--extra nope: no such column"),
        ("amount,label\n1,0\n", ["--map", "colour=red"], "'colour' is not a transaction field"),
    ],
)
def test_bad_input_is_a_message_and_status_2(tmp_path, capsys, text, args, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, out, err = run_main(capsys, str(path), *args)
    assert code == 2
    assert message in err and "Traceback" not in err and out == ""


def test_unreadable_and_missing_files_are_a_message_and_status_2(tmp_path, capsys):
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"\x00\x01 not parquet at all")
    code, _, err = run_main(capsys, str(garbage))
    assert code == 2 and "cannot read" in err
    code, _, err = run_main(capsys, str(tmp_path / "absent.csv"))
    assert code == 2 and "no such file" in err
    code, _, err = run_main(capsys, str(write_stream(tmp_path)), "--mapping", str(garbage))
    assert code == 2 and "mapping file" in err


def test_usage_errors_and_help_go_through_the_real_entry_point(tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stream", "backtest", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )

    helped = cli("--help")
    assert helped.returncode == 0 and "--label-delay" in helped.stdout and "--map" in helped.stdout
    neither = cli()
    assert neither.returncode == 2 and "give a FILE or --generate" in neither.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    failed = cli(str(empty))
    assert failed.returncode == 2 and "is empty" in failed.stderr
    assert "Traceback" not in failed.stderr + neither.stderr


def test_progress_lines_go_to_stderr_with_the_recent_rate(tmp_path, capsys):
    path = write_stream(tmp_path, "p.parquet", n=50)
    bt.PROGRESS_EVERY_S, saved = 0.0, bt.PROGRESS_EVERY_S
    try:
        code, out, err = run_main(capsys, str(path), "--batch-size", "10")
    finally:
        bt.PROGRESS_EVERY_S = saved
    assert code == 0
    assert "backtest: 50 / 50 events" in err and "events/s now" in err
    assert "backtest:" not in out


def test_a_busy_terminal_keeps_only_its_latest_outcomes_as_the_worker_does():
    from models.features import OUTCOME_CAP
    from models.online import OnlineModel
    from stream.backtest import Backtest
    from stream.scoring import TRANSACTIONS, Thresholds
    from tests import factories

    n = OUTCOME_CAP + 100
    txns = [factories.transaction(i, terminal_id="term-busy") for i in range(n)]
    backtest = Backtest(
        TRANSACTIONS, OnlineModel("transaction"), Thresholds(0.5, 0.85), label_delay_s=1.0
    )
    for _ in backtest.run((t, t.amount > 40) for t in txns):
        pass
    backtest.finish()
    kept = backtest.outcomes["term-busy"]
    assert len(kept) == OUTCOME_CAP
    assert kept[0][0] == txns[n - OUTCOME_CAP].timestamp + 1.0  # the oldest kept arrival


def test_card_numbers_become_the_tokens_fraud_card_token_key_gives(tmp_path, capsys, monkeypatch):
    from models.tabular import card_token

    key = "backtest-card-key-0123456789"
    path = tmp_path / "cards.csv"
    path.write_text(
        "cc_num,amount,event_time,label\n"
        "4111 1111 1111 1111,10.0,2025-01-01T00:00:00Z,0\n"
        "4111-1111-1111-1111,12.0,2025-01-01T00:01:00Z,1\n"
    )
    scores = tmp_path / "scores.csv"
    args = [str(path), "--map", "card_id=cc_num", "--scores-out", str(scores), "--quiet"]
    monkeypatch.setenv("FRAUD_CARD_TOKEN_KEY", key)
    code, _, err = run_main(capsys, *args)
    assert code == 0, err
    token = card_token("4111111111111111", key)
    assert pl.read_csv(scores)["entity_id"].to_list() == [token, token]
    assert "4111" not in scores.read_text()
    # Without the key the backtest still runs, with tokens of a key of its own for this run.
    monkeypatch.delenv("FRAUD_CARD_TOKEN_KEY")
    code, _, err = run_main(capsys, *args)
    assert code == 0, err
    ids = pl.read_csv(scores)["entity_id"].to_list()
    assert ids[0] == ids[1] != token and "4111" not in scores.read_text()
