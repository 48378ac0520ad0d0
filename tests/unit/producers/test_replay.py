"""Replaying a labelled file: the mapping, the defaults, the order, and a clear error for each
way a file can be wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from models.events import Transaction, decode, encode
from models.tabular import card_token
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


# -- card numbers -----------------------------------------------------------------------------

CARD_KEY = "replay-card-key-0123456789"
CARDS = """\
when,cc_num,customer,amt,is_fraud
2025-01-01T00:00:01Z,4111 1111 1111 1111,5500-0000-0000-0004,1.0,0
2025-01-01T00:00:02Z,4111-1111-1111-1111,5500000000000004,2.0,1
2025-01-01T00:00:03Z,4111111111111112,cust-7,3.0,0
2025-01-01T00:00:04Z,card_42,cust-8,4.0,0
"""
CARD_MAPPING = ["event_time=when", "card_id=cc_num", "customer_id=customer", "amount=amt",
                "label=is_fraud"]  # fmt: skip


def load_cards(tmp_path: Path, **options: Any) -> Replay:
    path = write(tmp_path, CARDS, "cards.csv")
    return load(path, "transaction", parse_mapping(CARD_MAPPING, "transaction"), **options)


def test_card_numbers_are_replayed_as_keyed_tokens(tmp_path):
    replay = load_cards(tmp_path, card_key=CARD_KEY, card_key_required=True)
    txns = [e for e, _ in events(replay)]
    visa, mastercard = (
        card_token("4111111111111111", CARD_KEY),
        card_token("5500000000000004", CARD_KEY),
    )
    # Spaces and dashes aside, the same number is the same card: its history is one.
    assert [t.card_id for t in txns[:2]] == [visa, visa]
    # A number failing the Luhn check is still tokenized here: a false positive costs a token.
    assert txns[2].card_id == card_token("4111111111111112", CARD_KEY)
    assert txns[3].card_id == "card_42"  # an id that is no number passes
    assert [t.customer_id for t in txns] == [mastercard, mastercard, "cust-7", "cust-8"]
    sent = b"".join(encode(t) for t in txns).replace(b" ", b"").replace(b"-", b"")
    for digits in (b"4111111111111111", b"4111111111111112", b"5500000000000004"):
        assert digits not in sent
    for txn in txns:  # what the worker receives, it accepts
        assert decode(encode(txn), Transaction, now=NOW) == txn
    assert any("keyed tokens" in note and "'cc_num'" in note for note in replay.notes)
    assert any("'customer'" in note for note in replay.notes)
    # Same key, same tokens in another run; another key, other tokens.
    again = [e.card_id for e, _ in events(load_cards(tmp_path, card_key=CARD_KEY))]
    assert again == [t.card_id for t in txns]
    other = [e.card_id for e, _ in events(load_cards(tmp_path, card_key="another-key-0123456789"))]
    assert other[0] != visa and other[3] == "card_42"


def test_without_the_key_a_replay_of_card_numbers_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ReplayError) as refused:
        load_cards(tmp_path, card_key=None, card_key_required=True)
    message = str(refused.value)
    assert "column 'cc_num' holds card numbers" in message
    assert "set FRAUD_CARD_TOKEN_KEY" in message and "never sent in clear" in message
    assert "1111" in message and "4111111111111111" not in message.replace(" ", "")


def test_without_card_numbers_no_key_is_needed(tmp_path):
    path = write(tmp_path, "card,amount,label\ncard_1,1.0,0\n12345678901,2.0,1\n")
    replay = load(path, "transaction", {"card_id": "card"}, card_key_required=True, now=NOW)
    assert [e.card_id for e, _ in events(replay)] == ["card_1", "12345678901"]  # 11 digits


def test_the_backtest_without_a_key_tokenizes_with_a_random_key_for_one_run(tmp_path):
    first = [e.card_id for e, _ in events(load_cards(tmp_path))]
    second = [e.card_id for e, _ in events(load_cards(tmp_path))]
    assert first[0] == first[1] and first[0].startswith("card_")  # one card within a run
    assert first[0] != second[0]  # never the same across runs: never an unkeyed hash
    assert any("random key for this run only" in n for n in load_cards(tmp_path).notes)
