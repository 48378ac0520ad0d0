"""The email simulator: reproducible, at the configured spam rate, every campaign present, and
not something a keyword list can score perfectly."""

from __future__ import annotations

import collections

import pytest

from models.events import Email, decode, encode
from producers.emails import DRIFT_CAMPAIGN, SHARED_FAMILY, EmailSimulator

START = 1_767_225_600.0
NOW = START + 30 * 86_400


@pytest.fixture(scope="module")
def stream() -> list:
    return EmailSimulator(4, start=START, drift_at=START + 3 * 3600).take(30_000)


def test_the_same_seed_gives_the_same_stream():
    first = [
        (encode(i.event), i.scenario, i.true_probability)
        for i in EmailSimulator(9, start=START).take(2_000)
    ]
    again = [
        (encode(i.event), i.scenario, i.true_probability)
        for i in EmailSimulator(9, start=START).take(2_000)
    ]
    assert first == again
    assert first[0][0].startswith(b'{"schema_version":1,"event_id":"em-9-0000000000"')


def test_different_seeds_differ():
    a = [i.event.subject for i in EmailSimulator(1, start=START).take(100)]
    b = [i.event.subject for i in EmailSimulator(2, start=START).take(100)]
    assert a != b


def test_every_email_is_valid(stream):
    for item in stream[:3_000]:
        assert decode(encode(item.event), Email, now=NOW) == item.event


def test_the_spam_rate_is_close_to_the_configured_one(stream):
    rate = sum(i.is_positive for i in stream) / len(stream)
    assert 0.28 < rate < 0.32
    items = EmailSimulator(5, spam_rate=0.05, start=START).take(10_000)
    assert 0.04 < sum(i.is_positive for i in items) / len(items) < 0.06


def test_every_campaign_and_ham_family_appears(stream):
    seen = collections.Counter(i.scenario for i in stream)
    for name in (
        "phishing",
        "advance_fee",
        "pharmacy",
        "crypto_lottery",
        SHARED_FAMILY,
        DRIFT_CAMPAIGN,
        "ham_work_thread",
        "ham_newsletter",
        "ham_personal",
        "ham_notification",
        "ham_invoice",
        f"ham_{SHARED_FAMILY}",
    ):
        assert seen[name] > 0, name
    drift = [i for i in stream if i.scenario == DRIFT_CAMPAIGN]
    assert min(i.event.timestamp for i in drift) >= START + 3 * 3600
    assert all(i.event.has_attachment and not i.event.links for i in drift)


def test_phishing_uses_look_alike_domains_and_links(stream):
    phishing = [i.event for i in stream if i.scenario == "phishing"]
    real = ("paypal.com", "microsoft.com", "amazon.com", "apple.com", "google.com")
    for e in phishing:
        domain = e.sender.rsplit("@", 1)[1]
        assert domain not in real
        assert e.links and all(domain in link for link in e.links)
    assert any(e.sender.endswith(("@paypa1.com", "@micros0ft-support.com")) for e in phishing)


def test_newsletters_carry_links_and_unsubscribe_text(stream):
    for e in (i.event for i in stream if i.scenario == "ham_newsletter"):
        assert len(e.links) >= 2 and "Unsubscribe" in e.body


def test_keyword_rules_do_not_score_perfectly(stream):
    words = ("won", "prize", "verify", "payment", "account", "bank", "unsubscribe")

    def flagged(e: Email) -> bool:
        text = f"{e.subject} {e.body}".lower()
        return any(w in text for w in words)

    ham_flagged = sum(flagged(i.event) for i in stream if not i.is_positive)
    spam_missed = sum(not flagged(i.event) for i in stream if i.is_positive)
    assert ham_flagged > 500  # notifications, friends' prizes, invoices
    assert spam_missed > 500  # plain short requests, pharmacy


def test_true_probability_is_certain_except_for_the_shared_family(stream):
    for item in stream:
        if item.scenario.removeprefix("ham_") == SHARED_FAMILY:
            assert 0.0 < item.true_probability < 1.0
        else:
            assert item.true_probability == float(item.is_positive)
    shared = [i for i in stream if i.scenario.removeprefix("ham_") == SHARED_FAMILY]
    observed = sum(i.is_positive for i in shared) / len(shared)
    assert abs(observed - shared[-1].true_probability) < 0.1
