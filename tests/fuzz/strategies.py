"""Hypothesis strategies: Mailgun posts built from the corpus, then mutated field by field and byte by byte."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.support import (
    BOUNDARY,
    MAX_AGE_SECONDS,
    NOW,
    TIMESTAMP,
    URLENCODED,
    BasePost,
    Part,
    base_posts,
    encode_multipart,
    encode_urlencoded,
    multipart_type,
    put,
    resign,
)

Mutation = Callable[[list[Part]], list[Part]]

FIELD_NAMES = (
    b"recipient",
    b"sender",
    b"from",
    b"subject",
    b"timestamp",
    b"token",
    b"signature",
    b"body-mime",
    b"body-plain",
    b"body-html",
    b"message-headers",
    b"content-id-map",
    b"attachment-count",
    b"attachment-1",
    b"X-Mailgun-Sflag",
    b"X-Mailgun-Sscore",
    b"Message-Id",
)
ENVELOPE_NAMES = (b"recipient", b"sender", b"token", b"timestamp")
CONTROL = (b"\r", b"\n", b"\r\n", b"\x00", b"\r\n\r\n", b"\n\t")
INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82")
TIMESTAMPS = (
    b"",
    b"abc",
    b"-1",
    b"0",
    b"1e9",
    b"1700000000.5",
    b" 1700000000 ",
    b"0x6553f100",
    b"1_700_000_000",
    "١٧٠٠٠٠٠٠٠٠".encode(),  # Arabic-Indic digits: int() accepts them
    b"9" * 5000,
    str(2**63).encode(),
    str(-(2**63)).encode(),
    b"1700000000\x00",
    b"NaN",
    b"inf",
)
RECIPIENTS = (
    b"",
    b"@",
    b"a@",
    b"@example.org",
    b"a,b@example.org",
    b"a@example.org, b@example.org",
    b"<shop@example.org>",
    b"shop@EXAMPLE.org",
    b"team+x@example.org",
    b"leaked+x@example.org",
    b"a@b@example.org",
    b"\xc3\xa9t\xc3\xa9@example.org",
    b"shop@xn--.org",
    b"shop@" + b"a" * 70 + b".org",
    b"shop@\xe2\x80\x8bexample.org",
    b"x" * 300 + b"@example.org",
    b"shop@example.org\x0b",
    b"shop@example.org\xc2\x85",
    b"shop@example.org\xe2\x80\xa8",
)
CONTENT_TYPES = (
    b"",
    b"x",
    b"a/b/c",
    b"text/plain",
    b"text/html; charset=utf-8",
    b"image/png; name=x",
    b"application/octet-stream",
    b"message/rfc822",
    b"message/delivery-status",
    b"multipart/mixed",
    b"multipart/mixed; boundary=zz",
    b"\xc3\xa9/\xc3\xa9",
    b"text/",
    b"/plain",
)
JSON_TEXTS = (
    b"",
    b"null",
    b"0",
    b"1e400",
    b"[",
    b"{",
    b"[1, 2]",
    b'[["Subject"]]',
    b'[["Subject", null]]',
    b'[["Subject", 5]]',
    b'[["Subject", ["a"]]]',
    b'[["Subject", {"a": 1}]]',
    b'[[5, "x"]]',
    b'[["Subject", "a", "b"]]',
    b'[["Subject", "x\\r\\nBcc: evil@example.net"]]',
    b'[["Bad Name", "x"]]',
    b'[["", "x"]]',
    b'[["Subject", "\\ud800"]]',
    b'[["Content-Type", "multipart/mixed"]]',
    b'{"a": 1}',
    b'{"<cid@x>": 5}',
    b'{"<cid@x>": null}',
    b'{"<cid@x>": {"n": 1}}',
    b'{"<cid@x>": "attachment-1"}',
    b'{"<cid@x>": "attachment-99"}',
    b'{"<ci\\r\\nd>": "attachment-1"}',
    b'{"<\\u00e9>": "attachment-1"}',
    b'{"": "attachment-1"}',
    b"\xff\xfe",
    b'"string"',
    b"[" * 100_000,
    b"{" * 100_000,
)


HOSTILE_HEADER_LINES = (
    b"Message-ID: =?utf-8?q?a=0D=0Ab?=\r\n",
    b"Message-ID: <a\x00b@x>\r\n",
    "Message-ID: <\u00bd@x>\r\n".encode(),
    b"X-Mailgun-Sflag: =?utf-8?q?Yes=0D=0AX-Evil:_1?=\r\n",
    b"X-Mailgun-Sscore: =?utf-8?q?9=00?=\r\n",
    b"X-Tagrelay-Loop: example.org\r\n",
    b"X-Tagrelay-Loop: EXAMPLE.ORG \r\n",
    b"Received: from a\r\n" * 26,
    b"From: a@b.example\r\n \r\n",
    b'From: "x" <\r\n',
    b"To: =?utf-8?b?!!!?=\r\n",
    b"Subject: =?x-unknown?q?a?=\r\n",
    b"Subject: =?utf-8?b?\xff?=\r\n",
    b"\r\n",
    b"no colon line\r\n",
    b" continuation first\r\n",
    b"From bob Mon Jan  1 00:00:00 2024\n",
)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    )


@st.composite
def nasty_value(draw: st.DrawFn, name: bytes) -> bytes:
    menu: list[st.SearchStrategy[bytes]] = [st.binary(max_size=64), st.sampled_from(INVALID_UTF8)]
    if name == b"timestamp":
        menu.append(st.sampled_from(TIMESTAMPS))
    if name in (b"recipient", b"sender"):
        menu.append(st.sampled_from(RECIPIENTS))
    if name in (b"message-headers", b"content-id-map"):
        menu.append(st.sampled_from(JSON_TEXTS))
        menu.append(json_values().map(lambda v: json.dumps(v).encode()))
    return draw(st.one_of(menu))


@st.composite
def mutation(draw: st.DrawFn) -> Mutation:
    """One edit of the list of parts (drawn lazily: the edit draws its positions when applied)."""
    kind = draw(
        st.sampled_from(
            (
                "drop",
                "duplicate",
                "swap",
                "truncate",
                "flip",
                "set",
                "invalid-utf8",
                "control",
                "nameless",
                "no-disposition",
                "as-file",
                "rename",
                "content-type",
                "rfc2231-filename",
                "mime-header",
                "mime-header",
                "huge-recipient",
                "many-fields",
            )
        )
    )
    n_a, n_b = draw(st.integers(0, 1 << 16)), draw(st.integers(0, 1 << 16))
    data = draw(st.data())

    def apply(parts: list[Part]) -> list[Part]:
        if not parts:
            return parts
        i, j = n_a % len(parts), n_b % len(parts)
        part = parts[i]
        if kind == "drop":
            return parts[:i] + parts[i + 1 :]
        if kind == "duplicate":
            twin = replace(part, value=data.draw(st.sampled_from((part.value, part.value + b"x"))))
            return [*parts[: i + 1], twin, *parts[i + 1 :]]
        if kind == "swap":
            swapped = list(parts)
            swapped[i], swapped[j] = replace(part, value=parts[j].value), replace(parts[j], value=part.value)
            return swapped
        if kind == "truncate":
            cut = replace(part, value=part.value[: n_b % (len(part.value) + 1)])
            return [*parts[:i], cut, *parts[i + 1 :]]
        if kind == "flip":
            if not part.value:
                return parts
            at = n_b % len(part.value)
            flipped = bytearray(part.value)
            flipped[at] ^= data.draw(st.integers(1, 255))
            return [*parts[:i], replace(part, value=bytes(flipped)), *parts[i + 1 :]]
        if kind == "set":
            name = data.draw(st.sampled_from(FIELD_NAMES))
            return put(parts, name, data.draw(nasty_value(name)))
        if kind == "invalid-utf8":
            junk = data.draw(st.sampled_from(INVALID_UTF8))
            at = n_b % (len(part.value) + 1)
            if data.draw(st.booleans()):
                return [*parts[:i], replace(part, name=(part.name or b"") + junk), *parts[i + 1 :]]
            return [*parts[:i], replace(part, value=part.value[:at] + junk + part.value[at:]), *parts[i + 1 :]]
        if kind == "control":
            name = data.draw(st.sampled_from(ENVELOPE_NAMES))
            current = next((p.value for p in parts if p.name == name), b"")
            at = data.draw(st.sampled_from((0, len(current) // 2, len(current))))
            return put(parts, name, current[:at] + data.draw(st.sampled_from(CONTROL)) + current[at:])
        if kind == "nameless":
            return [*parts[:i], replace(part, name=None), *parts[i + 1 :]]
        if kind == "no-disposition":
            return [*parts[:i], replace(part, disposition=False), *parts[i + 1 :]]
        if kind == "as-file":
            return [*parts[:i], replace(part, filename=b"f.bin", content_type=b"text/plain"), *parts[i + 1 :]]
        if kind == "rename":
            new = data.draw(st.sampled_from(FIELD_NAMES) | st.binary(max_size=12))
            return [*parts[:i], replace(part, name=new), *parts[i + 1 :]]
        if kind == "content-type":
            files = [k for k, p in enumerate(parts) if p.filename is not None] or [i]
            k = files[n_b % len(files)]
            content_type = data.draw(st.sampled_from(CONTENT_TYPES))
            return [*parts[:k], replace(parts[k], content_type=content_type), *parts[k + 1 :]]
        if kind == "rfc2231-filename":
            name = data.draw(st.sampled_from((b"evil%0D%0Aname.txt", b"%FF%FE.txt", b"a%00b", b"%E2%80%A8x")))
            params = b"; filename*=UTF-8''" + name
            return [Part(b"attachment-1", b"x", content_type=b"text/plain", params=params), *parts]
        if kind == "mime-header":
            mime = next((p.value for p in parts if p.name == b"body-mime"), None)
            line = data.draw(st.sampled_from(HOSTILE_HEADER_LINES))
            if mime is None:
                return put(parts, b"message-headers", b'[["X-Junk", "' + line.split(b":")[0] + b'"]]')
            return put(parts, b"body-mime", line + mime)
        if kind == "huge-recipient":
            return put(parts, b"recipient", b"a" * (2 * 1024 * 1024) + b"@example.org")
        # many-fields
        return parts + [Part(b"x-filler-%d" % k, b"v") for k in range(5000)]

    apply.__name__ = kind
    return apply


@dataclass(frozen=True)
class FuzzPost:
    base: str
    edits: tuple[str, ...]
    content_type: str
    body: bytes

    def __repr__(self) -> str:  # keep failure reports readable with multi-megabyte bodies
        head = self.body[:300]
        return f"FuzzPost(base={self.base!r}, edits={self.edits!r}, content_type={self.content_type!r}, body={head!r}…)"


def byte_edit(body: bytes, kind: str, a: int, b: int, junk: bytes) -> bytes:
    if not body:
        return junk
    i, j = sorted((a % len(body), b % len(body)))
    if kind == "flip":
        edited = bytearray(body)
        edited[i] ^= (b % 255) + 1
        return bytes(edited)
    if kind == "truncate":
        return body[:i]
    if kind == "delete":
        return body[:i] + body[j:]
    if kind == "insert":
        return body[:i] + junk + body[i:]
    return body[:j] + body[i:j] + body[j:]  # "repeat" a slice


CONTENT_TYPE_EDITS_LIST = (
    "",
    "text/plain",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=other",
    'multipart/form-data; boundary="' + BOUNDARY.decode() + '"; charset=utf-8',
    "Multipart/Form-Data; boundary=" + BOUNDARY.decode(),
    URLENCODED,
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=\u00e9\u00e9",
    "multipart/form-data; boundary=" + "b" * 5000,
    "garbage",
)
CONTENT_TYPE_EDITS = st.sampled_from(CONTENT_TYPE_EDITS_LIST)


@st.composite
def mutated_posts(draw: st.DrawFn, max_edits: int = 4) -> FuzzPost:
    """A real signed post from the corpus, then mutated; often re-signed so it gets past the signature."""
    base: BasePost = draw(st.sampled_from(base_posts()))
    edits = draw(st.lists(mutation(), max_size=max_edits))
    parts = base.parts
    for edit in edits:
        parts = edit(parts)
    if edits and draw(st.sampled_from((True, True, True, False))):
        parts = resign(parts)
    encoding = draw(st.sampled_from(("multipart", "multipart", "unterminated", "urlencoded")))
    if not edits and encoding == "multipart":
        content_type, body = base.content_type, base.body
    elif encoding == "urlencoded":
        content_type, body = URLENCODED, encode_urlencoded(parts)
    else:
        content_type, body = multipart_type(), encode_multipart(parts, terminated=encoding == "multipart")
    names = [e.__name__ for e in edits]
    for _ in range(draw(st.sampled_from((0, 0, 0, 1, 2)))):
        kind = draw(st.sampled_from(("flip", "truncate", "delete", "insert", "repeat")))
        a, b = draw(st.integers(0, 1 << 24)), draw(st.integers(0, 1 << 24))
        body = byte_edit(body, kind, a, b, draw(st.binary(min_size=1, max_size=16)))
        names.append(f"bytes-{kind}")
    new_type = draw(CONTENT_TYPE_EDITS) if draw(st.integers(0, 3)) == 3 else "keep"
    if new_type != "keep":
        content_type = new_type
        names.append(f"content-type={new_type[:40]!r}")
    return FuzzPost(base.label, tuple(names), content_type, body)


# ---------------------------------------------------------------------------------------------
# Garbage: any bytes under any content type


def content_types() -> st.SearchStrategy[str]:
    boundaries = st.text(max_size=72) | st.just(BOUNDARY.decode())
    return st.one_of(
        st.just(""),
        st.text(max_size=80),
        st.sampled_from(CONTENT_TYPE_EDITS_LIST),
        boundaries.map(lambda b: "multipart/form-data; boundary=" + b),
        boundaries.map(lambda b: 'multipart/form-data; boundary="' + b + '"'),
    )


FORM_PIECES = (
    b"--" + BOUNDARY + b"\r\n",
    b"--" + BOUNDARY + b"--\r\n",
    b"--" + BOUNDARY,
    b'Content-Disposition: form-data; name="recipient"\r\n',
    b'Content-Disposition: form-data; name="body-mime"; filename="m.eml"\r\n',
    b"Content-Disposition: form-data\r\n",
    b"Content-Disposition: attachment; name*=UTF-8''%FF\r\n",
    b"Content-Type: text/plain\r\n",
    b"\r\n",
    b"\n",
    b"shop@example.org",
    b"recipient=shop%40example.org&",
    b"body-mime=Subject%3A%20x%0D%0A%0D%0Ahi&",
    b"%",
    b"%Z",
    b"%4",
    b"+",
    b"=",
    b"&",
    b"\xff\xfe",
)


def garbage_bodies() -> st.SearchStrategy[bytes]:
    pieces = st.lists(st.sampled_from(FORM_PIECES) | st.binary(max_size=24), max_size=24).map(b"".join)
    return st.binary(max_size=512) | pieces


# ---------------------------------------------------------------------------------------------
# Correctly signed posts with hostile content (deep into to_inbound, rebuild_mime and the checks)

ROUTABLE = ("shop@example.org", "team@example.org", "Shop+Promo@Example.ORG", "a.b-c@example.org")
HEADER_NAMES = (
    "Subject",
    "From",
    "To",
    "Cc",
    "Date",
    "Message-Id",
    "Reply-To",
    "References",
    "In-Reply-To",
    "Received",
    "Sender",
    "X-Mailgun-Sflag",
    "X-Tagrelay-Loop",
    "Content-Type",
)
HEADER_VALUES = (
    "=?utf-8?q?a=0D=0Ab?=",
    "<a@b>",
    "a <b@c>, d",
    '"x" <',
    "@",
    "=?x?q?a?=",
    "=?utf-8?b?!!!?=",
    "Mon, 32 Foo 1999 99:99:99 +9999",
    ":;",
    "a@b.c (comment",
    "undisclosed-recipients:;",
    "g: a@b, c@d;",
    "\u00bd",
    "example.org",
)


def header_pairs() -> st.SearchStrategy[list[Any]]:
    names = st.sampled_from(HEADER_NAMES) | st.text(max_size=12)
    values = st.sampled_from(HEADER_VALUES) | st.text(max_size=40)
    return st.tuples(names, values).map(list)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def hostile_signed_posts(draw: st.DrawFn) -> FuzzPost:
    """Signed and addressed to a routable alias, so everything after the signature check runs on it."""
    token = draw(st.text("0123456789abcdef", min_size=1, max_size=50))
    parts = [
        Part(b"recipient", draw(st.sampled_from(ROUTABLE)).encode()),
        Part(b"sender", draw(st.sampled_from((b"", b"alice@bank.example")) | st.binary(max_size=20))),
        Part(b"timestamp", str(TIMESTAMP).encode()),
        Part(b"token", token.encode()),
    ]
    if draw(st.booleans()):
        lines = draw(st.lists(st.sampled_from(HOSTILE_HEADER_LINES), max_size=3))
        mime = b"".join(lines) + b"From: a@b.example\r\nSubject: s\r\n\r\n" + draw(st.binary(max_size=64))
        parts.append(Part(b"body-mime", mime))
    else:
        if draw(st.booleans()):
            pairs = draw(st.lists(header_pairs(), max_size=5))
            parts.append(Part(b"message-headers", _utf8(json.dumps(pairs))))
        elif draw(st.booleans()):
            parts.append(Part(b"message-headers", draw(nasty_value(b"message-headers"))))
        for name in (b"body-plain", b"body-html"):
            if draw(st.booleans()):
                parts.append(Part(name, draw(st.binary(max_size=80) | st.text(max_size=80).map(_utf8))))
        for number in range(1, draw(st.integers(0, 3)) + 1):
            filename = draw(st.text(max_size=16).map(_utf8))
            content_type = draw(st.sampled_from(CONTENT_TYPES))
            parts.append(Part(b"attachment-%d" % number, draw(st.binary(max_size=40)), filename, content_type))
        if draw(st.booleans()):
            parts.append(Part(b"content-id-map", draw(nasty_value(b"content-id-map"))))
        for name in (b"From", b"Subject", b"To"):
            if draw(st.booleans()):
                parts.append(Part(name, _utf8(draw(st.sampled_from(HEADER_VALUES)))))
    for name in (b"X-Mailgun-Sflag", b"X-Mailgun-Sscore"):
        if draw(st.booleans()):
            parts.append(Part(name, draw(st.sampled_from((b"Yes", b"No", b"12.5", b"nan", b"-inf")) | st.binary())))
    parts = resign(parts)
    return FuzzPost("hostile-signed", (), multipart_type(), encode_multipart(parts))


# ---------------------------------------------------------------------------------------------
# Correctly signed, well-formed posts with random content, for the replay properties


@dataclass(frozen=True)
class ValidPost:
    parts: list[Part]
    urlencoded: bool
    kind: str  # "mime" or "parsed"

    def encode(self, boundary: bytes = BOUNDARY) -> tuple[str, bytes]:
        if self.urlencoded:
            return URLENCODED, encode_urlencoded(self.parts)
        return multipart_type(boundary), encode_multipart(self.parts, boundary)


ATEXT = "abcdefghijklmnopqrstuvwxyz0123456789"
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@st.composite
def valid_signed_posts(draw: st.DrawFn) -> ValidPost:
    """A well-formed post as Mailgun would make it, addressed to a routable alias, correctly signed."""
    tag = draw(st.text(ATEXT, min_size=1, max_size=20))
    detail = draw(st.sampled_from(("", "+promo", "+X")))
    domain = draw(st.sampled_from(("example.org", "EXAMPLE.org")))
    recipient = draw(st.sampled_from((f"{tag}{detail}@{domain}", f"team{detail}@{domain}")))
    if recipient.lower().startswith("leaked"):
        recipient = "x" + recipient
    octets = st.binary(max_size=300)
    stamp = draw(st.integers(NOW - MAX_AGE_SECONDS + 1, NOW + 300))
    token = draw(st.text("0123456789abcdef", min_size=16, max_size=50))
    parts = [
        Part(b"recipient", recipient.encode()),
        Part(b"sender", draw(st.sampled_from((b"alice@bank.example", b"", b"bounce+x=y@lists.example")))),
        Part(b"timestamp", str(stamp).encode()),
        Part(b"token", token.encode()),
    ]
    header_names = st.from_regex(r"X-[A-Za-z0-9]{1,8}", fullmatch=True)
    header_values = st.text(PRINTABLE, max_size=40).map(str.strip)
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    kind = draw(st.sampled_from(("mime", "parsed")))
    if kind == "mime":
        eol = draw(st.sampled_from((b"\r\n", b"\n")))
        block = b"".join(f"{n}: {v}".encode() + eol for n, v in [("From", "Alice <alice@bank.example>"), *headers])
        parts.append(Part(b"body-mime", block + eol + draw(octets)))
    else:
        pairs = [["From", "Alice <alice@bank.example>"], ["Subject", draw(header_values)], *map(list, headers)]
        parts.append(Part(b"message-headers", json.dumps(pairs).encode()))
        parts.append(Part(b"body-plain", draw(st.text(PRINTABLE, max_size=200)).encode()))
        if draw(st.booleans()):
            parts.append(Part(b"body-html", b"<p>" + draw(st.text(PRINTABLE, max_size=100)).encode() + b"</p>"))
        if draw(st.booleans()):
            parts.append(Part(b"attachment-1", draw(octets), b"data.bin", b"application/octet-stream"))
    spam = draw(st.sampled_from(((), ((b"X-Mailgun-Sflag", b"No"), (b"X-Mailgun-Sscore", b"0.5")))))
    parts.extend(Part(name, value) for name, value in spam)
    order = draw(st.permutations(range(len(parts))))
    return ValidPost(resign([parts[i] for i in order]), urlencoded=draw(st.booleans()), kind=kind)


# ---------------------------------------------------------------------------------------------
# Hostile header values (issue 15): one generator per class the pure core must survive

CHARSETS = ("utf-8", "iso-8859-1", "x-unknown", "utf-7", "unknown-8bit", "", "utf-16", "cp1252", "gb2312", "idna")
C0 = tuple(bytes([c]) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F))  # every C0 control but TAB and LF


@st.composite
def encoded_words(draw: st.DrawFn) -> bytes:
    """An RFC 2047 word with a drawn charset and encoding, often broken, sometimes huge."""
    charset = draw(st.sampled_from(CHARSETS))
    kind = draw(st.sampled_from((b"q", b"b", b"Q", b"x")))
    text = draw(st.binary(max_size=40) | st.sampled_from((b"=0D=0A", b"=00", b"=FF=FE", b"!!!", b"w6Q=", b"")))
    times = draw(st.sampled_from((1, 1, 1, 50, 2000)))
    return b"=?" + charset.encode() + b"?" + kind + b"?" + text * times + b"?="


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Deep nesting of comments, quotes, angle brackets and groups: what recursive parsers choke on."""
    depth = draw(st.sampled_from((10, 100, 600, 2000)))
    opener, closer = draw(st.sampled_from(((b"(", b")"), (b'"', b'"'), (b"<", b">"), (b"(\\", b")"), (b"g:", b";"))))
    close = draw(st.booleans())
    return opener * depth + b"x" + (closer * depth if close else b"")


