#!/usr/bin/env python3
"""Write the Mailgun route posts in tests/data/posts/ (NAME.body + NAME.json) from Mailgun's documentation.

Every post here is written by hand, byte by byte, from what Mailgun documents; none
is produced by tagrelay or its tooling (tagrelay_tools.mailgun_posts is checked
*against* these files in tests/unit/test_simulator.py). Sources, cited per post below:

[RECEIVE] https://documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/receive-http
    "Receiving Messages via HTTP through a forward() action": two formats, fully parsed
    or raw MIME ("the destination URL must end with mime"); the parsed form's fields
    (recipient, sender, from, subject, body-plain, stripped-text, stripped-signature,
    body-html, stripped-html, attachment-count, attachment-x, timestamp, token,
    signature, message-headers as a JSON list of [name, value] pairs in order,
    content-id-map as a JSON object from <Content-ID> to attachment-x); the MIME form's
    fields (recipient, sender, from, subject, body-mime, timestamp, token, signature);
    application/x-www-form-urlencoded, or multipart/form-data when there are attachments.
[ROUTES] https://documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/route-actions
    forward("https://...") posts to the URL; 200 done, 406 rejected, anything else retried.
[SIGN] https://documentation.mailgun.com/docs/mailgun/user-manual/events/webhooks#securing-webhooks
    signature = hex HMAC-SHA256(HTTP webhook signing key, timestamp + token); token is 50 characters.
[SPAM] https://documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/ (section "Spam Filter")
    X-Mailgun-Sflag (Yes/No), X-Mailgun-Sscore added to the headers of a received message.
[SAMPLE] the control panel's "Send a sample POST" on a route (as published in Mailgun's docs and
    seen in the wild): besides the documented fields, every header of the message is also a
    field of its own under its own name (a repeated header once, with its last value), and
    attachment file names are sent as UTF-8.

Deterministic: timestamp 1700000000, tokens derived from the post's name, fixed
multipart boundaries; tests/unit/test_posts.py checks the stored files are exactly
what this script writes.

NAME.json: ``content_type`` (the request's Content-Type), ``recipient``, ``note``,
``form`` (``mime`` or ``parsed``), ``follows`` (the sources above it follows);
``source`` (the corpus file in tests/data/eml/ posted as body-mime) or ``message``
(NAME.eml next to it: the message Mailgun received, for a parsed post written from
one); for parsed posts ``expect_attachments`` (filename, content_type, content_id,
sha256 of the bytes) and ``expect_headers``.

Usage:  .venv/bin/python tests/data/posts/make_posts.py   (writes next to this script)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
EML = ROOT / "tests" / "data" / "eml"
KEY = b"test-webhook-signing-key"
TIMESTAMP = "1700000000"
# The DESIGN.md signature vector: this token with TIMESTAMP and KEY signs to VECTOR_SIGNATURE.
VECTOR_TOKEN = "a71d0000ed34da6768198da96f9daaf8fb98adbccfdbd2fdaf"
VECTOR_SIGNATURE = "16e8315674ddc3aca0f791a93250320e9cc493a3a654aea8d82327b6dd13ceaf"
CRLF = b"\r\n"

Post = tuple[bytes, dict[str, Any]]


def token_for(name: str) -> str:
    """A Mailgun-shaped token (50 hex digits), fixed per post name."""
    return hashlib.sha256(b"tagrelay-sample-post:" + name.encode()).hexdigest()[:50]


def signature(token: str) -> str:
    """Mailgun's webhook signature, computed here independently of tagrelay.core.inbound.sign."""
    return hmac.new(KEY, (TIMESTAMP + token).encode(), hashlib.sha256).hexdigest()


# -- posts written by hand from Mailgun's documentation -------------------------------------


def urlencode(fields: list[tuple[str, bytes]]) -> bytes:
    """application/x-www-form-urlencoded the way browsers and Mailgun write it: '+' for space."""
    return b"&".join(
        urllib.parse.quote_plus(name).encode("ascii")
        + b"="
        + urllib.parse.quote_from_bytes(value, safe="").replace("%20", "+").encode("ascii")
        for name, value in fields
    )


