#!/usr/bin/env python3
"""Generate the tagrelay e-mail test corpus (tests/data/eml/NN-*.eml + MANIFEST.json).

Deterministic: fixed dates, boundaries, Message-IDs and pseudo-random bytes derived
from SHA-256 of fixed seeds.  No randomness, no current time.  Running it twice
yields byte-identical files.  Stdlib only.

Messages are assembled by hand as byte strings (not via email.generator) so that the
exact wire bytes -- line endings, folding, raw 8-bit octets, malformed structures --
are under our control.  Internally every text fragment uses "\\n"; it is converted to
the message's line ending (CRLF or bare LF) at serialisation time.  Raw binary bodies
(Content-Transfer-Encoding: binary, embedded message/rfc822 bytes) are inserted
verbatim.

MANIFEST.json maps each file name to:
  description, from_header_present, line_ending ("crlf"|"lf"), has_reply_to,
  expect_attachments: list of {filename, content_type, content_id, sha256}
expect_attachments lists the non-body MIME leaves (Content-Disposition attachment or
inline, or a filename/name parameter, or a Content-ID), in document order.
  * filename: the decoded file name (RFC 2231 / RFC 2047 decoded) or null.
  * content_type: lower-case "type/subtype".
  * content_id: the Content-ID without the surrounding angle brackets, or null.
  * sha256: of the decoded bytes (base64-decoded for base64 parts; for 7bit/8bit/
    binary parts, the body octets as written, i.e. with the message's line endings,
    excluding the line break that belongs to the following boundary delimiter;
    for message/rfc822 parts, the embedded message octets).
Parts inside a multipart whose boundary is never used (mismatched boundary) are not
listed, since a MIME parser cannot see them.

Usage:  python3 tests/data/eml/make_corpus.py   (writes next to this script)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import quopri
import re
import struct
import zlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

HERE = os.path.dirname(os.path.abspath(__file__))
CRLF = b"\r\n"
LF = b"\n"
BASE = datetime(2024, 6, 4, 9, 15, 27, tzinfo=timezone.utc)


# ---------------------------------------------------------------------------
# deterministic helpers
# ---------------------------------------------------------------------------


def prng(seed: str, n: int) -> bytes:
    """n deterministic pseudo-random bytes (SHA-256 counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def hexid(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def b64tok(seed: str, nbytes: int) -> str:
    return base64.b64encode(prng(seed, nbytes)).decode()


def date(hours: float = 0, tz: float = 0, seconds: int = 0) -> str:
    d = BASE + timedelta(hours=hours, seconds=seconds)
    return format_datetime(d.astimezone(timezone(timedelta(hours=tz))))


def unix(hours: float = 0) -> int:
    return int((BASE + timedelta(hours=hours)).timestamp())


def b64lines(data: bytes, width: int = 76) -> bytes:
    s = base64.b64encode(data)
    return b"\n".join(s[i : i + width] for i in range(0, len(s), width)) + b"\n"


def qp(data: bytes) -> bytes:
    return quopri.encodestring(data)


def ew_b(text: str, charset: str = "UTF-8") -> list[str]:
    """RFC 2047 B encoded-words, each at most 75 characters."""
    prefix = f"=?{charset}?B?"
    words: list[str] = []
    cur = ""
    for ch in text:
        cand = cur + ch
        if len(prefix) + len(base64.b64encode(cand.encode(charset))) + 2 > 75 and cur:
            words.append(cur)
            cur = ch
        else:
            cur = cand
    if cur:
        words.append(cur)
    return [prefix + base64.b64encode(w.encode(charset)).decode() + "?=" for w in words]


def _q(b: bytes) -> str:
    out = []
    for c in b:
        ch = chr(c)
        if c == 0x20:
            out.append("_")
        elif c < 128 and (ch.isalnum() or ch in "!*+-/"):
            out.append(ch)
        else:
            out.append("=%02X" % c)
    return "".join(out)


def ew_q(text: str, charset: str = "UTF-8") -> list[str]:
    """RFC 2047 Q encoded-words, each at most 75 characters."""
    prefix = f"=?{charset}?Q?"
    words: list[str] = []
    cur = ""
    for ch in text:
        cand = cur + ch
        if len(prefix) + len(_q(cand.encode(charset))) + 2 > 75 and cur:
            words.append(cur)
            cur = ch
        else:
            cur = cand
    if cur:
        words.append(cur)
    return [prefix + _q(w.encode(charset)) + "?=" for w in words]


def fold_words(name: str, value: str, width: int = 76) -> str:
    """Fold an unstructured header at whitespace ("\\n " continuation)."""
    lines: list[str] = []
    cur = name + ":"
    for w in value.split(" "):
        if len(cur) + 1 + len(w) > width and cur != name + ":":
            lines.append(cur)
            cur = " " + w
        else:
            cur += " " + w
    lines.append(cur)
    return "\n".join(lines)


def fold_token(tok: str, first: int = 60, width: int = 72, sep: str = "\n\t ") -> str:
    parts = [tok[:first]] + [tok[i : i + width] for i in range(first, len(tok), width)]
    return sep.join(parts)


# ---------------------------------------------------------------------------
# binary fixtures made of real bytes
# ---------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _zlib_stored(raw: bytes) -> bytes:
    # zlib stream using only "stored" deflate blocks: byte-for-byte stable everywhere.
    out = bytearray(b"\x78\x01")
    for i in range(0, max(len(raw), 1), 65535):
        block = raw[i : i + 65535]
        final = 1 if i + 65535 >= len(raw) else 0
        out += bytes([final]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF)
    return bytes(out)


def make_png(w: int, h: int, tint: int) -> bytes:
    rows = bytearray()
    for y in range(h):
        rows += b"\x00"
        for x in range(w):
            rows += bytes(((x * 255 // max(w - 1, 1)) & 255, (y * 255 // max(h - 1, 1)) & 255, tint & 255))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"tEXt", b"Comment\x00tagrelay test fixture")
        + _png_chunk(b"IDAT", _zlib_stored(bytes(rows)))
        + _png_chunk(b"IEND", b"")
    )


GIF_1X1 = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def make_pdf(title: str, lines: list[str]) -> bytes:
    text_ops = b"BT /F1 12 Tf 72 720 Td 14 TL\n" + b"".join(
        b"(" + ln.replace("(", r"\(").replace(")", r"\)").encode("latin-1") + b") Tj T*\n" for ln in lines
    ) + b"ET"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(text_ops) + text_ops + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Title (" + title.encode("latin-1") + b") /Producer (tagrelay corpus)"
        b" /CreationDate (D:20240604091527Z) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n" % (len(objs) + 1, xref)
    out += b"%%EOF\n"
    return bytes(out)


def crc24(data: bytes) -> int:
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def pgp_armor(seed: str) -> bytes:
    # v4 signature packet header (ed25519, SHA-512) followed by fixed pseudo bytes.
    pkt = b"\x88\x75\x04\x01\x16\x0a\x00\x1d\x16\x21\x04" + prng(seed, 108)
    body = base64.b64encode(pkt).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    chk = base64.b64encode(crc24(pkt).to_bytes(3, "big")).decode()
    return ("-----BEGIN PGP SIGNATURE-----\n\n" + "\n".join(lines) + "\n=" + chk + "\n-----END PGP SIGNATURE-----\n").encode()


def pkcs7_blob(seed: str) -> bytes:
    # Indefinite-length DER prefix of a CMS SignedData (RFC 5652), then fixed bytes.
    prefix = bytes.fromhex(
        "3080"  # SEQUENCE
        "06092a864886f70d010702"  # OID signedData
        "a080" "3080" "020101"  # [0] SEQUENCE version 1
        "310f300d06096086480165030402010500"  # digestAlgorithms sha256
        "3080" "06092a864886f70d010701" "0000"  # encapContentInfo (detached)
        "a0820b5a"  # certificates [0]
    )
    return prefix + prng(seed, 2950) + b"\x00\x00\x00\x00\x00\x00"


BIG_BLOB = prng("big-attachment", 300 * 1024)
PNG_LOGO = make_png(24, 12, 0x33)
PNG_PIXEL = make_png(4, 4, 0xC0)
PNG_PHOTO = make_png(48, 32, 0x80)
PDF_INVOICE = make_pdf("Invoice 2024-0611", ["Shop Example Inc.", "Invoice 2024-0611", "Total: EUR 149.90"])
PDF_STATEMENT = make_pdf("Statement May 2024", ["Bank Example", "Statement for May 2024", "Balance: 1,234.56"])
PDF_RESUME = make_pdf("Resume", ["Curriculum vitae", "Zurich, 2024"])
XLSX_LIKE = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + prng("xlsx", 1800) + b"PK\x05\x06" + b"\x00" * 18
TNEF_BLOB = b"\x78\x9f\x3e\x22\x01\x00\x01\x06\x90\x08\x00" + prng("tnef", 2400)
DOCX_LIKE = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + prng("docx", 1200) + b"PK\x05\x06" + b"\x00" * 18
ZIP_LIKE = b"PK\x03\x04\x0a\x00\x00\x00\x00\x00" + prng("zip", 700) + b"PK\x05\x06" + b"\x00" * 18
GPG_KEY_LIKE = b"\x99\x01\x0d\x04" + prng("pubkey", 520)


# ---------------------------------------------------------------------------
# message tree + serialiser
# ---------------------------------------------------------------------------


class Leaf:
    def __init__(self, headers, body=b"", text=True, att=None, no_blank_line=False):
        self.headers = list(headers)
        self.body = body
        self.text = text  # convert "\n" -> message line ending
        self.att = att  # manifest info for attachment leaves
        self.no_blank_line = no_blank_line


class Multi:
    def __init__(self, headers, boundary, parts, preamble=None, epilogue=None, close=True, delim=None):
        self.headers = list(headers)
        self.boundary = boundary
        self.parts = parts
        self.preamble = preamble
        self.epilogue = epilogue
        self.close = close  # write the closing "--boundary--" delimiter
        self.delim = delim  # boundary string actually used in the body (mismatch test)


def ser(node, nl: bytes, atts: list, collect: bool = True) -> bytes:
    out = bytearray()
    for h in node.headers:
        hb = h if isinstance(h, bytes) else h.encode("utf-8")
        out += hb.replace(b"\n", nl) + nl
    if isinstance(node, Leaf):
        if node.no_blank_line:
            return bytes(out)
        out += nl
        body = node.body.replace(b"\n", nl) if node.text else node.body
        if node.att is not None and collect:
            a = dict(node.att)
            data = a.pop("data", None)
            if data is None:
                data = body
            atts.append(
                {
                    "filename": a.get("filename"),
                    "content_type": a["content_type"],
                    "content_id": a.get("content_id"),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        out += body
        return bytes(out)
    out += nl
    d = (node.delim or node.boundary).encode()
    if node.preamble is not None:
        out += node.preamble.replace(b"\n", nl)
    sub_collect = collect and node.delim is None
    for i, p in enumerate(node.parts):
        out += b"--" + d + nl
        out += ser(p, nl, atts, sub_collect)
        if i < len(node.parts) - 1 or node.close:
            out += nl
    if node.close:
        out += b"--" + d + b"--" + nl
        if node.epilogue is not None:
            out += node.epilogue.replace(b"\n", nl)
    return bytes(out)


# -- part builders -----------------------------------------------------------


def text_part(body: str | bytes, subtype="plain", charset="utf-8", enc="quoted-printable", extra=(), ctype=None):
    raw = body if isinstance(body, bytes) else body.encode(charset)
    if enc == "quoted-printable":
        payload = qp(raw)
    elif enc == "base64":
        payload = b64lines(raw)
    else:
        payload = raw
    ct_line = ctype or f'Content-Type: text/{subtype}; charset="{charset}"'
    return Leaf([ct_line, f"Content-Transfer-Encoding: {enc}", *extra], payload)


def attachment(
    data: bytes,
    ctype: str,
    filename: str | None,
    *,
    disposition: str | None = "attachment",
    cid: str | None = None,
    headers: list | None = None,
    enc: str = "base64",
    params: str = "",
):
    """Base64 (default) attachment leaf; `headers` overrides the generated header lines."""
    if headers is None:
        q = f'; name="{filename}"' if filename else ""
        headers = [f"Content-Type: {ctype}{params}{q}"]
        if disposition:
            fq = f'; filename="{filename}"' if filename else ""
            headers.append(f"Content-Disposition: {disposition}{fq}")
        if cid:
            headers.append(f"Content-ID: <{cid}>")
        headers.append(f"Content-Transfer-Encoding: {enc}")
    if enc == "base64":
        body, text = b64lines(data), True
    else:
        body, text = data, False
    att = {"filename": filename, "content_type": ctype.split(";")[0].strip().lower(), "content_id": cid, "data": data}
    return Leaf(headers, body, text=text, att=att)


def multi(subtype: str, boundary: str, parts, extra_params="", headers_extra=(), **kw):
    hdr = [f'Content-Type: multipart/{subtype};{extra_params}\n boundary="{boundary}"', *headers_extra]
    return Multi(hdr, boundary, parts, **kw)


def with_headers(top: list, node):
    node.headers = list(top) + node.headers
    return node


def trace(
    tag: str,
    dom: str,
    rcpt: str,
    hours: float,
    ip: str,
    *,
    sel: str = "s2024",
    env: str | None = None,
    dkim: bool = True,
    arc: bool = True,
    outhost: str | None = None,
) -> list[str]:
    """Realistic trace/authentication header block (newest first) as seen by the receiving MX."""
    if env is None:
        env = f"bounces+{hexid(tag, 8)}@{dom}"
    mf = f"smtp.mailfrom={env}" if env else "smtp.mailfrom=<> smtp.helo=" + (outhost or dom)
    outhost = outhost or f"out-{int(hexid(tag + 'h', 4), 16) % 40 + 1}.smtp.{dom}"
    t = unix(hours)
    bh = b64tok(tag + "bh", 32)
    hb = b64tok(tag + "hb", 6)[:8]
    res = (
        f"dkim=pass header.i=@{dom} header.s={sel} header.b={hb};\n"
        f"       spf=pass (mxa.mailgun.org: domain of {env} designates {ip} as permitted sender)"
        f" {mf};\n"
        f"       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from={dom}"
    )
    if not dkim:
        res = (
            f"dkim=none;\n       spf=softfail (mxa.mailgun.org: domain of transitioning {env} does not"
            f" designate {ip} as permitted sender) {mf};\n"
            f"       dmarc=fail (p=NONE sp=NONE dis=NONE) header.from={dom}"
        )
    hs = [
        f"Delivered-To: {rcpt}",
        f"Received: by 2002:a05:7300:{hexid(tag + 'v6', 4)}:b0:{hexid(tag + 'b0', 3)}:"
        f"{hexid(tag + 'x', 4)} with SMTP id {hexid(tag + 'id', 4)}csp{int(hexid(tag, 6), 16) % 999999};\n"
        f"        {date(hours, seconds=3)}",
    ]
    if arc:
        hs += [
            "ARC-Seal: i=1; a=rsa-sha256; t=%d; cv=none;\n        d=mailgun.org; s=arc-20240605;\n        b=%s"
            % (t + 2, fold_token(b64tok(tag + "as", 256), 62, 70, "\n         ")),
            "ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=mailgun.org; s=arc-20240605;\n"
            "        h=to:subject:message-id:date:from:mime-version:dkim-signature;\n"
            f"        bh={bh};\n        fh={b64tok(tag + 'fh', 32)};\n"
            "        b=%s" % fold_token(b64tok(tag + "ams", 256), 62, 70, "\n         "),
            f"ARC-Authentication-Results: i=1; mxa.mailgun.org;\n       {res}",
        ]
    hs += [
        f"Return-Path: <{env}>",
        f"Received: from {outhost} ({outhost}. [{ip}])\n"
        f"        by mxa.mailgun.org with ESMTPS id {hexid(tag + 'es', 12)}.{int(hexid(tag, 5), 16)}\n"
        f"        for <{rcpt}>\n"
        "        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);\n"
        f"        {date(hours, seconds=2)}",
        f"Received-SPF: pass (mxa.mailgun.org: domain of {env} designates {ip} as permitted sender)"
        f" client-ip={ip};",
        f"Authentication-Results: mxa.mailgun.org;\n       {res}",
        f"Received: from localhost (localhost [127.0.0.1])\n"
        f"        by {outhost} (Postfix) with ESMTP id 4Vt{hexid(tag + 'pf', 9).upper()}\n"
        f"        for <{rcpt}>; {date(hours, seconds=1)}",
    ]
    if dkim:
        hs.append(
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={dom}; s={sel};\n"
            f"\tt={t}; h=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type;\n"
            f"\tbh={bh};\n"
            f"\tb={fold_token(b64tok(tag + 'sig', 256))}"
        )
    return hs


# ---------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------

MESSAGES: list[tuple[str, str, bytes, object]] = []  # (short-name, description, nl, node)


def add(name: str, description: str, nl: bytes = CRLF):
    def deco(fn):
        MESSAGES.append((name, description, nl, fn()))
        return fn

    return deco


@add("plain-ascii", "Plain US-ASCII text, no MIME headers at all (RFC 5322 only), CRLF.")
def _():
    return Leaf(
        [
            "Return-Path: <alice@bank.example>",
            "Received: from smtp.bank.example (smtp.bank.example [192.0.2.10])\n"
            f"        by mxa.mailgun.org with ESMTP id 1a2b3c4d; {date(0, seconds=2)}",
            "From: Alice Banker <alice@bank.example>",
            "To: bank@example.org",
            "Subject: Your monthly statement is ready",
            f"Date: {date(0)}",
            "Message-ID: <20240604091527.1001@bank.example>",
        ],
        b"Hello,\n\nYour statement for May 2024 is now available in online banking.\n"
        b"Log in at https://bank.example/statements to view it.\n\n"
        b"This is an automated message; please do not reply.\n\n-- \nBank Example Customer Care\n",
    )


@add("plain-utf8-8bit", "text/plain; charset=utf-8 with Content-Transfer-Encoding: 8bit (raw UTF-8 octets).")
def _():
    body = (
        "Hi Alice,\n\nThanks for the order! Here's what you bought:\n\n"
        "  • 1× Crème brûlée torch — €24,90\n  • 2× Ørsted café mugs — €31,00\n"
        "  • 1× 日本の急須 (Japanese teapot) — €45,00\n\n"
        "Naïve façade coöperation — “smart quotes” and emoji 📦🚚✅\n\nCheers,\nBob\n"
    )
    return with_headers(
        trace("m02", "shop.example.com", "shop@example.org", 1, "198.51.100.23")
        + [
            "From: Bob Shopkeeper <bob@shop.example.com>",
            "To: shop@example.org",
            "Subject: Order #10023 confirmed",
            f"Date: {date(1)}",
            "Message-ID: <order-10023.1717496127@shop.example.com>",
            "MIME-Version: 1.0",
        ],
        text_part(body, enc="8bit"),
    )


@add("quoted-printable", "text/plain UTF-8 quoted-printable with soft line breaks, =3D and encoded trailing space.")
def _():
    body = (
        "Dear customer,\n\nYour password reset link (valid for 30 minutes) is: "
        "https://bank.example/reset?token=AbC123xYz&user=alice&expires=1717500000&sig=deadbeefcafebabe0123456789\n\n"
        "Equation test: a=b+c, 2+2=4, key=value; trailing space here \n"
        "Accents: déjà vu, Grüße, señor, Ærøskøbing, ça va?\n"
        "This is a deliberately long line that goes well past seventy-six characters so the encoder "
        "must insert soft line breaks in the middle of it.\n\n-- \nBank Example\n"
    )
    return with_headers(
        trace("m03", "bank.example", "bank@example.org", 2, "192.0.2.10")
        + [
            "From: Bank Example Security <security@bank.example>",
            "To: bank@example.org",
            "Subject: Password reset requested",
            f"Date: {date(2, tz=2)}",
            "Message-ID: <reset.8f2c1d@bank.example>",
            "MIME-Version: 1.0",
        ],
        text_part(body),
    )


@add("base64-text", "text/plain UTF-8 body with Content-Transfer-Encoding: base64.")
def _():
    body = (
        "Hello from the newsletter team!\n\nThis week: 10 tips for better e-mail hygiene.\n"
        "1. Use filters.\n2. Unsubscribe from what you don't read.\n3. Don't click unknown links.\n\n"
        "Grüße aus Köln — Das Newsletter-Team\n"
    )
    return with_headers(
        trace("m04", "news.example.net", "news@example.org", 3, "203.0.113.5", sel="nl1")
        + [
            "From: Weekly Digest <digest@news.example.net>",
            "To: news@example.org",
            "Subject: Weekly digest #42",
            f"Date: {date(3)}",
            "Message-ID: <digest-42@news.example.net>",
            "MIME-Version: 1.0",
        ],
        text_part(body, enc="base64"),
    )


@add("alternative-text-html", "multipart/alternative with text/plain and text/html (both quoted-printable), GitHub-style.")
def _():
    txt = "@bob requested your review on: tagrelay/tagrelay#17 Handle folded headers.\n\n-- \nReply to this email directly or view it on GitHub:\nhttps://github.example/tagrelay/tagrelay/pull/17\n"
    html = (
        "<p><a href=\"https://github.example/bob\" class=\"user-mention\">@bob</a> requested your review on: "
        "<a href=\"https://github.example/tagrelay/tagrelay/pull/17\">#17</a> Handle folded headers.</p>\n"
        "<p style=\"font-size:small;color:#666\">&mdash;<br>Reply to this email directly, "
        "<a href=\"https://github.example/tagrelay/tagrelay/pull/17\">view it on GitHub</a>.</p>\n"
    )
    return with_headers(
        trace("m05", "github.example", "github@example.org", 4, "192.0.2.77", sel="pf2023")
        + [
            "From: Bob Reviewer <notifications@github.example>",
            "Reply-To: tagrelay/tagrelay <reply+ABCDEF0123456789@reply.github.example>",
            "To: tagrelay/tagrelay <tagrelay@noreply.github.example>",
            "Cc: Review requested <review_requested@noreply.github.example>",
            "Subject: [tagrelay/tagrelay] Handle folded headers (PR #17)",
            f"Date: {date(4, tz=-7)}",
            "Message-ID: <tagrelay/tagrelay/pull/17@github.example>",
            "In-Reply-To: <tagrelay/tagrelay/pull/17/issue_event/1234@github.example>",
            "List-ID: tagrelay/tagrelay <tagrelay.tagrelay.github.example>",
            "List-Unsubscribe: <mailto:unsub+ABCDEF@reply.github.example>,"
            " <https://github.example/notifications/unsubscribe/ABCDEF>",
            "X-GitHub-Reason: review_requested",
            "MIME-Version: 1.0",
        ],
        multi("alternative", "--==_mimepart_665ed0af1b2c3_5a1f3e8c1234",
              [text_part(txt), text_part(html, "html")], extra_params="\n charset=UTF-8;"),
    )


@add("mixed-attachments", "multipart/mixed: text body + PNG image + PDF + CSV attachments (base64).")
def _():
    csv = b"date,description,amount\r\n2024-05-01,Coffee,-3.50\r\n2024-05-02,Salary,2500.00\r\n"
    return with_headers(
        trace("m06", "bank.example", "bank@example.org", 5, "192.0.2.10")
        + [
            "From: Alice Banker <alice@bank.example>",
            "To: bank@example.org",
            "Subject: Documents you requested",
            f"Date: {date(5)}",
            "Message-ID: <docs.5512@bank.example>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "----=_Part_5512_1717506927000", [
            text_part("Hi,\n\nAttached are your statement, a chart and the CSV export.\n\nAlice\n", enc="7bit",
                      charset="us-ascii"),
            attachment(PNG_PHOTO, "image/png", "chart.png"),
            attachment(PDF_STATEMENT, "application/pdf", "statement-2024-05.pdf"),
            attachment(csv, "text/csv", "transactions.csv", params="; charset=us-ascii"),
        ]),
    )


@add("nested-related-inline-image",
     "multipart/mixed > multipart/related > multipart/alternative; HTML references inline PNG via cid:; plus PDF.")
def _():
    cid = "logo-7f3a9c@shop.example.com"
    html = (
        "<html><body><img src=\"cid:%s\" alt=\"Shop logo\" width=\"24\" height=\"12\">"
        "<h1>Thanks for your order</h1><p>Your invoice is attached.</p></body></html>\n" % cid
    )
    alt = multi("alternative", "b3_7a1c0e9d2f", [
        text_part("Thanks for your order. Your invoice is attached.\n"),
        text_part(html, "html"),
    ])
    related = multi("related", "b2_7a1c0e9d2f", [
        alt,
        attachment(PNG_LOGO, "image/png", "logo.png", disposition="inline", cid=cid),
    ], extra_params=' type="multipart/alternative";')
    return with_headers(
        trace("m07", "shop.example.com", "shop@example.org", 6, "198.51.100.23")
        + [
            "From: Shop Example <orders@shop.example.com>",
            "To: Alice Buyer <shop@example.org>",
            "Subject: Invoice 2024-0611",
            f"Date: {date(6)}",
            "Message-ID: <invoice-2024-0611@shop.example.com>",
            "MIME-Version: 1.0",
            "X-Mailer: PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)",
        ],
        multi("mixed", "b1_7a1c0e9d2f", [
            related,
            attachment(PDF_INVOICE, "application/pdf", "invoice-2024-0611.pdf"),
        ], preamble=b"This is a multi-part message in MIME format.\n"),
    )


@add("large-binary-attachment", "multipart/mixed with a 300 KiB deterministic pseudo-random application/octet-stream.")
def _():
    return with_headers(
        trace("m08", "files.example.com", "friends.alice@example.org", 7, "203.0.113.44")
        + [
            "From: Backup Robot <backup@files.example.com>",
            "To: Friends.Alice@example.org",
            "Subject: Nightly backup archive",
            f"Date: {date(7)}",
            "Message-ID: <backup-20240604@files.example.com>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "=_backup_boundary_0001", [
            text_part("Nightly backup attached (307200 bytes).\n", enc="7bit", charset="us-ascii"),
            attachment(BIG_BLOB, "application/octet-stream", "backup-20240604.bin"),
        ]),
    )


@add("rfc2231-filenames",
     "RFC 2231 filenames: UTF-8 percent-encoded, multi-segment continuation (Japanese), ISO-8859-1 with language.")
def _():
    fn1 = "Résumé Zürich.pdf"
    fn2 = "請求書_2024年6月分_最終版.xlsx"
    fn3 = "été.txt"
    enc2 = "".join("%%%02X" % b for b in fn2.encode("utf-8"))
    segs = [enc2[i : i + 54] for i in range(0, len(enc2), 54)]
    # do not split a %XX escape across segments
    fixed: list[str] = []
    carry = ""
    for s in segs:
        s = carry + s
        cut = len(s) - (len(s) % 3)
        fixed.append(s[:cut])
        carry = s[cut:]
    if carry:
        fixed.append(carry)
    disp2 = "Content-Disposition: attachment;\n" + ";\n".join(
        f" filename*{i}*=" + ("UTF-8''" if i == 0 else "") + s for i, s in enumerate(fixed)
    )
    xlsx_ct = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return with_headers(
        trace("m09", "firma.example.de", "friends.alice@example.org", 8, "198.51.100.90")
        + [
            "From: %s <juergen@firma.example.de>" % ew_q("Jürgen Beispiel")[0],
            "To: Friends.Alice@example.org",
            "Subject: Unterlagen",
            f"Date: {date(8, tz=2)}",
            "Message-ID: <unterlagen-0608@firma.example.de>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "------------0D3E5F7A9B1C2D3E4F5A6B7C", [
            text_part("Hallo Alice,\n\nanbei die Unterlagen.\n\nViele Grüße\nJürgen\n", enc="8bit"),
            attachment(PDF_RESUME, "application/pdf", fn1, headers=[
                'Content-Type: application/pdf;\n name="=?UTF-8?Q?R=C3=A9sum=C3=A9_Z=C3=BCrich=2Epdf?="',
                "Content-Disposition: attachment;\n filename*=UTF-8''R%C3%A9sum%C3%A9%20Z%C3%BCrich.pdf",
                "Content-Transfer-Encoding: base64",
            ]),
            attachment(XLSX_LIKE, xlsx_ct, fn2, headers=[
                f"Content-Type: {xlsx_ct}",
                disp2,
                "Content-Transfer-Encoding: base64",
            ]),
            attachment("C'est l'été.\n".encode("latin-1"), "text/plain", fn3, headers=[
                "Content-Type: text/plain; charset=ISO-8859-1",
                "Content-Disposition: attachment; filename*=iso-8859-1'fr'%E9t%E9.txt",
                "Content-Transfer-Encoding: base64",
            ]),
        ]),
    )


LONG_NAME = (
    "Project Phoenix - Final Architecture Review - Appendix C - Detailed Sequence Diagrams and "
    "Failure Mode Analysis for the Inbound Relay Pipeline (revised after the June steering "
    "committee, do not distribute externally) v7.3.docx"
)


@add("odd-filenames",
     "Attachments with odd filenames: spaces, escaped quotes, semicolon, path traversal, bare token, 230-char name.")
def _():
    docx_ct = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    segs = [LONG_NAME[i : i + 60] for i in range(0, len(LONG_NAME), 60)]
    long_disp = "Content-Disposition: attachment;\n" + ";\n".join(
        f' filename*{i}="{s}"' for i, s in enumerate(segs)
    )
    return with_headers(
        trace("m10", "shop.example.com", "shop@example.org", 9, "198.51.100.23")
        + [
            "From: Bob Shopkeeper <bob@shop.example.com>",
            "To: shop@example.org",
            "Subject: files with weird names",
            f"Date: {date(9)}",
            "Message-ID: <weird-names.77@shop.example.com>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "_=_odd_names_=_", [
            text_part("See attachments.\n", enc="7bit", charset="us-ascii"),
            attachment(DOCX_LIKE, docx_ct, "quarterly report  final (v2).docx"),
            attachment(b"Best offer ever.\n", "text/plain", 'the "best" offer.txt', headers=[
                'Content-Type: text/plain; charset=us-ascii; name="the \\"best\\" offer.txt"',
                'Content-Disposition: attachment; filename="the \\"best\\" offer.txt"',
                "Content-Transfer-Encoding: base64",
            ]),
            attachment(b"draft A\n", "text/plain", "notes; draft 'A'.txt"),
            attachment(b"root:x:0:0:not really\n", "text/plain", "../../etc/passwd.txt"),
            attachment(PDF_INVOICE, "application/pdf", "invoice_123.pdf", headers=[
                "Content-Type: application/pdf; name=invoice_123.pdf",
                "Content-Disposition: attachment; filename=invoice_123.pdf",
                "Content-Transfer-Encoding: base64",
            ]),
            attachment(DOCX_LIKE, docx_ct, LONG_NAME, headers=[
                f'Content-Type: {docx_ct};\n name="{LONG_NAME}"',
                long_disp,
                "Content-Transfer-Encoding: base64",
            ]),
        ]),
    )


@add("iso-8859-1-8bit", "text/plain; charset=ISO-8859-1, 8bit body of raw Latin-1 octets (not valid UTF-8).")
def _():
    body = (
        "Bonjour,\n\nVoici le menu du café : crème brûlée, pâté, tarte à la façon de grand-mère.\n"
        "Prix : 12£ / 14¥ / 15¢ — «très bon» ; Größe: groß; © 2024 Café Ünïcödé\n\nÀ bientôt,\nRenée\n"
    ).replace("—", "-")
    return with_headers(
        trace("m11", "cafe.example.fr", "friends.alice@example.org", 10, "203.0.113.61")
        + [
            "From: Renee Cafe <renee@cafe.example.fr>",
            "To: Friends.Alice@example.org",
            "Subject: =?ISO-8859-1?Q?Menu_du_caf=E9?=",
            f"Date: {date(10, tz=2)}",
            "Message-ID: <menu.1@cafe.example.fr>",
            "MIME-Version: 1.0",
        ],
        text_part(body.encode("latin-1"), charset="ISO-8859-1", enc="8bit"),
    )


@add("shift-jis", "text/plain; charset=Shift_JIS 8bit body; Subject as ISO-2022-JP B encoded-words.")
def _():
    body = (
        "山田様\n\nいつもお世話になっております。\n来週の会議の件でご連絡いたします。\n"
        "日時：６月１１日（火）１４時から\n場所：本社３階会議室\n\nよろしくお願いいたします。\n鈴木\n"
    )
    subj = "\n ".join(ew_b("来週の会議について（ご確認ください）", "ISO-2022-JP"))
    return with_headers(
        trace("m12", "kaisha.example.jp", "friends.alice@example.org", 11, "198.51.100.130")
        + [
            "From: %s <suzuki@kaisha.example.jp>" % ew_b("鈴木 一郎", "ISO-2022-JP")[0],
            "To: Friends.Alice@example.org",
            f"Subject: {subj}",
            f"Date: {date(11, tz=9)}",
            "Message-ID: <20240605.kaigi.0001@kaisha.example.jp>",
            "MIME-Version: 1.0",
            "X-Mailer: Becky! ver. 2.81.04",
        ],
        text_part(body.encode("shift_jis"), charset="Shift_JIS", enc="8bit",
                  ctype="Content-Type: text/plain; charset=Shift_JIS"),
    )


@add("windows-1252", "text/plain; charset=windows-1252 8bit body with smart quotes, euro sign, en dash, ellipsis (0x80-0x9F).")
def _():
    body = (
        "Hi team,\n\n“Quarterly numbers” are in – revenue €1.2M… that’s up 12%™.\n"
        "Bullet • points • everywhere; ‘single quotes’ too.\n\nRegards,\nDan\n"
    )
    return with_headers(
        trace("m13", "corp.example", "friends.alice@example.org", 12, "192.0.2.150", dkim=False, arc=False)
        + [
            "From: Dan Outlook <dan@corp.example>",
            "To: Friends.Alice@example.org",
            "Subject: Q2 numbers",
            f"Date: {date(12, tz=-5)}",
            "Message-ID: <DM6PR11MB4123ABCDEF0123456789@DM6PR11MB4123.namprd11.prod.outlook.example>",
            "Thread-Topic: Q2 numbers",
            "Thread-Index: AdqyAbCdEfGh0123456789==",
            "X-MS-Has-Attach: ",
            "MIME-Version: 1.0",
        ],
        text_part(body.encode("cp1252"), charset="Windows-1252", enc="8bit"),
    )


@add("koi8-r", "text/plain; charset=KOI8-R 8bit body; Subject and From name as KOI8-R B encoded-words.")
def _():
    body = "Здравствуйте!\n\nВысылаю счёт за июнь. Оплатите, пожалуйста, до пятницы.\n\nС уважением,\nИван\n"
    return with_headers(
        trace("m14", "pochta.example.ru", "friends.alice@example.org", 13, "203.0.113.200")
        + [
            "From: %s <ivan@pochta.example.ru>" % ew_b("Иван Петров", "KOI8-R")[0],
            "To: Friends.Alice@example.org",
            "Subject: %s" % "\n ".join(ew_b("Счёт за июнь", "KOI8-R")),
            f"Date: {date(13, tz=3)}",
            "Message-ID: <schet-06@pochta.example.ru>",
            "MIME-Version: 1.0",
        ],
        text_part(body.encode("koi8_r"), charset="KOI8-R", enc="8bit"),
    )


@add("rfc2047-utf8-b", "Subject and From display name as UTF-8 B encoded-words (multiple words, folded).")
def _():
    subj = "Ваш заказ №10024 отправлен 🚚 — Ihre Bestellung wurde versandt — ご注文の商品を発送しました"
    return with_headers(
        trace("m15", "shop.example.com", "shop@example.org", 14, "198.51.100.23")
        + [
            "From: %s <shipping@shop.example.com>" % ew_b("Магазин Пример 🛒")[0],
            "To: shop@example.org",
            "Subject: " + "\n ".join(ew_b(subj)),
            f"Date: {date(14)}",
            "Message-ID: <ship-10024@shop.example.com>",
            "MIME-Version: 1.0",
        ],
        text_part("Your parcel is on its way. Tracking: ZZ123456789DE\n", enc="7bit", charset="us-ascii"),
    )


@add("rfc2047-utf8-q", "Subject and From display name as UTF-8 Q encoded-words, mixed with plain text words.")
def _():
    name = "Zoë Ångström-Łukasiewicz"
    subj_words = ew_q("Café-Treffen am Freitag – Bestätigung erbeten")
    return with_headers(
        trace("m16", "fika.example.se", "friends.alice@example.org", 15, "192.0.2.88")
        + [
            "From: %s <zoe@fika.example.se>" % " ".join(ew_q(name)),
            "To: Friends.Alice@example.org",
            "Subject: Re: " + "\n ".join(subj_words) + " (3 people)",
            f"Date: {date(15, tz=2)}",
            "Message-ID: <fika-fredag@fika.example.se>",
            "In-Reply-To: <fika-invite@example.org>",
            "References: <fika-invite@example.org>",
            "MIME-Version: 1.0",
        ],
        text_part("Ja, ich komme gerne!\n\nZoë\n"),
    )


@add("rfc2047-iso-8859-1", "Subject and From display name as ISO-8859-1 Q/B encoded-words; quoted-printable Latin-1 body.")
def _():
    return with_headers(
        trace("m17", "banque.example.fr", "bank@example.org", 16, "203.0.113.9")
        + [
            "From: =?ISO-8859-1?Q?Andr=E9_L=E9vesque?= <andre@banque.example.fr>",
            "To: bank@example.org",
            "Subject: =?iso-8859-1?q?Relev=E9_de_compte_-_d=E9cembre?= " + ew_b(" (clôture)", "ISO-8859-1")[0],
            f"Date: {date(16, tz=1)}",
            "Message-ID: <releve-12@banque.example.fr>",
            "MIME-Version: 1.0",
        ],
        text_part("Votre relevé de décembre est disponible.\n", charset="ISO-8859-1"),
    )


@add("folded-headers", "Many folded headers (space and tab continuation, incl. a whitespace-only obs-FWS continuation line),"
     " folded From/To/Date/Message-ID and Content-Type params.")
def _():
    return with_headers(
        trace("m18", "github.example", "github@example.org", 17, "192.0.2.77", sel="pf2023")
        + [
            "From:\n Continuous Integration\n <ci@github.example>",
            "To: github@example.org,\n\tsecond.person@example.org,\n  \"Third, Person\" <third@example.org>",
            "Subject: [tagrelay] Build #8812 failed on\n main branch\n\tafter 3 retries",
            "Date: Wed,\n 05 Jun 2024 02:15:27\n +0000",
            "Message-ID:\n <build-8812@ci.github.example>",
            "X-Folded-Empty-Continuation: first part\n \n last part",
            "MIME-Version: 1.0",
            'Content-Type: text/plain;\n\tcharset="utf-8";\n\tformat=flowed;\n\tdelsp=yes',
            "Content-Transfer-Encoding:\n 7bit",
        ],
        Leaf([], b"Build #8812 failed.\nSee https://github.example/tagrelay/actions/runs/8812\n"),
    )


@add("long-references", "In-Reply-To and a References header with 40 message-ids folded one per line.")
def _():
    ids = [f"<thread-{i:02d}.{hexid('ref%d' % i, 10)}@lists.example.net>" for i in range(40)]
    return with_headers(
        trace("m19", "lists.example.net", "news@example.org", 18, "203.0.113.70")
        + [
            "From: Long Thread <thread@lists.example.net>",
            "To: news@example.org",
            "Subject: Re: Re: Re: [discuss] The never-ending thread",
            f"Date: {date(18)}",
            f"Message-ID: <thread-40.{hexid('ref40', 10)}@lists.example.net>",
            f"In-Reply-To: {ids[-1]}",
            "References: " + "\n ".join(ids),
            "MIME-Version: 1.0",
        ],
        text_part("I agree with the previous 40 messages.\n", enc="7bit", charset="us-ascii"),
    )


@add("long-subject-2000", "A ~2000-character ASCII Subject folded over many continuation lines.")
def _():
    words = []
    i = 0
    while len(" ".join(words)) < 2000:
        words.append(["quarterly", "budget", "review", "follow-up", "item", f"#{i}", "pending", "approval"][i % 8])
        i += 1
    subj = " ".join(words)[:2000].rstrip()
    return with_headers(
        trace("m20", "corp.example", "friends.alice@example.org", 19, "192.0.2.150")
        + [
            "From: Verbose Manager <manager@corp.example>",
            "To: Friends.Alice@example.org",
            fold_words("Subject", subj),
            f"Date: {date(19)}",
            "Message-ID: <long-subject@corp.example>",
            "MIME-Version: 1.0",
        ],
        text_part("See subject.\n", enc="7bit", charset="us-ascii"),
    )


@add("long-unfolded-header",
     "Unfoldable 1500-char X- header line and a 1200-char body line (both exceed the 998-octet limit).")
def _():
    token = base64.b64encode(prng("campaign", 1125)).decode()
    line = ("lorem-ipsum-" * 100)[:1200]
    return with_headers(
        trace("m21", "news.example.net", "news@example.org", 20, "203.0.113.5", sel="nl1")
        + [
            "From: Marketing <marketing@news.example.net>",
            "To: news@example.org",
            "Subject: Tracking-heavy campaign",
            f"Date: {date(20)}",
            "Message-ID: <campaign-77@news.example.net>",
            f"X-Campaign-Data: {token}",
            "MIME-Version: 1.0",
        ],
        text_part(line + "\nend\n", enc="8bit", charset="us-ascii"),
    )


@add("binary-cte", "Content-Transfer-Encoding: binary parts: UTF-8 text with a long line and a raw PNG (contains CR LF SUB LF).")
def _():
    txt = "Binary transport test – grüß dich.\n" + ("x" * 1100) + "\n"
    return with_headers(
        trace("m22", "files.example.com", "friends.alice@example.org", 21, "203.0.113.44")
        + [
            "From: Binary Sender <bin@files.example.com>",
            "To: Friends.Alice@example.org",
            "Subject: BINARYMIME test",
            f"Date: {date(21)}",
            "Message-ID: <binarymime.1@files.example.com>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "bin-boundary-42", [
            text_part(txt, enc="binary"),
            attachment(PNG_PIXEL, "image/png", "pixel.png", enc="binary"),
        ]),
    )


@add("bare-lf-plain", "Plain text message with bare LF line endings throughout.", LF)
def _():
    return Leaf(
        [
            "Return-Path: <carol@news.example.net>",
            "Received: from mail.news.example.net (mail.news.example.net [203.0.113.5])\n"
            f"\tby mxa.mailgun.org with ESMTP id 77aa88bb; {date(22, seconds=2)}",
            "From: Carol Writer <carol@news.example.net>",
            "To: news@example.org",
            "Subject: LF-only message",
            f"Date: {date(22)}",
            "Message-ID: <lf-only.1@news.example.net>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            "Content-Transfer-Encoding: 7bit",
        ],
        b"This message uses Unix line endings.\nSecond line.\n\nLast paragraph.\n",
    )


@add("bare-lf-multipart", "multipart/mixed with a base64 PNG attachment, bare LF line endings throughout.", LF)
def _():
    return with_headers(
        trace("m24", "github.example", "github@example.org", 23, "192.0.2.77", sel="pf2023")
        + [
            "From: GitHub Actions <actions@github.example>",
            "To: github@example.org",
            "Subject: Screenshot from failing test",
            f"Date: {date(23)}",
            "Message-ID: <lf-multipart.2@github.example>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "lf-mixed-boundary", [
            text_part("Screenshot attached.\n", enc="7bit", charset="us-ascii"),
            attachment(PNG_PHOTO, "image/png", "screenshot.png"),
        ]),
    )


