"""A step's histories over a table of bytes: decoded on first read, encoded on each move,
the table itself untouched; scoring through them gives what scoring through a dict gives."""

from __future__ import annotations

from models.features import CardHistory, decode_history, encode_history
from models.online import OnlineModel
from stream.scoring import TRANSACTIONS, Thresholds, score_batch
from stream.step_histories import StepHistories
from tests import factories

NEVER_ALERT = Thresholds(review=0.999, block=1.0)


class CountingTable(dict[bytes, bytes]):
    """A table that counts its reads."""

    reads = 0

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def test_a_history_is_read_once_and_the_latest_move_is_kept_encoded() -> None:
    stored = CardHistory(times=[1.0], amounts=[2.5], countries=["FR"], devices=["d1"])
    table = CountingTable({b"card-a": encode_history(stored)})
    histories = StepHistories(table, CardHistory)

    assert histories.get("card-a") == stored
    assert histories.get("card-a") == stored
    assert table.reads == 1
    assert histories.get("card-new") is None

    moved = CardHistory(
        times=[1.0, 2.0], amounts=[2.5, 3.0], countries=["FR"] * 2, devices=[""] * 2
    )
    moved_again = CardHistory(times=[2.0], amounts=[3.0], countries=["DE"], devices=[""])
    histories["card-a"] = moved
    assert histories.get("card-a") == moved
    histories["card-a"] = moved_again
    histories["card-new"] = moved

    assert decode_history(histories.encoded["card-a"], CardHistory) == moved_again
    assert decode_history(histories.encoded["card-new"], CardHistory) == moved
    assert table == {b"card-a": encode_history(stored)}  # the worker writes, later


def test_scoring_through_step_histories_equals_scoring_through_a_dict() -> None:
    txns = [
        factories.transaction(n, card_id=f"card-{n % 3}", at=factories.T0 + n * 600)
        for n in range(12)
    ]
    model = OnlineModel("transaction")
    plain: dict[str, CardHistory] = {}
    table: dict[bytes, bytes] = {}
    for step in (txns[:5], txns[5:]):
        expected = score_batch(TRANSACTIONS, step, plain, {}, model, "v", NEVER_ALERT, 0.0)
        histories = StepHistories(table, CardHistory)
        got = score_batch(TRANSACTIONS, step, histories, {}, model, "v", NEVER_ALERT, 0.0)
        assert [v.scored for v in got] == [v.scored for v in expected]
        for entity, encoded in histories.encoded.items():
            table[entity.encode()] = encoded
    assert {key.decode(): decode_history(value, CardHistory) for key, value in table.items()} == (
        plain
    )
