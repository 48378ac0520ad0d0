"""Card numbers: the one rule that says what is one, the keyed tokens the replay sends instead,
the refusal at decode, and the masking of what a dead letter keeps."""

from __future__ import annotations

import hashlib
import hmac
import json

import msgspec
import pytest

from models.events import (
    InvalidEvent,
    Transaction,
    card_number_digits,
    decode,
    encode,
    is_card_number,
    luhn_valid,
    mask_card_number,
    mask_card_numbers,
    redact_card_numbers,
)
from models.settings import Settings, SettingsError
from models.tabular import card_token
from tests import factories

VISA = "4111111111111111"  # the classic test number: Luhn-valid, 16 digits
KEY = "k" * 32


def luhn_number(length: int, prefix: str = "4") -> str:
    """A Luhn-valid number of ``length`` digits."""
    body = (prefix + "1234567890" * 2)[: length - 1]
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def not_luhn(number: str) -> str:
    """``number`` with its check digit made wrong."""
    last = str((int(number[-1]) + 1) % 10)
    return number[:-1] + last


# -- the rule -------------------------------------------------------------------------------


def test_luhn_check_on_known_numbers():
    assert luhn_valid("79927398713") and luhn_valid(VISA) and luhn_valid("5500000000000004")
    assert not luhn_valid("79927398710") and not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (VISA, True),
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        (" 4111 - 1111 - 1111 - 1111 ", True),  # any spaces and dashes, anywhere
        ("5500 0000 0000 0004", True),
        ("4111111111111112", False),  # the shape, but not Luhn-valid: a numeric id
        (luhn_number(11), False),  # too short
        (luhn_number(12), True),
        (luhn_number(19), True),
        (luhn_number(20), False),  # too long
        (not_luhn(luhn_number(12)), False),
        (not_luhn(luhn_number(19)), False),
        ("card_000123", False),
        ("cust-0001", False),
        ("card_" + VISA, False),  # inside a longer id: not the value itself
        (VISA + "x", False),
        ("4111.1111.1111.1111", False),  # dots are not separators
        ("\uff14" + "\uff11" * 15, False),  # fullwidth digits are not ASCII digits
        ("", False),
        ("-", False),
    ],
)
def test_what_is_a_card_number(value, expected):
    assert is_card_number(value) is expected


def test_the_shape_alone_has_no_luhn_check():
    assert card_number_digits("4111-1111 1111-1112") == "4111111111111112"
    assert card_number_digits(luhn_number(11)) is None
    assert card_number_digits(luhn_number(20)) is None
    assert card_number_digits("card_000123") is None


def test_masking_keeps_the_last_four_digits_only():
    assert mask_card_number(VISA) == "************1111"
    assert mask_card_number("4111 1111 1111 1111") == "**** **** **** 1111"
    assert mask_card_numbers(f"paid with {VISA}, thanks") == "paid with ************1111, thanks"
    assert mask_card_numbers("Invalid enum value '4111-1111-1111-1111'") == (
        "Invalid enum value '****-****-****-1111'"
    )


def test_masking_leaves_ids_tokens_decimals_and_other_numbers_alone():
    token = "card_4111111111111111deadbeef"  # a token's hex may hold a run of digits
    for text in (
        token,
        "amount 0.4111111111111111",
        "not luhn 4111111111111112",
        "time 1767225600",
        "2026-01-01T00:00:00Z",
    ):
        assert mask_card_numbers(text) == text


# -- the keyed token --------------------------------------------------------------------------


def test_a_card_token_is_a_keyed_hmac_of_the_digits():
    token = card_token(VISA, KEY)
    expected = hmac.new(KEY.encode(), VISA.encode(), hashlib.sha256).hexdigest()[:32]
    assert token == "card_" + expected  # 128 bits
    assert card_token(VISA, KEY) == token  # stable
    assert card_token("4111 1111-1111 1111", KEY) == token  # separators do not matter
    assert card_token(VISA, KEY.encode()) == token
    assert card_token(VISA, "another key of 16+ chars") != token  # the key matters
    assert card_token("5500000000000004", KEY) != token
    assert VISA not in token and not is_card_number(token)