@add("bare-lf-alternative", "multipart/alternative (text + HTML, UTF-8 8bit) with full trace headers, bare LF.", LF)
def _():
    return with_headers(
        trace("m25", "shop.example.com", "shop@example.org", 24, "198.51.100.23")
        + [
            "From: \"Shop Example\" <news@shop.example.com>",
            "To: shop@example.org",
            "Subject: " + ew_q("Summer sale – 20% off")[0],
            f"Date: {date(24)}",
            "Message-ID: <summer-sale@shop.example.com>",
            "MIME-Version: 1.0",
        ],
        multi("alternative", "lf-alt-boundary", [
            text_part("Summer sale – 20% off everything!\n", enc="8bit"),
            text_part("<html><body><h1>Summer sale – 20% off</h1></body></html>\n", "html", enc="8bit"),
        ]),
    )


@add("no-message-id", "Message without a Message-ID header; From uses old-style comment form.")
def _():
    return Leaf(
        [
            "Received: from old-host.news.example.net (old-host.news.example.net [203.0.113.6])\n"
            f"        by mxa.mailgun.org with SMTP; {date(25, seconds=2)}",
            "From: carol@news.example.net (Carol Writer)",
            "To: news@example.org",
            "Subject: no message id here",
            f"Date: {date(25)}",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
        ],
        b"An old script sent this without a Message-ID.\n",
    )


