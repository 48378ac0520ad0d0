"""Text primitives of the email features: tokens, stable hashing, links, look-alike domains.

Everything is pure and deterministic across processes: token buckets come from
``zlib.crc32``, never from Python's ``hash()``, whose value for a string changes with
``PYTHONHASHSEED``; a model trained in one process must see the same bucket for the same
word in every other process, and in the batch job.

The look-alike rules are heuristics that feed a model, not verdicts: each rule is a cheap
signal that phishing uses and legitimate senders almost never do.
"""

from __future__ import annotations

import ipaddress
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

TOKEN_BUCKETS = 2**14
"""Number of hash buckets of the text features; a power of two keeps collisions spread."""
TEXT_FEATURE_PREFIX = "tok_"
"""Prefix of every hashed text feature (``tok_<bucket>``); models do not scale these."""
MAX_TOKENS = 512
"""Distinct tokens hashed per message (first appearances): bounds the work of a huge body."""
MAX_LINKS = 200

_TOKEN_RE = re.compile(r"[^\W_]+")
_URL_RE = re.compile(r"(?:https?://|www\.)[^\s<>\"'()]+", re.IGNORECASE)
_MONEY_AMOUNT_RE = re.compile(
    r"[$€£]\s?\d|\d\s?[$€£]|\d(?:[\d.,]*)\s?(?:usd|eur|gbp|btc)\b", re.IGNORECASE
)
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+\-]*:", re.IGNORECASE)
_PUNCTUATION = "!?$€£%*"

# fmt: off
MONEY_WORDS = frozenset({
    "free", "cash", "money", "prize", "winner", "won", "win", "lottery", "bitcoin", "btc",
    "crypto", "wire", "transfer", "payment", "refund", "invoice", "bank", "credit", "loan",
    "inheritance", "million", "dollars", "euros", "gift", "bonus", "reward", "claim",
    "investment", "profit",
})
URGENCY_WORDS = frozenset({
    "urgent", "urgently", "immediately", "asap", "today", "expire", "expires", "expired",
    "expiring", "suspended", "suspend", "locked", "verify", "verification", "confirm", "limited",
    "act", "action", "required", "deadline", "final", "warning", "alert", "password", "unusual",
    "security",
})
# fmt: on

BRANDS: dict[str, frozenset[str]] = {
    "paypal": frozenset({"paypal.com", "paypal.me"}),
    "microsoft": frozenset(
        {"microsoft.com", "microsoftonline.com", "live.com", "outlook.com", "office.com"}
    ),
    "office365": frozenset({"office365.com", "microsoft.com", "office.com"}),
    "outlook": frozenset({"outlook.com", "microsoft.com", "live.com"}),
    "apple": frozenset({"apple.com", "icloud.com"}),
    "icloud": frozenset({"icloud.com", "apple.com"}),
    "amazon": frozenset({"amazonaws.com"}),
    "google": frozenset({"googleusercontent.com", "googleapis.com", "gstatic.com"}),
    "gmail": frozenset({"google.com"}),
    "netflix": frozenset(),
    "facebook": frozenset({"fb.com", "meta.com"}),
    "instagram": frozenset(),
    "whatsapp": frozenset(),
    "linkedin": frozenset(),
    "dropbox": frozenset({"dropboxusercontent.com"}),
    "docusign": frozenset({"docusign.net"}),
    "adobe": frozenset(),
    "chase": frozenset(),
    "wellsfargo": frozenset(),
    "bankofamerica": frozenset(),
    "hsbc": frozenset(),
    "barclays": frozenset(),
    "santander": frozenset(),
    "revolut": frozenset(),
    "coinbase": frozenset(),
    "binance": frozenset(),
    "fedex": frozenset(),
    "dhl": frozenset(),
}
"""Brands phishing imitates, with official domains beyond ``<brand>.<any suffix>``."""

SUBSTRING_BRAND_MIN_LEN = 6
"""Brands at least this long also match inside a word (``paypalverify``); shorter ones only as
a whole label part, so ``purchase.com`` never matches ``chase``."""

