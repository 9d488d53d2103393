"""Shared pieces of the fuzz suite: the Ingest under test, a recording publisher, the corpus posts.

Everything is deterministic: posts are signed at a fixed timestamp with fixed tokens,
the clock is frozen ten seconds later, and the random multipart boundary urllib3
chooses is replaced by a fixed one, so a failing example replays byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.core import routes
from tagrelay.core.config import IngestConfig, SecretRef
from tagrelay.core.inbound import parse_form
from tagrelay.core.routes import Forward
from tagrelay.services.ingest import Ingest, Response
from tagrelay_tools.mailgun_posts import Post, mime_post, parsed_post

ROOT = Path(__file__).resolve().parents[2]
EML = ROOT / "tests" / "data" / "eml"

KEY = "fuzz-webhook-signing-key"
TIMESTAMP = 1_700_000_000
NOW = TIMESTAMP + 10
MAX_AGE_SECONDS = 9 * 3600
STATUSES = frozenset({200, 400, 401, 406, 503})
BOUNDARY = b"tagrelay-fuzz-boundary-0123456789"

# A catch-all for example.org, a blocked alias and a route with a list of targets.
ROUTES_TOML = """\
fallback = "owner@gmail.com"
blocked = ["leaked@example.org"]

[[route]]
match = "team@example.org"
forward = ["alice@gmail.com", "bob@gmail.com"]

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""
ROUTES = routes.load(ROUTES_TOML)

# Recipients the corpus posts are addressed to: routable, list target, blocked, foreign, sub-address.
RECIPIENTS = (
    "shop@example.org",
    "team@example.org",
    "leaked@example.org",
    "someone@other.example",
    "Shop+Promo@Example.ORG",
)
SENDER = "alice@bank.example"


def clock() -> float:
    return float(NOW)


class FixedKey:
    def get(self) -> str:
        return KEY


@dataclass(frozen=True)
class Published:
    data: bytes
    attributes: dict[str, str]


class RecordingPublisher:
    """A publisher that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.published: list[Published] = []

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        self.published.append(Published(data, dict(attributes)))
        return f"fuzz-{len(self.published)}"


@dataclass
class Harness:
    ingest: Ingest
    publisher: RecordingPublisher
    ledger: MemoryLedger

    def post(self, content_type: str, body: bytes) -> tuple[Response, list[Published]]:
        """One POST: the response and what this call published."""
        before = len(self.publisher.published)
        response = self.ingest.handle(content_type, body)
        return response, self.publisher.published[before:]


def harness(publisher: RecordingPublisher | None = None) -> Harness:
    config = IngestConfig(
        project="p",
        topic="tagrelay-inbound",
        routes=ROUTES,
        signing_key=SecretRef("MAILGUN_WEBHOOK_SIGNING_KEY", value=KEY),
        max_age_seconds=MAX_AGE_SECONDS,
        publish_timeout=5,
        max_body_bytes=30 * 1024 * 1024,
    )
    publisher = publisher or RecordingPublisher()
    ledger = MemoryLedger(clock)
    ingest = Ingest(config, signing_key=FixedKey(), publisher=publisher, ledger=ledger, clock=clock)
    return Harness(ingest, publisher, ledger)


def mailgun_signature(key: str, timestamp: str, token: str) -> str:
    """Mailgun's documented signature, computed here independently of tagrelay."""
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# Forms as editable lists of parts


@dataclass(frozen=True)
class Part:
    """One form field as sent on the wire; names are bytes so they can be invalid UTF-8."""

    name: bytes | None  # None: a Content-Disposition without a name parameter
    value: bytes
    filename: bytes | None = None
    content_type: bytes | None = None
    disposition: bool = True  # False: the part has no Content-Disposition header at all
    params: bytes = b""  # extra Content-Disposition parameters, written as they are