@add("no-date", "Message without a Date header.")
def _():
    return Leaf(
        [
            "Received: from scanner.office.example (scanner.office.example [198.51.100.201])\n"
            f"        by mxa.mailgun.org with SMTP; {date(26, seconds=2)}",
            "From: Office Scanner <scanner@office.example>",
            "To: Friends.Alice@example.org",
            "Subject: Scanned document",
            "Message-ID: <scan-0001@office.example>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
        ],
        b"Your scanner did not set a date.\n",
    )


@add("no-from", "Message with no From header at all (nor Sender); only Return-Path identifies the origin.")
def _():
    return Leaf(
        [
            "Return-Path: <cron@server.example.com>",
            "Received: from server.example.com (server.example.com [192.0.2.33])\n"
            f"        by mxa.mailgun.org with SMTP id cc11dd22; {date(27, seconds=2)}",
            "To: Friends.Alice@example.org",
            "Subject: Cron <root@server> /usr/local/bin/backup.sh",
            f"Date: {date(27)}",
            "Message-ID: <cron-4711@server.example.com>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=UTF-8",
            "Content-Transfer-Encoding: 8bit",
        ],
        b"backup.sh: completed in 42s\n",
    )


@add("multiple-from-sender", "From with two mailbox addresses plus a Sender header (RFC 5322 3.6.2).")
def _():
    return with_headers(
        trace("m29", "bank.example", "bank@example.org", 28, "192.0.2.10")
        + [
            "From: alice@bank.example, bob@shop.example.com",
            "Sender: alice@bank.example",
            "To: bank@example.org",
            "Subject: Joint statement from Alice and Bob",
            f"Date: {date(28)}",
            "Message-ID: <joint.1@bank.example>",
            "MIME-Version: 1.0",
        ],
        text_part("We are both writing this message.\n", enc="7bit", charset="us-ascii"),
    )


