"""The truth file: what the generator knew, readable back for evaluation."""

from __future__ import annotations

import polars as pl
import pytest

from models.events import Email, Transaction
from producers.emails import EmailSimulator
from producers.transactions import TransactionSimulator
from producers.truth import TRUTH_COLUMNS, Generated, TruthWriter

START = 1_767_225_600.0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_truth_rows_are_written_and_read_back(tmp_path, suffix):
    items: list[Generated[Transaction] | Generated[Email]] = []
    items += TransactionSimulator(1, start=START, customers=500, merchants=100).take(3_000)
    items += EmailSimulator(1, start=START).take(500)
    path = tmp_path / f"truth{suffix}"
    with TruthWriter(path) as truth:
        for item in items:
            truth.write(item)
    frame = pl.read_parquet(path) if suffix == ".parquet" else pl.read_csv(path)
    assert tuple(frame.columns) == TRUTH_COLUMNS
    assert frame.height == 3_500
    assert frame["is_positive"].dtype == pl.Boolean
    assert frame["event_id"].to_list() == [i.event.event_id for i in items]
    assert frame["kind"].to_list() == ["transaction"] * 3_000 + ["email"] * 500
    assert frame["is_positive"].sum() == sum(i.is_positive for i in items)
    assert frame["true_probability"].to_list() == pytest.approx(
        [i.true_probability for i in items], abs=1e-6
    )


def test_an_empty_parquet_truth_file_still_has_its_columns(tmp_path):
    path = tmp_path / "empty.parquet"
    TruthWriter(path).close()
    assert tuple(pl.read_parquet(path).columns) == TRUTH_COLUMNS