def _quoted(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def encode_multipart(parts: list[Part], boundary: bytes = BOUNDARY, terminated: bool = True) -> bytes:
    out: list[bytes] = []
    for part in parts:
        out.append(b"--" + boundary + b"\r\n")
        if part.disposition:
            disposition = b"Content-Disposition: form-data"
            if part.name is not None:
                disposition += b"; name=" + _quoted(part.name)
            if part.filename is not None:
                disposition += b"; filename=" + _quoted(part.filename)
            disposition += part.params
            out.append(disposition + b"\r\n")
        if part.content_type is not None:
            out.append(b"Content-Type: " + part.content_type + b"\r\n")
        out.append(b"\r\n" + part.value + b"\r\n")
    if terminated:
        out.append(b"--" + boundary + b"--\r\n")
    return b"".join(out)


def multipart_type(boundary: bytes = BOUNDARY) -> str:
    return "multipart/form-data; boundary=" + boundary.decode("latin-1")


URLENCODED = "application/x-www-form-urlencoded"


def encode_urlencoded(parts: list[Part]) -> bytes:
    return b"&".join(
        urllib.parse.quote_from_bytes(p.name or b"", safe="").encode()
        + b"="
        + urllib.parse.quote_from_bytes(p.value, safe="").encode()
        for p in parts
    )


def decode_multipart(body: bytes, boundary: bytes) -> list[Part]:
    """The parts of a well-formed multipart body, in order (for the posts tagrelay_tools.mailgun_posts builds)."""
    decoder = MultipartDecoder(boundary)
    decoder.receive_data(body)
    decoder.receive_data(None)
    parts: list[Part] = []
    current: Field | File | None = None
    chunks: list[bytes] = []
    while True:
        event = decoder.next_event()
        if isinstance(event, (Field, File)):
            current, chunks = event, []
        elif isinstance(event, Data):
            chunks.append(event.data)
            if not event.more_data and current is not None:
                filename = current.filename.encode() if isinstance(current, File) else None
                content_type = current.headers.get("content-type")
                parts.append(
                    Part(
                        name=current.name.encode(),
                        value=b"".join(chunks),
                        filename=filename,
                        content_type=content_type.encode() if content_type else None,
                    )
                )
                current = None
        elif isinstance(event, (Epilogue, NeedData)):
            return parts


def get(parts: list[Part], name: bytes) -> bytes | None:
    return next((p.value for p in parts if p.name == name), None)


def put(parts: list[Part], name: bytes, value: bytes) -> list[Part]:
    """Set the first field called ``name`` (appending one if there is none)."""
    for index, part in enumerate(parts):
        if part.name == name:
            return [*parts[:index], replace(part, value=value), *parts[index + 1 :]]
    return [*parts, Part(name, value)]


def text(value: bytes | None) -> str:
    """A field as tagrelay reads envelope fields: UTF-8 with replacement, stripped."""
    return (value or b"").decode("utf-8", "replace").strip()


def resign(parts: list[Part]) -> list[Part]:
    """Sign whatever timestamp and token the parts now carry, so the post gets past the check."""
    timestamp, token = text(get(parts, b"timestamp")), text(get(parts, b"token"))
    return put(parts, b"signature", mailgun_signature(KEY, timestamp, token).encode())


# ---------------------------------------------------------------------------------------------
# The corpus as real signed posts


@dataclass(frozen=True)
class BasePost:
    label: str
    kind: str  # "mime" or "parsed"
    content_type: str
    body: bytes
    parts: list[Part] = field(hash=False)


def _fixed_boundary(post: Post) -> tuple[str, bytes]:
    boundary = post.content_type.partition("boundary=")[2].strip('"')
    assert boundary and post.body.count(boundary.encode()) >= 2
    return multipart_type(), post.body.replace(boundary.encode(), BOUNDARY)


def corpus_names() -> list[str]:
    return sorted(p.name for p in EML.glob("*.eml"))


@cache
def base_posts() -> tuple[BasePost, ...]:
    """Every corpus message as a mime post and (where tagrelay_tools.mailgun_posts can build one) a parsed post."""
    posts: list[BasePost] = []
    for number, name in enumerate(corpus_names()):
        raw = (EML / name).read_bytes()
        recipient = RECIPIENTS[number % len(RECIPIENTS)]
        for kind, build in (("mime", mime_post), ("parsed", parsed_post)):
            token = hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()[:50]
            try:
                post = build(raw, recipient, SENDER, KEY, timestamp=TIMESTAMP, token=token)
            except LookupError:
                continue  # 57-unknown-8bit-charset: parsed_post cannot build it (known, tests/unit)
            content_type, body = _fixed_boundary(post)
            posts.append(BasePost(f"{kind}:{name}", kind, content_type, body, decode_multipart(body, BOUNDARY)))
    return tuple(posts)


# ---------------------------------------------------------------------------------------------
# What must hold for every POST (the bugs the fuzzing found are pinned in test_fuzz_regressions.py)


@dataclass(frozen=True)
class Outcome:
    response: Response
    published: list[Published]


def post_and_check(content_type: str, body: bytes, harness_: Harness | None = None) -> Outcome:
    """POST once and check what must always hold; return what happened.

    - handle never raises (except for a known bug) and answers 200, 400, 401, 406 or 503;
    - nothing is published unless the answer is 200, and at most one message per call;
    - what is published comes from a post whose signature verifies with the key, whose recipient
      resolves to a Forward, and whose attributes hold no CR, LF or NUL.
    """
    h = harness_ or harness()
    before = len(h.publisher.published)
    response = h.ingest.handle(content_type, body)
    published = h.publisher.published[before:]
    assert response.status in STATUSES, response
    if response.status != 200:
        assert not published, (response, published)
    assert len(published) <= 1, published
    if published:
        form = parse_form(content_type, body)
        timestamp, token, signature = (form.text(n) for n in ("timestamp", "token", "signature"))
        assert hmac.compare_digest(mailgun_signature(KEY, timestamp, token), signature), "published an unsigned post"
        recipient = form.text("recipient")
        assert isinstance(ROUTES.resolve(recipient), Forward), f"published for unroutable {recipient!r}"
        attributes = published[0].attributes
        for name, value in attributes.items():
            assert not any(c in value for c in "\r\n\0"), f"control character in attribute {name}"
        assert attributes.get("recipient") == recipient, (recipient, attributes.get("recipient"))
    return Outcome(response, published)
