"""Which histories a worker may drop: ``card_forgettable`` and ``sender_forgettable`` promise
that no event stamped at or after the time asked about can tell the history from none at all.

The property test checks the promise on random histories and events: the features, and the
history after the event, are the same whether the worker kept the entity or dropped it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import features as F
from models.features import NO_OUTCOMES, CardHistory, SenderHistory
from tests.factories import T0, email, transaction

DAY = 86_400.0
T = T0 + 400 * DAY


def test_a_sender_silent_for_30_days_is_new_again() -> None:
    h = F.sender_history_after(SenderHistory(), email(1, at=T - 50 * DAY, sender="s@x.org"))
    h = F.sender_history_after(h, email(2, at=T - F.SENDER_FORGET_S + 1.0, sender="s@x.org"))
    kept = F.email_features(email(3, at=T, sender="s@x.org"), h)  # silent 30 days less 1 s
    assert (kept["sender_is_new"], kept["sender_age_log"]) == (0.0, math.log1p(50 * DAY))
    assert not F.sender_forgettable(h, T)

    later = T + 1.0  # the last message is now exactly 30 days old
    assert F.sender_forgettable(h, later)
    again = F.email_features(email(4, at=later, sender="s@x.org"), h)
    assert (again["sender_is_new"], again["sender_age_log"]) == (1.0, 0.0)
    after = F.sender_history_after(h, email(4, at=later, sender="s@x.org"))
    assert (after.first_seen, after.last_seen, after.times) == (later, later, [later])

    # Silent 30 days between its first two messages: the second starts it afresh.
    h = F.sender_history_after(SenderHistory(), email(1, at=T - 90 * DAY, sender="s@x.org"))
    h = F.sender_history_after(h, email(2, at=T - 60 * DAY, sender="s@x.org"))
    assert h.first_seen == T - 60 * DAY


def test_histories_stored_before_last_seen_existed_use_their_latest_time() -> None:
    old = SenderHistory(times=[T - 2.0, T - 1.0], recipients=["a", "b"], first_seen=T - 99 * DAY)
    assert not F.sender_forgettable(old, T - 1.0 + F.SENDER_FORGET_S - 1.0)
    assert F.sender_forgettable(old, T - 1.0 + F.SENDER_FORGET_S)
    quiet = SenderHistory(first_seen=T - 99 * DAY)  # its 24-hour list long empty
    assert F.sender_forgettable(quiet, T - 99 * DAY + F.SENDER_FORGET_S)
    assert F.sender_history_after(old, email(1, at=T)).last_seen == T


def test_a_card_is_forgettable_once_its_latest_transaction_is_a_week_old() -> None:
    h = F.card_history_after(CardHistory(), transaction(1, at=T - 10 * 86_400.0))
    h = F.card_history_after(h, transaction(2, at=T - F.CARD_HISTORY_WINDOW_S + 1.0))
    assert not F.card_forgettable(h, T)
    assert F.card_forgettable(h, T + 1.0)
    assert F.card_forgettable(CardHistory(), T)


offsets = st.floats(min_value=0.0, max_value=60 * DAY, allow_nan=False)

KINDS: dict[str, tuple[Callable[..., Any], ...]] = {
    # new history, history after an event, features, forgettable, the n-th event at a time
    "card": (
        CardHistory,
        F.card_history_after,
        F.transaction_features,
        F.card_forgettable,
        lambda n, at: transaction(n, at=at, card_id="c", country="FR" if n % 2 else "DE"),
    ),
    "sender": (
        SenderHistory,
        F.sender_history_after,
        F.email_features,
        F.sender_forgettable,
        lambda n, at: email(n, at=at, sender="s@x", recipient=f"r{n % 3}@x"),
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=300, deadline=None)
@given(
    past=st.lists(offsets, min_size=1, max_size=12),
    probe_after=offsets,
    later=st.lists(offsets, max_size=4),
)
def test_dropping_a_forgettable_history_changes_no_feature(
    kind: str, past: list[float], probe_after: float, later: list[float]
) -> None:
    """Events at random times build a history; whenever it is forgettable at some time,
    every event from then on (in time order) gets the same features and leaves the same
    history with it as without it."""
    new, after, features, forgettable, event = KINDS[kind]
    history = new()
    start = T - 70 * DAY
    for i, offset in enumerate(sorted(past)):
        history = after(history, event(i, start + offset))
    now = start + max(past) + probe_after
    if not forgettable(history, now):
        return
    kept, dropped = history, new()
    for j, offset in enumerate(sorted(later)):
        e = event(100 + j, now + offset)
        assert features(e, kept, NO_OUTCOMES) == features(e, dropped, NO_OUTCOMES)
        kept, dropped = after(kept, e), after(dropped, e)
        assert kept == dropped
