"""The DMARC-safe rewrite of a received message, done on the header block only.

Resending ``From: alice@bank.example`` from our Mailgun domain would fail DMARC
at Gmail, so the forwarded copy says::

    From: "Alice via example.org" <github@example.org>
    Reply-To: <the original Reply-To, or else the original From>
    X-Original-From: <the original From>
    X-Original-To: github@example.org
    X-Tagrelay-Loop: example.org

It keeps Subject, Date, Message-ID, To, Cc, References and every other header
that stays true, drops the ones that would break or lie after a resend
(signatures, authentication results, Return-Path, Sender, Delivered-To, Bcc,
read-receipt requests, every X-Mailgun-* header),
and leaves the body bytes exactly as received: only the header block is rebuilt,
so signed messages (S/MIME, PGP/MIME) still verify.
"""

from __future__ import annotations

import email.utils
import functools
import re
from dataclasses import dataclass
from email.header import Header

from tagrelay.core.errors import Unrewritable
from tagrelay.core.headers import (
    MAX_DECODE_CHARS,
    Field,
    body_offset,
    clean_text,
    decode_words,
    first,
    fold_field,
    has_control_chars,
    header_fields,
    line_ending,
    parse_fields,
    scrub_field,
)

LOOP_HEADER = "X-Tagrelay-Loop"
SPAM_HEADER = "X-Tagrelay-Spam"
DROPPED_HEADER = "X-Tagrelay-Dropped"
SPAM_PREFIX = b"[SPAM] "
MAX_NAME_CHARS = 78  # a display name longer than a terminal line is noise, and would make From too long

# Headers that break (signatures over the old From), lie (results of checks done
# for the original sender, trace headers naming the old envelope), leak (Bcc, read
# receipts: the owner's client would answer from the real address) or would be
# ours to write (X-Original-*, X-Tagrelay-Spam).
DROPPED = frozenset(
    {
        "from",
        "reply-to",
        "sender",
        "return-path",
        "delivered-to",
        "bcc",
        "errors-to",
        "dkim-signature",
        "domainkey-signature",
        "x-google-dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
        "received-spf",
        "x-original-from",
        "x-original-to",
        "x-tagrelay-spam",
        "x-original-reply-to",  # reply_to: ours only, never a sender's
        "x-tagrelay-reply-address",
        "disposition-notification-to",
        "disposition-notification-options",
        "return-receipt-to",
        "x-confirm-reading-to",
    }
)
# Whole families: X-Mailgun-* steer Mailgun's sending (drop, deliver-by, tracking, IP pool)
# or are its verdicts on the inbound copy; X-Tagrelay-* are ours, except the loop markers
# of other tagrelay hops, which must accumulate for their loop checks to work.
DROPPED_PREFIXES = ("x-mailgun-", "x-tagrelay-")
KEPT_OURS = frozenset({LOOP_HEADER.lower()})

_NAME_WITH_BLANKS = re.compile(rb"([!-9;-~]+)[ \t]+:")
_ANGLE_ADDRESS = re.compile(r"<([^<>@\s]+@[^<>@\s]+)>")
_BARE_ADDRESS = re.compile(r"[^<>@\s\"(),;:]+@[^<>@\s\"(),;:]+")


@dataclass(frozen=True)
class RewriteResult:
    head: bytes  # the new header block
    body: memoryview  # the rest of the message as received (from the blank line on), not copied
    original_from: str  # decoded, for logs and the ledger; "" when the message had none
    display_name: str
    dropped: tuple[str, ...] = ()  # fields left out because they could not be sent safely (also in X-Tagrelay-Dropped)

    @property
    def pieces(self) -> tuple[bytes, memoryview]:
        """The message as two pieces to send one after the other: the body is never copied."""
        return self.head, self.body

    @functools.cached_property
    def mime(self) -> bytes:
        """The message in one piece (one copy of the body)."""
        return b"".join(self.pieces)


def is_dropped(name: str) -> bool:
    """Whether a (lower-case) field name is left out of the forwarded copy."""
    if name in DROPPED:
        return True
    return name.startswith(DROPPED_PREFIXES) and name not in KEPT_OURS


