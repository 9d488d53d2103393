"""In-process pipeline for the hostile tier: ingest and relay as the functions build them, with one
MemoryLedger (the contract suite shows it answers like Firestore), a recording publisher and sender."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import IngestConfig, SecretRef
from tagrelay.core.envelope import Delivery, decode
from tagrelay.core.ports import ClaimStore, Mime, whole
from tagrelay.core.routes import Routes, load
from tagrelay.services.ingest import Ingest, Response
from tagrelay.services.relay import Outcome, Relay
from tagrelay_tools import mailgun_posts

KEY = "hostile-webhook-signing-key"
NOW = 1_700_000_000.0
STAMP = int(NOW) - 10
ROUTES: Routes = load(
    """\
blocked = ["leaked@example.org"]

[[route]]
match = "notify-{tag}@example.org"
forward = "owner+{tag}@gmail.com"
notify = "owner@gmail.com"

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""
)


def mailgun_signature(timestamp: str, token: str) -> str:
    """Mailgun's documented signature, computed here independently of tagrelay."""
    return hmac.new(KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def message(message_id: str, subject: str = "hostile", body: bytes = b"hello\r\n", extra: str = "") -> bytes:
    head = (
        f"From: Alice <alice@bank.example>\r\nTo: x@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return head.encode() + body


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@dataclass
class Published:
    data: bytes
    attributes: dict[str, str]


@dataclass
class Recorder:
    """Publisher, sender and dead-letter topic at once."""

    published: list[Published] = field(default_factory=list)
    sent: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)
    letters: list[tuple[bytes, dict[str, str], str]] = field(default_factory=list)
    send_error: BaseException | None = None

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        self.published.append(Published(data, dict(attributes)))
        return f"ps-{len(self.published)}"

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((tuple(to), whole(mime)))  # what Mailgun receives, in one piece
        return f"<{len(self.sent)}@mailgun.example>"

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        self.letters.append((data, dict(attributes), reason))


@dataclass
class Pipeline:
    ingest: Ingest
    relay: Relay
    ledger: MemoryLedger
    out: Recorder
    delivered_up_to: int = 0

    def post(self, made: mailgun_posts.Post) -> Response:
        return self.ingest.handle(made.content_type, made.body)

    def deliver(self) -> list[Outcome]:
        """Push every message published since the last call through the relay (as Pub/Sub would)."""
        outcomes = []
        while self.delivered_up_to < len(self.out.published):
            published = self.out.published[self.delivered_up_to]
            self.delivered_up_to += 1
            outcomes.append(self.push(published))
        return outcomes

    def push(self, published: Published) -> Outcome:
        envelope = decode(published.data, published.attributes)
        return self.relay.handle(Delivery(envelope, f"m{self.delivered_up_to}", None))


def pipeline(claims: ClaimStore | None = None, stored: Any = None, **relay_kwargs: Any) -> Pipeline:
    ledger = MemoryLedger(clock=lambda: NOW)
    out = Recorder()
    config = IngestConfig(
        project="p",
        topic="tagrelay-inbound",
        routes=ROUTES,
        signing_key=SecretRef("MAILGUN_WEBHOOK_SIGNING_KEY", value=KEY),
        max_age_seconds=9 * 3600,
        publish_timeout=5,
        max_body_bytes=30 * 1024 * 1024,
        claim_bucket="b" if claims else "",
    )
    ingest = Ingest(config, Secret(config.signing_key), out, ledger, claims, clock=lambda: NOW)
    relay = Relay(
        ROUTES, out, out, ledger, claims, clock=lambda: NOW, sleep=lambda _: None, stored=stored, **relay_kwargs
    )
    return Pipeline(ingest, relay, ledger, out)


def mime_post(raw: bytes, recipient: str, token: str) -> mailgun_posts.Post:
    return mailgun_posts.mime_post(raw, recipient, "bounce@bank.example", KEY, STAMP, token)
