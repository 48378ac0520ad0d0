"""Text primitives: look-alike domains, links, and token hashing that is stable across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import text
from models.features import SenderHistory, email_features
from tests.factories import email

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("paypa1.com", "char_swap"),
        ("micros0ft.com", "char_swap"),
        ("secure-micros0ft-support.net", "char_swap"),
        ("rnicrosoft.com", "char_swap"),
        ("g00gle.com", "char_swap"),
        ("paypal-verify.com", "brand"),
        ("paypal.com.account-check.ru", "brand"),
        ("login.paypal.secure-site.co.uk", "brand"),
        ("paypalsupport.com", "brand"),
        ("apple-id.support", "brand"),
        ("xn--pypal-4ve.com", "punycode"),
        ("\u0440\u0430\u0443\u0440\u0430l.com", "punycode"),  # Cyrillic letters
        ("192.168.10.4", "ip"),
        ("::1", "ip"),
        ("3232235777", "ip"),
        ("paypal.com", ""),
        ("www.paypal.com", ""),
        ("login.microsoftonline.com", ""),
        ("amazon.co.uk", ""),
        ("mail.google.com", ""),
        ("purchase.com", ""),  # "chase" only as a whole part
        ("pineapple.com", ""),  # "apple" only as a whole part
        ("example.org", ""),
        ("", ""),
    ],
)
def test_lookalike_kind(host: str, kind: str) -> None:
    assert text.lookalike_kind(host) == kind
    assert text.is_lookalike_domain(host) is bool(kind)


@pytest.mark.parametrize(
    ("link", "host"),
    [
        ("https://Login.PayPal.com:8443/a?b=c", "login.paypal.com"),
        ("www.example.org/x", "www.example.org"),
        ("http://[::1]:80/", "::1"),
        ("http://[bad/", ""),
        ("mailto:someone", ""),
    ],
)
def test_url_host(link: str, host: str) -> None:
    assert text.url_host(link) == host


def test_email_domain() -> None:
    assert text.email_domain("Bank <alerts@Bank.example.COM>") == "bank.example.com"
    assert text.email_domain("no-at-sign") == ""


def test_tokens_are_lowercased_distinct_and_capped() -> None:
    assert text.tokens_one("Hello, HELLO world_42 élan") == ["hello", "world", "42", "élan"]
    many = " ".join(f"w{i}" for i in range(2 * text.MAX_TOKENS))
    assert len(text.tokens_one(many)) == text.MAX_TOKENS


def test_token_hash_is_pinned() -> None:
    """A change here silently re-maps every learned text weight: it needs a new feature set."""
    assert text.token_bucket("paypal") == 588
    assert text.token_bucket("élan") == text.token_bucket("élan")
    assert text.hashed_tokens_one([]) == {}


_CHILD = """
import json
from models.features import SenderHistory, email_features
from tests.factories import email
x = email_features(email(1, subject="Verify your PayPal account now",
                         body="Urgent: your account is suspended, win a prize"), SenderHistory())
print(json.dumps(sorted(k for k in x if k.startswith("tok_"))))
"""


def test_token_features_do_not_depend_on_pythonhashseed() -> None:
    x = email_features(
        email(
            1,
            subject="Verify your PayPal account now",
            body="Urgent: your account is suspended, win a prize",
        ),
        SenderHistory(),
    )
    here = sorted(k for k in x if k.startswith("tok_"))
    assert len(here) == 11
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(out.stdout) == here
