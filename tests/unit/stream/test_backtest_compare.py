"""``python -m stream backtest --batch-compare``: the retrain's batch model beside the online one.

No Redis and no Kafka: the comparison runs the retrain as a dry run without a production model
(FRAUD_REDIS_URL points at port 9, where nothing listens, so a Redis call would fail the test).
The figures must be scikit-learn's on the scores written to --scores-out.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import sklearn.metrics as skm

from stream import backtest as bt
from tests.unit.stream.test_backtest import run_main

COUNT = "20000"


@pytest.fixture(autouse=True)
def no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_REDIS_URL", "redis://127.0.0.1:9/0")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_batch_and_hybrid_scores_fill_the_test_window(tmp_path: Path, capsys, suffix):
    scores, report = tmp_path / f"scores{suffix}", tmp_path / "report"
    code, out, err = run_main(
        capsys,
        "--generate",
        "transactions",
        "--count",
        COUNT,
        "--positive-rate",
        "0.02",
        "--batch-compare",
        "--batch-budget",
        "5",
        "--scores-out",
        str(scores),
        "--report",
        str(report),
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    compared = result["comparison"]
    assert result["batch"] == compared["batch"] and result["hybrid"] == compared["hybrid"]
    if suffix == ".csv":
        frame = pl.read_csv(scores, infer_schema_length=None, try_parse_dates=True)
    else:
        frame = pl.read_parquet(scores)
    assert frame.height == int(COUNT)
    assert frame.columns[: len(bt.SCORE_SCHEMA)] == list(bt.SCORE_SCHEMA)  # then the reference
    # The batch model scored exactly the test window: the latest events, none it learned from.
    window = frame.filter(pl.col("batch_score").is_not_null())
    assert window.height == compared["events"] == compared["window"]["events"]
    assert window["hybrid_score"].null_count() == 0
    earlier = frame.filter(pl.col("batch_score").is_null())
    assert earlier["event_time"].max() <= window["event_time"].min()
    assert int(window["label"].sum()) == compared["positives"]
    # Every figure is scikit-learn's on the rows written.
    y = window["label"].to_numpy()
    for name, column in (
        ("online", "online_score"),
        ("batch", "batch_score"),
        ("hybrid", "hybrid_score"),
    ):
        s = window[column].to_numpy()
        assert compared[name]["average_precision"] == pytest.approx(
            skm.average_precision_score(y, s)
        )
        assert compared[name]["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    # The report says it, with the retrain's own report beside it.
    text = (report / "report.md").read_text()
    assert "## Online, batch and hybrid on the retrain's test window" in text
    assert (Path(compared["report"]) / "card.json").exists()


def test_without_it_the_columns_stay_empty_and_the_summary_says_how_to_get_them(capsys):
    code, out, err = run_main(capsys, "--generate", "transactions", "--count", "2000")
    assert code == 0, err
    assert "--batch-compare compares them" in out


def test_too_few_labels_for_the_retrain_is_a_message_and_status_2(tmp_path: Path, capsys):
    path = tmp_path / "few.csv"
    rows = [f"{i},{int(i % 500 == 0)}" for i in range(1000)]  # 2 positives in all
    path.write_text("amount,label\n" + "\n".join(rows) + "\n")
    code, out, err = run_main(capsys, str(path), "--batch-compare", "--quiet")
    assert code == 2
    assert "error: --batch-compare:" in err and "Traceback" not in err and out == ""


def test_a_budget_without_the_comparison_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        bt.main(["--generate", "transactions", "--batch-budget", "5"])
    assert exit_.value.code == 2
    assert "--batch-budget needs --batch-compare" in capsys.readouterr().err