_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "ac", "edu"})
_CHAR_SWAPS = (("rn", "m"), ("vv", "w"))
_DIGIT_SWAPS = str.maketrans("01345789", "oleastbg")
_PARTS_RE = re.compile(r"[.\-]")


def tokens_one(text: str) -> list[str]:
    """Distinct lowercased word tokens of ``text`` in order of first appearance.

    A token is a run of letters or digits (any script); at most :data:`MAX_TOKENS` are kept so
    that a 100 kB body costs no more to learn from than a short one.

    >>> tokens_one("URGENT: verify your account, urgent!")
    ['urgent', 'verify', 'your', 'account']
    """
    distinct = dict.fromkeys(_TOKEN_RE.findall(text.lower()))
    return list(distinct)[:MAX_TOKENS]


def token_bucket(token: str) -> int:
    """The hash bucket of a token: CRC-32 of its UTF-8 bytes, stable in every process.

    >>> token_bucket("paypal")
    588
    """
    return zlib.crc32(token.encode("utf-8")) % TOKEN_BUCKETS


def hashed_tokens_one(tokens: Sequence[str]) -> dict[str, float]:
    """``tok_<bucket>`` features, each ``1/sqrt(n)`` for ``n`` distinct tokens, sorted by bucket.

    The ``1/sqrt(n)`` value gives the vector unit length (without collisions), so a long
    message does not outweigh the dense features; presence rather than counts, so a word
    repeated a hundred times is still one word.

    >>> hashed_tokens_one(["win", "cash", "now", "win"])  # doctest: +NORMALIZE_WHITESPACE
    {'tok_9657': 0.5773502691896258, 'tok_11471': 0.5773502691896258,
     'tok_15222': 0.5773502691896258}
    """
    distinct = set(tokens)
    if not distinct:
        return {}
    value = 1.0 / math.sqrt(len(distinct))
    buckets = sorted({token_bucket(token) for token in distinct})
    return {f"{TEXT_FEATURE_PREFIX}{bucket}": value for bucket in buckets}


def is_text_feature(name: str) -> bool:
    """True for hashed text features, which the online model leaves unscaled."""
    return name.startswith(TEXT_FEATURE_PREFIX)


def cue_counts(tokens: Iterable[str], text: str) -> tuple[int, int]:
    """(money cues, urgency cues): distinct cue words, plus currency amounts for money.

    >>> cue_counts(tokens_one("Claim your $500 prize now, account suspended!"),
    ...            "Claim your $500 prize now, account suspended!")
    (3, 1)
    """
    distinct = set(tokens)
    money = len(distinct & MONEY_WORDS) + len(_MONEY_AMOUNT_RE.findall(text))
    return money, len(distinct & URGENCY_WORDS)


def caps_share(text: str) -> float:
    """Share of upper-case letters among letters (0 without letters): shouting is a spam cue.

    >>> caps_share("FREE money")
    0.4444444444444444
    """
    letters = sum(map(str.isalpha, text))
    if not letters:
        return 0.0
    return sum(map(str.isupper, text)) / letters


def punctuation_densities(text: str) -> tuple[float, float]:
    """(``!`` per character, ``!?$€£%*`` per character); 0 for an empty text.

    >>> punctuation_densities("Win!!! 100%")
    (0.2727272727272727, 0.36363636363636365)
    """
    if not text:
        return 0.0, 0.0
    n = len(text)
    return text.count("!") / n, sum(text.count(c) for c in _PUNCTUATION) / n


def links_one(links: Sequence[str], body: str) -> list[str]:
    """The message's links: the declared ones, then URLs found in the body, without repeats.

    >>> links_one(["https://a.com/x"], "see https://a.com/x and www.b.org/y.")
    ['https://a.com/x', 'www.b.org/y.']
    """
    found = dict.fromkeys(link.strip() for link in links)
    found.update(dict.fromkeys(_URL_RE.findall(body)))
    found.pop("", None)
    return list(found)[:MAX_LINKS]