@st.composite
def hostile_header_values(draw: st.DrawFn) -> bytes:
    """One header value as a sender could write it: any mix of the pieces above, controls, raw 8-bit, long runs."""
    pieces = st.one_of(
        encoded_words(),
        nested(),
        st.sampled_from(C0),
        st.sampled_from((b"\r", b"\r\r", b"\x00", b"\r\n ", b"\n\t", b" ", b",", b"<a@b.example>", b"@", b'"')),
        st.binary(max_size=30),
        st.sampled_from(("J\u00fcrgen M\u00fcller".encode(), "\u2028".encode(), b"\xff\xfe", b"\xc3")),
        st.integers(990, 2600).map(lambda n: b"x" * n),
        st.integers(100, 1200).map(lambda n: b"ab " * n),
    )
    return b"".join(draw(st.lists(pieces, min_size=1, max_size=6)))


HOSTILE_NAMES = (
    b"From",
    b"Subject",
    b"Reply-To",
    b"To",
    b"Cc",
    b"Bcc",
    b"Message-ID",
    b"X-Tagrelay-Loop",
    b"X-Tagrelay-Spam",
    b"X-Tagrelay-Whatever",
    b"X-Mailgun-Drop-Message",
    b"X-Mailgun-Track",
    b"X-Mailgun-Sflag",
    b"Disposition-Notification-To",
    b"Return-Receipt-To",
    b"X-Confirm-Reading-To",
    b"References",
    b"Content-Type",
    b"X-Long",
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """A message whose header block is made of hostile values under real and steering field names."""
    eol = draw(st.sampled_from((b"\r\n", b"\n")))
    fields = draw(st.lists(st.tuples(st.sampled_from(HOSTILE_NAMES), hostile_header_values()), min_size=1, max_size=6))
    block = b"".join(name + b": " + value + eol for name, value in fields)
    return block + eol + draw(st.binary(max_size=40))


@st.composite
def verdict_posts(draw: st.DrawFn) -> tuple[bytes, tuple[str, str], tuple[str, str]]:
    """A message with Mailgun's verdict on top (or none) and the sender's own verdict further down.

    Returns (mime, what Mailgun prepended, what the sender wrote).
    """
    flags = st.sampled_from(("Yes", "No", "yes", ""))
    scores = st.sampled_from(("9.5", "0.1", "-1", "", "nan"))
    ours = (draw(flags), draw(scores))
    theirs = (draw(flags), draw(scores))
    top = b"X-Mailgun-Incoming: Yes\r\n"
    if ours[0]:
        top += f"X-Mailgun-Sflag: {ours[0]}\r\n".encode()
    if ours[1]:
        top += f"X-Mailgun-Sscore: {ours[1]}\r\n".encode()
    middle = draw(st.sampled_from((b"Received: from a by b\r\n", b"From: a@b.example\r\n", b"Subject: x\r\n")))
    low = f"X-Mailgun-Sflag: {theirs[0]}\r\nX-Mailgun-Sscore: {theirs[1]}\r\n".encode()
    return top + middle + low + b"Subject: s\r\n\r\nbody\r\n", ours, theirs


PLACEHOLDERS = ("{tag}", "{detail}", "{a}", "{b}")


@st.composite
def forward_templates(draw: st.DrawFn) -> str:
    """A forward address made of literals, separators and placeholders, in the local part and the domain."""
    atoms = st.sampled_from(("owner", "x", "", "1", *PLACEHOLDERS))
    seps = st.sampled_from(("", ".", "+", "-", "_"))
    local = "".join(draw(atoms) + draw(seps) for _ in range(draw(st.integers(1, 3)))).strip(".") or "{tag}"
    label = draw(st.sampled_from(("gmail", "{tag}", "mail-{a}", "example")))
    tld = draw(st.sampled_from(("com", "{b}", "org")))
    return f"{local}@{label}.{tld}"


ODD_FILENAMES = (
    b"",
    b"path\\",
    b"path/.",
    b"..",
    b".",
    b"../../etc/passwd",
    b"a/b/",
    b"C:\\dir\\",
    b'name\\"quoted',
    b" ",
    b"\xc3\xa9t\xc3\xa9.txt",
    b"%2e%2e",
    b"a;b=c",
)
