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
(signatures, authentication results, Return-Path, Sender, Delivered-To, Bcc),
and leaves the body bytes exactly as received: only the header block is rebuilt,
so signed messages (S/MIME, PGP/MIME) still verify.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

from tagrelay.core.errors import Unrewritable
from tagrelay.core.headers import Field, body_offset, decode_words, first, header_fields, line_ending, parse_fields

LOOP_HEADER = "X-Tagrelay-Loop"
SPAM_HEADER = "X-Tagrelay-Spam"
SPAM_PREFIX = b"[SPAM] "

# Headers that break (signatures over the old From), lie (results of checks done
# for the original sender, trace headers naming the old envelope) or leak (Bcc).
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
    }
)


@dataclass(frozen=True)
class RewriteResult:
    mime: bytes
    original_from: str  # decoded, for logs and the ledger; "" when the message had none
    display_name: str


def rewrite(raw: bytes, alias: str, sender: str = "", spam_tag: str = "", reply_to: str | None = None) -> RewriteResult:
    """Rewrite the headers of ``raw`` for forwarding from ``alias``.

    ``alias`` is the address the message was sent to (it becomes the From
    address); ``sender`` is the SMTP envelope sender, used as the reply address
    when the message has no From at all. A ``spam_tag`` (Mailgun's verdict)
    prefixes the Subject with ``[SPAM]`` and is kept in ``X-Tagrelay-Spam``.
    A ``reply_to`` (the reverse address, ``tagrelay.core.reply``) becomes the
    Reply-To; the original Reply-To is then kept in ``X-Original-Reply-To``.
    """
    end = body_offset(raw)
    block = raw[:end]
    fields = parse_fields(block)
    eol = line_ending(block)
    domain = alias.rpartition("@")[2].lower()

    from_field = first(fields, "from")
    reply_field = first(fields, "reply-to")
    name, original = _display_name(from_field, sender)

    added: list[bytes] = [
        _field("From", email.utils.formataddr((f"{name} via {domain}", _ascii_address(alias)), charset="utf-8"), eol)
    ]
    if reply_to is not None:  # replying as the alias (issue 13)
        added.append(_field("Reply-To", reply_to, eol))
        if reply_field is not None and reply_field.raw_value:
            added.append(b"X-Original-Reply-To: " + reply_field.raw_value + eol)
    elif reply_field is not None and reply_field.raw_value:
        added.append(b"Reply-To: " + reply_field.raw_value + eol)
    elif from_field is not None and from_field.raw_value:
        added.append(b"Reply-To: " + from_field.raw_value + eol)
    elif sender and _safe(sender):
        added.append(_field("Reply-To", sender, eol))
    if from_field is not None and from_field.raw_value:
        added.append(b"X-Original-From: " + from_field.raw_value + eol)
    added.append(_field("X-Original-To", alias, eol))
    added.append(_field(LOOP_HEADER, domain, eol))

    if spam_tag:
        added.append(_field(SPAM_HEADER, spam_tag, eol))
        if first(fields, "subject") is None:
            added.append(b"Subject: " + SPAM_PREFIX.strip() + eol)
    kept = [
        _tag_subject(f) if spam_tag and f.name == "subject" else f.raw
        for f in fields
        if f.name not in DROPPED and not _is_stray_line(f)
    ]
    if kept and not kept[-1].endswith(b"\n"):  # a headers-only message without a final newline
        kept[-1] += eol
    new_block = b"".join(added) + b"".join(kept)
    if body_offset(new_block + eol) != len(new_block):
        raise Unrewritable("the rewritten header block would end early")  # never send headers as body
    # One copy of the body, straight into the output.
    mime = b"".join((new_block, memoryview(raw)[end:]))
    return RewriteResult(mime=mime, original_from=original, display_name=name)


def has_loop_marker(raw: bytes, domain: str) -> bool:
    """Whether the message already went through a tagrelay for ``domain``."""
    return carries_loop_marker(header_fields(raw), domain)


def carries_loop_marker(fields: list[Field], domain: str) -> bool:
    """has_loop_marker for a header block already parsed."""
    marker = LOOP_HEADER.lower()
    return any(f.name == marker and f.value.strip().lower() == domain.lower() for f in fields)


def _display_name(from_field: Field | None, sender: str) -> tuple[str, str]:
    """The name to show before "via", and the decoded original From."""
    original = from_field.value if from_field is not None else ""
    # Split the addresses before decoding: an encoded word may hide a comma or quotes.
    pairs = email.utils.getaddresses([from_field.unfolded]) if from_field is not None else []
    name, address = next(((decode_words(n), a) for n, a in pairs if n or a), ("", ""))
    shown = _clean(name) or _clean(address) or _clean(sender) or "unknown sender"
    return shown, original


def _ascii_address(alias: str) -> str:
    """The alias as an ASCII address for From; a non-ASCII local part becomes ``forwarder``."""
    local, _, domain = alias.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "invalid"
    return f"{local}@{domain}" if local.isascii() else f"forwarder@{domain}"


def _clean(text: str) -> str:
    """One line of printable text, safe inside a quoted display name."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()


def _safe(value: str) -> bool:
    return not re.search(r"[\x00-\x1f\x7f]", value)


def _field(name: str, value: str, eol: bytes) -> bytes:
    if not _safe(value):
        raise Unrewritable(f"control character in {name}")
    return f"{name}: {value}".encode() + eol


def _tag_subject(field: Field) -> bytes:
    """``Subject: x`` → ``Subject: [SPAM] x``, keeping the rest of the raw field (folding, encoding)."""
    name, colon, value = field.raw.partition(b":")
    if value.lstrip(b" \t").startswith(SPAM_PREFIX.strip()):
        return field.raw
    return name + colon + b" " + SPAM_PREFIX + value.lstrip(b" \t")


def _is_stray_line(field: Field) -> bool:
    """An mbox ``From `` line, or a continuation with no field before it: neither is a header,
    and a continuation kept after our headers would become part of the last one."""
    return field.name == "" and (field.raw.startswith(b"From ") or field.raw[:1] in (b" ", b"\t"))