def url_host(link: str) -> str:
    """Lowercased host name of a link ('' when it has none); a bare ``www.x.com`` works too,
    a ``mailto:`` or other scheme without ``//`` has no host.

    >>> url_host("HTTPS://Login.PayPal.com:443/x?y=1")
    'login.paypal.com'
    >>> url_host("www.example.org/path"), url_host("mailto:a@b.org")
    ('www.example.org', '')
    """
    link = link.strip()
    if "://" not in link:
        if _SCHEME_RE.match(link):
            return ""
        link = "http://" + link
    try:
        host = urlsplit(link).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def email_domain(address: str) -> str:
    """Domain of an email address, also of ``Name <user@domain>``; '' when there is none.

    >>> email_domain("PayPal Service <service@PayPa1.com>")
    'paypa1.com'
    """
    if "<" in address and ">" in address:
        address = address[address.rindex("<") + 1 : address.rindex(">")]
    _, at, domain = address.rpartition("@")
    return domain.strip().rstrip(".").lower() if at else ""


def registrable_domain(host: str) -> str:
    """The domain a registrant controls: the last two labels, or three under a two-level
    country suffix such as ``co.uk`` (a small fixed list, not the public-suffix list).

    >>> registrable_domain("login.paypal.com.evil.co.uk")
    'evil.co.uk'
    """
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _is_ip(host: str) -> bool:
    if host.isdigit() or host.startswith("0x"):
        return True  # an IPv4 address written as one decimal or hex number
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _brands_in(host: str) -> set[str]:
    """Brands named in ``host``: as a part between dots and hyphens, or (long brands) inside one."""
    parts = [p for p in _PARTS_RE.split(host) if p]
    found = set()
    for brand in BRANDS:
        if brand in parts or (
            len(brand) >= SUBSTRING_BRAND_MIN_LEN and any(brand in p for p in parts)
        ):
            found.add(brand)
    return found


def _is_official(brand: str, registrable: str) -> bool:
    return registrable.split(".")[0] == brand or registrable in BRANDS[brand]


def _unswapped(host: str) -> str:
    host = host.translate(_DIGIT_SWAPS)
    for fake, real in _CHAR_SWAPS:
        host = host.replace(fake, real)
    return host


def lookalike_kind(host: str) -> str:
    """Why a host looks like a phishing domain, or '' when it does not.

    ``ip``: an address instead of a name. ``punycode``: an internationalised name
    (``xn--``, or non-ASCII letters) that can imitate Latin ones. ``char_swap``: a brand
    appears only after undoing digit-for-letter or ``rn``-for-``m`` swaps (``paypa1``,
    ``micros0ft``, ``rnicrosoft``). ``brand``: a brand named inside a domain the brand does
    not own (``paypal.secure-login.com``, ``paypal-verify.com``).

    >>> [lookalike_kind(h) for h in ["paypa1.com", "micros0ft-support.net", "paypal.com",
    ...   "paypal.secure-login.com", "xn--pypal-4ve.com", "192.168.0.1", "purchase.com"]]
    ['char_swap', 'char_swap', '', 'brand', 'punycode', 'ip', '']
    """
    if not host:
        return ""
    if _is_ip(host):
        return "ip"
    if not host.isascii() or any(label.startswith("xn--") for label in host.split(".")):
        return "punycode"
    registrable = registrable_domain(host)
    named = _brands_in(host)
    if _brands_in(_unswapped(host)) - named:
        return "char_swap"
    if any(not _is_official(brand, registrable) for brand in named):
        return "brand"
    return ""


def is_lookalike_domain(host: str) -> bool:
    """True when :func:`lookalike_kind` finds any reason.

    >>> is_lookalike_domain("g00gle.com"), is_lookalike_domain("mail.google.com")
    (True, False)
    """
    return bool(lookalike_kind(host))
