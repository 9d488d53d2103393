"""What the relay learns about each alias, and the leak signal (issue 14, the Insight half). Pure.

After a forwarded message is sent, the relay records one :class:`Sighting` in the
alias's document of ``tagrelay_aliases`` (schema in :mod:`tagrelay.core.aliases`):

``alias``, ``first_seen``, ``last_seen``
    the alias key; seconds since the epoch (a ``Minimum`` / ``Maximum`` transform,
    so two relays racing never move them the wrong way).
``messages``, ``spam``
    forwarded messages, and those Mailgun flagged as spam (``Increment``).
``days``
    ``{"YYYY-MM-DD": count}`` per UTC day. Each write deletes the keys 31 to 61 days
    old (field deletes in the same write, no read), so the map holds at most 31
    days while the alias gets mail; readers count only the last 30 days
    (:func:`last_30_days`), whatever is left from a longer silence.
``domains``
    ``{registrable domain: {"count", "first_seen"}}`` of the non-spam messages that passed
    Mailgun's SPF check: the organisations whose mail reached the alias (what a lock lets
    through). Spam never adds a domain, so a spammer's domain never becomes a "known" sender;
    nor does a From without SPF ``Pass`` (it names nobody for sure): one forged From of the
    leaker's own domain would make its real mail "not new", and forged Froms of four unrelated
    organisations would make the alias look shared, both hiding a leak. Such mail is counted in
    ``messages`` only.
    Capped at :data:`MAX_DOMAINS` entries: past the cap a new domain is counted in
    ``domains_dropped`` instead (the leak check still runs against the known ones).
``leaks``
    ``{domain: evidence}`` of each flagged new organisation (capped at :data:`MAX_LEAKS`).

One message costs one Firestore commit (all of the above as transforms and merge
fields, no read): the commit answers the new ``domains.<d>.count``, and only
when it is 1 (a domain never seen before) is the document read to judge a leak.

The leak signal (:func:`judge`): an alias *established* with an organisation starts
receiving non-spam mail, from a sender that passed Mailgun's SPF check, from an
*unrelated* organisation. Established means at least :data:`ESTABLISHED_MESSAGES`
non-spam messages from organisations over at least :data:`ESTABLISHED_SECONDS`, or
one message :data:`QUIET_ESTABLISHED_SECONDS` ago (an account that mails once a
quarter): a sign-up brings mail from several parties at once (the shop, its payment
and shipping partners), which is the baseline, not a leak. Unauthenticated mail (SPF
not ``Pass``) never flags: its From names nobody for sure, and most of it is spam.
An alias that already receives from more than :data:`MAX_KNOWN_ORGS` unrelated
organisations is shared (given to many) and carries no signal. A new domain is
*related* to a known one (never flagged) when:

- it has the same registrable domain or the same *stem* (the label left of the ICANN
  public suffix: ``amazon.de`` / ``amazon.co.uk`` / ``amazon.com``; ``user.github.io``
  and ``github.com`` are both ``github``);
- one stem is the other plus an infrastructure word (:data:`INFRA_WORDS`, with or
  without a hyphen): ``githubusercontent``, ``amazonses``, ``paypal-communication``;
  or a marketing prefix before it (:data:`MARKETING_PREFIXES`: ``getdave``); never
  ``github-security``, ``securegithub`` or ``githubb`` (the phisher's lookalikes);
- Mailgun's SPF verdict is ``Pass`` and the envelope sender's domain is known or
  related (an organisation's new brand sending through its own bounce domain);
- it is a consumer mailbox provider (:data:`FREEMAIL`: a friend writes from Gmail) or a
  sending platform (:data:`PLATFORMS`: ESPs, payment, shipping and help-desk services
  that mail on behalf of whoever the alias was given to).

Spam-flagged messages never raise it (a catch-all domain gets dictionary spam).
A flag is noted once per alias and domain (a create-precondition marker in the
adapter) and notified at most :data:`NOTICES_PER_DAY` times per alias and
:data:`NOTICES_PER_DAY_ALL` times across all aliases per UTC day (two counters the adapter
increments atomically for every flag, :func:`notice_allowed`): a flag over either limit is
still logged and recorded in ``leaks``, only the mail is withheld. The limits are counted
apart from ``leaks``, which stops growing at :data:`MAX_LEAKS`.
"""

from __future__ import annotations