@add("from-bare-address", "From is a bare addr-spec with no display name and no angle brackets.")
def _():
    return with_headers(
        trace("m30", "shop.example.com", "shop@example.org", 29, "198.51.100.23")
        + [
            "From: bob@shop.example.com",
            "To: shop@example.org",
            "Subject: quick question",
            f"Date: {date(29)}",
            "Message-ID: <q.30@shop.example.com>",
            "MIME-Version: 1.0",
        ],
        text_part("Is the order shipped yet?\n", enc="7bit", charset="us-ascii"),
    )


@add("display-name-quotes-commas", "From display name is a quoted-string with a comma, escaped quotes and parentheses.")
def _():
    return with_headers(
        trace("m31", "corp.example", "friends.alice@example.org", 30, "192.0.2.150")
        + [
            'From: "Doe, John \\"JD\\" (Sales)" <john.doe@corp.example>',
            'To: "Alice, Friends" <Friends.Alice@example.org>',
            "Subject: Meeting notes",
            f"Date: {date(30)}",
            "Message-ID: <notes.31@corp.example>",
            "MIME-Version: 1.0",
        ],
        text_part("Notes attached inline below.\n- item 1\n- item 2\n", enc="7bit", charset="us-ascii"),
    )


@add("display-name-nonascii-encoded", "From display name is a UTF-8 encoded-word whose decoded text contains a comma and quotes.")
def _():
    return with_headers(
        trace("m32", "firma.example.de", "friends.alice@example.org", 31, "198.51.100.90")
        + [
            "From: %s <j.mueller@firma.example.de>" % ew_b('Müller, Jürgen "Jü"')[0],
            "To: Friends.Alice@example.org",
            "Subject: Termin",
            f"Date: {date(31, tz=2)}",
            "Message-ID: <termin.32@firma.example.de>",
            "MIME-Version: 1.0",
        ],
        text_part("Passt Dienstag um 10 Uhr?\n"),
    )


