"""Synthetic card transactions: everyday habits with fraud campaigns mixed in.

The simulator draws a stream of slots from its clock. A slot is taken by a planned fraud
whose time has come, else it may start a new fraud campaign (whose later transactions are
planned ahead, minutes apart), else it is an ordinary purchase by a customer drawn by
activity. Start probabilities are solved from the scenario shares and campaign lengths so
that the share of fraudulent *events* is ``fraud_rate`` (0.5% by default) whatever the mix.

Everything random comes from one seeded ``random.Random``: the same seed gives the same
stream, event ids included (ids count slots; they never come from ``uuid4``). In live mode
(a wall clock) only the event times differ between two runs.

Each item also carries the generator's knowledge for evaluation: fraud or not, the scenario,
and the "true probability": the posterior of fraud given the event's observables (channel,
country vs home, new device, amount vs the customer's usual level, merchant category,
whether the terminal is skimmed) under the generator's own mixture of legit behaviour and
fraud stories. It ignores sequences (a card-testing burst is more obvious than any single
tiny amount in it), so a model with velocity features can beat it on card testing.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterator

from models.events import Transaction, utc_from_timestamp
from producers.clock import Clock, SimulatedClock
from producers.fraud import (
    ACCOUNT_TAKEOVER,
    CARD_TESTING,
    COMPROMISED_TERMINAL,
    GIFT_CARD_MIMICRY,
    HIGH_VALUE,
    SCENARIOS,
    FraudPlanner,
    PlannedFraud,
    normal_density,
    scenario_likelihoods,
)
from producers.population import (
    DRIFT_CATEGORY,
    TRAVEL_COUNTRIES,
    Customer,
    Merchant,
    Population,
    new_device_id,
)
from producers.truth import Generated

LEGIT = "legit"

TRIP_START = 0.002
"""Chance that a purchase at home is the first of a trip abroad."""
TRIP_LENGTH = (5, 30)
"""Purchases made on one trip."""
_TRIP_MEAN = sum(TRIP_LENGTH) / 2
FOREIGN_SHARE = _TRIP_MEAN / (_TRIP_MEAN + (1 - TRIP_START) / TRIP_START)
"""Long-run share of a customer's purchases made abroad (about 3.4%)."""
NEW_DEVICE = 0.03
"""Chance an online purchase comes from a device the customer never used (a new phone)."""
BIG_PURCHASE, BIG_SHIFT, BIG_SIGMA = 0.008, 1.8, 0.5
"""Legit splurges: 0.8% of purchases are about exp(1.8) = 6x the usual basket."""
DRIFT_LEGIT_SHARE = 0.04
"""After the drift, the share of legit online purchases made at the new category."""
FAVOURITE_SHOP = 0.9

_HOUR_SHIFT = (-0.15,) * 6 + (-0.1,) * 5 + (0.05,) * 4 + (0.0,) * 3 + (0.15,) * 4 + (0.0,) * 2
"""Log-amount shift by hour: small baskets at night and in the morning, big in the evening."""
_WEEK_HOUR_SHIFT: tuple[float, ...] = tuple(
    _HOUR_SHIFT[h] + (0.1 if day >= 4 else 0.0)  # Friday to Sunday: bigger baskets
    for day in range(7)
    for h in range(24)
)
"""By hour of the week, Monday 00:00 first (a table: this is looked up for every event)."""


