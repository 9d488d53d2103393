#!/usr/bin/env python3
"""Generate the sample Mailgun route posts in tests/data/posts/ (NAME.body + NAME.json).

Deterministic: timestamp 1700000000, tokens derived from the post's name, fixed
multipart boundaries. Running it twice yields byte-identical files, and
tests/unit/test_posts.py checks that the stored files are exactly what it produces.

Two kinds of posts:

- generated with ``tagrelay_tools.mailgun_posts`` (``mime_post`` / ``parsed_post``) from corpus
  messages in tests/data/eml/; urllib3 picks a random multipart boundary, so the
  boundary is replaced by a fixed one afterwards;
- written by hand, byte by byte, in the shape Mailgun itself posts (field names,
  field order, the per-header fields, ``message-headers`` JSON, ``content-id-map``,
  spam verdict fields), so that the tests do not only see what our own helper
  produces.

NAME.json: ``content_type`` (the request's Content-Type), ``recipient``, ``note``,
``form`` (``mime`` or ``parsed``); ``source`` (the corpus file) for posts built from one; for the hand-written parsed
post, ``expect_attachments`` (filename, content_type, content_id, sha256 of the
bytes) and ``expect_headers``.

Usage:  .venv/bin/python tests/data/posts/make_posts.py   (writes next to this script)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
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


def fixed_boundary(content_type: str, body: bytes, name: str) -> tuple[str, bytes]:
    """Replace urllib3's random boundary by a fixed one derived from the post name."""
    old = content_type.partition("boundary=")[2].strip().encode("ascii")
    new = b"tagrelay-sample-" + hashlib.sha256(name.encode()).hexdigest()[:24].encode()
    assert old and new not in body
    delimiters = body.count(b"--" + old + b"\r\n") + body.count(b"--" + old + b"--\r\n")
    assert delimiters == body.count(old), "the random boundary also occurs inside a field"
    return content_type.replace(old.decode(), new.decode()), body.replace(old, new)


# -- posts generated with tagrelay_tools.mailgun_posts -------------------------------------------------

WEBHOOK_POSTS = [
    # name, source .eml, recipient, sender, parsed form?, note
    (
        "mime-latin1",
        "11-iso-8859-1-8bit.eml",
        "friends.alice@example.org",
        "renee@cafe.example.fr",
        False,
        "body-mime form (route URL ending in mime) of an 8bit Latin-1 message: raw octets that are not UTF-8",
    ),
    (
        "mime-shift-jis",
        "12-shift-jis.eml",
        "friends.alice@example.org",
        "suzuki@kaisha.example.jp",
        False,
        "body-mime form of an 8bit Shift_JIS message with ISO-2022-JP encoded-words",
    ),
    (
        "mime-nested-inline",
        "07-nested-related-inline-image.eml",
        "shop@example.org",
        "bounce+7f3a9c@shop.example.com",
        False,
        "body-mime form of mixed > related > alternative with an inline image and a PDF",
    ),
    (
        "mime-full-trace",
        "40-full-trace-headers.eml",
        "shop@example.org",
        "bounce@shop.example.com",
        False,
        "body-mime form of a message with DKIM, ARC and Authentication-Results headers",
    ),
    (
        "parsed-mixed-attachments",
        "06-mixed-attachments.eml",
        "bank@example.org",
        "alice@bank.example",
        True,
        "parsed form (body-plain, attachment-1..3) of a text message with PNG, PDF and CSV attachments",
    ),
    (
        "parsed-nested-inline",
        "07-nested-related-inline-image.eml",
        "shop@example.org",
        "bounce+7f3a9c@shop.example.com",
        True,
        "parsed form with body-html, an inline image named in content-id-map and a PDF",
    ),
    (
        "parsed-rfc2231-filenames",
        "09-rfc2231-filenames.eml",
        "friends.alice@example.org",
        "juergen@firma.example.de",
        True,
        "parsed form whose attachment filenames are non-ASCII (RFC 2231 in the original)",
    ),
]


def webhook_posts() -> dict[str, Post]:
    sys.path.insert(0, str(ROOT))
    from tagrelay_tools import mailgun_posts

    posts: dict[str, Post] = {}
    for name, source, recipient, sender, parsed, note in WEBHOOK_POSTS:
        raw = (EML / source).read_bytes()
        make = mailgun_posts.parsed_post if parsed else mailgun_posts.mime_post
        post = make(raw, recipient, sender, KEY.decode(), int(TIMESTAMP), token_for(name))
        content_type, body = fixed_boundary(post.content_type, post.body, name)
        meta = {
            "content_type": content_type,
            "recipient": recipient,
            "note": note,
            "form": "parsed" if parsed else "mime",
            "source": source,
        }
        posts[name] = (body, meta)
    return posts


# -- posts written by hand in Mailgun's shape ----------------------------------------------


def urlencode(fields: list[tuple[str, bytes]]) -> bytes:
    """application/x-www-form-urlencoded the way browsers and Mailgun write it: '+' for space."""
    return b"&".join(
        urllib.parse.quote_plus(name).encode("ascii")
        + b"="
        + urllib.parse.quote_from_bytes(value, safe="").replace("%20", "+").encode("ascii")
        for name, value in fields
    )


def mime_urlencoded(name: str, source: str, recipient: str, sender: str, token: str, note: str) -> Post:
    """What Mailgun posts to a route URL ending in ``mime`` when it urlencodes the form."""
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
    """A parsed-form post in Mailgun's shape: bodies, stripped parts, headers, two attachments."""
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
    """A parsed form without attachments, urlencoded (UTF-8 text percent-encoded)."""
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
        "expect_attachments": [],
        "expect_headers": {"Subject": subject, "From": from_value, "Message-Id": "<fika.1700000000@fika.example.se>"},
    }
    return urlencode(fields), meta


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
    }


def build() -> dict[str, Post]:
    """Every sample post by name."""
    posts = webhook_posts()
    posts.update(handwritten_posts())
    assert signature(VECTOR_TOKEN) == VECTOR_SIGNATURE
    return dict(sorted(posts.items()))


def write(out_dir: Path) -> list[Path]:
    written = []
    for name, (body, meta) in build().items():
        (out_dir / f"{name}.body").write_bytes(body)
        (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written += [out_dir / f"{name}.body", out_dir / f"{name}.json"]
    return written


if __name__ == "__main__":
    for path in write(HERE):
        print(path.relative_to(ROOT))