import email.utils
import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tagrelay.core.aliases import registrable_domain
from tagrelay.core.errors import TransientError
from tagrelay.core.headers import clean_text, decode_words, first, header_fields
from tagrelay.core.ports import AliasInsight
from tagrelay.core.reply import mailgun_verdicts

DAYS_KEPT = 31
MAX_DOMAINS = 100  # ~10 kB of the 1 MiB document; a lock with more than this is no lock
MAX_LEAKS = 20
ESTABLISHED_MESSAGES = 2
ESTABLISHED_SECONDS = 2 * 24 * 3600.0
QUIET_ESTABLISHED_SECONDS = 14 * 24 * 3600.0  # one message a week ago establishes a quiet alias too
MAX_KNOWN_ORGS = 3
NOTICES_PER_DAY = 2
NOTICES_PER_DAY_ALL = 10  # across aliases: a list of aliases sold at once is one problem, not a mail per alias
REQUIRE_SPF = True
MAX_SHOWN = 200
MAX_DOMAIN_CHARS = 253
# A sender domain becomes a Firestore map key: letters, digits, hyphens and underscores between dots
# (IDNA form), never a reserved ``__name__``: a From domain a sender made up cannot break the write.
_DNS_NAME = re.compile(r"(?!__)[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")

# Consumer mailbox providers (registrable domains): anyone may write from them. Not a suffix list.
FREEMAIL = frozenset(
    {
        "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.de",
        "hotmail.fr", "live.com", "msn.com", "yahoo.com", "yahoo.co.uk", "yahoo.de", "yahoo.fr", "ymail.com",
        "icloud.com", "me.com", "mac.com", "aol.com", "proton.me", "protonmail.com", "pm.me", "gmx.de",
        "gmx.net", "gmx.com", "gmx.at", "gmx.ch", "web.de", "t-online.de", "freenet.de", "posteo.de",
        "mailbox.org", "tutanota.com", "tuta.io", "fastmail.com", "zoho.com", "yandex.ru", "yandex.com",
        "mail.ru", "orange.fr", "free.fr", "laposte.net", "libero.it", "qq.com", "163.com", "naver.com",
        "hey.com", "seznam.cz", "wp.pl", "o2.pl", "bluewin.ch",
    }
)  # fmt: skip

# Services that send on behalf of others: their mail follows from whoever has the alias.
PLATFORMS = frozenset(
    {
        # email service providers and their shared sending domains
        "amazonses.com", "sendgrid.net", "sendgrid.com", "mailgun.org", "mailgun.net", "mailchimp.com",
        "mailchimpapp.com", "mcsv.net", "mcdlv.net", "rsgsv.net", "mandrillapp.com", "sparkpostmail.com",
        "postmarkapp.com", "mtasv.net", "sendinblue.com", "brevo.com", "sib.email", "constantcontact.com",
        "ccsend.com", "createsend.com", "cmail19.com", "cmail20.com", "hubspotemail.net", "hs-email.net",
        "klaviyomail.com", "klaviyo.com", "customeriomail.com", "mailjet.com", "mailerlite.com",
        "convertkit-mail.com", "substack.com", "beehiiv.com", "ghost.io", "salesforce.com", "exacttarget.com",
        "intercom-mail.com", "intercom.io", "zendesk.com", "freshdesk.com", "helpscout.net", "bounces.google.com",
        # shops, payment, signatures, calendars: mail sent for the merchant or the inviter
        "shopify.com", "shopifyemail.com", "squarespace.com", "wix.com", "stripe.com", "paypal.com",
        "docusign.net", "calendly.com", "eventbrite.com", "typeform.com", "surveymonkey.com",
        # carriers: the shipment of something the owner ordered
        "ups.com", "fedex.com", "dhl.com", "dhl.de", "usps.com", "royalmail.com", "dpd.de", "hermesworld.com",
    }
)  # fmt: skip

INFRA_WORDS = (
    "usercontent", "ses", "mail", "mails", "email", "emails", "mailer", "mailing", "news", "newsletter",
    "notifications", "notification", "notify", "app", "apps", "static", "cdn", "inc", "corp", "group", "hq",
    "info", "em", "mktg", "marketing", "communication", "communications", "comms", "service", "services",
)  # fmt: skip


# A marketing domain in front of the brand: getdave.com, trynotion.com, joinhoney.com (never "secure", "login", "my").
MARKETING_PREFIXES = ("get", "try", "join", "use")


@functools.cache
def _icann() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList(only_icann=True)


