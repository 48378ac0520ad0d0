"""Which histories a worker may drop: ``card_forgettable`` and ``sender_forgettable`` promise
that no event stamped at or after the time asked about can tell the history from none at all.

The property test checks the promise on random histories and events: the features, and the
history after the event, are the same whether the worker kept the entity or dropped it.
"""

from __future__ import annotations

import math

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


@settings(max_examples=300, deadline=None)
@given(
    past=st.lists(offsets, min_size=1, max_size=12),
    probe_after=offsets,
    later=st.lists(offsets, max_size=4),
)
def test_dropping_a_forgettable_sender_changes_no_feature(
    past: list[float], probe_after: float, later: list[float]
) -> None:
    """Messages at random times build a history; whenever it is forgettable at some time,
    every message from then on (in time order) gets the same features and leaves the same
    history with it as without it."""
    history = SenderHistory()
    start = T - 70 * DAY
    for i, offset in enumerate(sorted(past)):
        history = F.sender_history_after(history, email(i, at=start + offset, sender="s@x"))
    now = start + max(past) + probe_after
    if not F.sender_forgettable(history, now):
        return
    kept, dropped = history, SenderHistory()
    for j, offset in enumerate(sorted(later)):
        mail = email(100 + j, at=now + offset, sender="s@x", recipient=f"r{j}@x")
        assert F.email_features(mail, kept, NO_OUTCOMES) == F.email_features(
            mail, dropped, NO_OUTCOMES
        )
        kept, dropped = F.sender_history_after(kept, mail), F.sender_history_after(dropped, mail)
        assert kept == dropped


@settings(max_examples=300, deadline=None)
@given(
    past=st.lists(offsets, min_size=1, max_size=12),
    probe_after=offsets,
    later=st.lists(offsets, max_size=4),
)
def test_dropping_a_forgettable_card_changes_no_feature(
    past: list[float], probe_after: float, later: list[float]
) -> None:
    history = CardHistory()
    start = T - 70 * DAY
    for i, offset in enumerate(sorted(past)):
        history = F.card_history_after(history, transaction(i, at=start + offset))
    now = start + max(past) + probe_after
    if not F.card_forgettable(history, now):
        return
    kept, dropped = history, CardHistory()
    for j, offset in enumerate(sorted(later)):
        txn = transaction(100 + j, at=now + offset)
        assert F.transaction_features(txn, kept, NO_OUTCOMES) == F.transaction_features(
            txn, dropped, NO_OUTCOMES
        )
        kept, dropped = F.card_history_after(kept, txn), F.card_history_after(dropped, txn)
        assert kept == dropped
