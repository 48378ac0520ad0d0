"""The synthetic world that card transactions happen in: customers, their cards, merchants.

Fraud is only visible against habits, so every customer has some: a home country, a usual
spending level (lognormal, different per customer), a share of online shopping, one or two
devices, and favourite shops. Merchants have a category, which sets the usual basket size,
and POS terminals; online merchants have one virtual terminal.

Card tokens look like ``card_000123``: never anything resembling a card number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

HOME_COUNTRIES: tuple[tuple[str, float], ...] = (
    ("FR", 0.34),
    ("DE", 0.20),
    ("ES", 0.12),
    ("IT", 0.12),
    ("NL", 0.08),
    ("BE", 0.06),
    ("PT", 0.05),
    ("IE", 0.03),
)
"""Where the issuer's customers live, with weights."""

TRAVEL_COUNTRIES: tuple[str, ...] = (
    "FR",
    "DE",
    "ES",
    "IT",
    "NL",
    "BE",
    "PT",
    "IE",
    "GB",
    "CH",
    "AT",
    "GR",
    "US",
    "MA",
    "TH",
    "TR",
    "HR",
    "PL",
    "SE",
    "JP",
)
"""Where customers travel, and part of where fraudsters appear from: foreign alone is no proof."""

FRAUD_ORIGIN_COUNTRIES: tuple[str, ...] = ("NG", "RU", "BR", "ID", "VN", "RO", "UA", "US", "GB")
"""Where the other share of foreign fraud appears from (some are also travel destinations)."""

POS_CATEGORIES: tuple[tuple[str, float, float], ...] = (
    # name, log-amount offset from the customer's usual level, share of POS merchants
    ("grocery", -0.2, 0.22),
    ("restaurant", 0.25, 0.16),
    ("cafe", -1.4, 0.10),
    ("fuel", 0.5, 0.07),
    ("pharmacy", -0.4, 0.06),
    ("fashion", 0.6, 0.09),
    ("electronics", 1.3, 0.04),
    ("transport", -1.2, 0.07),
    ("hotel", 1.5, 0.04),
    ("entertainment", 0.1, 0.06),
    ("jewelry", 1.8, 0.02),
    ("home_garden", 0.7, 0.07),
)
ONLINE_CATEGORIES: tuple[tuple[str, float, float], ...] = (
    ("marketplace", 0.3, 0.30),
    ("streaming", -0.9, 0.10),
    ("app_store", -2.0, 0.14),
    ("travel_booking", 1.6, 0.08),
    ("electronics_online", 1.3, 0.10),
    ("fashion_online", 0.5, 0.14),
    ("food_delivery", 0.0, 0.10),
    ("gaming", -0.7, 0.04),
)
DRIFT_CATEGORY = ("gift_cards_online", -0.1)
"""A merchant category that only opens at the drift point (legit and fraud both use it)."""

BIG_TICKET_CATEGORIES = frozenset(
    {"electronics", "jewelry", "hotel", "travel_booking", "electronics_online"}
)


def new_device_id(rng: random.Random) -> str:
    """A random device fingerprint id."""
    return f"dev_{rng.getrandbits(40):010x}"


@dataclass(slots=True)
class Customer:
    """A card holder: habits that are fixed, plus a little state (devices, current trip)."""

    customer_id: str
    card_id: str
    home: str
    mu: float
    """Mean of the log of a usual basket, in EUR."""
    sigma: float
    online_share: float
    devices: list[str]
    pos_favourites: list[int]
    online_favourites: list[int]
    activity: float = 0.0
    """Share of all legit purchases made by this customer."""
    trip_country: str = ""
    trip_left: int = 0
    """Transactions left on the current trip; trips are counted in purchases, not days, so
    the share of purchases made abroad is the same in live and in simulated time."""


@dataclass(slots=True)
class Merchant:
    merchant_id: str
    category: str
    country: str
    online: bool
    amount_offset: float
    terminals: tuple[str, ...]
    big_ticket_factor: float = 0.0
    """How much likelier a big-ticket-only shopper is to pick this merchant than a customer
    is: 1 / the share of big-ticket shops in its pool (shops of its country, or online), 0
    for other shops."""
    fraud_target: bool = False
    """Some fraud story seeks this merchant out (big-ticket or drift category), so an ordinary
    purchase here needs its fraud probability worked out."""


