"""The Pub/Sub message schema between ingest and relay (``tagrelay.v1``).

Data: the raw RFC 5322 bytes. Attributes: ``schema``, ``recipient``, ``sender``,
``token``, ``message_id``, ``received_at``, ``spam_flag``, ``spam_score``,
``digest`` (SHA-256 of the exact message bytes as received: the delivery identity) and,
when the body is stored elsewhere, ``claim``; ``stored`` for a Mailgun ``store(notify=…)``
notification (the message waits at Mailgun); ``replay`` and ``release`` set by the
operator tools. Pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tagrelay.core.errors import SchemaError
from tagrelay.core.headers import Field, first, has_control_chars, header_block, header_fields
from tagrelay.core.inbound import InboundMessage

SCHEMA = "tagrelay.v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_ATTRIBUTE_BYTES = 1024  # Pub/Sub's limit on one attribute value
MAX_CLAIM_DATA_BYTES = 256 * 1024  # header block sent along with a claim check
# One publish request is capped at 10 MB; leave room for attributes and framing.
MAX_DATA_BYTES = 9_500_000


@dataclass(frozen=True)
class Envelope:
    recipient: str
    sender: str
    mime: bytes
    token: str = ""
    message_id: str = ""
    received_at: str = ""
    spam_flag: str = ""
    spam_score: str = ""
    claim: str = ""
    replay: str = ""  # set by `tagrelay deadletters replay`: deliver even if dead-lettered before
    digest: str = ""  # sha256 hex of the exact message bytes (of the stored object for a claim check)
    stored: str = ""  # Mailgun storage URL of a store(notify=...) message, fetched by the relay
    release: str = ""  # set by `tagrelay refusals release`: the refusal id, deliver despite its reason

    def attributes(self) -> dict[str, str]:
        """The Pub/Sub attributes of this envelope (empty values left out, long ones cut)."""
        values = {
            "schema": SCHEMA,
            "recipient": self.recipient,
            "sender": self.sender,
            "token": self.token,
            "message_id": self.message_id,
            "received_at": self.received_at,
            "spam_flag": self.spam_flag,
            "spam_score": self.spam_score,
            "claim": self.claim,
            "replay": self.replay,
            "digest": self.digest,
            "stored": self.stored,
            "release": self.release,
        }
        # A value with CR, LF or NUL (a decoded Message-ID, a spam header) is left out:
        # attributes end up in headers and logs downstream.
        return {k: _fit(v) for k, v in values.items() if v and not has_control_chars(v)}


@dataclass(frozen=True)
class Delivery:
    """One push delivery from Pub/Sub: the envelope and what Pub/Sub says about it."""

    envelope: Envelope
    pubsub_id: str
    publish_time: datetime | None


def message_digest(mime: bytes) -> str:
    """SHA-256 (hex) of the exact message bytes: what a sender cannot make collide with another message."""
    return hashlib.sha256(mime).hexdigest()


def stored_digest(url: str) -> str:
    """The delivery digest of a message Mailgun stored (a store(notify=...) route): of its storage URL,
    since its bytes are fetched only by the relay."""
    return message_digest(b"stored:" + url.encode("utf-8"))


def token_binding(recipient: str, sender: str, digest: str) -> str:
    """What a Mailgun token is bound to: one post, its envelope (recipient, sender) and its exact bytes.

    The signature covers only timestamp + token, so a replayed triple must not carry the same
    message to another alias: Mailgun signs each post (one per envelope recipient) with a token of its own.
    """
    return hashlib.sha256(f"{recipient.lower()}\n{sender}\n{digest}".encode()).hexdigest()


def delivery_key(alias: str, targets: tuple[str, ...], digest: str) -> str:
    """The identity of one delivery: these exact message bytes (``digest``) to this alias and these targets.

    Never the Message-ID: a sender chooses it, and could make a real message with a
    predicted id look like a duplicate of theirs.
    """
    if not _HEX64.fullmatch(digest):
        raise SchemaError("no usable message digest")
    text = "\n".join([alias.lower(), *sorted(t.lower() for t in targets), "sha256:" + digest])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_of(envelope: Envelope) -> str:
    """The delivery digest an envelope claims (or, without the attribute, of the bytes it carries)."""
    if envelope.digest:
        return envelope.digest
    if envelope.claim or envelope.stored:
        raise SchemaError("a claim-checked or stored message without a digest attribute")
    return message_digest(envelope.mime)


def message_id_of(mime: bytes, fields: list[Field] | None = None) -> str:
    """The Message-ID (a log and operator label only, never an identity); ``fields`` if already parsed."""
    field = first(header_fields(mime) if fields is None else fields, "message-id")
    return field.value.strip() if field is not None else ""


def encode(
    message: InboundMessage,
    received_at: datetime,
    claim: str = "",
    digest: str = "",
    stored: str = "",
    fields: list[Field] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """An inbound message as Pub/Sub data and attributes.

    With a ``claim`` (the message is stored in the claim-check bucket), the data is
    only the header block, so the Pub/Sub message stays small. ``digest`` defaults to
    the SHA-256 of the message bytes; ``stored`` marks a store(notify=...) notification
    whose message the relay fetches from Mailgun (its digest is then that of the URL).
    """
    envelope = Envelope(
        recipient=message.recipient,
        sender=message.sender,
        mime=message.mime,
        token=message.token,
        message_id=message_id_of(message.mime, fields),
        received_at=received_at.astimezone(UTC).isoformat(),
        spam_flag=message.spam_flag,
        spam_score=message.spam_score,
        claim=claim,
        digest=digest or message_digest(message.mime),
        stored=stored,
    )
    data = header_block(message.mime)[:MAX_CLAIM_DATA_BYTES] if claim else message.mime
    return data, envelope.attributes()


def _fit(value: str) -> str:
    encoded = value.encode("utf-8")
    if len(encoded) <= MAX_ATTRIBUTE_BYTES:
        return value
    return encoded[:MAX_ATTRIBUTE_BYTES].decode("utf-8", "ignore")


def decode(data: bytes, attributes: dict[str, str]) -> Envelope:
    if attributes.get("schema") != SCHEMA:
        raise SchemaError(f"schema is {attributes.get('schema')!r}, expected {SCHEMA!r}")
    if not attributes.get("recipient"):
        raise SchemaError("no recipient attribute")
    return Envelope(
        recipient=attributes["recipient"],
        sender=attributes.get("sender", ""),
        mime=data,
        token=attributes.get("token", ""),
        message_id=attributes.get("message_id", ""),
        received_at=attributes.get("received_at", ""),
        spam_flag=attributes.get("spam_flag", ""),
        spam_score=attributes.get("spam_score", ""),
        claim=attributes.get("claim", ""),
        replay=attributes.get("replay", ""),
        digest=attributes.get("digest", "").lower(),
        stored=attributes.get("stored", ""),
        release=attributes.get("release", ""),
    )


def from_cloud_event_data(data: Any) -> Delivery:
    """Decode the data of a ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvent."""
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise SchemaError("CloudEvent data has no Pub/Sub message")
    message = data["message"]
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise SchemaError("attributes are not a string map")
    try:
        payload = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise SchemaError("message data is not base64") from None
    pubsub_id = str(message.get("messageId") or message.get("message_id") or "")
    return Delivery(decode(payload, attributes), pubsub_id, _parse_time(message.get("publishTime")))


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
