"""One step's view of an entity table: histories decoded when the scorer first reads them,
encoded when it moves them.

The worker's tables hold each card's or sender's history as bytes
(:func:`models.features.encode_history`). Decoding every history a step needs before
scoring, and encoding the moved ones after, touched each history's objects once more when a
step of 2,000 events had pushed them out of the CPU caches: 3.8 µs to encode a card history
after ``score_batch`` against 0.9 µs right after it was built (``benchmarks worker`` data,
200,000 events); the worker went from 13,621 to 15,021 events/s (docs/benchmarks.md).
Here each history is decoded right before its first use and encoded right after each move,
while its objects are still in cache. A card seen twice in a step is encoded twice; the
last bytes are the ones kept.

Nothing is written to the table here: the worker writes :attr:`StepHistories.encoded` of
the entities it moved once the step's served features are saved (a step retried after a
Redis error must not move a history twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from models.features import CardHistory, SenderHistory, decode_history, encode_history

H = TypeVar("H", CardHistory, SenderHistory)


class StepHistories(Generic[H]):
    """Entity -> history for one step (:class:`stream.scoring.Histories`), over ``table``
    (encoded entity -> stored bytes)."""

    def __init__(self, table: Mapping[bytes, bytes], schema: type[H]) -> None:
        self._table = table
        self._schema: type[H] = schema
        self._read: dict[str, H] = {}
        self.encoded: dict[str, bytes] = {}
        """The bytes of every history set in this step, by entity: the latest one."""

    def get(self, entity: str, /) -> H | None:
        """The history, decoded from the table the first time; None if it has none."""
        history = self._read.get(entity)
        if history is None:
            stored = self._table.get(entity.encode())
            if stored is None:
                return None
            history = self._read[entity] = decode_history(stored, self._schema)
        return history

    def __setitem__(self, entity: str, history: H, /) -> None:
        self._read[entity] = history
        self.encoded[entity] = encode_history(history)
