"""The short notice an owner gets when a message could not be delivered (opt-in per route).

Pure: builds the MIME bytes; the relay sends them through the same Mailgun client.
The original message is attached unchanged (message/rfc822), so nothing is lost
even if the owner never looks at the dead-letter topic.

The notice is written byte by byte rather than with the email package: it must
build for any message the relay can dead-letter (8-bit headers and bodies, line
breaks in a decoded Subject, binary junk), and every value taken from the
message is cleaned to one line (headers.clean_text) and RFC 2047-encoded, so the
only bytes of the original that reach the notice are the attachment itself.
"""

from __future__ import annotations

import base64
import secrets
from email.header import Header
from email.utils import formatdate, make_msgid

from tagrelay.core.headers import clean_text, first, fits_8bit, fold_field, header_fields
from tagrelay.core.rewrite import LOOP_HEADER, loop_domain

CRLF = b"\r\n"
MAX_SHOWN_CHARS = 200


def build_notice(original: bytes, alias: str, reason: str, to: str) -> bytes:
    """The notice as MIME bytes (CRLF line endings). Never raises for anything in ``original``."""
    domain = loop_domain(alias.rpartition("@")[2]) or "localhost"
    fields = header_fields(original)
    subject = first(fields, "subject")
    sender = first(fields, "from")
    shown_subject = _shown(subject.value if subject is not None else "") or "(no subject)"
    shown_from = _shown(sender.value if sender is not None else "") or "(none)"
    text = (
        "A message sent to your alias could not be forwarded.\n\n"
        f"  alias:   {_shown(alias)}\n"
        f"  from:    {shown_from}\n"
        f"  subject: {shown_subject}\n"
        f"  reason:  {_shown(reason)}\n\n"
        "The original is attached, and kept in the dead-letter topic:\n"
        "'tagrelay deadletters replay' sends it again once the cause is fixed.\n"
    )
    boundary = _boundary(original)
    head = [
        _header("From", f"tagrelay <tagrelay@{domain}>"),
        _header("To", clean_text(to)),
        _header("Subject", f"Undeliverable: {shown_subject}"[:MAX_SHOWN_CHARS]),
        _header("Date", formatdate(usegmt=True)),
        _header("Message-ID", make_msgid(domain=domain)),
        _header("Auto-Submitted", "auto-generated"),
        _header(LOOP_HEADER, domain),
        _header("MIME-Version", "1.0"),
        _header("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ]
    if fits_8bit(original):
        cte = "7bit" if original.isascii() else "8bit"
        attachment = [
            b"Content-Type: message/rfc822",
            b"Content-Transfer-Encoding: " + cte.encode(),
            b'Content-Disposition: attachment; filename="original.eml"',
            b"",
            original.replace(b"\r\n", b"\n").replace(b"\n", CRLF),
        ]
    else:  # message/rfc822 may not be base64-encoded (RFC 2046): send binary mail as a file
        attachment = [
            b"Content-Type: application/octet-stream",
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="original.eml"',
            b"",
            base64.encodebytes(original).replace(b"\n", CRLF).rstrip(CRLF),
        ]
    mark = b"--" + boundary.encode("ascii")
    body = [
        mark,
        b'Content-Type: text/plain; charset="utf-8"',
        b"Content-Transfer-Encoding: base64",
        b"",
        base64.encodebytes(text.encode("utf-8")).replace(b"\n", CRLF).rstrip(CRLF),
        mark,
        *attachment,
        mark + b"--",
        b"",
    ]
    return b"".join(head) + CRLF + CRLF.join(body)


def _shown(value: str) -> str:
    """A value from the message, made one printable line (no CR, LF, NUL or other controls), and bounded."""
    return clean_text(value.encode("utf-8", "replace").decode("utf-8"))[:MAX_SHOWN_CHARS]


def _header(name: str, value: str) -> bytes:
    """One header field, RFC 2047-encoded when not ASCII, folded under 998 octets."""
    value = clean_text(value)
    if value.isascii():
        raw = f"{name}: {value}".encode("ascii") + CRLF
    else:
        raw = f"{name}: ".encode("ascii") + Header(value, "utf-8", header_name=name).encode().encode("ascii") + CRLF
        raw = raw.replace(b"\n", CRLF).replace(b"\r\r\n", CRLF)
    return fold_field(raw, CRLF) or f"{name}: (too long)".encode("ascii") + CRLF


def _boundary(original: bytes) -> str:
    """A boundary that does not occur in the attached message."""
    while True:
        boundary = f"tagrelay-notice-{secrets.token_hex(12)}"
        if boundary.encode("ascii") not in original:
            return boundary


def build_text_notice(alias: str, to: str, subject: str, text: str) -> bytes:
    """A plain-text notice to the owner (the leak notice of tagrelay.core.insight): the same header
    rules as build_notice (every value one clean line, RFC 2047 when not ASCII), the text in base64."""
    domain = loop_domain(alias.rpartition("@")[2]) or "localhost"
    head = [
        _header("From", f"tagrelay <tagrelay@{domain}>"),
        _header("To", clean_text(to)),
        _header("Subject", _shown(subject)),
        _header("Date", formatdate(usegmt=True)),
        _header("Message-ID", make_msgid(domain=domain)),
        _header("Auto-Submitted", "auto-generated"),
        _header(LOOP_HEADER, domain),
        _header("MIME-Version", "1.0"),
        _header("Content-Type", 'text/plain; charset="utf-8"'),
        _header("Content-Transfer-Encoding", "base64"),
    ]
    body = base64.encodebytes(text.encode("utf-8", "replace")).replace(b"\n", CRLF)
    return b"".join(head) + CRLF + body
