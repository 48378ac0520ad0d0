"""Card-fraud scenarios: how each one plays out, and how likely it is to look like a given event.

Each scenario is a small generative story with its own time structure:

* **card testing**: a stolen card is tried with a burst of tiny online amounts, seconds to a
  couple of minutes apart, from a device the card never used;
* **account takeover**: someone logs in from a new device in another country, tries a small
  amount, then buys big over the next half hour;
* **compromised terminal**: a skimmed POS terminal; over its lifetime many different local
  cards are defrauded there, with baskets only a little above usual;
* **high value**: one purchase far above the customer's usual level at a big-ticket shop;
* **gift-card mimicry** (the drift scenario): from the drift point, online purchases at a
  newly opened merchant category, with ordinary amounts and often a known-looking country.

None of them is separable on its own: customers also travel, buy big now and then, get new
phones, and buy tiny things online. The likelihoods below are the densities each story
assigns to an event's observables; the simulator mixes them with the legit behaviour into the
"true probability" it reports for evaluation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple

from producers.population import (
    FRAUD_ORIGIN_COUNTRIES,
    TRAVEL_COUNTRIES,
    Customer,
    Merchant,
    Population,
    new_device_id,
)

TAKEOVER_EVENTS = 4.5
"""A probe and 2-5 purchases."""

CARD_TESTING = "card_testing"
ACCOUNT_TAKEOVER = "account_takeover"
COMPROMISED_TERMINAL = "compromised_terminal"
HIGH_VALUE = "high_value"
GIFT_CARD_MIMICRY = "gift_card_mimicry"


@dataclass(frozen=True)
class Scenario:
    name: str
    share_before_drift: float
    """Share of fraudulent *events* (not campaigns) this scenario produces before the drift."""
    share_after_drift: float
    mean_events: float
    """Mean number of transactions in one campaign."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(CARD_TESTING, 0.30, 0.16, 9.0),
    Scenario(ACCOUNT_TAKEOVER, 0.25, 0.14, TAKEOVER_EVENTS),
    Scenario(COMPROMISED_TERMINAL, 0.25, 0.14, 1.0),
    Scenario(HIGH_VALUE, 0.20, 0.11, 1.0),
    Scenario(GIFT_CARD_MIMICRY, 0.0, 0.45, 2.0),
)

# Card testing: 4-14 tiny amounts, mean gap 30 s.
TEST_AMOUNT_MIN, TEST_AMOUNT_MAX = 0.5, 3.0
TEST_FOREIGN = 0.6
# Account takeover: a probe of 5-25 EUR, then 2-5 large purchases, mean gap 5 min.
PROBE_MIN, PROBE_MAX = 5.0, 25.0
TAKEOVER_BIG_TICKET = 0.7
"""Share of takeover purchases made at big-ticket online shops (the rest anywhere online)."""
TAKEOVER_SHIFT, TAKEOVER_SIGMA = 2.0, 0.5
# Compromised terminal: baskets exp(0.5) ~ 1.6x the usual; 10-40 cards per terminal.
SKIM_SHIFT = 0.5
COMPROMISED_TARGET = 15
"""Compromised terminals active at once: enough that each lasts days in simulated time."""
# High value: exp(2.8) ~ 16x the usual basket.
HIGH_SHIFT, HIGH_SIGMA = 2.8, 0.45
HIGH_ONLINE, HIGH_NEW_DEVICE = 0.5, 0.5
# Gift-card mimicry: ordinary amounts at the new category, often from a new device.
MIMIC_NEW_DEVICE = 0.6

_LOG_2PI_HALF = 0.5 * math.log(2 * math.pi)
_TEST_LOG_WIDTH = math.log(TEST_AMOUNT_MAX / TEST_AMOUNT_MIN)
_PROBE_LOG_WIDTH = math.log(PROBE_MAX / PROBE_MIN)


def normal_density(y: float, mean: float, sigma: float) -> float:
    z = (y - mean) / sigma
    return math.exp(-0.5 * z * z - _LOG_2PI_HALF) / sigma


class PlannedFraud(NamedTuple):
    """One fraudulent transaction, waiting for its time to come."""

    due: float
    seq: int
    """Tie-breaker in the heap, so that the order (and the stream) is deterministic."""
    scenario: str
    customer: Customer
    merchant: Merchant
    terminal: str
    amount: float
    country: str
    device: str


