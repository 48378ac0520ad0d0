"""Histories as the worker's tables store them: they round-trip, and cost their own size.

The second test guards a memory regression found by the soak: orjson returned each table value
in an allocation of at least 4 KiB, so every card or sender seen cost 4 KiB whatever its
history held. tracemalloc counts the bytes allocated for the stored values.
"""

from __future__ import annotations

import tracemalloc

from models.features import CardHistory, SenderHistory, decode_history, encode_history


def test_stored_histories_decode_to_the_same_history() -> None:
    card = CardHistory(
        times=[1_735_689_600.123456, 1_735_689_601.5e0, 1e-7],
        amounts=[12.34, 0.01, 99_999.99],
        countries=["FR", "DE", ""],
        devices=["dev-1", "", "dév-2"],
    )
    sender = SenderHistory(times=[1.5], recipients=["a@x.org"], first_seen=None)
    for history in (card, sender):
        assert decode_history(encode_history(history), type(history)) == history


def test_a_stored_history_costs_about_its_length() -> None:
    history = CardHistory(times=[1.0], amounts=[2.0], countries=["FR"], devices=["d"])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stored = [encode_history(history) for _ in range(1000)]
        per_value = (tracemalloc.get_traced_memory()[0] - before) / len(stored)
    finally:
        tracemalloc.stop()
    assert per_value < len(stored[0]) + 200, f"{per_value:.0f} bytes for {len(stored[0])}"
