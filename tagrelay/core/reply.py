"""Replying as the alias: who may, and what the reply looks like when it leaves. Pure.

A message to a reverse address (``tagrelay.core.reverse``) is either the owner's
reply, sent on to the correspondent as the alias, or anything else, forwarded to the
owner like ordinary mail and marked. It is the owner's reply only when all hold:

1. the reverse address verifies (MAC under the current or previous reply key) and its
   contact record is the pair the address stands for;
2. the SMTP envelope sender and the single ``From`` address are both mailboxes of the
   alias's forward targets: compared without the ``+detail``, case-insensitively, with
   Gmail's rules (dots in the local part do not count; googlemail.com is gmail.com);
3. Mailgun's own verdicts pass: ``X-Mailgun-Spf: Pass`` and
   ``X-Mailgun-Dkim-Check-Result: Pass`` (names and values as Mailgun documents them
   for inbound mail: SPF Pass/Neutral/Fail/SoftFail, DKIM Pass/Fail, the latter only
   when the message is signed). They are read only from the run of ``X-Mailgun-*``
   fields at the very top of the header block, which Mailgun prepends above its own
   ``X-Envelope-From`` and ``Received`` lines; anything the sender wrote comes after
   those, so a sender's ``X-Mailgun-Spf: Pass`` lower down is never read, and a name
   that appears twice in the top run counts as no verdict. SPF is what binds the
   envelope sender's domain to the sending server; Mailgun's DKIM verdict does not
   say which domain signed, so it is a second check, never the only one.

The reply rewrite changes only the header block: ``From`` becomes the alias (with the
route's ``reply_name``), ``To`` the correspondent, ``Cc`` and ``Reply-To`` are rebuilt
without the owner, and only the fields in :data:`KEPT` stay, exactly as written (Subject,
Date, Message-ID, In-Reply-To, References, the MIME fields): an allow-list, because every
mail system adds fields of its own that name the mailbox (Yahoo's ``X-Sonic-MF``,
``Autocrypt: addr=``, Gmail's ``X-Gm-*``); :data:`DROPPED` lists the well-known ones and
why. The body bytes are never touched.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tagrelay.core import reverse
from tagrelay.core.errors import LedgerUnavailable, SecretUnavailable, Unrewritable
from tagrelay.core.headers import Field, body_offset, decode_words, first, line_ending, parse_fields
from tagrelay.core.log import event
from tagrelay.core.ports import Contact, ContactCount, Contacts, KeySource, Mime
from tagrelay.core.rewrite import rewrite
from tagrelay.core.routes import is_valid_address, normalize

REPLY_MARK_HEADER = "X-Tagrelay-Reply-Address"
STRANGER_PREFIX = b"[to your reply address] "
LOOP_HEADER = "X-Tagrelay-Loop"
GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

# Well-known fields that name or fingerprint the owner's mailbox, or would lie after the
# resend; documentation and tests: the rewrite keeps only KEPT, so these and any others go.
DROPPED = frozenset(
    {
        "from",  # the owner's address: replaced by the alias
        "to",  # the reverse address: replaced by the correspondent
        "sender",  # the owner's address
        "return-path",  # the owner's envelope address
        "received",  # the owner's chain: Gmail's servers, the owner's client IP, Mailgun's MX
        "x-received",  # Gmail's internal trace, with ids tied to the mailbox
        "received-spf",  # names the owner's envelope address and sending IP
        "authentication-results",  # names the owner's domain and address
        "dkim-signature",  # signs the owner's From; would fail after the rewrite anyway
        "domainkey-signature",
        "x-originating-ip",  # the owner's client IP (Outlook, Yahoo)
        "x-originating-email",
        "delivered-to",
        "bcc",
        "errors-to",
        "disposition-notification-to",  # read receipts go to the owner's real address
        "return-receipt-to",
        "x-envelope-from",  # Mailgun's copy of the owner's envelope address
        "x-forwarded-to",
        "x-forwarded-for",
        "user-agent",  # the owner's client and platform
        "x-mailer",
        "autocrypt",  # addr= names the owner's mailbox
        "openpgp",
        "x-sonic-mf",  # Yahoo/AOL: the sender's address
        "x-ymail-osg",
    }
)
# Whole families: Gmail's (X-Gm-Message-State, X-Google-Smtp-Source, X-Google-DKIM-Signature),
# ARC seals and results naming the owner's domain, Mailgun's inbound verdicts, and our own
# headers (never trusted from a sender).
DROPPED_PREFIXES = (
    "x-gm-",
    "x-gmail-",
    "x-google-",
    "arc-",
    "x-mailgun-",
    "x-tagrelay-",
    "x-original-",
    "x-ms-exchange-",
    "x-microsoft-",
    "x-apple-",
)


# The only fields of the owner's reply that leave as written (Cc and Reply-To are rebuilt).
KEPT = frozenset(
    {
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
        "content-id",
        "content-description",
        "accept-language",
        "thread-topic",
        "thread-index",
        "importance",
        "priority",
        "x-priority",
        "sensitivity",
        "auto-submitted",  # RFC 3834: keeps auto-replies (the owner's vacation notice) from looping
        "x-auto-response-suppress",
        "precedence",
    }
)


# What tagrelay.core.inbound.rebuild_mime writes above the headers of Mailgun's parsed form
# (it drops the sender's own structure fields). Nothing a sender writes can come before
# Mailgun's prepended block in the raw form, so skipping these opens nothing.
_REBUILT_FIRST = frozenset({"mime-version", "content-type", "content-transfer-encoding"})


@dataclass(frozen=True)
class Verdicts:
    spf: str  # lower case; "" when Mailgun added none (or added it twice)
    dkim: str


@dataclass(frozen=True)
class Identified:
    """What a reverse address stands for, as far as it can be trusted."""

    alias: str  # the alias to route ("" when the address names none)
    contact: Contact | None  # set only when the MAC verified and the record is the address's pair
    reason: str  # why the message cannot be a reply through this address ("" when it can)


def identify(parsed: reverse.ReverseAddress, mac_ok: bool, contact: Contact | None) -> Identified:
    """Combine the MAC check and the record lookup (done only after the MAC verified)."""
    if not mac_ok:
        return Identified(parsed.alias, None, "the reply address is not valid (altered or made up)")
    if contact is None or not reverse.matches(parsed, contact.alias, contact.correspondent):
        return Identified(parsed.alias, None, "the reply address has no contact record")
    return Identified(contact.alias, contact, "")


def mailbox(address: str) -> str:
    """The mailbox an address delivers to: no ``+detail``, lower case, Gmail's dots ignored."""
    normal = normalize(address)
    if normal is None:
        return ""
    local, _, domain = normal.rpartition("@")
    local = local.partition("+")[0]
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}" if local else ""


