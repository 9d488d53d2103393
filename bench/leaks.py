"""The leak detector measured on labelled synthetic alias histories: ``python -m bench.leaks``.

The generator models the traffic one alias gets, not the detector's rules: each history
is an alias given to one service (a real-world organisation with the domains it really
mails from, or a made-up brand with the usual sprawl of ccTLDs, mail subdomains and
sending platforms), plus what else ordinary life brings (a friend writing from a
mailbox provider, dictionary spam on a catch-all domain, the owner re-using the alias,
an organisation's sister brand), and in the leaking histories the leak: a list sold to
marketers, a data broker, a phisher (lookalike domains, free mail, or a spoofed From of
the real organisation), or a breach whose spam follows. Every message is labelled with
who sent it; the first message from a party the owner never gave the alias to is the
first leaking message. Seeded: the same seed gives the same histories.

Rates (each history is judged by the real pipeline: ``tagrelay.core.insight.observe``
on the in-memory twin):

- false alarm: histories without a leak that raised any flag;
- early flag: leaking histories flagged before the leak began (a false alarm there too);
- detected at first: leaking histories flagged exactly at their first leaking message;
- missed: leaking histories never flagged at or after the first leaking message;
- the median delay (messages after the first leaking one) of those detected late.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tagrelay.core import insight
from tagrelay.core.insight import Sighting

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0
SEED = 14
HISTORIES = 400


@dataclass(frozen=True)
class Mail:
    at: float
    from_address: str
    envelope: str
    spf_pass: bool
    spam: bool
    who: str  # "service", "friend", "spam", "owner-reuse", "sister", or the leak's party
    leak: bool = False


@dataclass
class History:
    scenario: str
    alias: str
    mails: list[Mail] = field(default_factory=list)

    @property
    def first_leak(self) -> int | None:
        return next((i for i, m in enumerate(self.mails) if m.leak), None)


@dataclass(frozen=True)
class Org:
    """Who mails an alias: From addresses and envelope (bounce) domains, with weights by use."""

    name: str
    senders: tuple[str, ...]  # From addresses; the first ones are the most common
    envelopes: tuple[str, ...]  # envelope sender domains (own bounce domains or their ESP's)


# Real organisations, with the domains their mail comes from (From and bounce domains).
REAL: tuple[Org, ...] = (
    Org("github", ("notifications@github.com", "noreply@github.com", "support@githubsupport.com"),
        ("github.com", "sgmail.github.com")),
    Org("amazon", ("auto-confirm@amazon.com", "shipment-tracking@amazon.de", "order-update@amazon.co.uk",
                   "store-news@amazon.com", "marketplace-messages@amazon.de"),
        ("amazonses.com", "bounces.amazon.com")),
    Org("google", ("no-reply@accounts.google.com", "payments-noreply@google.com", "noreply@youtube.com"),
        ("bounces.google.com", "google.com")),
    Org("paypal", ("service@paypal.de", "service@paypal.com", "paypal@mail.paypal.de",
                   "news@paypal-communication.com"), ("paypal.com", "e.paypal.com")),
    Org("microsoft", ("account-security-noreply@accountprotection.microsoft.com",
                      "msa@communication.microsoft.com", "no-reply@microsoft.com", "noreply@linkedin.com"),
        ("microsoft.com", "email.microsoft.com")),
    Org("meta", ("security@facebookmail.com", "notification@facebookmail.com", "no-reply@mail.instagram.com"),
        ("facebookmail.com", "instagram.com")),
    Org("apple", ("no_reply@email.apple.com", "noreply@insideapple.apple.com", "news@itunes.com"),
        ("email.apple.com", "apple.com")),
    Org("lufthansa", ("booking@lufthansa.com", "newsletter@mailing.lufthansa.com", "service@miles-and-more.com"),
        ("lufthansa.com", "mailing.lufthansa.com")),
    Org("booking", ("noreply@booking.com", "email.campaign@sg.booking.com"), ("booking.com", "sg.booking.com")),
    Org("atlassian", ("jira@acme.atlassian.net", "info@e.atlassian.com", "taco@trello.com"),
        ("atlassian.net", "bounce.atlassian.com")),
    Org("spotify", ("no-reply@spotify.com", "no-reply@alerts.spotify.com"), ("spotify.com",)),
    Org("netflix", ("info@account.netflix.com", "info@mailer.netflix.com"), ("netflix.com",)),
)  # fmt: skip

ESP_BOUNCES = ("amazonses.com", "sendgrid.net", "mcsv.net", "mailgun.org", "sparkpostmail.com", "mtasv.net")
TLDS = ("com", "com", "com", "de", "co.uk", "fr", "io", "net", "nl", "es", "it", "com.au")
FRIEND_DOMAINS = ("gmail.com", "gmail.com", "outlook.com", "yahoo.com", "icloud.com", "web.de", "gmx.de", "proton.me")
SPAM_TLDS = ("xyz", "top", "ru", "info", "biz", "click", "com", "net", "cn", "shop")


def brand(rng: random.Random) -> str:
    syllables = ("ka", "lo", "mi", "ver", "sta", "no", "tri", "zen", "pa", "ro", "lu", "ve", "da", "qu", "bel", "fin")
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) + rng.choice(("", "", "shop", "ly", "io"))


def made_up_org(rng: random.Random) -> Org:
    """A made-up company with the domain sprawl real ones have."""
    name = brand(rng)
    home = f"{name}.{rng.choice(TLDS)}"
    senders = [f"hello@{home}", f"orders@{home}", f"news@mail.{home}", f"noreply@email.{home}"]
    if rng.random() < 0.4:
        senders.append(f"service@{name}.{rng.choice(('de', 'fr', 'co.uk', 'nl'))}")  # a ccTLD shop
    if rng.random() < 0.25:
        senders.append(f"news@{name}{rng.choice(('mail', 'news', '-mail', 'email'))}.com")  # a mail brand
    if rng.random() < 0.15:
        senders.append(f"team@get{name}.com")  # a marketing domain (getX, tryX)
    envelopes = [home, f"bounce.{home}", rng.choice(ESP_BOUNCES), rng.choice(ESP_BOUNCES)]
    return Org(name, tuple(senders), tuple(envelopes))


def pick(rng: random.Random, options: tuple[str, ...]) -> str:
    """The first options are the common ones (Zipf-like weights)."""
    return rng.choices(options, weights=[1 / (i + 1) ** 1.2 for i in range(len(options))])[0]


def stream(rng: random.Random, start: float, end: float, every_days: float) -> list[float]:
    """Arrival times with exponential gaps (a Poisson process)."""
    times: list[float] = []
    t = start
    while True:
        t += rng.expovariate(1 / (every_days * DAY))
        if t >= end:
            return times
        times.append(t)


def from_org(rng: random.Random, org: Org, at: float, who: str, leak: bool = False) -> Mail:
    sender = pick(rng, org.senders)
    envelope = f"bounce-{rng.randint(1, 10**6)}@{pick(rng, org.envelopes)}"
    return Mail(at, sender, envelope, rng.random() < 0.95, rng.random() < 0.02, who, leak)


def friend(rng: random.Random, at: float) -> Mail:
    first = rng.choice(("anna", "ben", "chris", "dana", "eli", "fatima", "goran", "hana"))
    address = f"{first}.{rng.choice(string.ascii_lowercase)}{rng.randint(1, 99)}@{rng.choice(FRIEND_DOMAINS)}"
    return Mail(at, address, address, True, rng.random() < 0.03, "friend")


def platform_mail(rng: random.Random, org: Org, at: float) -> Mail:
    """Payment, shipping and help desks mailing about something from the service."""
    sender = rng.choice(
        ("receipts@stripe.com", "service@paypal.com", "tracking@ups.com", "noreply@dhl.de", "support@zendesk.com",
         f"{org.name}@shopifyemail.com", "noreply@docusign.net", "orders@eventbrite.com")
    )  # fmt: skip
    return Mail(at, sender, f"b@{sender.partition('@')[2]}", True, False, "service")


def random_domain(rng: random.Random) -> str:
    word = rng.choice(("deals", "promo", "mart", "web", "net", ""))
    return f"{brand(rng)}{rng.choice(('', '-', ''))}{word}.{rng.choice(SPAM_TLDS)}"


def spam_mail(rng: random.Random, at: float, who: str, flagged: float, leak: bool) -> Mail:
    domain = random_domain(rng)
    return Mail(at, f"{rng.choice(('info', 'win', 'offer', 'admin'))}@{domain}", f"x@{domain}",
                rng.random() < 0.4, rng.random() < flagged, who, leak)  # fmt: skip


def lookalike(rng: random.Random, org: Org) -> str:
    """A phisher's domain imitating the service (registered lookalikes, not the real one)."""
    stem = org.name
    return rng.choice(
        (f"{stem}-security.com", f"{stem}-verify.net", f"secure-{stem}.com", f"{stem}support-team.com",
         f"{stem[:-1]}{stem[-1] * 2}.com", f"{stem.replace('o', '0').replace('l', '1')}.com",
         f"{stem}-account.info", f"login-{stem}.co", f"{stem}.com-id{rng.randint(10, 99)}.ru",
         f"{stem}alerts.net")
    )  # fmt: skip


