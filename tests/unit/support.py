"""Shared helpers for the unit tests: the corpus, its manifest, and stdlib views of a message.

The views here use only the standard library's ``email`` package, so a test compares
what tagrelay produced with what an independent parser sees.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from tagrelay.core.config import IngestConfig, SecretRef
from tagrelay.core.routes import Routes

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
EML = DATA / "eml"
POSTS = DATA / "posts"

# The key of the DESIGN.md signature vector; also signs every sample post.
SIGNING_KEY = "test-webhook-signing-key"
POST_TIMESTAMP = 1700000000
NOW = POST_TIMESTAMP + 10  # "now" for checking the sample posts: ten seconds after Mailgun signed them


def manifest() -> dict[str, dict[str, Any]]:
    data = json.loads((EML / "MANIFEST.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


MANIFEST = manifest()
CORPUS = sorted(MANIFEST)


def corpus(name: str) -> bytes:
    return (EML / name).read_bytes()


def mailgun_signature(key: str, timestamp: str, token: str) -> str:
    """Mailgun's documented signature, computed here independently of tagrelay."""
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def normalize_newlines(text: str) -> str:
    """Text with CRLF (and lone CR) written as LF.

    The canonical form of a text body is CRLF (RFC 2045 section 2.10, RFC 2046
    section 4.1.1), and a message rebuilt from the parsed form is serialized that
    way, so text is compared independent of its line-ending convention.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    content_id: str | None  # without the angle brackets
    sha256: str


@dataclass(frozen=True)
class Contents:
    text: str | None
    html: str | None
    attachments: list[Attachment]


def contents(raw: bytes) -> Contents:
    """The body text, the HTML and the attachments of a message, as the stdlib sees them.

    An attachment is what the corpus manifest calls one: a leaf that is not the
    chosen text or HTML body and has a filename, a Content-ID or an attachment
    disposition.
    """
    message = parse(raw)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    found = []
    for part in message.walk():
        if part.is_multipart() or part is text or part is html:
            continue
        if not (part.get_filename() or part["Content-ID"] or part.get_content_disposition() == "attachment"):
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes), f"{part.get_content_type()} part has no decodable payload"
        cid = str(part["Content-ID"]).strip().strip("<>") if part["Content-ID"] else None
        found.append(Attachment(part.get_filename(), part.get_content_type(), cid, hashlib.sha256(payload).hexdigest()))
    return Contents(
        text=_content(text),
        html=_content(html),
        attachments=found,
    )


def _content(part: Message | None) -> str | None:
    if part is None:
        return None
    assert isinstance(part, EmailMessage)
    value = part.get_content()
    assert isinstance(value, str)
    return value


def expected_attachments(name: str) -> list[Attachment]:
    return [
        Attachment(a["filename"], a["content_type"], a["content_id"], a["sha256"])
        for a in MANIFEST[name]["expect_attachments"]
    ]


def unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def display_name(raw_value: bytes) -> tuple[str, str]:
    """(display name, address) of the first mailbox of an address header's raw value.

    The address is split off first and the RFC 2047 words of the name are decoded
    afterwards (RFC 2047 section 5: an encoded word may hold a comma or a quote
    that is not syntax). Raw UTF-8 (RFC 6532) is read as UTF-8. A name given as an
    old-style comment, ``addr (Name)``, counts as the display name.
    """
    text = unfold(raw_value.decode("utf-8", "replace"))
    name, address = email.utils.getaddresses([text])[0]
    return (str(make_header(decode_header(name))) if name else ""), address


def raw_fields(raw: bytes) -> list[tuple[str, bytes]]:
    """The header fields of a message as (lower-case name, raw bytes with folding and line ending).

    Written here without tagrelay.core.headers, so the rewrite tests do not check the
    rewrite with its own parser. Stops at the first empty line. A line that is not
    a field (an mbox "From " envelope line) gets the empty name.
    """
    fields: list[tuple[str, bytes]] = []
    for line in re.split(rb"(?<=\n)", raw):
        if line in (b"\r\n", b"\n", b""):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + line)
        else:
            name, colon, _ = line.partition(b":")
            is_field = colon and name.strip() and not re.search(rb"\s", name.rstrip())
            fields.append((name.strip().decode("ascii", "replace").lower() if is_field else "", line))
    return fields


def header_lines(raw: bytes, name: str) -> list[bytes]:
    """The raw bytes of every header field called ``name``, exactly as written."""
    return [line for field, line in raw_fields(raw) if field == name.lower()]


def header_value(line: bytes) -> bytes:
    """The value of a raw header field: after the colon, line ending and outer blanks removed."""
    return line.partition(b":")[2].rstrip(b"\r\n").strip(b" \t")


def body_bytes(raw: bytes) -> bytes | None:
    """The body of a message: every byte after the first empty line, or None when there is none.

    The oracle for "body bytes untouched", written from RFC 5322 section 2.1 (header
    fields, then an empty line, then the body) as a line-by-line scan. It shares no
    code with tagrelay.core.headers (``body_offset`` / ``split_message``), so a bug in
    the production splitter cannot hide itself in the check. A line is ended by LF;
    an empty line is a bare CRLF or LF.
    """
    offset = 0
    while offset < len(raw):
        end = raw.find(b"\n", offset)
        if end == -1:
            return None
        line = raw[offset : end + 1]
        offset = end + 1
        if line in (b"\r\n", b"\n"):
            return raw[offset:]
    return None


@dataclass
class RecordingPublisher:
    """A Pub/Sub publisher twin: records what was published, or raises ``fail_with``."""

    published: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    fail_with: Exception | None = None

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.published.append((data, attributes))
        return f"pubsub-{len(self.published)}"


def ingest_config(
    routes: Routes,
    signing_key: str = SIGNING_KEY,
    max_body_bytes: int = 26 * 1024 * 1024,
    route_key: str = "",
) -> IngestConfig:
    """Ingest's settings as load_ingest would make them, for the in-process tests."""
    return IngestConfig(
        project="demo",
        topic="tagrelay-inbound",
        routes=routes,
        signing_key=SecretRef(variable="MAILGUN_WEBHOOK_SIGNING_KEY", value=signing_key),
        max_age_seconds=9 * 3600,
        publish_timeout=10,
        max_body_bytes=max_body_bytes,
        route_key=SecretRef(variable="TAGRELAY_ROUTE_KEY", value=route_key) if route_key else None,
    )