def mailgun_verdicts(fields: list[Field]) -> Verdicts:
    """Mailgun's SPF and DKIM verdicts, from the X-Mailgun-* run at the top of the block only."""
    seen: dict[str, list[str]] = {}
    start = 0
    while start < len(fields) and fields[start].name in _REBUILT_FIRST:
        start += 1  # a message rebuilt from Mailgun's parsed form starts with its own MIME fields
    for f in fields[start:]:
        if not f.name.startswith("x-mailgun-"):
            break
        seen.setdefault(f.name, []).append(f.value.strip().lower())

    def one(name: str) -> str:
        values = seen.get(name, [])
        return values[0] if len(values) == 1 else ""

    return Verdicts(spf=one("x-mailgun-spf"), dkim=one("x-mailgun-dkim-check-result"))


def owner_problem(raw: bytes, envelope_sender: str, targets: Iterable[str]) -> str:
    """Why this message is not the alias owner's reply ("" when it is)."""
    owners = {m for m in (mailbox(t) for t in targets) if m}
    fields = parse_fields(raw[: body_offset(raw)])
    if not owners or mailbox(envelope_sender) not in owners:
        return "the envelope sender is not the alias's owner"
    from_field = first(fields, "from")
    senders = email.utils.getaddresses([from_field.unfolded]) if from_field is not None else []
    addresses = [a for _, a in senders if a]
    if len(addresses) != 1 or mailbox(addresses[0]) not in owners:
        return "the From address is not the alias's owner"
    verdicts = mailgun_verdicts(fields)
    if verdicts.spf != "pass":
        return f"Mailgun's SPF verdict is {verdicts.spf or 'missing'}, not pass"
    if verdicts.dkim != "pass":
        return f"Mailgun's DKIM verdict is {verdicts.dkim or 'missing'}, not pass"
    return ""