def rewrite(raw: bytes, alias: str, sender: str = "", spam_tag: str = "", reply_to: str | None = None) -> RewriteResult:
    """Rewrite the headers of ``raw`` for forwarding from ``alias``.

    ``alias`` is the address the message was sent to (it becomes the From
    address); ``sender`` is the SMTP envelope sender, used as the reply address
    when the message has no From at all. A ``spam_tag`` (Mailgun's verdict)
    prefixes the Subject with ``[SPAM]`` and is kept in ``X-Tagrelay-Spam``.
    A ``reply_to`` (the reverse address, ``tagrelay.core.reply``) becomes the
    Reply-To; the original Reply-To is then kept in ``X-Original-Reply-To``.

    Raises only Unrewritable, and only when the alias itself cannot be written;
    whatever the message's headers hold, the copy goes out: a From that cannot be
    parsed shows its raw address (or the envelope sender) as the name, control
    characters in kept fields become spaces, and a line over 998 octets is folded,
    or its field dropped and named in X-Tagrelay-Dropped.
    """
    try:
        return _rewrite(raw, alias, sender, spam_tag, reply_to)
    except Unrewritable:
        raise
    except (RecursionError, MemoryError) as exc:  # never a crash the relay cannot classify
        raise Unrewritable(f"header block too deeply nested ({type(exc).__name__})") from None
    except Exception as exc:  # any header can trip a stdlib helper: dead-letter with the reason
        raise Unrewritable(f"unexpected header content ({type(exc).__name__})") from None


def _rewrite(raw: bytes, alias: str, sender: str, spam_tag: str, reply_to: str | None) -> RewriteResult:
    end = body_offset(raw)
    block = raw[:end]
    fields = parse_fields(block)
    eol = line_ending(block)
    domain = alias.rpartition("@")[2].lower()
    dropped: list[str] = []

    from_field = first(fields, "from")
    reply_field = first(fields, "reply-to")
    name, original = _display_name(from_field, sender)
    safe_sender = sender.strip() if sender.strip() and not has_control_chars(sender.strip()) else ""

    added: list[bytes] = [_from_line(f"{name} via {domain}", _ascii_address(alias), eol)]
    if reply_to is not None:  # replying as the alias (issue 13): the reverse address, the original kept aside
        added.append(_field("Reply-To", reply_to, eol))
        original_reply = _copied("X-Original-Reply-To", reply_field, eol) if reply_field is not None else None
        if original_reply is not None:
            added.append(original_reply)
        elif reply_field is not None and reply_field.raw_value.strip():
            dropped.append("x-original-reply-to")
    else:
        source = next((f for f in (reply_field, from_field) if f is not None and f.raw_value.strip()), None)
        reply = _copied("Reply-To", source, eol)
        if reply is not None:
            added.append(reply)
        else:
            if source is not None:
                dropped.append("reply-to")
            if safe_sender:
                added.append(_field("Reply-To", safe_sender, eol))
    original_from = _copied("X-Original-From", from_field, eol)
    if original_from is not None:
        added.append(original_from)
    elif from_field is not None and from_field.raw_value.strip():
        dropped.append("x-original-from")
    added.append(_field("X-Original-To", alias, eol))
    added.append(_field(LOOP_HEADER, loop_domain(domain), eol))

    if spam_tag:
        added.append(_field(SPAM_HEADER, clean_text(spam_tag), eol))
        if first(fields, "subject") is None:
            added.append(b"Subject: " + SPAM_PREFIX.strip() + eol)
    kept: list[bytes] = []
    for f in fields:
        if is_dropped(f.name) or not f.name:  # a line that is no field would end the block for other parsers
            continue
        line = _tag_subject(f) if spam_tag and f.name == "subject" else f.raw
        if not line.endswith(b"\n"):  # a headers-only message without a final newline
            line += eol
        fitted = fold_field(scrub_field(_tidy_name(line)), eol)
        if fitted is None:
            dropped.append(f.name)
            continue
        kept.append(fitted)
    if dropped:
        names = ", ".join(dict.fromkeys(dropped))[:200]
        added.append(_field(DROPPED_HEADER, f"{names} (a line over 998 octets with no place to fold)", eol))
    new_block = b"".join(added) + b"".join(kept)
    if body_offset(new_block + eol) != len(new_block):
        raise Unrewritable("the rewritten header block would end early")  # never send headers as body
    # The body is not copied: the sender streams the new header block, then the body as received.
    return RewriteResult(new_block, memoryview(raw)[end:], original, name, tuple(dropped))


def loop_domain(domain: str) -> str:
    """A domain in the one form the loop marker is written and compared in: IDNA, lower case."""
    text = clean_text(domain).strip(".").lower()
    try:
        return text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return text