# -- leaks: who writes once the alias is out -------------------------------------------------------


def leak_marketers(rng: random.Random, org: Org, start: float, end: float) -> list[Mail]:
    mails = []
    for _ in range(rng.randint(1, 4)):
        other = made_up_org(rng)
        first = start + rng.uniform(0, 20) * DAY
        for at in [first, *stream(rng, first, end, rng.uniform(3, 15))]:
            mail = from_org(rng, other, at, "marketer", leak=True)
            mails.append(Mail(at, mail.from_address, mail.envelope, mail.spf_pass, rng.random() < 0.2,
                              "marketer", True))  # fmt: skip
    return mails


def leak_broker(rng: random.Random, org: Org, start: float, end: float) -> list[Mail]:
    domain = (
        f"{brand(rng)}{rng.choice(('data', 'leads', 'people', 'finder', 'search'))}.{rng.choice(('com', 'net', 'io'))}"
    )
    return [Mail(at, f"hello@{domain}", f"b@{domain}", True, rng.random() < 0.1, "broker", True)
            for at in [start, *stream(rng, start, end, 20)][: rng.randint(1, 4)]]  # fmt: skip


def leak_phisher(rng: random.Random, org: Org, start: float, end: float) -> list[Mail]:
    style = rng.random()
    mails = []
    for at in [start, *stream(rng, start, min(end, start + 30 * DAY), 6)][: rng.randint(1, 3)]:
        if style < 0.7:
            domain = lookalike(rng, org)
            mails.append(Mail(at, f"security@{domain}", f"x@{domain}", rng.random() < 0.7,
                              rng.random() < 0.3, "phisher", True))  # fmt: skip
        elif style < 0.85:  # from a free mailbox
            address = f"{org.name}.support{rng.randint(1, 999)}@{rng.choice(FRIEND_DOMAINS)}"
            mails.append(Mail(at, address, address, True, rng.random() < 0.3, "phisher", True))
        else:  # the real organisation's From, spoofed (SPF fails)
            real = pick(rng, org.senders)
            mails.append(Mail(at, real, f"x@{random_domain(rng)}", False, rng.random() < 0.5, "phisher", True))
    return mails