@add("reply-to-differs", "Reply-To (support address, two mailboxes) differs from From (noreply).")
def _():
    return with_headers(
        trace("m33", "github.example", "github@example.org", 32, "192.0.2.77", sel="pf2023")
        + [
            "From: GitHub <noreply@github.example>",
            "Reply-To: GitHub Support <support@github.example>, security@github.example",
            "To: github@example.org",
            "Subject: [GitHub] A new SSH key was added to your account",
            f"Date: {date(32)}",
            "Message-ID: <ssh-key-added.33@github.example>",
            "MIME-Version: 1.0",
        ],
        text_part("A new public key was added to your account. If this wasn't you, reply to this email.\n",
                  enc="7bit", charset="us-ascii"),
    )


@add("malformed-boundary-unclosed",
     "multipart/mixed whose closing delimiter is missing (message ends inside the last part: an attachment).")
def _():
    return with_headers(
        trace("m34", "shop.example.com", "shop@example.org", 33, "198.51.100.23")
        + [
            "From: Broken Mailer <broken@shop.example.com>",
            "To: shop@example.org",
            "Subject: truncated multipart",
            f"Date: {date(33)}",
            "Message-ID: <unclosed.34@shop.example.com>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "unclosed-boundary-34", [
            text_part("The closing boundary of this message is missing.\n", enc="7bit", charset="us-ascii"),
            attachment(PDF_INVOICE, "application/pdf", "receipt.pdf"),
        ], close=False),
    )


@add("malformed-boundary-mismatch",
     "multipart/mixed declares boundary 'declared-AAAA' but the body uses 'actual-BBBB'; no MIME parts are visible.")
def _():
    return with_headers(
        trace("m35", "shop.example.com", "shop@example.org", 34, "198.51.100.23")
        + [
            "From: Broken Mailer <broken@shop.example.com>",
            "To: shop@example.org",
            "Subject: boundary mismatch",
            f"Date: {date(34)}",
            "Message-ID: <mismatch.35@shop.example.com>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "declared-AAAA", [
            text_part("The declared boundary never appears.\n", enc="7bit", charset="us-ascii"),
            attachment(PNG_PIXEL, "image/png", "hidden.png"),
        ], delim="actual-BBBB", preamble=b"This is a multi-part message in MIME format.\n"),
    )


