"""A Mailgun token is bound to one post: its recipient, sender and bytes (the signature covers only
timestamp + token). A captured signed post re-sent with another ``recipient`` must not carry the
message to that other alias's owner; a retry of the same post stays the duplicate it is.

Also: once Mailgun accepted a message, no later error may turn it into a dead letter (whose
replay would send it twice)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.core.envelope import Delivery, Envelope, message_digest
from tagrelay.core.routes import load
from tagrelay.services.relay import Limits, Relay
from tests.unit.test_relay import RecordingDeadLetters, RecordingSender

NOW = 1_800_000_000.0
ROUTES = load('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\n')
RAW = (
    b"From: Alice <alice@bank.example>\r\nTo: shop@example.org\r\nSubject: your order\r\n"
    b"Message-ID: <order@bank.example>\r\n\r\nHello.\r\n"
)
TOKEN = "c" * 50


def relay(sender: RecordingSender, deadletters: RecordingDeadLetters, **kwargs: Any) -> Relay:
    ledger = MemoryLedger(clock=lambda: NOW)
    limits = Limits(send_timeout_seconds=5)
    return Relay(ROUTES, sender, deadletters, ledger, limits=limits, clock=lambda: NOW, sleep=lambda s: None, **kwargs)


def delivery(recipient: str, sender: str = "bounce@bank.example", **extra: str) -> Delivery:
    envelope = Envelope(recipient=recipient, sender=sender, mime=RAW, token=TOKEN, **extra)
    return Delivery(envelope, "1", datetime.fromtimestamp(NOW, UTC))


def test_a_replayed_token_with_another_recipient_is_refused_and_a_retry_stays_a_duplicate() -> None:
    sender, deadletters = RecordingSender(), RecordingDeadLetters()
    the_relay = relay(sender, deadletters)
    assert the_relay.handle(delivery("shop@example.org")).status == "sent"
    assert the_relay.handle(delivery("shop@example.org")).status == "duplicate"  # Mailgun's retry
    assert the_relay.handle(delivery("bank@example.org")).status == "refused"  # same token, other alias
    assert the_relay.handle(delivery("shop@example.org", sender="spoof@evil.example")).status == "refused"
    assert [to for to, _ in sender.sent] == [("owner+shop@gmail.com",)]


class ClaimsThatFailAfterTheSend:
    """A claim store whose delete fails with an error outside the tree (e.g. a credentials library)."""

    def __init__(self) -> None:
        self.objects = {"gs://claims/claims/one.eml": RAW}

    def put(self, data: bytes, prefix: str = "claims/") -> str:
        raise AssertionError("not used")

    def get(self, ref: str) -> bytes:
        return self.objects[ref]

    def delete(self, ref: str) -> None:
        raise RuntimeError("credentials refresh failed")


def test_an_error_after_mailgun_accepted_never_dead_letters_the_message() -> None:
    sender, deadletters = RecordingSender(), RecordingDeadLetters()
    the_relay = relay(sender, deadletters, claims=ClaimsThatFailAfterTheSend())
    head = RAW[: RAW.index(b"\r\n\r\n") + 2]
    claimed = Envelope(
        recipient="shop@example.org",
        sender="bounce@bank.example",
        mime=head,
        token=TOKEN,
        claim="gs://claims/claims/one.eml",
        digest=message_digest(RAW),
    )
    outcome = the_relay.handle(Delivery(claimed, "1", datetime.fromtimestamp(NOW, UTC)))
    assert (outcome.status, deadletters.letters) == ("sent", [])
    assert len(sender.sent) == 1
    assert the_relay.handle(Delivery(claimed, "2", datetime.fromtimestamp(NOW, UTC))).status == "duplicate"
