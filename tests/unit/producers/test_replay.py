"""Replaying a labelled file: the mapping, the defaults, the order, and a clear error for each
way a file can be wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from models.events import Transaction, decode, encode
from producers.replay import Replay, ReplayError, load, parse_mapping

NOW = 1_767_225_600.0

FRAUD_TRAIN = """\
,trans_date_trans_time,cc_num,merchant,category,amt,is_fraud
0,2019-01-01 00:00:18,2703186189652095,fraud_Rippin,misc_net,4.97,0
1,2019-01-01 00:00:44,630423337322,fraud_Heller,grocery_pos,107.23,1
2,2019-01-01 00:00:10,38859492057661,fraud_Lind,entertainment,220.11,0
"""
MAPPING = [
    "card_id=cc_num",
    "amount=amt",
    "event_time=trans_date_trans_time",
    "label=is_fraud",
    "merchant_id=merchant",
    "merchant_category=category",
]


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def events(replay: Replay) -> list[tuple[Any, bool | None]]:
    """The replayed events (typed loosely: each test knows which kind it replays)."""
    return list(replay.events())


def test_a_mapped_csv_streams_in_time_order_with_its_labels(tmp_path):
    path = write(tmp_path, FRAUD_TRAIN)
    replay = load(path, "transaction", parse_mapping(MAPPING, "transaction"), now=NOW)
    rows = events(replay)
    assert [e.amount for e, _ in rows] == [220.11, 4.97, 107.23]  # sorted by time
    assert [label for _, label in rows] == [False, False, True]
    first = rows[0][0]
    assert isinstance(first, Transaction)
    assert first.event_time.isoformat() == "2019-01-01T00:00:10+00:00"
    assert first.merchant_id == "fraud_Lind" and first.merchant_category == "entertainment"
    assert first.terminal_id == "fraud_Lind" and first.country == "ZZ"  # defaults
    assert first.card_id.startswith("card_") and "38859492057661" not in encode(first).decode()
    assert rows[1][0].card_id != rows[2][0].card_id
    for event, _ in rows:
        assert decode(encode(event), Transaction, now=NOW) == event
    assert any("card numbers" in note for note in replay.notes)


def test_a_numeric_only_file_works_with_synthesized_ids_cards_and_extras(tmp_path):
    path = write(
        tmp_path,
        "Time,V1,V2,Amount,Class\n0,-1.3,0.1,149.62,0\n5,1.2,,2.69,0\n9,-1.3,-1.3,378.66,1\n",
    )
    mapping = parse_mapping(["event_time=Time", "amount=Amount", "label=Class"], "transaction")
    replay = load(path, "transaction", mapping, extra=["all"], start=NOW - 100)
    rows = events(replay)
    assert [e.event_id for e, _ in rows] == ["replay-0", "replay-1", "replay-2"]
    assert [e.timestamp for e, _ in rows] == [NOW - 100, NOW - 95, NOW - 91]
    assert rows[0][0].extra == {"V1": -1.3, "V2": 0.1}
    assert rows[1][0].extra == {"V1": 1.2}  # an empty cell is left out
    assert len({e.card_id for e, _ in rows}) == 3
    notes = " ".join(replay.notes)
    assert "event ids synthesized" in notes and "no card_id column" in notes


def test_without_a_time_column_times_are_synthesized_from_row_numbers(tmp_path):
    path = write(tmp_path, "amount,label\n1.5,1\n2.5,0\n")
    replay = load(path, "transaction", {}, now=NOW)
    assert [e.timestamp for e, _ in events(replay)] == [NOW - 2, NOW - 1]
    assert any("times synthesized" in note for note in replay.notes)


def test_parquet_and_text_labels_work(tmp_path):
    path = tmp_path / "mail.parquet"
    pl.DataFrame(
        {
            "from": ["a@x.org", "b@y.org"],
            "text": ["hello", "cheap pills"],
            "label": ["ham", "spam"],
            "urls": ["https://x.org/a https://x.org/b", None],
            "when": ["2025-01-01T10:00:00Z", "2025-01-01T09:00:00Z"],
        }
    ).write_parquet(path)
    mapping = parse_mapping(["sender=from", "body=text", "links=urls", "event_time=when"], "email")
    rows = events(load(path, "email", mapping, now=NOW))
    assert [(e.sender, label) for e, label in rows] == [("b@y.org", True), ("a@x.org", False)]
    assert rows[1][0].links == ["https://x.org/a", "https://x.org/b"] and rows[0][0].links == []


def test_rows_without_a_label_are_sent_without_one(tmp_path):
    path = write(tmp_path, "amount,label\n1.5,1\n2.5,\n")
    replay = load(path, "transaction", {}, now=NOW)
    assert [label for _, label in events(replay)] == [True, None]
    assert any("no label" in note for note in replay.notes)


@pytest.mark.parametrize(
    ("text", "mapping", "message"),
    [
        ("amount,label\n1,0\n", ["amount=amt"], "no column 'amt'"),
        ("amount,label\n1,0\n2,3\n", [], "label column 'label' is not binary: found [3.0]"),
        ("amount,label\n1,maybe\n", [], "is not binary: found ['maybe']"),
        ("amount,is_fraud\n1,0\n", [], "no 'label' column"),
        ("amt,label\n1,0\n", [], "no 'amount' column"),
        ("amount,label,t\n1,0,yesterday\n", ["event_time=t"], "cannot parse time 'yesterday'"),
        ("amount,label\n-5,0\n", [], "negative values"),
        ("amount,label\n", [], "no rows"),
        ("", [], "is empty"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, text, mapping, message):
    path = write(tmp_path, text)
    with pytest.raises(ReplayError) as err:
        load(path, "transaction", parse_mapping(mapping, "transaction"), now=NOW)
    assert message in str(err.value)


def test_a_missing_file_and_a_bad_mapping_get_clear_errors(tmp_path):
    with pytest.raises(ReplayError, match="no such file"):
        load(tmp_path / "nope.csv", "transaction", {})
    with pytest.raises(ReplayError, match="expected FIELD=COLUMN"):
        parse_mapping(["amount"], "transaction")
    with pytest.raises(ReplayError, match="'colour' is not a transaction field"):
        parse_mapping(["colour=red"], "transaction")


def test_extra_columns_must_exist_and_be_numeric(tmp_path):
    path = write(tmp_path, "amount,label,note\n1,0,hi\n")
    with pytest.raises(ReplayError, match="not numeric"):
        load(path, "transaction", {}, extra=["note"], now=NOW)
    with pytest.raises(ReplayError, match="no such column"):
        load(path, "transaction", {}, extra=["v9"], now=NOW)