@add("smime-signed", "S/MIME detached signature: multipart/signed; protocol=application/pkcs7-signature; fixed smime.p7s blob.")
def _():
    inner = multi("alternative", "----=_Part_1_inner.1717619727000", [
        text_part("Please find the signed confirmation below.\n\nRegards,\nAlice\n"),
        text_part("<p>Please find the signed confirmation below.</p><p>Regards,<br>Alice</p>\n", "html"),
    ])
    return with_headers(
        trace("m36", "bank.example", "bank@example.org", 35, "192.0.2.10")
        + [
            "From: Alice Banker <alice@bank.example>",
            "To: bank@example.org",
            "Subject: Signed: transfer confirmation",
            f"Date: {date(35)}",
            "Message-ID: <smime.36@bank.example>",
            "MIME-Version: 1.0",
        ],
        multi("signed", "----=_Part_0_SMIME.1717619727000", [
            inner,
            attachment(pkcs7_blob("smime"), "application/pkcs7-signature", "smime.p7s", headers=[
                'Content-Type: application/pkcs7-signature; name="smime.p7s"',
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="smime.p7s"',
                "Content-Description: S/MIME Cryptographic Signature",
            ]),
        ], extra_params=' protocol="application/pkcs7-signature"; micalg=sha-256;',
            preamble=b"This is an S/MIME signed message\n\n"),
    )


@add("pgp-mime-signed", "PGP/MIME signed (RFC 3156) Thunderbird-style with protected headers and a fixed armored signature.")
def _():
    sig = pgp_armor("pgpsig")
    inner = multi("mixed", "------------x1Yc7Pq2Gm0s9RzD4kLfTb3N", [
        text_part("Hi,\n\nthe release tarball hash is\nsha256 3f2a...e9\n\nCheers,\nDave\n",
                  ctype='Content-Type: text/plain; charset=UTF-8; format=flowed'),
    ], extra_params=' protected-headers="v1";',
        headers_extra=["Subject: Release 1.4.0", "From: Dave Keys <dave@keys.example.org>",
                       "To: Friends.Alice@example.org", "Message-ID: <pgp.37@keys.example.org>"])
    return with_headers(
        trace("m37", "keys.example.org", "friends.alice@example.org", 36, "198.51.100.57")
        + [
            "Message-ID: <pgp.37@keys.example.org>",
            f"Date: {date(36, tz=1)}",
            "MIME-Version: 1.0",
            "User-Agent: Mozilla Thunderbird",
            "From: Dave Keys <dave@keys.example.org>",
            "To: Friends.Alice@example.org",
            "Subject: Release 1.4.0",
        ],
        multi("signed", "------------T0k3nPgPs1gnAtUr3b0undAry", [
            inner,
            Leaf([
                'Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"',
                "Content-Description: OpenPGP digital signature",
                'Content-Disposition: attachment; filename="OpenPGP_signature.asc"',
            ], sig, att={"filename": "OpenPGP_signature.asc", "content_type": "application/pgp-signature",
                         "content_id": None}),
        ], extra_params=' micalg=pgp-sha256;\n protocol="application/pgp-signature";',
            preamble=b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\n"),
    )


ICS = (
    "BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\nVERSION:2.0\r\n"
    "CALSCALE:GREGORIAN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
    "DTSTART:20240611T140000Z\r\nDTEND:20240611T150000Z\r\nDTSTAMP:20240604091527Z\r\n"
    "ORGANIZER;CN=Bob Organizer:mailto:bob@shop.example.com\r\n"
    "UID:7kukuqrfedlm2f9t0vqbd8cbbo@google.example\r\n"
    "ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=\r\n"
    " TRUE;CN=Friends.Alice@example.org;X-NUM-GUESTS=0:mailto:Friends.Alice@example.org\r\n"
    "CREATED:20240604091500Z\r\nDESCRIPTION:Quarterly planning. Agenda: budget\\, hiring\\, roadmap.\r\n"
    "LAST-MODIFIED:20240604091527Z\r\nLOCATION:Room 3.14\r\nSEQUENCE:0\r\nSTATUS:CONFIRMED\r\n"
    "SUMMARY:Quarterly planning\r\nTRANSP:OPAQUE\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\n"
    "DESCRIPTION:Reminder\r\nTRIGGER:-P0DT0H10M0S\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


@add("calendar-invite", "Google-style invite: mixed > alternative(text, html, text/calendar; method=REQUEST) + invite.ics attachment.")
def _():
    cal = Leaf(['Content-Type: text/calendar; charset="UTF-8"; method=REQUEST', "Content-Transfer-Encoding: 7bit"],
               ICS.replace("\r\n", "\n").encode())
    return with_headers(
        trace("m38", "shop.example.com", "friends.alice@example.org", 37, "198.51.100.23")
        + [
            "Reply-To: Bob Organizer <bob@shop.example.com>",
            "Sender: Google Calendar <calendar-notification@google.example>",
            "Message-ID: <calendar-7kukuqrf@google.example>",
            f"Date: {date(37)}",
            "Subject: Invitation: Quarterly planning @ Tue Jun 11, 2024 2pm - 3pm (UTC) (Friends.Alice@example.org)",
            "From: Bob Organizer <bob@shop.example.com>",
            "To: Friends.Alice@example.org",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "000000000000a1b2c3061a2b3c4d", [
            multi("alternative", "000000000000a1b2c1061a2b3c4d", [
                text_part("You have been invited to: Quarterly planning\nTue Jun 11, 2024 2pm - 3pm (UTC)\n",
                          ctype='Content-Type: text/plain; charset="UTF-8"; format=flowed; delsp=yes',
                          enc="base64"),
                text_part("<p>You have been invited to: <b>Quarterly planning</b></p>\n", "html"),
                cal,
            ]),
            attachment(ICS.encode(), "application/ics", "invite.ics"),
        ]),
    )


def _forwarded_inner(nl: bytes) -> bytes:
    return ser(with_headers(
        [
            "Return-Path: <alice@bank.example>",
            "Received: from smtp.bank.example (smtp.bank.example [192.0.2.10])\n"
            f"        by mx.corp.example with ESMTPS id 9f8e7d6c; {date(-48, seconds=2)}",
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=bank.example; s=s2024;\n"
            f"\tt={unix(-48)}; h=From:To:Subject:Date:Message-ID; bh={b64tok('inner-bh', 32)};\n"
            f"\tb={fold_token(b64tok('inner-b', 256))}",
            "From: Alice Banker <alice@bank.example>",
            "To: Dan Outlook <dan@corp.example>",
            "Subject: Original: account update",
            f"Date: {date(-48)}",
            "Message-ID: <original.inner@bank.example>",
            "MIME-Version: 1.0",
        ],
        text_part("Dear Dan,\n\nYour account details have been updated.\n\nFrom the bank, with regards.\n"),
    ), nl, [])


@add("forwarded-message-rfc822", "multipart/mixed with a forwarded e-mail attached as message/rfc822 (filename with spaces).")
def _():
    inner = _forwarded_inner(CRLF)
    return with_headers(
        trace("m39", "corp.example", "bank@example.org", 38, "192.0.2.150")
        + [
            "From: Dan Outlook <dan@corp.example>",
            "To: bank@example.org",
            "Subject: Fwd: Original: account update",
            f"Date: {date(38)}",
            "Message-ID: <fwd.39@corp.example>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "fwd-boundary-39", [
            text_part("FYI, see the attached message.\n\nDan\n", enc="7bit", charset="us-ascii"),
            Leaf([
                'Content-Type: message/rfc822; name="Original message.eml"',
                'Content-Disposition: attachment; filename="Original message.eml"',
                "Content-Transfer-Encoding: 7bit",
            ], inner, text=False, att={"filename": "Original message.eml", "content_type": "message/rfc822",
                                       "content_id": None, "data": inner}),
        ]),
    )


@add("full-trace-headers",
     "Received-by-Gmail/Mailgun-style header set: Delivered-To, ARC-*, Authentication-Results, DKIM-Signature x2, "
     "Sender, X-Google-* and X-Mailgun-* headers.")
def _():
    return with_headers(
        [
            "X-Mailgun-Incoming: Yes",
            "X-Envelope-From: <bounces+1234@mail.shop.example.com>",
            "X-Google-Smtp-Source: AGHT+IH" + b64tok("xgs", 60).replace("/", "_"),
            "X-Received: by 2002:a17:907:7f8a:b0:a6f:1c2d:3e4f with SMTP id qz10-20020a1709077f8a00b00a6f1c2d3e4fmr"
            f"123456ejc.12.1717590927123;\n        {date(39, seconds=4)}",
        ]
        + trace("m40", "mail.shop.example.com", "shop@example.org", 39, "198.51.100.24",
                env="bounces+1234@mail.shop.example.com")
        + [
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=mailgun.example; s=mg;\n"
            f"\tt={unix(39)}; h=Sender:From:To:Subject:Date:Message-ID;\n\tbh={b64tok('m40bh', 32)};\n"
            f"\tb={fold_token(b64tok('m40mg', 128))}",
            "Sender: bounces@mail.shop.example.com",
            "From: Shop Example <orders@shop.example.com>",
            "To: shop@example.org",
            "Subject: Your receipt",
            f"Date: {date(39)}",
            "Message-ID: <20240605003527.1.ABCDEF@mail.shop.example.com>",
            "X-Mailgun-Sid: WyI0ZDFlMiIsICJzaG9wQGV4YW1wbGUub3JnIiwgIjEyMzQiXQ==",
            "X-Mailgun-Tag: receipts",
            "MIME-Version: 1.0",
        ],
        multi("alternative", "4f3e2d1c0b0a09080706050403020100", [
            text_part("Thanks for shopping with us. Total: EUR 149.90\n", enc="7bit", charset="us-ascii"),
            text_part("<p>Thanks for shopping with us. Total: <b>EUR&nbsp;149.90</b></p>\n", "html",
                      enc="7bit", charset="us-ascii"),
        ]),
    )


@add("many-received", "Message with 30 Received headers (long relay chain / loop-detection test).")
def _():
    rec = []
    for i in range(30, 0, -1):
        rec.append(
            f"Received: from relay{i - 1:02d}.hops.example (relay{i - 1:02d}.hops.example [198.51.100.{i}])\n"
            f"        by relay{i:02d}.hops.example (Postfix) with ESMTP id {hexid('hop%d' % i, 10).upper()}\n"
            f"        for <friends.alice@example.org>; {date(40, seconds=i)}"
        )
    return with_headers(
        ["Return-Path: <loop@hops.example>", "Delivered-To: Friends.Alice@example.org"]
        + rec
        + [
            "From: Looping List <loop@hops.example>",
            "To: Friends.Alice@example.org",
            "Subject: this went through many hops",
            f"Date: {date(40)}",
            "Message-ID: <hops.41@hops.example>",
            "MIME-Version: 1.0",
        ],
        text_part("Count the Received headers.\n", enc="7bit", charset="us-ascii"),
    )


@add("mailing-list", "Mailman-style list message: List-Id, List-Unsubscribe (+Post), List-Post, Precedence, Sender, Reply-To list.")
def _():
    return with_headers(
        trace("m42", "lists.example.net", "news@example.org", 41, "203.0.113.70",
              env="users-bounces+news=example.org@lists.example.net")
        + [
            "From: Carol Writer <carol@news.example.net>",
            "To: users@lists.example.net",
            "Subject: [users] How do I route tagged addresses?",
            f"Date: {date(41)}",
            "Message-ID: <question.42@news.example.net>",
            "MIME-Version: 1.0",
            "X-BeenThere: users@lists.example.net",
            "X-Mailman-Version: 2.1.39",
            "Precedence: list",
            "List-Id: Tagrelay users <users.lists.example.net>",
            "List-Unsubscribe: <https://lists.example.net/mailman/options/users>,\n"
            " <mailto:users-request@lists.example.net?subject=unsubscribe>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "List-Archive: <https://lists.example.net/pipermail/users/>",
            "List-Post: <mailto:users@lists.example.net>",
            "List-Help: <mailto:users-request@lists.example.net?subject=help>",
            "List-Subscribe: <https://lists.example.net/mailman/listinfo/users>,\n"
            " <mailto:users-request@lists.example.net?subject=subscribe>",
            "Reply-To: Tagrelay users <users@lists.example.net>",
            "Errors-To: users-bounces+news=example.org@lists.example.net",
            "Sender: \"users\" <users-bounces+news=example.org@lists.example.net>",
        ],
        text_part(
            "Hi all,\n\nhow do I route news+foo@example.org to a different topic?\n\nCarol\n"
            "_______________________________________________\nusers mailing list\nusers@lists.example.net\n"
            "https://lists.example.net/mailman/listinfo/users\n",
            enc="7bit", charset="us-ascii"),
    )


@add("auto-reply", "Out-of-office auto-reply: Auto-Submitted: auto-replied, X-Auto-Response-Suppress; From in angle brackets only.")
def _():
    return with_headers(
        trace("m43", "corp.example", "friends.alice@example.org", 42, "192.0.2.150")
        + [
            "From: <dan@corp.example>",
            "To: Friends.Alice@example.org",
            "Subject: Automatic reply: Meeting notes",
            f"Date: {date(42)}",
            "Message-ID: <autoreply.43@corp.example>",
            "In-Reply-To: <notes.31@corp.example>",
            "Auto-Submitted: auto-replied",
            "X-Auto-Response-Suppress: All",
            "X-Autoreply: yes",
            "Precedence: auto_reply",
            "MIME-Version: 1.0",
        ],
        text_part("I am out of the office until June 17 with limited access to e-mail.\n",
                  enc="7bit", charset="us-ascii"),
    )


@add("raw-utf8-subject", "RFC 6532 style: raw (unencoded) UTF-8 octets in Subject and in the From display name.")
def _():
    return with_headers(
        trace("m44", "fika.example.se", "friends.alice@example.org", 43, "192.0.2.88")
        + [
            "From: \"Zoë Ångström\" <zoe@fika.example.se>",
            "To: Friends.Alice@example.org",
            "Subject: Fika på fredag? ☕ Kaffe & kanelbullar — 金曜日",
            f"Date: {date(43, tz=2)}",
            "Message-ID: <eai.44@fika.example.se>",
            "MIME-Version: 1.0",
        ],
        text_part("Kom förbi kl. 15!\n", enc="8bit"),
    )


@add("cc-many-group-to", "To is the empty group 'undisclosed-recipients:;'; Cc lists 8 recipients in mixed forms, folded.")
def _():
    return with_headers(
        trace("m45", "news.example.net", "news@example.org", 44, "203.0.113.5", sel="nl1")
        + [
            "From: Carol Writer <carol@news.example.net>",
            "To: undisclosed-recipients:;",
            "Cc: news@example.org, \"Alice (friends)\" <Friends.Alice@example.org>,\n"
            " github@example.org, Shop Desk <shop@example.org>, =?UTF-8?Q?J=C3=BCrgen?= <juergen@firma.example.de>,\n"
            " \"Doe, John\" <john.doe@corp.example>, <ci@github.example>,\n"
            " Team: team1@example.org, team2@example.org;",
            "Subject: Party on Saturday",
            f"Date: {date(44)}",
            "Message-ID: <party.45@news.example.net>",
            "MIME-Version: 1.0",
        ],
        text_part("You're all invited!\n", enc="7bit", charset="us-ascii"),
    )


@add("body-header-lookalikes",
     "text/plain body with lines that look like headers, mbox 'From ' lines, '>From', boundary-like and dot lines.")
def _():
    body = (
        "From alice@bank.example Tue Jun  4 09:15:27 2024\n"
        "Subject: this is body text, not a header\n"
        "From: Mallory <mallory@evil.example>\n"
        "To: everyone@example.org\n"
        "Reply-To: attacker@evil.example\n"
        "Content-Type: text/html\n"
        "\n"
        "From the desk of the CEO: please process the attached invoice today.\n"
        "From now on, all invoices go through procurement.\n"
        ">From an mbox-escaped line.\n"
        "From \n"
        "--not-a-declared-boundary\n"
        "--not-a-declared-boundary--\n"
        ".\n"
        "..\n"
        "Received: from nowhere by nobody\n"
        "\n"
        "Thanks,\nSupport\n"
    )
    return with_headers(
        trace("m46", "support.example.com", "shop@example.org", 45, "198.51.100.160")
        + [
            "From: Support Desk <support@support.example.com>",
            "To: shop@example.org",
            "Subject: Customer pasted raw headers",
            f"Date: {date(45)}",
            "Message-ID: <lookalike.46@support.example.com>",
            "MIME-Version: 1.0",
        ],
        text_part(body, enc="7bit", charset="us-ascii"),
    )


@add("html-only", "Single-part text/html (quoted-printable), no text/plain alternative.")
def _():
    html = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Newsletter</title>"
        "<style>body{font-family:Arial,sans-serif}</style></head>\n"
        "<body><table width=\"100%\"><tr><td><h1>June news</h1><p>Big changes — read on…</p>"
        "<p><a href=\"https://news.example.net/june?utm_source=email&amp;utm_medium=newsletter\">Read more</a></p>"
        "<img src=\"https://news.example.net/pixel.gif?id=45\" width=\"1\" height=\"1\" alt=\"\">"
        "</td></tr></table></body></html>\n"
    )
    return with_headers(
        trace("m47", "news.example.net", "news@example.org", 46, "203.0.113.5", sel="nl1")
        + [
            "From: News Example <newsletter@news.example.net>",
            "To: news@example.org",
            "Subject: June news",
            f"Date: {date(46)}",
            "Message-ID: <june.47@news.example.net>",
            "MIME-Version: 1.0",
        ],
        text_part(html, "html"),
    )