class FraudPlanner:
    """Plans campaigns and keeps the state that spans them (which terminals are skimmed)."""

    def __init__(self, rng: random.Random, population: Population) -> None:
        self._rng = rng
        self._pop = population
        self._seq = 0
        self.compromised: dict[str, int] = {}
        """Skimmed terminal id -> frauds still to come there."""
        self._compromised_merchant: dict[str, Merchant] = {}

    def _plan(
        self,
        due: float,
        scenario: str,
        customer: Customer,
        merchant: Merchant,
        amount: float,
        country: str,
        device: str,
        terminal: str | None = None,
    ) -> PlannedFraud:
        self._seq += 1
        return PlannedFraud(
            due,
            self._seq,
            scenario,
            customer,
            merchant,
            terminal or merchant.terminals[0],
            round(amount, 2),
            country,
            device,
        )

    def _foreign_country(self, home: str) -> str:
        rng = self._rng
        pool = TRAVEL_COUNTRIES if rng.random() < 0.5 else FRAUD_ORIGIN_COUNTRIES
        country = rng.choice(pool)
        while country == home:
            country = rng.choice(pool)
        return country

    def card_testing(self, t: float) -> list[PlannedFraud]:
        rng, pop = self._rng, self._pop
        victim = rng.choice(pop.customers)
        device = new_device_id(rng)
        country = self._foreign_country(victim.home) if rng.random() < TEST_FOREIGN else victim.home
        merchant = pop.merchants[rng.choice(pop.online)]
        plans = []
        for _ in range(rng.randint(4, 14)):
            if rng.random() < 0.3:  # testers hop between a few small online shops
                merchant = pop.merchants[rng.choice(pop.online)]
            amount = TEST_AMOUNT_MIN * math.exp(rng.random() * _TEST_LOG_WIDTH)
            plans.append(self._plan(t, CARD_TESTING, victim, merchant, amount, country, device))
            t += rng.expovariate(1 / 30.0)
        return plans

    def account_takeover(self, t: float) -> list[PlannedFraud]:
        rng, pop = self._rng, self._pop
        victim = rng.choice(pop.customers)
        device = new_device_id(rng)
        country = self._foreign_country(victim.home)
        probe = PROBE_MIN * math.exp(rng.random() * _PROBE_LOG_WIDTH)
        shop = pop.merchants[rng.choice(pop.online)]
        plans = [self._plan(t, ACCOUNT_TAKEOVER, victim, shop, probe, country, device)]
        for _ in range(rng.randint(2, 5)):
            t += rng.expovariate(1 / 300.0)
            pool = pop.big_ticket_online if rng.random() < TAKEOVER_BIG_TICKET else pop.online
            shop = pop.merchants[rng.choice(pool)]
            amount = math.exp(rng.gauss(victim.mu + TAKEOVER_SHIFT, TAKEOVER_SIGMA))
            plans.append(self._plan(t, ACCOUNT_TAKEOVER, victim, shop, amount, country, device))
        return plans

    def compromised_terminal(self, t: float, base_shift: float) -> list[PlannedFraud]:
        """One more card defrauded at a skimmed terminal (skimming a new one now and then)."""
        rng, pop = self._rng, self._pop
        # Terminals whose skimmer has done its work are retired only now, so that the event
        # planned last time still finds its terminal skimmed when it is emitted.
        for spent in [term for term, left in self.compromised.items() if left <= 0]:
            del self.compromised[spent]
            del self._compromised_merchant[spent]
        if len(self.compromised) < COMPROMISED_TARGET or rng.random() < 0.01:
            self._skim_new_terminal()
        terminal = rng.choice(list(self.compromised))
        merchant = self._compromised_merchant[terminal]
        self.compromised[terminal] -= 1
        victim = pop.customers[rng.choice(pop.customers_by_home[merchant.country])]
        mean = victim.mu + base_shift + merchant.amount_offset + SKIM_SHIFT
        amount = math.exp(rng.gauss(mean, victim.sigma))
        return [
            self._plan(
                t, COMPROMISED_TERMINAL, victim, merchant, amount, merchant.country, "", terminal
            )
        ]

    def _skim_new_terminal(self) -> None:
        rng, pop = self._rng, self._pop
        home = rng.choice(list(pop.customers_by_home))
        merchant = pop.merchants[rng.choice(pop.pos_by_country[home])]
        terminal = rng.choice(merchant.terminals)
        if terminal not in self.compromised:
            self.compromised[terminal] = rng.randint(10, 40)
            self._compromised_merchant[terminal] = merchant

    def high_value(self, t: float) -> list[PlannedFraud]:
        rng, pop = self._rng, self._pop
        victim = rng.choice(pop.customers)
        amount = math.exp(rng.gauss(victim.mu + HIGH_SHIFT, HIGH_SIGMA))
        if rng.random() < HIGH_ONLINE:
            shop = pop.merchants[rng.choice(pop.big_ticket_online)]
            device = new_device_id(rng) if rng.random() < HIGH_NEW_DEVICE else victim.devices[0]
            return [self._plan(t, HIGH_VALUE, victim, shop, amount, victim.home, device)]
        shop = pop.merchants[rng.choice(pop.big_ticket_pos[victim.home])]
        terminal = rng.choice(shop.terminals)
        while terminal in self.compromised and len(shop.terminals) > 1:
            terminal = rng.choice(shop.terminals)
        return [self._plan(t, HIGH_VALUE, victim, shop, amount, victim.home, "", terminal)]

    def gift_card_mimicry(self, t: float, base_shift: float) -> list[PlannedFraud]:
        rng, pop = self._rng, self._pop
        victim = rng.choice(pop.customers)
        device = new_device_id(rng) if rng.random() < MIMIC_NEW_DEVICE else victim.devices[-1]
        plans = []
        for _ in range(1 if rng.random() < 0.5 else 3):
            shop = pop.merchants[rng.choice(pop.drift_merchants)]
            mean = victim.mu + base_shift + shop.amount_offset
            amount = math.exp(rng.gauss(mean, victim.sigma))
            plans.append(
                self._plan(t, GIFT_CARD_MIMICRY, victim, shop, amount, victim.home, device)
            )
            t += rng.expovariate(1 / 1200.0)
        return plans