def mime_urlencoded(name: str, source: str, recipient: str, sender: str, token: str, note: str) -> Post:
    """What Mailgun posts to a route URL ending in ``mime``, urlencoded.

    Follows [RECEIVE] (the MIME form's fields: recipient, sender, from, subject,
    body-mime, timestamp, token, signature) and [SIGN]. body-mime is the message's
    octets as received, percent-encoded: not necessarily UTF-8.
    """
    raw = (EML / source).read_bytes()
    from_value = subject = b""
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"from:") and not from_value:
            from_value = line[5:].strip()
        if line.lower().startswith(b"subject:") and not subject:
            subject = line[8:].strip()
    fields = [
        ("recipient", recipient.encode()),
        ("sender", sender.encode()),
        ("from", from_value),
        ("subject", subject),
        ("body-mime", raw),
        ("timestamp", TIMESTAMP.encode()),
        ("token", token.encode()),
        ("signature", signature(token).encode()),
    ]
    meta = {
        "content_type": "application/x-www-form-urlencoded",
        "recipient": recipient,
        "note": note,
        "form": "mime",
        "follows": ["RECEIVE", "SIGN"],
        "source": source,
    }
    return urlencode(fields), meta


def png_bytes() -> bytes:
    """A real 2x2 RGB PNG (its signature alone holds CR LF SUB LF: a good byte-exactness probe)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rows = b"\x00\xff\x00\x00\x00\xff\x00" + b"\x00\x00\x00\xff\xff\xff\xff"
    ihdr = (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def pdf_bytes() -> bytes:
    """A small PDF with a binary comment line (bytes >= 0x80), a bare CR and a NUL."""
    return (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
        b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\r"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
        b"3 0 obj << /Length 4 >> stream\n\x00\x01\x02\x03\nendstream endobj\n"
        b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )


def multipart(boundary: bytes, parts: list[tuple[str, bytes, tuple[str, str] | None]]) -> bytes:
    """multipart/form-data by hand: (name, value, (filename, content type) for a file part)."""
    out = bytearray()
    for name, value, file in parts:
        out += b"--" + boundary + CRLF
        if file is None:
            out += b'Content-Disposition: form-data; name="' + name.encode() + b'"' + CRLF
        else:
            filename, content_type = file
            out += (
                b'Content-Disposition: form-data; name="'
                + name.encode()
                + b'"; filename="'
                + filename.encode("utf-8")
                + b'"'
                + CRLF
            )
            out += b"Content-Type: " + content_type.encode() + CRLF
        out += CRLF + value + CRLF
    out += b"--" + boundary + b"--" + CRLF
    return bytes(out)


def parsed_multipart() -> Post:
    """A parsed-form post with attachments, so multipart/form-data.

    Follows [RECEIVE] (every documented parsed field; message-headers in order;
    content-id-map naming the inline image), [SAMPLE] (each header also as its own
    field), [SPAM] (X-Mailgun-Sflag / X-Mailgun-Sscore among the headers) and [SIGN].
    """
    name = "handwritten-parsed-multipart"
    token = token_for(name)
    boundary = b"e1b9d5f2a6c84b0e9b3d7a1c2f4e6a8b"
    logo, invoice = png_bytes(), pdf_bytes()
    cid = "logo-1042@shop.example.com"
    subject = "Your order #1042 has shipped \u2014 Gr\u00fc\u00dfe aus K\u00f6ln"
    date = "Tue, 14 Nov 2023 22:13:05 +0000"
    message_id = "<20231114221305.1042.77@shop.example.com>"
    from_value = "Shop Example <orders@shop.example.com>"
    to_value = "Alice Buyer <shop@example.org>"
    content_type = 'multipart/mixed; boundary="----=_Part_1042_1700000000"'
    received = [
        "from mail-out.shop.example.com (mail-out.shop.example.com [198.51.100.23]) "
        "by mxa.mailgun.org with ESMTP id 6553f1e1.7f0c2a3b4c5d-smtp-in-n03; Tue, 14 Nov 2023 22:13:05 -0000 (UTC)",
        "by mail-out.shop.example.com with SMTP id q7so1042; Tue, 14 Nov 2023 14:13:04 -0800 (PST)",
    ]
    headers = [  # Mailgun prepends its own fields (verdicts included) above the message's header block
        ["X-Mailgun-Incoming", "Yes"],
        ["X-Mailgun-Sflag", "No"],
        ["X-Mailgun-Sscore", "0.3"],
        ["X-Mailgun-Spf", "Pass"],
        ["X-Envelope-From", "<bounce+1042@shop.example.com>"],
        ["Received", received[0]],
        ["Received", received[1]],
        ["Mime-Version", "1.0"],
        ["From", from_value],
        ["To", to_value],
        ["Subject", subject],
        ["Date", date],
        ["Message-Id", message_id],
        ["Content-Type", content_type],
    ]
    plain = (
        "Hello Alice,\r\n\r\nyour order #1042 is on its way.\r\n"
        "Tracking: https://track.example.com/1042\r\n\r\nGr\u00fc\u00dfe aus K\u00f6ln,\r\nShop Example\r\n"
    )
    html = (
        '<html><body><p><img src="cid:logo-1042@shop.example.com" alt="Shop"></p>\r\n'
        "<p>Hello Alice,</p><p>your order #1042 is on its way.</p>\r\n"
        "<p>Gr&uuml;&szlig;e aus K&ouml;ln,<br>Shop Example</p></body></html>\r\n"
    )
    fields: list[tuple[str, bytes, tuple[str, str] | None]] = [
        ("Content-Type", content_type.encode(), None),
        ("Date", date.encode(), None),
        ("From", from_value.encode(), None),
        ("Message-Id", message_id.encode(), None),
        ("Mime-Version", b"1.0", None),
        ("Received", received[0].encode(), None),
        ("Received", received[1].encode(), None),
        ("Subject", subject.encode(), None),
        ("To", to_value.encode(), None),
        ("X-Envelope-From", b"<bounce+1042@shop.example.com>", None),
        ("X-Mailgun-Incoming", b"Yes", None),
        ("X-Mailgun-Sflag", b"No", None),
        ("X-Mailgun-Sscore", b"0.3", None),
        ("X-Mailgun-Spf", b"Pass", None),
        ("attachment-count", b"2", None),
        ("body-html", html.encode(), None),
        ("body-plain", plain.encode(), None),
        ("content-id-map", json.dumps({f"<{cid}>": "attachment-1"}).encode(), None),
        ("from", from_value.encode(), None),
        ("message-headers", json.dumps(headers).encode(), None),
        ("recipient", b"shop@example.org", None),
        ("sender", b"bounce+1042@shop.example.com", None),
        ("signature", signature(token).encode(), None),
        ("stripped-html", html.encode(), None),
        ("stripped-signature", b"Shop Example", None),
        ("stripped-text", b"Hello Alice,\r\n\r\nyour order #1042 is on its way.", None),
        ("subject", subject.encode(), None),
        ("timestamp", TIMESTAMP.encode(), None),
        ("token", token.encode(), None),
        ("attachment-1", logo, ("logo.png", "image/png")),
        ("attachment-2", invoice, ("Rechnung 1042.pdf", "application/pdf")),
    ]
    meta = {
        "content_type": "multipart/form-data; boundary=" + boundary.decode(),
        "recipient": "shop@example.org",
        "note": (
            "hand-written parsed form in Mailgun's shape: per-header fields, message-headers JSON, body-plain, "
            "body-html, stripped-*, X-Mailgun-Sflag/Sscore, content-id-map, an inline PNG and a PDF"
        ),
        "form": "parsed",
        "follows": ["RECEIVE", "SAMPLE", "SPAM", "SIGN"],
        "expect_attachments": [
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "content_id": cid,
                "sha256": hashlib.sha256(logo).hexdigest(),
            },
            {
                "filename": "Rechnung 1042.pdf",
                "content_type": "application/pdf",
                "content_id": None,
                "sha256": hashlib.sha256(invoice).hexdigest(),
            },
        ],
        "expect_headers": {"Subject": subject, "From": from_value, "Message-Id": message_id, "Date": date},
    }
    return multipart(boundary, fields), meta


def parsed_urlencoded() -> Post:
    """A parsed form without attachments: urlencoded, UTF-8 text percent-encoded.

    Follows [RECEIVE] (x-www-form-urlencoded when there is no attachment; body-plain
    always present; stripped-* fields) and [SIGN].
    """
    name = "handwritten-parsed-urlencoded"
    token = token_for(name)
    subject = "Caf\u00e9 tomorrow?"
    from_value = "Zo\u00eb <zoe@fika.example.se>"
    headers = [
        ["Mime-Version", "1.0"],
        ["From", from_value],
        ["To", "friends.alice@example.org"],
        ["Subject", subject],
        ["Date", "Tue, 14 Nov 2023 22:12:00 +0100"],
        ["Message-Id", "<fika.1700000000@fika.example.se>"],
        ["Content-Type", 'text/plain; charset="UTF-8"'],
        ["Content-Transfer-Encoding", "8bit"],
    ]
    plain = "Hej Alice,\r\n\r\nfika at the caf\u00e9 tomorrow at 10? \u2615\r\n\r\nZo\u00eb\r\n"
    fields = [
        ("recipient", b"friends.alice@example.org"),
        ("sender", b"zoe@fika.example.se"),
        ("subject", subject.encode()),
        ("from", from_value.encode()),
        ("X-Mailgun-Sflag", b"No"),
        ("X-Mailgun-Sscore", b"-0.1"),
        ("message-headers", json.dumps(headers).encode()),
        ("body-plain", plain.encode()),
        ("stripped-text", b"Hej Alice,\r\n\r\nfika at the caf\xc3\xa9 tomorrow at 10? \xe2\x98\x95"),
        ("stripped-signature", "Zo\u00eb".encode()),
        ("timestamp", TIMESTAMP.encode()),
        ("token", token.encode()),
        ("signature", signature(token).encode()),
    ]
    meta = {
        "content_type": "application/x-www-form-urlencoded",
        "recipient": "friends.alice@example.org",
        "note": "hand-written parsed form without attachments, urlencoded; body-plain holds percent-encoded UTF-8",
        "form": "parsed",
        "follows": ["RECEIVE", "SIGN"],
        "expect_attachments": [],
        "expect_headers": {"Subject": subject, "From": from_value, "Message-Id": "<fika.1700000000@fika.example.se>"},
    }
    return urlencode(fields), meta


def mime_multipart(name: str, source: str, recipient: str, sender: str, note: str) -> Post:
    """What Mailgun posts to a route URL ending in ``mime`` as multipart/form-data.

    Follows [RECEIVE] (the MIME form's fields, in the documented order) and [SIGN].
    body-mime is a plain form field holding the raw octets (8bit Shift_JIS here).
    """
    raw = (EML / source).read_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    from_value = next(line[5:].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"from:"))
    subject = next(line[8:].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"subject:"))
    token = token_for(name)
    boundary = b"6a0c3f7b9e2d4c1a8f5e0b3d7c9a2e4f"
    fields: list[tuple[str, bytes, tuple[str, str] | None]] = [
        ("recipient", recipient.encode(), None),
        ("sender", sender.encode(), None),
        ("from", from_value, None),
        ("subject", subject, None),
        ("body-mime", raw, None),
        ("timestamp", TIMESTAMP.encode(), None),
        ("token", token.encode(), None),
        ("signature", signature(token).encode(), None),
    ]
    meta = {
        "content_type": "multipart/form-data; boundary=" + boundary.decode(),
        "recipient": recipient,
        "note": note,
        "form": "mime",
        "follows": ["RECEIVE", "SIGN"],
        "source": source,
    }
    return multipart(boundary, fields), meta


def gif_bytes() -> bytes:
    """A 1x1 transparent GIF89a (43 bytes)."""
    return (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
        b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


SAMPLE_CID = "part1.0406@notes.example.net"
SAMPLE_TEXT = "Hi Alice,\r\n\r\nThis is Bob.\r\n\r\nI also attached a file.\r\n\r\nThanks,\r\nBob\r\n"
SAMPLE_HTML = (
    "<html><body><p>Hi Alice,</p>\r\n"
    f'<p>This is Bob. <img alt="" src="cid:{SAMPLE_CID}" height="15" width="33"></p>\r\n'
    "<p>I also attached a file.</p><p>Thanks,<br>Bob</p></body></html>\r\n"
)
SAMPLE_FILE = "Gr\u00fc\u00dfe aus K\u00f6ln\r\n".encode()
SAMPLE_FILENAME = "attached_\u0444\u0430\u0439\u043b.txt"
SAMPLE_HEADERS = [
    (
        "Received",
        "from [198.51.100.7] (unknown [198.51.100.7]) by mxa.mailgun.org with ESMTP id 517acc75.4b341f0; "
        "Fri, 26 Apr 2013 18:50:29 -0000 (UTC)",
    ),
    ("Message-Id", "<517ACC75.5010709@notes.example.net>"),
    ("Date", "Fri, 26 Apr 2013 11:50:29 -0700"),
    ("From", "Bob <bob@notes.example.net>"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:17.0) Gecko/20130308 Thunderbird/17.0.4"),
    ("Mime-Version", "1.0"),
    ("To", "Alice <notes@example.org>"),
    ("Subject", "Re: Sample POST request"),
    ("References", "<517AC78B.5060404@notes.example.net>"),
    ("In-Reply-To", "<517AC78B.5060404@notes.example.net>"),
    ("X-Test-Many", "v1"),
    ("X-Test-Many", "v2"),
    ("X-Test-Many", "v3"),
    ("X-Test-Utf8", "Gr\u00fc\u00dfe aus K\u00f6ln"),
    ("Content-Type", 'multipart/mixed; boundary="------------020601070403020003080006"'),
    ("Sender", "bob@notes.example.net"),
]


def sample_message() -> bytes:
    """The message behind the parsed sample post, as Mailgun received it (CRLF, raw UTF-8 header, RFC 6532)."""
    b64 = base64.encodebytes
    head = b"".join(f"{n}: {v}".encode() + CRLF for n, v in SAMPLE_HEADERS)
    outer, inner = b"------------020601070403020003080006", b"------------050703000208010404030307"
    body = (
        b"This is a multi-part message in MIME format."
        + CRLF
        + b"--"
        + outer
        + CRLF
        + b'Content-Type: multipart/alternative; boundary="'
        + inner
        + b'"'
        + CRLF
        + CRLF
        + b"--"
        + inner
        + CRLF
        + b"Content-Type: text/plain; charset=UTF-8"
        + CRLF
        + b"Content-Transfer-Encoding: 8bit"
        + CRLF
        + CRLF
        + SAMPLE_TEXT.encode()
        + CRLF
        + b"--"
        + inner
        + CRLF
        + b"Content-Type: text/html; charset=UTF-8"
        + CRLF
        + b"Content-Transfer-Encoding: 8bit"
        + CRLF
        + CRLF
        + SAMPLE_HTML.encode()
        + CRLF
        + b"--"
        + inner
        + b"--"
        + CRLF
        + CRLF
        + b"--"
        + outer
        + CRLF
        + b'Content-Type: image/gif; name="crabby.gif"'
        + CRLF
        + b"Content-Transfer-Encoding: base64"
        + CRLF
        + b"Content-ID: <"
        + SAMPLE_CID.encode()
        + b">"
        + CRLF
        + b'Content-Disposition: inline; filename="crabby.gif"'
        + CRLF
        + CRLF
        + b64(gif_bytes()).replace(b"\n", CRLF)
        + CRLF
        + b"--"
        + outer
        + CRLF
        + b"Content-Type: text/plain; charset=UTF-8"
        + CRLF
        + b"Content-Transfer-Encoding: base64"
        + CRLF
        + b"Content-Disposition: attachment;"
        + CRLF
        + b" filename*=UTF-8''"
        + urllib.parse.quote(SAMPLE_FILENAME).encode()
        + CRLF
        + CRLF
        + b64(SAMPLE_FILE).replace(b"\n", CRLF)
        + CRLF
        + b"--"
        + outer
        + b"--"
        + CRLF
    )
    return head + CRLF + body


def parsed_sample() -> Post:
    """The parsed form of sample_message(), shaped like the control panel's sample POST.

    Follows [RECEIVE] (the parsed fields; message-headers keeps the order and every
    repeated header; content-id-map maps <Content-ID> to attachment-1; multipart
    because there are attachments), [SAMPLE] (each header also as its own field, a
    repeated one with its last value; a UTF-8 attachment file name) and [SIGN].
    The stripped-* fields are left out: [RECEIVE] says they are absent when Mailgun's
    quote detection fails, so a receiver must not need them.
    """
    name = "parsed-sample"
    token = token_for(name)
    boundary = b"c4d1e8f0a3b5c7d9e1f2a4b6c8d0e2f4"
    per_header = {n: v for n, v in SAMPLE_HEADERS}  # the last value of a repeated header wins
    fields: list[tuple[str, bytes, tuple[str, str] | None]] = [
        ("recipient", b"notes@example.org", None),
        ("sender", b"bob@notes.example.net", None),
        ("from", per_header["From"].encode(), None),
        ("subject", per_header["Subject"].encode(), None),
        ("body-plain", SAMPLE_TEXT.encode(), None),
        ("body-html", SAMPLE_HTML.encode(), None),
        ("attachment-count", b"2", None),
        ("timestamp", TIMESTAMP.encode(), None),
        ("token", token.encode(), None),
        ("signature", signature(token).encode(), None),
        ("message-headers", json.dumps([[n, v] for n, v in SAMPLE_HEADERS]).encode(), None),
        ("content-id-map", json.dumps({f"<{SAMPLE_CID}>": "attachment-1"}).encode(), None),
        *((n, v.encode(), None) for n, v in per_header.items()),
        ("attachment-1", gif_bytes(), ("crabby.gif", "image/gif")),
        ("attachment-2", SAMPLE_FILE, (SAMPLE_FILENAME, "text/plain")),
    ]
    meta = {
        "content_type": "multipart/form-data; boundary=" + boundary.decode(),
        "recipient": "notes@example.org",
        "note": (
            "parsed form of parsed-sample.eml in the shape of Mailgun's sample POST: repeated X-Test-Many "
            "header, raw UTF-8 header, an inline GIF in content-id-map, a UTF-8 attachment file name"
        ),
        "form": "parsed",
        "follows": ["RECEIVE", "SAMPLE", "SIGN"],
        "message": f"{name}.eml",
        "expect_attachments": [
            {
                "filename": "crabby.gif",
                "content_type": "image/gif",
                "content_id": SAMPLE_CID,
                "sha256": hashlib.sha256(gif_bytes()).hexdigest(),
            },
            {
                "filename": SAMPLE_FILENAME,
                "content_type": "text/plain",
                "content_id": None,
                "sha256": hashlib.sha256(SAMPLE_FILE).hexdigest(),
            },
        ],
        "expect_headers": {
            "Subject": per_header["Subject"],
            "From": per_header["From"],
            "Message-Id": per_header["Message-Id"],
            "X-Test-Utf8": per_header["X-Test-Utf8"],
        },
    }
    return multipart(boundary, fields), meta


def handwritten_posts() -> dict[str, Post]:
    return {
        "handwritten-mime-urlencoded": mime_urlencoded(
            "handwritten-mime-urlencoded",
            "05-alternative-text-html.eml",
            "github@example.org",
            "notifications@github.example",
            VECTOR_TOKEN,
            "hand-written urlencoded body-mime post of a 7bit message; signed with the DESIGN.md vector token",
        ),
        "handwritten-mime-urlencoded-latin1": mime_urlencoded(
            "handwritten-mime-urlencoded-latin1",
            "11-iso-8859-1-8bit.eml",
            "friends.alice@example.org",
            "renee@cafe.example.fr",
            token_for("handwritten-mime-urlencoded-latin1"),
            "hand-written urlencoded body-mime post whose percent-encoded octets are Latin-1, not UTF-8",
        ),
        "handwritten-parsed-multipart": parsed_multipart(),
        "handwritten-parsed-urlencoded": parsed_urlencoded(),
        "mime-multipart-shift-jis": mime_multipart(
            "mime-multipart-shift-jis",
            "12-shift-jis.eml",
            "friends.alice@example.org",
            "suzuki@kaisha.example.jp",
            "multipart/form-data body-mime post of an 8bit Shift_JIS message with ISO-2022-JP encoded-words",
        ),
        "parsed-sample": parsed_sample(),
    }


def build() -> dict[str, Post]:
    """Every sample post by name."""
    posts = handwritten_posts()
    assert signature(VECTOR_TOKEN) == VECTOR_SIGNATURE
    return dict(sorted(posts.items()))


def write(out_dir: Path) -> list[Path]:
    (out_dir / "parsed-sample.eml").write_bytes(sample_message())
    written = [out_dir / "parsed-sample.eml"]
    for name, (body, meta) in build().items():
        (out_dir / f"{name}.body").write_bytes(body)
        (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written += [out_dir / f"{name}.body", out_dir / f"{name}.json"]
    return written


if __name__ == "__main__":
    for path in write(HERE):
        print(path.relative_to(ROOT))