@functools.lru_cache(maxsize=4096)
def org_stem(domain: str) -> str:
    """The label left of the ICANN public suffix: ``mail.amazon.co.uk`` -> ``amazon``; ``a.github.io`` -> ``github``."""
    found = _icann().privatesuffix(domain) if domain else None
    return str(found).partition(".")[0] if found else domain.partition(".")[0]


@functools.lru_cache(maxsize=4096)
def kind(domain: str) -> str:
    """``freemail``, ``platform`` or ``org`` (a registrable domain, or a domain under one of the lists)."""
    for candidate in (domain, _registrable(domain), _icann().privatesuffix(domain) or ""):
        if candidate in FREEMAIL:
            return "freemail"
        if candidate in PLATFORMS:
            return "platform"
    return "org"


def _extends(longer: str, shorter: str) -> bool:
    if len(shorter) < 3:
        return False
    if longer.startswith(shorter):
        return longer[len(shorter) :].removeprefix("-") in INFRA_WORDS
    if longer.endswith(shorter):
        return longer[: -len(shorter)] in MARKETING_PREFIXES
    return False


@functools.lru_cache(maxsize=16384)
def related(a: str, b: str) -> bool:
    """Whether two domains plausibly belong to one organisation (see the module docstring)."""
    if not a or not b:
        return False
    if a == b or _registrable(a) == _registrable(b):
        return True
    sa, sb = org_stem(a), org_stem(b)
    return sa == sb or _extends(sa, sb) or _extends(sb, sa)