def correspondent_of(raw: bytes, envelope_sender: str) -> tuple[str, str]:
    """(display name, address) a reply to this message goes to: Reply-To, else From, else the envelope sender."""
    fields = parse_fields(raw[: body_offset(raw)])
    for name in ("reply-to", "from"):
        found = first(fields, name)
        if found is None:
            continue
        for display, address in email.utils.getaddresses([found.unfolded]):
            normal = normalize(address) if address else None
            if normal and is_valid_address(normal):
                return _clean(decode_words(display)), normal
    normal = normalize(envelope_sender) if envelope_sender else None
    if normal and is_valid_address(normal):
        return "", normal
    return "", ""


def reply_to_value(name: str, address: str) -> str:
    """A Reply-To value: the correspondent's name on the reverse address (RFC 2047 when needed)."""
    return email.utils.formataddr((name, address), charset="utf-8") if name else address


def reply_rewrite(raw: bytes, alias: str, display_name: str, correspondent: str, owners: Iterable[str]) -> bytes:
    """The owner's reply as the correspondent receives it: header block rewritten, body bytes untouched."""
    end = body_offset(raw)
    block = raw[:end]
    fields = parse_fields(block)
    eol = line_ending(block)
    domain = alias.rpartition("@")[2].lower()
    owner_boxes = {m for m in (mailbox(o) for o in owners) if m}

    owner_locals = {box.partition("@")[0] for box in owner_boxes}

    def ours(address: str) -> bool:
        """The owner's mailbox or ours, or an address that spells the owner's mailbox inside it."""
        box = mailbox(address)
        if not box or box in owner_boxes or box.rpartition("@")[2] == domain:
            return True
        text = address.lower()
        return any(f"{local}@" in text or f"{local}@" in text.replace(".", "") for local in owner_locals)

    shown = _clean(display_name)
    added = [
        _line("From", email.utils.formataddr((shown, alias), charset="utf-8") if shown else alias, eol),
        _line("To", correspondent, eol),
        _line(LOOP_HEADER, domain, eol),
    ]
    kept: list[bytes] = []
    for f in fields:
        if f.name in ("cc", "reply-to"):
            # Rebuilt from the plain addresses that are not ours, never kept as written: a display
            # name or comment could carry the owner's address, and two parsers may disagree on a
            # malformed list. What no parser can read as a valid address goes.
            others = _plain_addresses(f, ours)
            if others:
                kept.append(_line("Cc" if f.name == "cc" else "Reply-To", ", ".join(others), eol))
            continue
        if f.name in KEPT:
            kept.append(f.raw)
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += eol
    new_block = b"".join(added) + b"".join(kept)
    if body_offset(new_block + eol) != len(new_block):
        raise Unrewritable("the rewritten reply header block would end early")
    return b"".join((new_block, memoryview(raw)[end:]))


def _plain_addresses(field: Field, ours: Callable[[str], bool]) -> list[str]:
    found = []
    for _, address in email.utils.getaddresses([field.unfolded]):
        normal = normalize(address) if address else None
        if normal and is_valid_address(normal) and not ours(normal) and normal not in found:
            found.append(normal)
    return found


def mark_stranger(mime: bytes, reason: str) -> bytes:
    """Mark a forwarded copy as written to a reply address by someone other than the owner.

    ``[to your reply address]`` before the Subject and an ``X-Tagrelay-Reply-Address``
    header with the reason; the body stays as it is.
    """
    end = body_offset(mime)
    block = mime[:end]
    fields = parse_fields(block)
    eol = line_ending(block)
    out = [_line(REPLY_MARK_HEADER, f"not from the owner: {_clean(reason)}", eol)]
    if first(fields, "subject") is None:
        out.append(b"Subject: " + STRANGER_PREFIX.strip() + eol)
    for f in fields:
        if f.name == REPLY_MARK_HEADER.lower():
            continue
        out.append(_prefix_subject(f) if f.name == "subject" else f.raw)
    if out and not out[-1].endswith(b"\n"):
        out[-1] += eol
    return b"".join((b"".join(out), memoryview(mime)[end:]))


def _prefix_subject(field: Field) -> bytes:
    name, colon, value = field.raw.partition(b":")
    if value.lstrip(b" \t").startswith(STRANGER_PREFIX.strip()):
        return field.raw
    return name + colon + b" " + STRANGER_PREFIX + value.lstrip(b" \t")