@add("empty-body", "Headers, then the blank separator line, then nothing (empty body).")
def _():
    return Leaf(
        [
            "Return-Path: <alice@bank.example>",
            "From: Alice Banker <alice@bank.example>",
            "To: bank@example.org",
            "Subject: (no body)",
            f"Date: {date(47)}",
            "Message-ID: <empty.48@bank.example>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
        ],
        b"",
    )


@add("headers-only-no-blank-line", "Header section only: no blank separator line and no body at all.")
def _():
    return Leaf(
        [
            "From: Alice Banker <alice@bank.example>",
            "To: bank@example.org",
            "Subject: headers only",
            f"Date: {date(48)}",
            "Message-ID: <noblank.49@bank.example>",
        ],
        no_blank_line=True,
    )


@add("alternative-8bit", "multipart/alternative where both text and HTML parts are UTF-8 with Content-Transfer-Encoding: 8bit.")
def _():
    return with_headers(
        trace("m50", "fika.example.se", "friends.alice@example.org", 49, "192.0.2.88")
        + [
            "From: %s <zoe@fika.example.se>" % ew_b("Zoë")[0],
            "To: Friends.Alice@example.org",
            "Subject: =?UTF-8?Q?Sm=C3=B6rg=C3=A5sbord?=",
            f"Date: {date(49, tz=2)}",
            "Message-ID: <smorgas.50@fika.example.se>",
            "MIME-Version: 1.0",
        ],
        multi("alternative", "alt8bit-50", [
            text_part("Smörgåsbord på lördag – välkommen! 🇸🇪\n", enc="8bit"),
            text_part("<p>Smörgåsbord på <b>lördag</b> – välkommen! 🇸🇪</p>\n", "html", enc="8bit"),
        ]),
    )


@add("apple-mail-inline-mixed",
     "Apple Mail style multipart/mixed: text, inline image (disposition inline + filename), text, PDF attachment.")
def _():
    return with_headers(
        trace("m51", "icloud.example.com", "friends.alice@example.org", 50, "203.0.113.120")
        + [
            "From: Erin Apple <erin@icloud.example.com>",
            "Content-Type: multipart/mixed;\n\tboundary=\"Apple-Mail=_5F3B1C2D-9E8F-4A7B-8C6D-1E2F3A4B5C6D\"",
            "Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))",
            "Subject: Photos from the trip",
            f"Date: {date(50, tz=-4)}",
            "Message-Id: <A1B2C3D4-E5F6-4789-ABCD-EF0123456789@icloud.example.com>",
            "To: Friends.Alice@example.org",
            "X-Mailer: Apple Mail (2.3774.600.62)",
        ],
        Multi([], "Apple-Mail=_5F3B1C2D-9E8F-4A7B-8C6D-1E2F3A4B5C6D", [
            Leaf(["Content-Transfer-Encoding: 7bit", "Content-Type: text/plain;\n\tcharset=us-ascii"],
                 b"Here's the view from the hotel:\n"),
            attachment(PNG_PHOTO, "image/png", "IMG_0042.png", headers=[
                "Content-Disposition: inline;\n\tfilename=IMG_0042.png",
                "Content-Type: image/png;\n\tx-unix-mode=0644;\n\tname=\"IMG_0042.png\"",
                "Content-Transfer-Encoding: base64",
            ]),
            Leaf(["Content-Transfer-Encoding: 7bit", "Content-Type: text/plain;\n\tcharset=us-ascii"],
                 b"\nand the itinerary is attached.\n\nErin\n"),
            attachment(PDF_STATEMENT, "application/pdf", "Itinerary.pdf", headers=[
                "Content-Disposition: attachment;\n\tfilename=Itinerary.pdf",
                "Content-Type: application/pdf;\n\tx-unix-mode=0644;\n\tname=\"Itinerary.pdf\"",
                "Content-Transfer-Encoding: base64",
            ]),
        ]),
    )