def day_key(at: float) -> str:
    return _day(int(at // 86400))


@functools.lru_cache(maxsize=1024)
def _day(number: int) -> str:
    return datetime.fromtimestamp(number * 86400, UTC).strftime("%Y-%m-%d")


@functools.lru_cache(maxsize=8192)
def _registrable(address_or_domain: str) -> str:
    return registrable_domain(address_or_domain)


def last_30_days(days: dict[str, Any], now: float) -> int:
    """Messages in the last 30 UTC days (today included) from a ``days`` map."""
    keep = {day_key(now - n * 86400) for n in range(30)}
    return sum(int(v) for k, v in days.items() if k in keep)


# -- one message ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """One forwarded message, as far as the insight needs it."""

    alias: str
    at: float
    from_address: str  # the From header's (first) address, lower case; "" when there is none
    shown_from: str = ""  # the From field decoded to one line, for the evidence
    subject: str = ""
    date: str = ""  # the Date field as written
    envelope_sender: str = ""
    spf_pass: bool = False  # Mailgun's own X-Mailgun-Spf verdict
    spam: bool = False

    @functools.cached_property
    def domain(self) -> str:
        """The From address's organisation, or "" when it is not a plain DNS name (then it is only counted)."""
        found = _registrable(self.from_address.rpartition("@")[2]) if self.from_address else ""
        return found if len(found) <= MAX_DOMAIN_CHARS and _DNS_NAME.fullmatch(found) else ""


def _shown(value: str) -> str:
    return clean_text(value)[:MAX_SHOWN]


def sighting(alias: str, raw: bytes, envelope_sender: str, spam: bool, at: float) -> Sighting:
    """Read a sighting from a message's header block (never raises for anything in ``raw``)."""
    fields = header_fields(raw)
    sender = first(fields, "from")
    shown_from = sender.value if sender is not None else ""
    address = ""
    if sender is not None:
        found = [a for _, a in email.utils.getaddresses([sender.unfolded]) if "@" in a]
        address = found[0].strip().lower() if found else ""
    subject = first(fields, "subject")
    date = first(fields, "date")
    return Sighting(
        alias=alias,
        at=at,
        from_address=address[:320],
        shown_from=_shown(shown_from),
        subject=_shown(decode_words(subject.unfolded) if subject is not None else ""),
        date=_shown(date.unfolded if date is not None else ""),
        envelope_sender=envelope_sender.strip().lower()[:320],
        spf_pass=mailgun_verdicts(fields).spf == "pass",
        spam=spam,
    )


Path = tuple[str, ...]


@dataclass(frozen=True)
class Write:
    """A merge write to one alias document: every path is a tuple of map keys (dots allowed inside a key)."""

    sets: dict[Path, Any] = field(default_factory=dict)
    increments: dict[Path, int] = field(default_factory=dict)
    minimums: dict[Path, float] = field(default_factory=dict)
    maximums: dict[Path, float] = field(default_factory=dict)
    deletes: tuple[Path, ...] = ()

    def transforms(self) -> list[Path]:
        """The transformed paths in the order Firestore answers their results (sorted by path parts)."""
        return sorted([*self.increments, *self.minimums, *self.maximums])


def count_path(domain: str) -> Path:
    return ("domains", domain, "count")


def write_for(seen: Sighting) -> Write:
    """What one message adds to its alias's record (no read needed)."""
    day = day_key(seen.at)
    increments: dict[Path, int] = {("messages",): 1, ("spam",): int(seen.spam), ("days", day): 1}
    minimums: dict[Path, float] = {("first_seen",): seen.at}
    if not seen.spam and seen.domain and seen.spf_pass:
        increments[count_path(seen.domain)] = 1
        minimums[("domains", seen.domain, "first_seen")] = seen.at
    stale = tuple(("days", day_key(seen.at - n * 86400)) for n in range(DAYS_KEPT, 2 * DAYS_KEPT))
    return Write(
        sets={("alias",): seen.alias},
        increments=increments,
        minimums=minimums,
        maximums={("last_seen",): seen.at},
        deletes=stale,
    )


def drop_domain(domain: str) -> Write:
    """Undo a new domain past the cap: it is counted in ``domains_dropped`` instead."""
    return Write(increments={("domains_dropped",): 1}, deletes=(("domains", domain),))


def over_cap(record: dict[str, Any]) -> bool:
    return len(record.get("domains") or {}) > MAX_DOMAINS


def apply(record: dict[str, Any], write: Write) -> dict[str, Any]:
    """``write`` applied to a record (a copy), as Firestore applies it: the in-memory twins and the bench."""
    out = _copy(record)
    for path, value in write.sets.items():
        _put(out, path, value)
    for path in write.deletes:
        parent = _get(out, path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    for path, by in write.increments.items():
        current = _get(out, path)
        _put(out, path, (current if isinstance(current, int | float) else 0) + by)
    for path, value in write.minimums.items():
        current = _get(out, path)
        _put(out, path, min(current, value) if isinstance(current, int | float) else value)
    for path, value in write.maximums.items():
        current = _get(out, path)
        _put(out, path, max(current, value) if isinstance(current, int | float) else value)
    return out


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in value.items()}


def _get(record: dict[str, Any], path: Path) -> Any:
    current: Any = record
    for part in path:
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def _put(record: dict[str, Any], path: Path, value: Any) -> None:
    current = record
    for part in path[:-1]:
        nested = current.get(part)
        if not isinstance(nested, dict):
            nested = current[part] = {}
        current = nested
    current[path[-1]] = value


# -- the leak signal --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    """A new organisation writing to an established alias, with the evidence."""

    alias: str
    domain: str
    at: float
    shown_from: str
    subject: str
    date: str
    known: tuple[str, ...]  # the domains seen before, most messages first (at most 10)

    def evidence(self, notified: bool) -> dict[str, Any]:
        return {
            "at": self.at,
            "from": self.shown_from,
            "subject": self.subject,
            "date": self.date,
            "known": list(self.known),
            "notified": notified,
        }


def _groups(domains: list[str]) -> int:
    """How many unrelated organisations a list of domains stands for."""
    groups: list[str] = []
    for domain in domains:
        if not any(related(domain, other) for other in groups):
            groups.append(domain)
    return len(groups)


def judge(record: dict[str, Any], seen: Sighting) -> Leak | None:
    """The leak verdict for a message from a domain new to the alias; ``record`` already counts it."""
    domain = seen.domain
    if not domain or seen.spam or kind(domain) != "org":
        return None
    if REQUIRE_SPF and not seen.spf_pass:
        return None  # the envelope did not pass SPF: unauthenticated mail names no organisation
    domains: dict[str, Any] = {k: v for k, v in (record.get("domains") or {}).items() if k != domain}
    leaks = record.get("leaks") or {}
    if domain in leaks:
        return None
    orgs = [d for d in domains if kind(d) == "org"]
    if not orgs:
        return None  # nothing established with an organisation: friends and platforms only
    before = sum(int((domains[d] or {}).get("count", 0)) for d in orgs)
    since = min(float((domains[d] or {}).get("first_seen", seen.at)) for d in orgs)
    age = seen.at - since
    if not (before >= ESTABLISHED_MESSAGES and age >= ESTABLISHED_SECONDS) and age < QUIET_ESTABLISHED_SECONDS:
        return None
    if _groups(orgs) > MAX_KNOWN_ORGS:
        return None  # a shared alias: new organisations are its normal traffic
    if any(related(domain, known) for known in domains):
        return None
    bounce = seen.envelope_sender.rpartition("@")[2] if seen.spf_pass and "@" in seen.envelope_sender else ""
    envelope = _registrable(bounce) if bounce else ""
    if envelope and envelope != domain and any(related(envelope, known) for known in domains):
        return None
    ranked = sorted(domains, key=lambda d: (-int((domains[d] or {}).get("count", 0)), d))[:10]
    return Leak(seen.alias, domain, seen.at, seen.shown_from, seen.subject, seen.date, tuple(ranked))


def notice_allowed(alias_count: int, all_count: int) -> bool:
    """Whether a flag may be notified: the counts of flags today (this one included), per alias and in all."""
    return alias_count <= NOTICES_PER_DAY and all_count <= NOTICES_PER_DAY_ALL


def leak_write(record: dict[str, Any], leak: Leak, notified: bool) -> Write | None:
    """The ``leaks`` entry to record (None past MAX_LEAKS: the marker still keeps it once)."""
    if len(record.get("leaks") or {}) >= MAX_LEAKS:
        return None
    return Write(sets={("leaks", leak.domain): leak.evidence(notified)})


# -- one message through a store ------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    leak: Leak
    notify: bool  # within the notice rate limit
    record: dict[str, Any]  # the alias record as read (with this message counted)


def observe(store: AliasInsight, seen: Sighting) -> Flag | None:
    """Record ``seen`` (one commit); for a domain new to the alias, read the record and judge it.

    A flag is returned once per alias and domain, even when two relays race on it
    (``claim_leak`` creates a marker with a precondition), and counted against the daily notice
    limits (``count_notice``, atomic increments); the caller notifies the owner
    when ``notify`` says so, then records the evidence with :func:`leak_write`.
    """
    record = store.observe(seen.alias, write_for(seen), seen.domain if not seen.spam else "")
    if record is None:
        return None
    if over_cap(record):
        store.update(seen.alias, drop_domain(seen.domain))
    leak = judge(record, seen)
    if leak is None or not store.claim_leak(seen.alias, leak.domain, leak.evidence(False)):
        return None
    try:
        alias_count, all_count = store.count_notice(seen.alias, day_key(seen.at))
    except TransientError:  # the marker is taken: a notice withheld now is never sent; it stays once per domain
        alias_count = all_count = 1
    return Flag(leak, notice_allowed(alias_count, all_count), record)


# -- the owner's notice ------------------------------------------------------------------------------


def leak_notice(leak: Leak, to: str, block_url: str = "") -> bytes:
    """The leak notice as MIME bytes: plain text, every sender-controlled value cleaned and encoded."""
    from tagrelay.core.notice import build_text_notice

    # Every value is cleaned again here (one line, no control characters), whoever built the Leak:
    # the text is base64 (no header can come of it), but a CR or an ESC would still forge lines.
    leak = Leak(
        _shown(leak.alias), _shown(leak.domain), leak.at, _shown(leak.shown_from), _shown(leak.subject),
        _shown(leak.date), tuple(_shown(k) for k in leak.known),
    )  # fmt: skip
    when = datetime.fromtimestamp(leak.at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    known = ", ".join(leak.known) or "(none)"
    text = (
        f"Your alias {leak.alias} received mail from an organisation it never heard from before:\n\n"
        f"  new domain: {leak.domain}\n"
        f"  received:   {when}\n"
        f"  date:       {leak.date or '(none)'}\n"
        f"  from:       {leak.shown_from or '(none)'}\n"
        f"  subject:    {leak.subject or '(no subject)'}\n\n"
        f"Until now it heard only from: {known}\n\n"
        "If you never gave this alias to them, it leaked or was sold. To cut it off:\n"
        f"  tagrelay block {leak.alias}    refuse all mail to it\n"
        f"  tagrelay lock {leak.alias}     let only the domains above through\n"
    )
    if block_url:
        text += f"\nOr block it with one click: {_shown(block_url)}\n"
    text += (
        f"\nYou get this once per alias and new domain, at most {NOTICES_PER_DAY} a day per alias and "
        f"{NOTICES_PER_DAY_ALL} a day in all ('tagrelay aliases' lists every flag).\n"
    )
    subject = f"Possible leak: {leak.alias} got mail from {leak.domain}"
    return build_text_notice(leak.alias, to, subject, text)