def _clean(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()


def _line(name: str, value: str, eol: bytes) -> bytes:
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise Unrewritable(f"control character in {name}")
    return f"{name}: {value}".encode() + eol


# -- the use case, shared by ingest and relay (they take it as one collaborator) --------------


@dataclass(frozen=True)
class ReplyKeys:
    """The reply key and, during a rotation, the previous one."""

    current: KeySource
    previous: KeySource | None = None

    def all(self) -> list[str]:
        keys = [self.current.get()]
        if self.previous is not None:
            # An unreadable previous key (a disabled version after a rotation) only narrows what
            # verifies; it must not turn every reply address into a 503 or a relay that spins.
            with contextlib.suppress(SecretUnavailable):
                keys.append(self.previous.get())
        return keys


@dataclass(frozen=True)
class ReplyPlan:
    """What the relay does with a message to a reverse address."""

    found: Identified
    reason: str  # why it is not relayed to the correspondent ("" for the owner's reply)

    @property
    def correspondent(self) -> str:
        """The only recipient of the owner's reply; "" when the message goes to the owner instead."""
        return self.found.contact.correspondent if self.found.contact is not None and not self.reason else ""


class ReplyDesk:
    """Reverse addresses in and out: recognise them (ingest, relay), hand them out (relay)."""

    def __init__(self, keys: ReplyKeys, contacts: Contacts) -> None:
        self._keys = keys
        self._contacts = contacts

    def identify(self, recipient: str) -> Identified | None:
        """None for an ordinary recipient; else what the reverse address stands for.

        The MAC is checked first: a made-up or altered address costs no lookup.
        """
        if not reverse.looks_reverse(recipient):
            return None
        parsed = reverse.parse(recipient)
        if parsed is None:
            return Identified("", None, "not a reply address")
        mac_ok = reverse.verify(parsed, self._keys.all())
        contact = self._contacts.lookup(parsed.contact_id) if mac_ok else None
        return identify(parsed, mac_ok, contact)

    def plan(self, found: Identified, raw: bytes, envelope_sender: str, targets: Iterable[str]) -> ReplyPlan:
        return ReplyPlan(found, found.reason or owner_problem(raw, envelope_sender, targets))

    def compose(
        self,
        plan: ReplyPlan | None,
        raw: bytes,
        alias: str,
        envelope_sender: str,
        targets: tuple[str, ...],
        reply_name: str,
        domains: frozenset[str],
        spam_tag: str = "",
    ) -> Mime:
        """The message to send: the owner's reply as the alias, or a forwarded copy with a reverse Reply-To
        (in pieces, so the body is not copied)."""
        if plan is not None and plan.correspondent:
            return reply_rewrite(raw, alias, reply_name, plan.correspondent, targets)
        reply_to = self.reverse_for(alias, raw, envelope_sender, domains, owners=targets)
        rewritten = rewrite(raw, alias, envelope_sender, spam_tag=spam_tag, reply_to=reply_to)
        return mark_stranger(rewritten.mime, plan.reason) if plan is not None else rewritten.pieces

    def reverse_for(
        self, alias: str, raw: bytes, envelope_sender: str, domains: frozenset[str], owners: Iterable[str] = ()
    ) -> str | None:
        """The Reply-To for a forwarded copy, its contact record made first; None keeps the sender's own.

        No reverse address when there is nobody to reply to, when the correspondent is one of
        our own addresses (a loop), or the alias's owner (a reply would go to the owner anyway).
        """
        name, correspondent = correspondent_of(raw, envelope_sender)
        if not correspondent or correspondent.rpartition("@")[2] in domains:
            return None
        if mailbox(correspondent) in {mailbox(o) for o in owners}:
            return None
        address = reverse.make(alias, correspondent, self._keys.current.get())
        self._contacts.remember(reverse.contact_id(alias, correspondent), alias, correspondent)
        return reply_to_value(name, address)

    def sent(self, plan: ReplyPlan | None, alias: str, raw: bytes, envelope_sender: str) -> None:
        """Count a message that went out; a store failure here is only logged (the mail is sent)."""
        direction: ContactCount = "replied" if plan is not None and plan.correspondent else "received"
        if plan is not None and plan.correspondent and plan.found.contact is not None:
            key = plan.found.contact.key
        else:
            correspondent = correspondent_of(raw, envelope_sender)[1]
            if not correspondent:
                return
            key = reverse.contact_id(alias, correspondent)
        try:
            self._contacts.count(key, direction)
        except LedgerUnavailable as exc:
            event(logging.WARNING, f"contact not counted: {exc.reason}", stage="relay", alias=alias)