def leak_breach(rng: random.Random, org: Org, start: float, end: float) -> list[Mail]:
    return [spam_mail(rng, at, "breach", 0.5, True) for at in [start, *stream(rng, start, end, 2)]]


LEAKS: dict[str, Callable[[random.Random, Org, float, float], list[Mail]]] = {
    "marketers": leak_marketers,
    "broker": leak_broker,
    "phisher": leak_phisher,
    "breach": leak_breach,
}


def history(rng: random.Random, number: int, leaking: bool) -> History:
    org = rng.choice(REAL) if rng.random() < 0.45 else made_up_org(rng)
    days = rng.uniform(60, 240)
    end = START + days * DAY
    scenario = rng.choice(("newsletter", "transactional", "shop", "account"))
    h = History(scenario, f"{org.name}-{number}@example.org")
    every = {"newsletter": 7, "transactional": 12, "shop": 20, "account": 30}[scenario] * rng.uniform(0.5, 1.5)
    signup = START
    h.mails.append(from_org(rng, org, signup, "service"))
    h.mails += [from_org(rng, org, at, "service") for at in stream(rng, signup, end, every)]
    if scenario == "shop":  # an order: payment, shipping, maybe a help desk, on and after sign-up
        for at in stream(rng, signup, end, 45) or [signup + DAY]:
            h.mails += [platform_mail(rng, org, at + rng.uniform(0, 3) * DAY) for _ in range(rng.randint(1, 3))]
    extras = []
    if rng.random() < 0.2:
        extras.append("friend")
    if rng.random() < 0.25:
        extras.append("dictionary spam")
    if rng.random() < 0.06:
        extras.append("owner re-used it")
    if rng.random() < 0.08:
        extras.append("sister brand")
    for extra in extras:
        at = signup + rng.uniform(1, days) * DAY
        if extra == "friend":
            h.mails += [friend(rng, t) for t in [at, *stream(rng, at, end, 20)][:3]]
        elif extra == "dictionary spam":
            h.mails += [spam_mail(rng, at + i * rng.uniform(0, 2) * 3600, "spam", 0.85, False)
                        for i in range(rng.randint(1, 8))]  # fmt: skip
        elif extra == "owner re-used it":
            other = made_up_org(rng)
            h.mails += [from_org(rng, other, t, "owner-reuse") for t in [at, *stream(rng, at, end, 10)]]
        else:  # the service's new brand or partner, mailing from its own domain
            sister = made_up_org(rng)
            h.mails += [from_org(rng, Org(sister.name, sister.senders, org.envelopes), t, "sister")
                        for t in [at, *stream(rng, at, end, 15)][:4]]  # fmt: skip
    if extras:
        h.scenario += " + " + " + ".join(extras)
    if leaking:
        kind = rng.choice(tuple(LEAKS))
        # Sold or leaked later in the alias's life; now and then at sign-up (a partner deal).
        begin = signup + (rng.uniform(0.1, 2) if rng.random() < 0.1 else rng.uniform(5, days * 0.8)) * DAY
        h.mails += LEAKS[kind](rng, org, begin, end)
        h.scenario += f" + leak: {kind}"
    h.mails.sort(key=lambda m: m.at)
    return h