def scenario_likelihoods(
    *,
    online: bool,
    foreign: bool,
    new_device: bool,
    new_category: bool,
    compromised_share: float,
    big_ticket: float,
    y: float,
    mu: float,
    base: float,
    sigma: float,
) -> dict[str, float]:
    """Density each fraud story gives an event's observables (``y`` = log amount; ``base``
    = the customer's usual log basket at this hour and merchant category;
    ``compromised_share`` = the chance a skimming fraud picks this terminal, 0 when it is not
    skimmed; ``big_ticket`` = how much likelier a story that shops only at big-ticket merchants
    is to pick this merchant than a customer is: 1 / their share, or 0 for other merchants).
    Stories that cannot produce the event are left out. The customer is taken as
    given: who gets picked as a victim is not part of the likelihood."""
    out: dict[str, float] = {}
    if online:
        if new_device and not new_category:
            if math.log(TEST_AMOUNT_MIN) <= y <= math.log(TEST_AMOUNT_MAX):
                where = TEST_FOREIGN if foreign else 1 - TEST_FOREIGN
                out[CARD_TESTING] = where / _TEST_LOG_WIDTH
            if foreign:
                probe = 0.0
                if math.log(PROBE_MIN) <= y <= math.log(PROBE_MAX):
                    probe = 1.0 / _PROBE_LOG_WIDTH
                big = normal_density(y, mu + TAKEOVER_SHIFT, TAKEOVER_SIGMA)
                n = TAKEOVER_EVENTS
                big *= TAKEOVER_BIG_TICKET * big_ticket + 1 - TAKEOVER_BIG_TICKET
                out[ACCOUNT_TAKEOVER] = probe / n + big * (n - 1) / n
        if not foreign and big_ticket:
            dev = HIGH_NEW_DEVICE if new_device else 1 - HIGH_NEW_DEVICE
            out[HIGH_VALUE] = (
                HIGH_ONLINE * dev * big_ticket * normal_density(y, mu + HIGH_SHIFT, HIGH_SIGMA)
            )
        if new_category and not foreign:
            dev = MIMIC_NEW_DEVICE if new_device else 1 - MIMIC_NEW_DEVICE
            out[GIFT_CARD_MIMICRY] = dev * normal_density(y, base, sigma)
    elif not foreign:
        if compromised_share:
            out[COMPROMISED_TERMINAL] = compromised_share * normal_density(
                y, base + SKIM_SHIFT, sigma
            )
        elif big_ticket:
            out[HIGH_VALUE] = (
                (1 - HIGH_ONLINE) * big_ticket * normal_density(y, mu + HIGH_SHIFT, HIGH_SIGMA)
            )
    return out