def amount_shift(ts: float) -> float:
    """How much bigger (in log EUR) baskets are at ``ts`` than on average."""
    return _WEEK_HOUR_SHIFT[(int(ts // 3600) + 72) % 168]


class TransactionSimulator:
    """An endless, seeded stream of :class:`Generated` transactions.

    ``start`` is the first simulated time (POSIX seconds), used unless a ``clock`` is given
    (pass a :class:`~producers.clock.WallClock` for live mode). ``drift_at`` (POSIX seconds)
    is when the gift-card mimicry scenario starts and the fraud mix changes.
    """

    def __init__(
        self,
        seed: int,
        fraud_rate: float = 0.005,
        start: float = 1_735_689_600.0,
        drift_at: float | None = None,
        *,
        clock: Clock | None = None,
        events_per_s: float = 2.0,
        customers: int = 20_000,
        merchants: int = 3_000,
    ) -> None:
        if not 0.0 <= fraud_rate < 1.0:
            raise ValueError(f"fraud_rate must be in [0, 1), got {fraud_rate}")
        self.seed = seed
        self.fraud_rate = fraud_rate
        self.drift_at = drift_at
        self._rng = rng = random.Random(seed)
        self.population = Population.build(rng, customers=customers, merchants=merchants)
        self.planner = FraudPlanner(rng, self.population)
        self._clock = clock or SimulatedClock(start, events_per_s, random.Random(f"{seed}:clock"))
        self._pending: list[PlannedFraud] = []
        self._activity_total = self.population.activity_cum[-1]
        self._n = 0
        self._prefix = f"tx-{seed}-"
        self.drifted = False
        self._set_mix(drifted=False)

    def _set_mix(self, *, drifted: bool) -> None:
        """Solve per-slot start probabilities from the scenarios' shares of fraud events.

        A slot not taken by a planned fraud starts scenario ``s`` (mean campaign length
        ``L_s``, share ``w_s``) with probability ``w_s * c / L_s``, where
        ``c = f / (1 - f + f / L)`` and ``L`` is the share-weighted harmonic mean length:
        then fraudulent events are a share ``f`` of all slots, whatever the mix.
        """
        self.drifted = drifted
        shares = {
            s.name: s.share_after_drift if drifted else s.share_before_drift for s in SCENARIOS
        }
        lengths = {s.name: s.mean_events for s in SCENARIOS}
        f = self.fraud_rate
        mean_len = 1.0 / sum(w / lengths[n] for n, w in shares.items() if w > 0)
        c = f / (1.0 - f + f / mean_len)
        cum = 0.0
        self._starts: list[tuple[float, str]] = []
        for name, w in shares.items():
            if w > 0:
                cum += w * c / lengths[name]
                self._starts.append((cum, name))
        self._start_total = cum
        self._priors = {name: f * w for name, w in shares.items() if w > 0}

    def __iter__(self) -> Iterator[Generated[Transaction]]:
        return self

    def __next__(self) -> Generated[Transaction]:
        t = self._clock.tick()
        if not self.drifted and self.drift_at is not None and t >= self.drift_at:
            self._set_mix(drifted=True)
        n = self._n
        self._n = n + 1
        pending = self._pending
        if pending and pending[0].due <= t:
            return self._fraud(heapq.heappop(pending), t, n)
        u = self._rng.random()
        if u < self._start_total:
            for threshold, name in self._starts:
                if u < threshold:
                    plans = self._start(name, t)
                    for plan in plans[1:]:
                        heapq.heappush(pending, plan)
                    return self._fraud(plans[0], t, n)
        return self._legit(t, n)

    def take(self, count: int) -> list[Generated[Transaction]]:
        """The next ``count`` items (handy in tests and notebooks)."""
        return [next(self) for _ in range(count)]

    def _start(self, name: str, t: float) -> list[PlannedFraud]:
        planner = self.planner
        if name == CARD_TESTING:
            return planner.card_testing(t)
        if name == ACCOUNT_TAKEOVER:
            return planner.account_takeover(t)
        if name == COMPROMISED_TERMINAL:
            return planner.compromised_terminal(t, amount_shift(t))
        if name == HIGH_VALUE:
            return planner.high_value(t)
        if name == GIFT_CARD_MIMICRY:
            return planner.gift_card_mimicry(t, amount_shift(t))
        raise AssertionError(name)

    def _fraud(self, plan: PlannedFraud, t: float, n: int) -> Generated[Transaction]:
        c, m = plan.customer, plan.merchant
        online = m.online
        new_device = online and plan.device not in c.devices
        p = self._true_probability(
            c, m, plan.terminal, plan.amount, plan.country, new_device, amount_shift(t)
        )
        return Generated(
            self._event(n, t, c, m, plan.terminal, plan.amount, plan.country, plan.device),
            True,
            plan.scenario,
            p,
        )

    def _legit(self, t: float, n: int) -> Generated[Transaction]:
        # Hot path: ``seq[int(rand() * len(seq))]`` is Random.choice at a third of the cost.
        rng, pop = self._rng, self.population
        rand = rng.random
        c = pop.customers[bisect.bisect(pop.activity_cum, rand() * self._activity_total)]
        if c.trip_left > 0:
            c.trip_left -= 1
            country = c.trip_country
        elif rand() < TRIP_START:
            country = rng.choice(TRAVEL_COUNTRIES)
            while country == c.home:
                country = rng.choice(TRAVEL_COUNTRIES)
            c.trip_country = country
            c.trip_left = rng.randint(*TRIP_LENGTH) - 1
        else:
            country = c.home
        merchants = pop.merchants
        new_device = False
        if rand() < c.online_share:
            if self.drifted and rand() < DRIFT_LEGIT_SHARE:
                pool = pop.drift_merchants
            elif rand() < FAVOURITE_SHOP:
                pool = c.online_favourites
            else:
                pool = pop.online
            m = merchants[pool[int(rand() * len(pool))]]
            terminal = m.terminals[0]
            if rand() < NEW_DEVICE:
                device = new_device_id(rng)
                new_device = True
            else:
                devices = c.devices
                device = devices[int(rand() * len(devices))]
        else:
            if country == c.home and rand() < FAVOURITE_SHOP:
                pool = c.pos_favourites
            else:
                pool = pop.pos_by_country[country]
            m = merchants[pool[int(rand() * len(pool))]]
            terminals = m.terminals
            terminal = terminals[int(rand() * len(terminals))]
            device = ""
        shift = _WEEK_HOUR_SHIFT[(int(t // 3600) + 72) % 168]
        base = c.mu + shift + m.amount_offset
        if rand() < BIG_PURCHASE:
            amount = round(math.exp(rng.gauss(base + BIG_SHIFT, BIG_SIGMA)), 2)
        else:
            amount = round(math.exp(rng.gauss(base, c.sigma)), 2)
        # Most purchases are nothing any fraud story produces: skip the posterior for them.
        if m.online:
            maybe = new_device or m.fraud_target
        else:
            maybe = country == c.home and (m.fraud_target or terminal in self.planner.compromised)
        p = 0.0
        if maybe:
            p = self._true_probability(c, m, terminal, amount, country, new_device, shift)
        if new_device:  # the customer's new phone is known from now on
            c.devices.append(device)
            if len(c.devices) > 4:
                del c.devices[0]
        event = self._event(n, t, c, m, terminal, amount, country, device)
        return Generated(event, False, LEGIT, p)

    def _event(
        self,
        n: int,
        t: float,
        c: Customer,
        m: Merchant,
        terminal: str,
        amount: float,
        country: str,
        device: str,
    ) -> Transaction:
        return Transaction(
            event_id=f"{self._prefix}{n:010d}",
            event_time=utc_from_timestamp(t),
            card_id=c.card_id,
            customer_id=c.customer_id,
            amount=amount,
            merchant_id=m.merchant_id,
            terminal_id=terminal,
            merchant_category=m.category,
            country=country,
            device_id=device,
            channel="online" if m.online else "pos",
        )

    def _true_probability(
        self,
        c: Customer,
        m: Merchant,
        terminal: str,
        amount: float,
        country: str,
        new_device: bool,
        shift: float,
    ) -> float:
        """Posterior of fraud given the observables, under the generator's own mixture."""
        online = m.online
        foreign = country != c.home
        new_category = m.category == DRIFT_CATEGORY[0]
        y = math.log(max(amount, 0.01))
        base = c.mu + shift + m.amount_offset
        skimmed = self.planner.compromised
        compromised_share = 0.0
        if not online and terminal in skimmed:
            compromised_share = 1.0 / len(skimmed)
        scenarios = scenario_likelihoods(
            online=online,
            foreign=foreign,
            new_device=new_device,
            new_category=new_category,
            compromised_share=compromised_share,
            big_ticket=m.big_ticket_factor,
            y=y,
            mu=c.mu,
            base=base,
            sigma=c.sigma,
        )
        if not scenarios:  # no fraud story can produce this event
            return 0.0
        # Who: legit purchases come from active customers, victims are drawn uniformly
        # (skimming victims among the terminal's locals).
        pop = self.population
        priors = self._priors
        fraud = 0.0
        for name, likelihood in scenarios.items():
            prior = priors.get(name, 0.0)
            if name == COMPROMISED_TERMINAL:
                fraud += prior * likelihood / len(pop.customers_by_home[c.home])
            else:
                fraud += prior * likelihood / len(pop.customers)
        if fraud == 0.0:
            return 0.0
        legit = (
            (1.0 - self.fraud_rate)
            * c.activity
            * (
                (1 - BIG_PURCHASE) * normal_density(y, base, c.sigma)
                + BIG_PURCHASE * normal_density(y, base + BIG_SHIFT, BIG_SIGMA)
            )
        )
        legit *= FOREIGN_SHARE if foreign else 1 - FOREIGN_SHARE
        if online:
            legit *= c.online_share * (NEW_DEVICE if new_device else 1 - NEW_DEVICE)
            if self.drifted:
                legit *= DRIFT_LEGIT_SHARE if new_category else 1 - DRIFT_LEGIT_SHARE
        else:
            legit *= 1 - c.online_share
            if compromised_share:
                legit *= self._legit_terminal_chance(c, m)
        return fraud / (fraud + legit)

    def _legit_terminal_chance(self, c: Customer, m: Merchant) -> float:
        """Chance that a legit POS purchase of ``c`` happens at this one terminal of ``m``."""
        shops = len(self.population.pos_by_country[m.country])
        if m.country != c.home:
            return 1.0 / (shops * len(m.terminals))
        idx = int(m.merchant_id.removeprefix("merch_"))
        favourite = FAVOURITE_SHOP / len(c.pos_favourites) if idx in c.pos_favourites else 0.0
        return (favourite + (1 - FAVOURITE_SHOP) / shops) / len(m.terminals)
