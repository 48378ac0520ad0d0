"""Synthetic email: ordinary mail with spam campaigns mixed in.

Ham is work threads, newsletters (links, unsubscribe text), personal notes and service
notifications; spam is phishing from look-alike domains (``paypa1.com``,
``micros0ft-support.com``), advance-fee stories, online pharmacies, and crypto/lottery bait.
Keyword rules do not score perfectly: notifications talk about payments, sign-ins and
verification, friends brag about prizes, and some spam is a plain two-line "are you at your
desk?" with no link at all. From ``drift_at`` on, a new campaign starts: overdue invoices
"with updated bank details", sent from look-alike supplier domains with an attachment and no
link, which a model leaning on links and keywords will miss at first.

Each message comes from one *family* of templates. Most families are only ever spam or only
ever ham, so the generator's true probability for them is 1 or 0; the ``short_request``
family is drawn by the same code for a friend and for a CEO-fraud scam, so its true
probability is the mixing share of spam in that family. Vocabularies are small lists kept
here as data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from models.events import Email, utc_from_timestamp
from producers.clock import Clock, SimulatedClock
from producers.truth import Generated

FIRST_NAMES = (
    "anna",
    "ben",
    "carla",
    "david",
    "elena",
    "farid",
    "greta",
    "hugo",
    "ines",
    "jonas",
    "karim",
    "lea",
    "marco",
    "nina",
    "omar",
    "paula",
    "quentin",
    "rosa",
    "sven",
    "tara",
    "ugo",
    "vera",
    "wim",
    "yara",
    "zoe",
)
LAST_NAMES = (
    "martin",
    "schmidt",
    "garcia",
    "rossi",
    "dubois",
    "jansen",
    "silva",
    "novak",
    "keller",
    "moreau",
    "lopez",
    "bauer",
    "conti",
    "lambert",
    "peeters",
)
COMPANIES = ("acme-corp.com", "northwind.io", "globex.eu", "initech.com", "contoso.fr")
FREEMAIL = ("gmail.com", "outlook.com", "yahoo.com", "gmx.de", "orange.fr", "proton.me")
SERVICES = (
    ("paypal.com", "PayPal"),
    ("microsoft.com", "Microsoft"),
    ("amazon.com", "Amazon"),
    ("apple.com", "Apple"),
    ("dhl.com", "DHL"),
    ("netflix.com", "Netflix"),
    ("github.com", "GitHub"),
    ("linkedin.com", "LinkedIn"),
    ("google.com", "Google"),
)
LOOKALIKES = {
    "paypal.com": ("paypa1.com", "paypal-secure-login.com", "paypal.account-verify.net"),
    "microsoft.com": ("micros0ft-support.com", "microsoft-365-alerts.com"),
    "amazon.com": ("amaz0n-billing.net", "amazon-orders-help.com"),
    "apple.com": ("app1e-id.com", "apple-id-locked.com"),
    "dhl.com": ("dhl-parcel-track.com", "dhl-delivery-fee.net"),
    "netflix.com": ("netfIix-account.com", "netflix-billing-update.com"),
    "github.com": ("githuub-security.com",),
    "linkedin.com": ("linkedln-mail.com",),
    "google.com": ("g00gle-security.com", "google-drive-share.net"),
}
NEWSLETTERS = (
    ("news.lemonde.fr", "Le Monde"),
    ("digest.medium.com", "Medium Daily Digest"),
    ("newsletter.ikea.com", "IKEA"),
    ("mail.substack.com", "The Data Letter"),
    ("news.decathlon.com", "Decathlon"),
    ("updates.spotify.com", "Spotify"),
)
SUPPLIERS = (
    "officeplus.com",
    "printworks.eu",
    "cloudhost.io",
    "cleanpro-services.fr",
    "logistica.es",
)
PROJECTS = (
    "Q3 roadmap",
    "billing migration",
    "data platform",
    "onboarding flow",
    "vendor audit",
    "mobile release",
    "budget review",
    "hiring plan",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
SHOPS = ("Zalando", "Fnac", "IKEA", "Decathlon", "Uber", "Booking.com", "Airbnb")
DRUGS = ("Viagra", "Cialis", "Xanax", "Tramadol", "Ozempic", "Valium")
COINS = ("Bitcoin", "Ethereum", "Solana", "XRP")
TOPICS = (
    "climate",
    "housing prices",
    "AI at work",
    "the Champions League",
    "city cycling",
    "remote work",
    "interest rates",
)

WORK_SUBJECTS = (
    "Re: {project}",
    "{project}: notes from {day}",
    "Re: Re: {project} timeline",
    "Quick sync on {project}?",
    "Fwd: {project} numbers",
    "{project} - next steps",
)
WORK_LINES = (
    "I updated the {project} doc, comments welcome before {day}.",
    "Can we move the {project} review to {day} afternoon?",
    "Attached are the figures we discussed; the totals changed a bit.",
    "Thanks {first}, that works for me.",
    "The payment run for the {project} vendors is scheduled for {day}.",
    "Let's keep the scope small for now and revisit after the release.",
    "I won't make the stand-up tomorrow, dentist appointment.",
    "Could you double check the account numbers in the sheet?",
    "Great work on the demo yesterday, the client was impressed.",
)
PERSONAL_SUBJECTS = (
    "Dinner on {day}?",
    "Photos from the weekend",
    "Re: holiday plans",
    "Happy birthday!",
    "Pub quiz results",
    "Re: the money for the tickets",
)
PERSONAL_LINES = (
    "Are you free for dinner on {day}? The new place near the station looks good.",
    "Here are the photos, the one at the lake is my favourite.",
    "We won the pub quiz! The prize is a voucher for 50 euros, drinks on us.",
    "Can you pay me back the {amount} euros for the concert tickets when you can?",
    "I sent you the money for the tickets, let me know if it arrived.",
    "Congratulations on the new job, you deserve it!",
    "Mum says hi, she wants to know when you are coming over.",
)
NOTIFICATIONS = (
    (
        "Your payment to {shop} was received",
        "Hi {First}, we received your payment of EUR {amount} to {shop}. "
        "You can view the details of this transaction in your account.",
    ),
    (
        "New sign-in to your {brand} account",
        "We noticed a new sign-in to your {brand} account from a new device. If this was you, "
        "you can ignore this message. If not, review your account activity.",
    ),
    (
        "Please verify your email address",
        "Hi {First}, please verify your email address to finish setting up your {brand} "
        "account. This link expires in 24 hours.",
    ),
    (
        "Your order has shipped",
        "Good news, your order from {shop} is on its way and should arrive by {day}.",
    ),
    (
        "Your password was changed",
        "The password for your {brand} account was changed. If you did this, no action is needed.",
    ),
    (
        "Your monthly statement is ready",
        "Your {brand} statement for this month is ready. Your balance is EUR {amount}.",
    ),
)
PHISHING = (
    (
        "Action required: your {brand} account has been suspended",
        "Dear customer, we detected unusual activity and temporarily suspended your {brand} "
        "account. Verify your identity within 24 hours to restore access.",
    ),
    (
        "Unusual sign-in activity detected",
        "Someone tried to sign in to your {brand} account. If this was not you, secure your "
        "account now by confirming your details.",
    ),
    (
        "Your payment could not be processed",
        "We were unable to process your last payment. Update your billing information to "
        "avoid interruption of your {brand} service.",
    ),
    (
        "Your package is on hold",
        "Your parcel could not be delivered. A customs fee of EUR {small} is required. Pay "
        "now to schedule a new delivery.",
    ),
    (
        "Re: your invoice",
        "Please review the attached document and sign in with your {brand} credentials.",
    ),
)
ADVANCE_FEE = (
    (
        "URGENT BUSINESS PROPOSAL",
        "I am {First} {Last}, a senior auditor at a bank. I found "
        "a dormant account of USD {millions},000,000 with no beneficiary. I need a trusted "
        "foreign partner to receive the funds; you will receive 40% for your assistance. Reply "
        "with your full name and phone number.",
    ),
    (
        "Beneficiary notification",
        "This is to inform you that you have been named "
        "beneficiary of an inheritance of USD {millions},500,000. To release the funds, a small "
        "processing fee is required. Kindly reply urgently.",
    ),
    (
        "Hello dear friend",
        "Please forgive my intrusion. I am a widow suffering from a long "
        "illness and I wish to donate USD {millions},000,000 to charity through you. Contact me "
        "back so I can give you more details.",
    ),
)
PHARMACY = (
    (
        "Cheap {drug} without prescription",
        "Best prices on {drug}, discreet delivery "
        "worldwide. Order now and save 80%. No prescription needed.",
    ),
    (
        "{drug} - 90% off today only",
        "Genuine {drug} at the lowest price online. Fast shipping, secure payment. Limited offer.",
    ),
)
CRYPTO_LOTTERY = (
    (
        "Congratulations! You have won EUR {big}",
        "Your email address was selected in our "
        "international lottery. To claim your prize of EUR {big}, confirm your details and pay "
        "the transfer fee.",
    ),
    (
        "Turn EUR 250 into EUR {big} with {coin}",
        "Our AI trading robot made our members rich. "
        "Join now and start earning with {coin}: guaranteed returns, withdraw any time.",
    ),
    (
        "You are our lucky winner",
        "You are the lucky winner of an iPhone 16. Claim your "
        "prize now, only the shipping cost is needed.",
    ),
)
SHORT_REQUESTS = (
    (
        "Quick question",
        "Hi {first}, are you at your desk? I need a quick favour. Reply when you see this.",
    ),
    ("Are you available?", "Are you available? Let me know, I need something done today."),
    ("Call me", "Can you call me back when you have a minute? Thanks"),
    ("Favour", "Hi, can you do me a favour this afternoon? I will explain. {First}"),
)
INVOICES = (
    (
        "Invoice {invoice} for {month}",
        "Dear customer, please find attached invoice "
        "{invoice} for {month}. Payment is due within 30 days to our usual account. Kind "
        "regards, accounts team",
    ),
    (
        "Your invoice {invoice}",
        "Hello, attached is invoice {invoice}. Thank you for your business.",
    ),
)
INVOICE_FRAUD = (
    (
        "Overdue invoice {invoice} - updated bank details",
        "Dear customer, please note that "
        "our bank details have changed. Kindly settle the attached overdue invoice {invoice} "
        "today to the new account to avoid late fees. Regards, accounts team",
    ),
    (
        "Payment reminder {invoice}",
        "Hello, our records show invoice {invoice} is still "
        "unpaid. Our bank has changed, the new details are in the attached document. Please "
        "confirm once paid.",
    ),
)
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
UNSUBSCRIBE = (
    "You are receiving this email because you subscribed to {brand}. "
    "Unsubscribe or manage your preferences."
)

HAM_FAMILIES: tuple[tuple[str, float], ...] = (
    ("work_thread", 0.33),
    ("newsletter", 0.25),
    ("personal", 0.13),
    ("notification", 0.17),
    ("invoice", 0.06),
    ("short_request", 0.06),
)
SPAM_CAMPAIGNS: tuple[tuple[str, float], ...] = (
    ("phishing", 0.35),
    ("advance_fee", 0.14),
    ("pharmacy", 0.14),
    ("crypto_lottery", 0.22),
    ("short_request", 0.15),
)
DRIFT_CAMPAIGN, DRIFT_SHARE = "invoice_fraud", 0.45
"""The campaign that starts at the drift point, and its share of spam from then on."""
SHARED_FAMILY = "short_request"


class EmailSimulator:
    """An endless, seeded stream of :class:`Generated` emails (see the module doc)."""

    def __init__(
        self,
        seed: int,
        spam_rate: float = 0.3,
        start: float = 1_735_689_600.0,
        drift_at: float | None = None,
        *,
        clock: Clock | None = None,
        events_per_s: float = 2.0,
        mailboxes: int = 2_000,
    ) -> None:
        if not 0.0 <= spam_rate <= 1.0:
            raise ValueError(f"spam_rate must be in [0, 1], got {spam_rate}")
        self.seed = seed
        self.spam_rate = spam_rate
        self.drift_at = drift_at
        self._rng = rng = random.Random(f"{seed}:emails")
        self._clock = clock or SimulatedClock(start, events_per_s, random.Random(f"{seed}:clock"))
        self._mailboxes = [
            f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}@{rng.choice(COMPANIES)}"
            for _ in range(max(1, mailboxes))
        ]
        self._n = 0
        self._prefix = f"em-{seed}-"
        self.drifted = False
        self._set_mix(drifted=False)
        self._writers: dict[str, Callable[[str], tuple[str, str, str, list[str], bool]]] = {
            "work_thread": self._work_thread,
            "newsletter": self._newsletter,
            "personal": self._personal,
            "notification": self._notification,
            "invoice": self._invoice,
            "short_request": self._short_request,
            "phishing": self._phishing,
            "advance_fee": self._advance_fee,
            "pharmacy": self._pharmacy,
            "crypto_lottery": self._crypto_lottery,
            DRIFT_CAMPAIGN: self._invoice_fraud,
        }

    def _set_mix(self, *, drifted: bool) -> None:
        self.drifted = drifted
        spam = list(SPAM_CAMPAIGNS)
        if drifted:
            spam = [(name, w * (1 - DRIFT_SHARE)) for name, w in spam]
            spam.append((DRIFT_CAMPAIGN, DRIFT_SHARE))
        self._spam_names = [name for name, _ in spam]
        self._spam_weights = [w for _, w in spam]
        self._ham_names = [name for name, _ in HAM_FAMILIES]
        self._ham_weights = [w for _, w in HAM_FAMILIES]
        spam_shared = self.spam_rate * dict(spam)[SHARED_FAMILY]
        ham_shared = (1 - self.spam_rate) * dict(HAM_FAMILIES)[SHARED_FAMILY]
        self.shared_spam_probability = spam_shared / (spam_shared + ham_shared)

    def __iter__(self) -> Iterator[Generated[Email]]:
        return self

    def __next__(self) -> Generated[Email]:
        t = self._clock.tick()
        if not self.drifted and self.drift_at is not None and t >= self.drift_at:
            self._set_mix(drifted=True)
        n = self._n
        self._n = n + 1
        rng = self._rng
        is_spam = rng.random() < self.spam_rate
        if is_spam:
            family = rng.choices(self._spam_names, self._spam_weights)[0]
        else:
            family = rng.choices(self._ham_names, self._ham_weights)[0]
        recipient = rng.choice(self._mailboxes)
        sender, subject, body, links, attachment = self._writers[family](recipient)
        # Only the shared family is ambiguous; every other family gives itself away.
        p = float(is_spam)
        if family == SHARED_FAMILY:
            p = self.shared_spam_probability
        event = Email(
            event_id=f"{self._prefix}{n:010d}",
            event_time=utc_from_timestamp(t),
            sender=sender,
            recipient=recipient,
            subject=subject,
            body=body,
            links=links,
            has_attachment=attachment,
        )
        return Generated(event, is_spam, family if is_spam else f"ham_{family}", p)

    def take(self, count: int) -> list[Generated[Email]]:
        return [next(self) for _ in range(count)]

    # -- vocabulary helpers --------------------------------------------------------------

    def _fields(self, recipient: str) -> dict[str, str]:
        rng = self._rng
        first = recipient.split(".", 1)[0]
        return {
            "first": first,
            "First": first.capitalize(),
            "Last": rng.choice(LAST_NAMES).capitalize(),
            "project": rng.choice(PROJECTS),
            "day": rng.choice(DAYS),
            "shop": rng.choice(SHOPS),
            "amount": f"{rng.lognormvariate(3.5, 0.8):.2f}",
            "small": f"{rng.uniform(1.5, 4.9):.2f}",
            "big": f"{rng.randrange(5, 900) * 1000:,}",
            "millions": str(rng.randint(2, 48)),
            "drug": rng.choice(DRUGS),
            "coin": rng.choice(COINS),
            "invoice": f"INV-{rng.randint(10000, 99999)}",
            "month": rng.choice(MONTHS),
        }

    def _person(self, domain: str | None = None) -> str:
        rng = self._rng
        name = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}"
        if domain is None:
            domain = rng.choice(FREEMAIL)
            if rng.random() < 0.5:
                name += str(rng.randint(1, 99))
        return f"{name}@{domain}"

    def _token(self) -> str:
        return f"{self._rng.getrandbits(48):012x}"

    # -- ham -----------------------------------------------------------------------------

    def _work_thread(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        company = recipient.rsplit("@", 1)[1]
        lines = rng.sample(WORK_LINES, rng.randint(2, 4))
        links = []
        if rng.random() < 0.3:
            links.append(f"https://wiki.{company}/{f['project'].replace(' ', '-').lower()}")
        sender = self._person(company)
        body = " ".join(lines).format(**f) + "\n\nBest,\n" + sender.split(".", 1)[0].capitalize()
        return sender, rng.choice(WORK_SUBJECTS).format(**f), body, links, rng.random() < 0.2

    def _newsletter(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        domain, brand = rng.choice(NEWSLETTERS)
        topics = rng.sample(TOPICS, rng.randint(2, 4))
        links = [
            f"https://{domain}/articles/{t.replace(' ', '-').lower()}?utm_source=newsletter"
            for t in topics
        ]
        links.append(f"https://{domain}/unsubscribe?u={self._token()}")
        body = (
            "This week: "
            + "; ".join(topics)
            + ". Read the full stories on our site.\n\n"
            + UNSUBSCRIBE.format(brand=brand)
        )
        subject = rng.choice(
            (
                "{brand}: this week in {topic}",
                "Your weekly digest",
                "{topic} and more",
                "New for you: {topic}",
            )
        )
        return (f"news@{domain}", subject.format(brand=brand, topic=topics[0]), body, links, False)

    def _personal(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        body = " ".join(rng.sample(PERSONAL_LINES, rng.randint(1, 3))).format(**f)
        return (
            self._person(),
            rng.choice(PERSONAL_SUBJECTS).format(**f),
            body,
            [],
            rng.random() < 0.25,
        )

    def _notification(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        domain, brand = rng.choice(SERVICES)
        f["brand"] = brand
        subject, body = rng.choice(NOTIFICATIONS)
        link = f"https://www.{domain}/account/activity?id={self._token()}"
        sender = f"{rng.choice(('no-reply', 'service', 'notifications'))}@{domain}"
        return sender, subject.format(**f), body.format(**f), [link], False

    def _invoice(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        subject, body = rng.choice(INVOICES)
        sender = f"{rng.choice(('billing', 'accounts', 'invoices'))}@{rng.choice(SUPPLIERS)}"
        return sender, subject.format(**f), body.format(**f), [], True

    def _short_request(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        """Shared by friends and CEO-fraud scams: the same code draws both."""
        rng = self._rng
        f = self._fields(recipient)
        subject, body = rng.choice(SHORT_REQUESTS)
        return self._person(), subject.format(**f), body.format(**f), [], False

    # -- spam ----------------------------------------------------------------------------

    def _phishing(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        real, brand = rng.choice(SERVICES)
        fake = rng.choice(LOOKALIKES[real])
        f["brand"] = brand
        subject, body = rng.choice(PHISHING)
        path = rng.choice(("login", "verify", "secure", "pay"))
        link = f"https://{fake}/{path}?id={self._token()}"
        sender = f"{rng.choice(('no-reply', 'security', 'support', 'billing'))}@{fake}"
        return sender, subject.format(**f), body.format(**f), [link], rng.random() < 0.15

    def _advance_fee(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        subject, body = rng.choice(ADVANCE_FEE)
        return self._person(), subject.format(**f), body.format(**f), [], False

    def _pharmacy(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        subject, body = rng.choice(PHARMACY)
        shop = f"{rng.choice(('cheap-meds', 'rx-direct', 'pharma-deals'))}-{rng.randint(1, 99)}"
        links = [f"https://{shop}.shop/{f['drug'].lower()}"]
        if rng.random() < 0.5:
            links.append(f"https://{shop}.shop/unsubscribe")
            body += " Unsubscribe here."
        return self._person(f"{shop}.shop"), subject.format(**f), body.format(**f), links, False

    def _crypto_lottery(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        subject, body = rng.choice(CRYPTO_LOTTERY)
        site = rng.choice(("win-claim.top", "crypto-profit.io", "lucky-draw.xyz"))
        links = [f"https://{site}/claim?ref={self._token()}"]
        sender = rng.choice((self._person(), f"winners@{site}"))
        return sender, subject.format(**f), body.format(**f), links, False

    def _invoice_fraud(self, recipient: str) -> tuple[str, str, str, list[str], bool]:
        rng = self._rng
        f = self._fields(recipient)
        subject, body = rng.choice(INVOICE_FRAUD)
        supplier = rng.choice(SUPPLIERS).split(".", 1)[0]
        domain = rng.choice(
            (
                f"{supplier}-billing.com",
                f"{supplier}.invoices-secure.com",
                f"{supplier}-accounts.net",
            )
        )
        sender = f"{rng.choice(('accounts', 'billing', 'finance'))}@{domain}"
        return sender, subject.format(**f), body.format(**f), [], True