@add("outlook-tnef", "Outlook rich-text message: text/plain + application/ms-tnef winmail.dat attachment.")
def _():
    return with_headers(
        trace("m52", "corp.example", "friends.alice@example.org", 51, "192.0.2.150", dkim=False)
        + [
            "From: Dan Outlook <dan@corp.example>",
            "To: Friends.Alice@example.org",
            "Subject: RE: Q2 numbers",
            f"Date: {date(51, tz=-5)}",
            "Message-ID: <DM6PR11MB4123FEDCBA@DM6PR11MB4123.namprd11.prod.outlook.example>",
            "Thread-Topic: Q2 numbers",
            "X-MS-TNEF-Correlator: <DM6PR11MB4123FEDCBA@DM6PR11MB4123.namprd11.prod.outlook.example>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "_000_DM6PR11MB4123FEDCBA_", [
            text_part("See the attached numbers.\n", charset="us-ascii"),
            attachment(TNEF_BLOB, "application/ms-tnef", "winmail.dat"),
        ]),
    )


@add("delivery-status-notification",
     "Bounce: multipart/report; report-type=delivery-status with message/delivery-status and text/rfc822-headers.")
def _():
    dsn = (
        "Reporting-MTA: dns; mx.bank.example\n"
        f"Arrival-Date: {date(52, seconds=-30)}\n\n"
        "Final-Recipient: rfc822; nobody@bank.example\n"
        "Action: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@bank.example>: Recipient address rejected: User unknown\n"
    )
    hdrs = (
        "From: Alice Banker <alice@bank.example>\nTo: nobody@bank.example\n"
        f"Subject: Your monthly statement is ready\nDate: {date(52, seconds=-40)}\n"
        "Message-ID: <bounced.53@bank.example>\n"
    )
    return with_headers(
        trace("m53", "bank.example", "bank@example.org", 52, "192.0.2.10", env="", dkim=False, arc=False)
        + [
            "From: Mail Delivery System <MAILER-DAEMON@mx.bank.example>",
            "To: bank@example.org",
            "Subject: Undelivered Mail Returned to Sender",
            f"Date: {date(52)}",
            "Message-ID: <20240606131527.DSN.53@mx.bank.example>",
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
        ],
        multi("report", "DSN.53/mx.bank.example", [
            Leaf(["Content-Description: Notification", "Content-Type: text/plain; charset=us-ascii"],
                 b"This is the mail system at host mx.bank.example.\n\nI'm sorry to have to inform you that your"
                 b" message could not\nbe delivered to one or more recipients.\n"),
            Leaf(["Content-Description: Delivery report", "Content-Type: message/delivery-status"], dsn.encode()),
            Leaf(["Content-Description: Undelivered Message Headers", "Content-Type: text/rfc822-headers"],
                 hdrs.encode()),
        ], extra_params=" report-type=delivery-status;",
            preamble=b"This is a MIME-encapsulated message.\n\n"),
    )


@add("cid-without-disposition",
     "multipart/related: HTML + GIF identified only by Content-ID/Content-Location (no disposition, no filename).")
def _():
    cid = "part1.06090408.01060107@news.example.net"
    return with_headers(
        trace("m54", "news.example.net", "news@example.org", 53, "203.0.113.5", sel="nl1")
        + [
            "From: News Example <newsletter@news.example.net>",
            "To: news@example.org",
            "Subject: Spacer gif",
            f"Date: {date(53)}",
            "Message-ID: <spacer.54@news.example.net>",
            "MIME-Version: 1.0",
        ],
        multi("related", "------------related54", [
            text_part('<html><body><img src="cid:%s"> spacer</body></html>\n' % cid, "html", enc="7bit",
                      charset="us-ascii"),
            attachment(GIF_1X1, "image/gif", None, cid=cid, headers=[
                "Content-Type: image/gif",
                "Content-Transfer-Encoding: base64",
                f"Content-ID: <{cid}>",
                "Content-Location: spacer.gif",
            ]),
        ], extra_params=' type="text/html";'),
    )


@add("attachment-no-filename", "Attachment with Content-Disposition: attachment but no filename/name parameter.")
def _():
    return with_headers(
        trace("m55", "files.example.com", "friends.alice@example.org", 54, "203.0.113.44")
        + [
            "From: Backup Robot <backup@files.example.com>",
            "To: Friends.Alice@example.org",
            "Subject: unnamed attachment",
            f"Date: {date(54)}",
            "Message-ID: <unnamed.55@files.example.com>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "unnamed-55", [
            text_part("Attachment has no name.\n", enc="7bit", charset="us-ascii"),
            attachment(ZIP_LIKE, "application/octet-stream", None),
        ]),
    )


@add("header-case-and-comments",
     "Odd-case header names and parameter names/values, RFC 822 comments in Content-Type and MIME-Version.")
def _():
    return with_headers(
        trace("m56", "shop.example.com", "shop@example.org", 55, "198.51.100.23")
        + [
            "FROM: Bob Shopkeeper <bob@shop.example.com>",
            "to: shop@example.org",
            "SUBJECT: Case insensitive headers",
            f"date: {date(55)}",
            "message-id: <case.56@shop.example.com>",
            "mime-version: 1.0 (generated by a very old mailer)",
            'CONTENT-TYPE: Text/Plain (plain text) ; CHARSET = "UTF-8" ; Format=Flowed',
            "content-transfer-encoding: QUOTED-PRINTABLE",
        ],
        Leaf([], qp("Header names and values with odd capitalisation – ok.\n".encode())),
    )


@add("unknown-8bit-charset", "text/plain; charset=unknown-8bit with a mix of Latin-1 and UTF-8 octets in an 8bit body.")
def _():
    body = b"Mixed bytes: caf\xe9 (latin-1) and caf\xc3\xa9 (utf-8) and \x80\x81\xfe\xff.\n"
    return with_headers(
        trace("m57", "legacy.example", "friends.alice@example.org", 56, "192.0.2.240", dkim=False, arc=False)
        + [
            "From: Legacy System <legacy@legacy.example>",
            "To: Friends.Alice@example.org",
            "Subject: charset unknown",
            f"Date: {date(56)}",
            "Message-ID: <unknown8bit.57@legacy.example>",
            "MIME-Version: 1.0",
        ],
        text_part(body, charset="unknown-8bit", enc="8bit"),
    )


@add("mbox-from-line", "File starts with an mbox 'From sender date' envelope line before the headers (mbox export).")
def _():
    return Leaf(
        [
            f"From alice@bank.example {(BASE + timedelta(hours=57)).strftime('%a %b %d %H:%M:%S %Y')}",
            "Return-Path: <alice@bank.example>",
            "From: Alice Banker <alice@bank.example>",
            "To: bank@example.org",
            "Subject: exported from mbox",
            f"Date: {date(57)}",
            "Message-ID: <mbox.58@bank.example>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
        ],
        b"This message was saved from an mbox file.\n",
    )


@add("smime-encrypted", "Opaque S/MIME enveloped-data: top-level application/pkcs7-mime smime.p7m attachment.")
def _():
    blob = bytes.fromhex("3080" "06092a864886f70d010703" "a080") + prng("p7m", 1500) + b"\x00\x00\x00\x00"
    return with_headers(
        trace("m59", "bank.example", "bank@example.org", 58, "192.0.2.10")
        + [
            "From: Alice Banker <alice@bank.example>",
            "To: bank@example.org",
            "Subject: Encrypted message",
            f"Date: {date(58)}",
            "Message-ID: <p7m.59@bank.example>",
            "MIME-Version: 1.0",
        ],
        attachment(blob, "application/pkcs7-mime", "smime.p7m", headers=[
            'Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\n name="smime.p7m"',
            "Content-Transfer-Encoding: base64",
            'Content-Disposition: attachment; filename="smime.p7m"',
            "Content-Description: S/MIME Encrypted Message",
        ]),
    )


@add("named-group-and-pgp-key",
     "To with a named group of members, Reply-To, and application/pgp-keys + zip attachments.")
def _():
    return with_headers(
        trace("m60", "keys.example.org", "friends.alice@example.org", 59, "198.51.100.57")
        + [
            "From: Dave Keys <dave@keys.example.org>",
            "Reply-To: Dave (personal) <dave.personal@mail.example.net>",
            "To: Friends: Alice <Friends.Alice@example.org>, Bob <bob@shop.example.com>;,\n news@example.org",
            "Subject: My new key",
            f"Date: {date(59)}",
            "Message-ID: <key.60@keys.example.org>",
            "MIME-Version: 1.0",
        ],
        multi("mixed", "key-boundary-60", [
            text_part("My new public key is attached, plus the release bundle.\n", enc="7bit", charset="us-ascii"),
            attachment(GPG_KEY_LIKE, "application/pgp-keys", "OpenPGP_0xDEADBEEF.asc"),
            attachment(ZIP_LIKE, "application/zip", "release bundle (1).zip"),
        ]),
    )


# ---------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------

_HDR_RE = re.compile(rb"^([!-9;-~]+):", re.M)


def _top_header_names(data: bytes, nl: bytes) -> set[str]:
    sep = nl + nl
    head = data.split(sep, 1)[0] if sep in data else data
    names = set()
    for line in head.split(nl):
        m = _HDR_RE.match(line)
        if m and not line.startswith((b" ", b"\t")):
            names.add(m.group(1).decode().lower())
    return names


def build() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    manifest: dict[str, dict] = {}
    for n, (name, desc, nl, node) in enumerate(MESSAGES, 1):
        fname = f"{n:02d}-{name}.eml"
        atts: list = []
        data = ser(node, nl, atts)
        names = _top_header_names(data, nl)
        files[fname] = data
        manifest[fname] = {
            "description": desc,
            "from_header_present": "from" in names,
            "line_ending": "crlf" if nl == CRLF else "lf",
            "has_reply_to": "reply-to" in names,
            "expect_attachments": atts,
        }
    files["MANIFEST.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return files


def main() -> None:
    files = build()
    for fname, data in files.items():
        with open(os.path.join(HERE, fname), "wb") as fh:
            fh.write(data)
    # remove stale corpus files from earlier numbering
    for fname in os.listdir(HERE):
        if re.fullmatch(r"\d\d-.*\.eml", fname) and fname not in files:
            os.remove(os.path.join(HERE, fname))
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files) - 1} messages + MANIFEST.json ({total} bytes) to {HERE}")


if __name__ == "__main__":
    main()