def test_a_card_token_needs_a_key_and_a_card_number():
    with pytest.raises(ValueError, match="needs a key"):
        card_token(VISA, "")
    with pytest.raises(ValueError, match="not a card number"):
        card_token("card_000123", KEY)


def test_the_key_setting_is_a_secret_of_16_characters_or_more():
    settings = Settings.from_env({"FRAUD_CARD_TOKEN_KEY": "card-key-s3cret-0123"})
    assert settings.card_token_key == "card-key-s3cret-0123"
    assert "card-key-s3cret" not in repr(settings)
    assert Settings.from_env({}).card_token_key == ""
    with pytest.raises(SettingsError, match="FRAUD_CARD_TOKEN_KEY must have at least 16") as bad:
        Settings.from_env({"FRAUD_CARD_TOKEN_KEY": "short-s3cret"})
    assert "short-s3cret" not in str(bad.value)
    assert "FRAUD_CARD_TOKEN_KEY" in Settings.describe()


# -- the refusal at decode --------------------------------------------------------------------


def as_json(**changes: object) -> bytes:
    data = msgspec.to_builtins(factories.transaction(1))
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize("field", ["card_id", "customer_id"])
@pytest.mark.parametrize("number", [VISA, "4111 1111 1111 1111", "4111-1111-1111-1111"])
def test_a_transaction_with_a_card_number_in_clear_is_refused(field, number):
    with pytest.raises(InvalidEvent) as refused:
        decode(as_json(**{field: number}), Transaction)
    reason = refused.value.reason
    assert f"{field} is a card number in clear" in reason
    assert "1111)" in reason and "************1111" in reason.replace(" ", "").replace("-", "")
    assert VISA not in reason.replace(" ", "").replace("-", "")


def test_ids_that_are_not_card_numbers_pass():
    for card_id in ("4111111111111112", luhn_number(11), luhn_number(20), card_token(VISA, KEY)):
        assert decode(as_json(card_id=card_id), Transaction).card_id == card_id


def test_a_token_round_trips_through_decode():
    txn = factories.transaction(1, card_id=card_token(VISA, KEY), customer_id="cust-1")
    assert decode(encode(txn), Transaction) == txn


# -- what a dead letter keeps ------------------------------------------------------------------


def test_redaction_masks_card_numbers_in_json_strings_numbers_and_escapes():
    raw = (
        b'{"card_id":"\\u0034111111111111111","customer_id":4111111111111111,'
        b'"note":"card 4111 1111 1111 1111 used","nested":[{"4111111111111111":1}],'
        b'"token":"card_4111111111111111ab","amount":0.4111111111111111}'
    )
    redacted = redact_card_numbers(raw)
    doc = json.loads(redacted)
    assert doc["card_id"] == "************1111"
    assert doc["customer_id"] == "************1111"
    assert doc["note"] == "card **** **** **** 1111 used"
    assert doc["nested"] == [{"************1111": 1}]
    assert doc["token"] == "card_4111111111111111ab"  # a word of its own only
    assert doc["amount"] == 0.4111111111111111
    rest = redacted.replace(b"card_4111111111111111ab", b"").replace(b"0.4111111111111111", b"")
    assert b"4111" not in rest


def test_redaction_of_bytes_that_are_not_json():
    assert redact_card_numbers(b"\xff\x00" + VISA.encode() + b"\xfe") == (
        b"\xff\x00************1111\xfe"
    )
    assert redact_card_numbers(b'{"card_id": ' + VISA.encode() + b", trunc") == (
        b'{"card_id": ************1111, trunc'
    )
    assert redact_card_numbers(VISA.encode(), json=False) == b"************1111"  # a key


def test_redaction_leaves_bytes_without_card_numbers_exactly_as_they_were():
    for raw in (
        encode(factories.transaction(1)),
        b'{"b": 1,   "a": "x"}',  # not re-encoded: spacing and order kept
        b"\xff\xfe not utf-8",
        b"[" * 5000,
        b'{"n": 1' + b"9" * 5000 + b"}",
        b"",
    ):
        assert redact_card_numbers(raw) == raw