@dataclass
class Population:
    """Customers and merchants, with the indexes the generators draw from."""

    customers: list[Customer]
    merchants: list[Merchant]
    activity_cum: list[float]
    pos_by_country: dict[str, list[int]]
    online: list[int]
    drift_merchants: list[int]
    big_ticket_pos: dict[str, list[int]]
    big_ticket_online: list[int]
    pos_terminal_count: int
    customers_by_home: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, rng: random.Random, *, customers: int = 20_000, merchants: int = 3_000
    ) -> Population:
        """Draw a population; the same ``rng`` state gives the same population."""
        if customers < 1 or merchants < 20:
            raise ValueError("a population needs at least one customer and 20 merchants")
        merchant_list, pos_by_country, online, drift, big_pos, big_online = _merchants(
            rng, merchants
        )
        homes, home_w = zip(*HOME_COUNTRIES, strict=True)
        people: list[Customer] = []
        cum: list[float] = []
        total = 0.0
        by_home: dict[str, list[int]] = {}
        for i in range(customers):
            home = rng.choices(homes, home_w)[0]
            local = pos_by_country[home]
            ndev = 1 if rng.random() < 0.6 else 2
            people.append(
                Customer(
                    customer_id=f"cust_{i:06d}",
                    card_id=f"card_{i:06d}",
                    home=home,
                    mu=rng.gauss(3.3, 0.45),
                    sigma=rng.uniform(0.45, 0.8),
                    online_share=min(0.85, rng.betavariate(2.0, 4.0)),
                    devices=[new_device_id(rng) for _ in range(ndev)],
                    pos_favourites=rng.sample(local, min(len(local), rng.randint(6, 18))),
                    online_favourites=rng.sample(online, min(len(online), rng.randint(3, 9))),
                )
            )
            total += rng.lognormvariate(0.0, 0.8)
            cum.append(total)
            by_home.setdefault(home, []).append(i)
        previous = 0.0
        for person, c in zip(people, cum, strict=True):
            person.activity = (c - previous) / total
            previous = c
        return cls(
            customers=people,
            merchants=merchant_list,
            activity_cum=cum,
            pos_by_country=pos_by_country,
            online=online,
            drift_merchants=drift,
            big_ticket_pos=big_pos,
            big_ticket_online=big_online,
            pos_terminal_count=sum(len(m.terminals) for m in merchant_list if not m.online),
            customers_by_home=by_home,
        )


def _merchants(
    rng: random.Random, count: int
) -> tuple[
    list[Merchant], dict[str, list[int]], list[int], list[int], dict[str, list[int]], list[int]
]:
    """Merchants: most are shops in the home countries, some abroad, a quarter online, and a
    few of the drift category (idle until the drift point)."""
    pos_names, pos_offsets, pos_w = zip(*POS_CATEGORIES, strict=True)
    online_names, online_offsets, online_w = zip(*ONLINE_CATEGORIES, strict=True)
    pos_offset = dict(zip(pos_names, pos_offsets, strict=True))
    online_offset = dict(zip(online_names, online_offsets, strict=True))
    homes, home_w = zip(*HOME_COUNTRIES, strict=True)
    merchants: list[Merchant] = []
    pos_by_country: dict[str, list[int]] = {c: [] for c in TRAVEL_COUNTRIES}
    online: list[int] = []
    drift: list[int] = []
    big_pos: dict[str, list[int]] = {c: [] for c in TRAVEL_COUNTRIES}
    big_online: list[int] = []
    terminal = 0
    n_drift = max(3, count // 200)
    n_online = count // 4
    # Every country gets at least a handful of shops so that a trip always finds some.
    countries: list[str] = [c for c in TRAVEL_COUNTRIES for _ in range(4)]
    while len(countries) < count - n_online - n_drift:
        at_home = rng.random() < 0.85
        countries.append(rng.choices(homes, home_w)[0] if at_home else rng.choice(TRAVEL_COUNTRIES))
    for country in countries:
        category = rng.choices(pos_names, pos_w)[0]
        k = len(merchants)
        terminals = tuple(f"term_{terminal + j:06d}" for j in range(rng.randint(1, 6)))
        terminal += len(terminals)
        merchants.append(
            Merchant(f"merch_{k:05d}", category, country, False, pos_offset[category], terminals)
        )
        pos_by_country[country].append(k)
        if category in BIG_TICKET_CATEGORIES:
            big_pos[country].append(k)
    for i in range(n_online + n_drift):
        is_drift = i >= n_online
        if is_drift:
            category, offset = DRIFT_CATEGORY
        else:
            category = rng.choices(online_names, online_w)[0]
            offset = online_offset[category]
        k = len(merchants)
        merchants.append(
            Merchant(
                f"merch_{k:05d}",
                category,
                rng.choice(("IE", "NL", "LU", "US", "DE", "FR")),
                True,
                offset,
                (f"term_{terminal:06d}",),
            )
        )
        terminal += 1
        (drift if is_drift else online).append(k)
        if category in BIG_TICKET_CATEGORIES:
            big_online.append(k)
    for country, shops in big_pos.items():
        if not shops:  # a country without a big-ticket shop borrows its ordinary ones
            big_pos[country] = shops = pos_by_country[country]
        for k in shops:
            merchants[k].big_ticket_factor = len(pos_by_country[country]) / len(shops)
    for k in big_online:
        merchants[k].big_ticket_factor = len(online) / len(big_online)
    for m in merchants:
        m.fraud_target = m.big_ticket_factor > 0 or m.category == DRIFT_CATEGORY[0]
    return merchants, pos_by_country, online, drift, big_pos, big_online