def generate(count: int = HISTORIES, seed: int = SEED) -> list[History]:
    """``count`` histories, every other one leaking, the same for the same seed."""
    rng = random.Random(seed)
    return [history(rng, n, leaking=n % 2 == 1) for n in range(count)]


# -- the detector on each history -----------------------------------------------------------------


def flags(h: History) -> list[int]:
    """Indices of the messages the detector flagged, through the relay's own path on the memory twin."""
    from tagrelay.adapters.insight import MemoryInsight

    store = MemoryInsight()
    found = []
    for index, mail in enumerate(h.mails):
        seen = Sighting(h.alias, mail.at, mail.from_address, mail.from_address, "offer", "", mail.envelope,
                        mail.spf_pass, mail.spam)  # fmt: skip
        flag = insight.observe(store, seen)
        if flag is not None:
            found.append(index)
            write = insight.leak_write(flag.record, flag.leak, flag.notify)
            if write is not None:
                store.update(h.alias, write)
    return found


@dataclass(frozen=True)
class Rates:
    histories: int
    clean: int
    leaking: int
    false_alarm: float
    early_flag: float
    at_first: float
    missed: float
    late_median: float
    misses: Counter[str]
    false_alarms: Counter[str]


def evaluate(histories: list[History]) -> Rates:
    clean = [h for h in histories if h.first_leak is None]
    leaking = [h for h in histories if h.first_leak is not None]
    false_alarms: Counter[str] = Counter()
    misses: Counter[str] = Counter()
    early = at_first = missed = 0
    delays = []
    for h in clean:
        if flags(h):
            false_alarms[h.scenario.split(" + ", 1)[-1] if " + " in h.scenario else h.scenario] += 1
    for h in leaking:
        first, found = h.first_leak or 0, flags(h)
        if any(i < first for i in found):
            early += 1
        after = [i for i in found if i >= first]
        if not after:
            missed += 1
            misses[h.scenario.rsplit("leak: ", 1)[-1]] += 1
        elif after[0] == first:
            at_first += 1
        else:
            delays.append(after[0] - first)
    return Rates(
        len(histories),
        len(clean),
        len(leaking),
        sum(false_alarms.values()) / len(clean),
        early / len(leaking),
        at_first / len(leaking),
        missed / len(leaking),
        statistics.median(delays) if delays else 0.0,
        misses,
        false_alarms,
    )


def table(rates: Rates) -> list[str]:
    return [
        f"| histories | {rates.histories} ({rates.clean} without a leak, {rates.leaking} leaking) |",
        "| --- | --- |",
        f"| false alarm (a history without a leak flagged at all) | {rates.false_alarm:.1%} |",
        f"| early flag (a leaking history flagged before its leak) | {rates.early_flag:.1%} |",
        f"| detected at the first leaking message | {rates.at_first:.1%} |",
        f"| missed (never flagged from the first leaking message on) | {rates.missed:.1%} |",
        f"| detected later: median messages after the first leaking one | {rates.late_median:g} |",
        f"| false alarms by cause | {dict(rates.false_alarms.most_common())} |",
        f"| misses by leak | {dict(rates.misses.most_common())} |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.leaks", description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=HISTORIES)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    rates = evaluate(generate(args.histories, args.seed))
    for line in table(rates):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