def has_loop_marker(raw: bytes, domain: str) -> bool:
    """Whether the message already went through a tagrelay for ``domain``."""
    return carries_loop_marker(header_fields(raw), domain)


def carries_loop_marker(fields: list[Field], domain: str) -> bool:
    """has_loop_marker for a header block already parsed (IDNA or Unicode, in any case, match alike)."""
    marker = LOOP_HEADER.lower()
    wanted = loop_domain(domain)
    return any(f.name == marker and len(f.raw) < 1024 and loop_domain(f.value) == wanted for f in fields)


def _display_name(from_field: Field | None, sender: str) -> tuple[str, str]:
    """The name to show before "via", and the decoded original From.

    Never raises: a From the address parser cannot read (deep nesting, odd
    encodings) shows the address found in it, or else the envelope sender.
    """
    if from_field is None:
        return _shorten(clean_text(sender)) or "unknown sender", ""
    original = from_field.value
    unfolded = from_field.unfolded[:MAX_DECODE_CHARS]  # the name is in the first address; parsing is not linear
    try:
        # Split the addresses before decoding: an encoded word may hide a comma or quotes.
        pairs = email.utils.getaddresses([unfolded])
        name, address = next(((decode_words(n), a) for n, a in pairs if n or a), ("", ""))
    except Exception:  # RecursionError, IndexError...: fall back to the raw address
        name, address = "", _raw_address(unfolded)
    shown = clean_text(name) or clean_text(address) or clean_text(sender) or "unknown sender"
    return _shorten(shown), original


def _raw_address(text: str) -> str:
    found = _ANGLE_ADDRESS.search(text) or _BARE_ADDRESS.search(text)
    return found.group(1) if found is not None and found.groups() else (found.group(0) if found else "")


def _shorten(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1].rstrip() + "\u2026"


def _from_line(display: str, address: str, eol: bytes) -> bytes:
    """``From: "<name> via <domain>" <alias>``: quoted when ASCII, else RFC 2047 words folded at 76."""
    try:
        words = "" if display.isascii() else Header(display, "utf-8", header_name="From").encode(linesep=eol.decode())
    except (UnicodeError, ValueError):  # e.g. a lone surrogate from an odd charset: show it as "?"
        display, words = display.encode("ascii", "replace").decode("ascii"), ""
    value = f"{words} <{address}>" if words else email.utils.formataddr((display, address))
    line = f"From: {value}".encode("ascii") + eol
    folded = fold_field(line, eol)
    if folded is None:  # cannot happen with a bounded name; never send it over-long
        raise Unrewritable("From line over 998 octets")
    return folded


def _copied(name: str, source: Field | None, eol: bytes) -> bytes | None:
    """``name: <the raw value of source>``, scrubbed and folded; None when there is none or it cannot fit."""
    if source is None or not source.raw_value.strip():
        return None
    return fold_field(scrub_field(name.encode("ascii") + b": " + source.raw_value + eol), eol)


def _ascii_address(alias: str) -> str:
    """The alias as an ASCII address for From; a non-ASCII local part becomes ``forwarder``."""
    local, _, domain = alias.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "invalid"
    return f"{local}@{domain}" if local.isascii() else f"forwarder@{domain}"


def _field(name: str, value: str, eol: bytes) -> bytes:
    if has_control_chars(value):
        raise Unrewritable(f"control character in {name}")
    line = f"{name}: {value}".encode() + eol
    folded = fold_field(line, eol)
    if folded is None:
        raise Unrewritable(f"{name} over 998 octets")
    return folded


def _tidy_name(raw: bytes) -> bytes:
    """``Name : value`` → ``Name: value``: the same field (RFC 5322 obs-optional), which strict parsers
    would otherwise take for the end of the header block."""
    found = _NAME_WITH_BLANKS.match(raw)
    return raw if found is None else found.group(1) + raw[found.end() - 1 :]


def _tag_subject(field: Field) -> bytes:
    """``Subject: x`` → ``Subject: [SPAM] x``, keeping the rest of the raw field (folding, encoding)."""
    name, colon, value = field.raw.partition(b":")
    if value.lstrip(b" \t").startswith(SPAM_PREFIX.strip()):
        return field.raw
    return name + colon + b" " + SPAM_PREFIX + value.lstrip(b" \t")
