"""tagrelay.services.relay.Relay in-process: send, dead-letter, or raise to be redelivered."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from tagrelay.adapters.claimcheck import ClaimStore
from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.core.envelope import Envelope
from tagrelay.core.errors import MailgunRejected, MailgunTransient
from tagrelay.core.ports import Mime, whole
from tagrelay.core.routes import Routes, load
from tagrelay.services.relay import Limits, Relay
from tests.unit.support import body_bytes, corpus, raw_fields

NOW = 1_704_067_200.0  # 2024-01-01T00:00:00Z
PUBLISHED = "2024-01-01T00:00:00.123456789Z"
ROUTES = load(
    """\
fallback = "owner@gmail.com"

[[route]]
match = "team@example.org"
forward = ["alice@gmail.com", "bob@gmail.com"]

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""
)
OTHER_ROUTES = load('[[route]]\nmatch = "{tag}@example.net"\nforward = "owner+{tag}@gmail.com"\n')


@dataclass
class RecordingSender:
    """Answers each send with the next planned outcome (an id or an exception); records what was sent."""

    plan: list[str | Exception] = field(default_factory=list)
    sent: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        outcome = self.plan.pop(0) if self.plan else "<sent@mailgun.example>"
        if isinstance(outcome, Exception):
            raise outcome
        self.sent.append((tuple(to), whole(mime)))  # what Mailgun receives, in one piece
        return outcome


@dataclass
class RecordingDeadLetters:
    letters: list[tuple[bytes, dict[str, str], str]] = field(default_factory=list)

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        self.letters.append((data, attributes, reason))


def no_storage() -> Any:
    raise AssertionError("these messages carry no claim check: Cloud Storage must not be touched")


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@dataclass
class Harness:
    relay: Relay
    sender: RecordingSender
    deadletters: RecordingDeadLetters
    sleeps: Sleeps


def harness(
    plan: list[str | Exception] | None = None,
    routes: Routes = ROUTES,
    max_age: float = 3600,
    max_attempts: int = 10,
    now: float = NOW,
) -> Harness:
    sender, deadletters, sleeps = RecordingSender(list(plan or [])), RecordingDeadLetters(), Sleeps()
    relay = Relay(
        routes,
        sender,
        deadletters,
        ledger=MemoryLedger(clock=lambda: now),
        claims=ClaimStore("tagrelay-claims", client_factory=no_storage),
        limits=Limits(max_attempts=max_attempts, max_age_seconds=max_age, send_timeout_seconds=5),
        clock=lambda: now,
        sleep=sleeps,
    )
    return Harness(relay, sender, deadletters, sleeps)


def event_data(
    name: str = "11-iso-8859-1-8bit.eml", recipient: str = "shop@example.org", published: str = PUBLISHED
) -> dict[str, Any]:
    """The CloudEvent data functions-framework builds from a Pub/Sub push of an ingest message."""
    raw = corpus(name)
    envelope = Envelope(
        recipient=recipient,
        sender="bounce@origin.example",
        mime=raw,
        token="t" * 50,
        message_id=f"<{name}@corpus.example>",
        received_at="2024-01-01T00:00:00+00:00",
    )
    return {
        "message": {
            "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
            "data": base64.b64encode(raw).decode("ascii"),
            "attributes": envelope.attributes(),
            "messageId": "1234567890",
            "publishTime": published,
        }
    }


# What the relay must send for 11-iso-8859-1-8bit.eml to shop@example.org, written out by hand
# (not computed with tagrelay.core.rewrite): the DMARC-safe fields first, then every original
# field that stays true, byte for byte, then the empty line and the 8bit Latin-1 body untouched.
NEW_FIELDS = (
    b'From: "Renee Cafe via example.org" <shop@example.org>\r\n'
    b"Reply-To: Renee Cafe <renee@cafe.example.fr>\r\n"
    b"X-Original-From: Renee Cafe <renee@cafe.example.fr>\r\n"
    b"X-Original-To: shop@example.org\r\n"
    b"X-Tagrelay-Loop: example.org\r\n"
)
DROPPED = {
    "delivered-to",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "return-path",
    "received-spf",
    "authentication-results",
    "dkim-signature",
    "from",
}


def test_sends_the_rewritten_message_to_the_route_target() -> None:
    h = harness()
    outcome = h.relay.handle_event_data(event_data())
    assert (outcome.status, outcome.detail) == ("sent", "<sent@mailgun.example>")
    raw = corpus("11-iso-8859-1-8bit.eml")
    kept = b"".join(line for name, line in raw_fields(raw) if name not in DROPPED)
    assert [name for name, _ in raw_fields(raw) if name not in DROPPED] == [
        "received",
        "received",
        "received",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ]
    body = body_bytes(raw)
    assert body is not None and b"caf\xe9" in body
    assert h.sender.sent == [(("owner+shop@gmail.com",), NEW_FIELDS + kept + b"\r\n" + body)]
    assert h.deadletters.letters == []


def test_sends_once_to_every_target_of_a_list_route() -> None:
    h = harness()
    h.relay.handle_event_data(event_data(recipient="team@example.org"))
    assert [to for to, _ in h.sender.sent] == [("alice@gmail.com", "bob@gmail.com")]


def test_invalid_target_goes_to_the_fallback() -> None:
    h = harness()
    h.relay.handle_event_data(event_data(recipient="x" * 70 + "@example.org"))
    assert [to for to, _ in h.sender.sent] == [("owner@gmail.com",)]


def test_redelivery_of_a_sent_message_is_not_sent_again() -> None:
    h = harness()
    h.relay.handle_event_data(event_data())
    assert h.relay.handle_event_data(event_data()).status == "duplicate"
    assert len(h.sender.sent) == 1


def test_mailgun_rejection_is_dead_lettered_with_the_reason_and_not_raised() -> None:
    h = harness([MailgunRejected("Mailgun answered 400: 'to' parameter is not a valid address", 400)])
    outcome = h.relay.handle_event_data(event_data())
    assert outcome.status == "dead-lettered"
    [(data, attributes, reason)] = h.deadletters.letters
    assert data == corpus("11-iso-8859-1-8bit.eml")  # the original, not the rewritten copy
    assert attributes["recipient"] == "shop@example.org"
    assert attributes["schema"] == "tagrelay.v1"
    assert "400" in reason and "not a valid address" in reason
    assert h.sender.sent == []


@pytest.mark.parametrize(("retry_after", "slept"), [(30.0, [10.0]), (2.0, [2.0]), (None, [])])
def test_transient_failure_raises_after_waiting_at_most_ten_seconds(
    retry_after: float | None, slept: list[float]
) -> None:
    h = harness([MailgunTransient("Mailgun rate limit", retry_after=retry_after)])
    with pytest.raises(MailgunTransient):
        h.relay.handle_event_data(event_data())
    assert h.sleeps.calls == slept
    assert h.deadletters.letters == []


def test_redelivery_after_a_transient_failure_is_sent() -> None:
    h = harness([MailgunTransient("Mailgun answered 503")])
    with pytest.raises(MailgunTransient):
        h.relay.handle_event_data(event_data())
    assert h.relay.handle_event_data(event_data()).status == "sent"
    assert len(h.sender.sent) == 1


def test_transient_failure_of_a_message_older_than_max_age_is_dead_lettered() -> None:
    published = datetime.fromtimestamp(NOW - 3601, UTC).isoformat().replace("+00:00", "Z")
    h = harness([MailgunTransient("Mailgun answered 503")], max_age=3600)
    outcome = h.relay.handle_event_data(event_data(published=published))
    assert outcome.status == "dead-lettered"
    [(_, _, reason)] = h.deadletters.letters
    assert "503" in reason
    assert h.sleeps.calls == []


def test_transient_failure_of_a_young_message_is_raised() -> None:
    published = datetime.fromtimestamp(NOW - 3599, UTC).isoformat().replace("+00:00", "Z")
    h = harness([MailgunTransient("Mailgun answered 503")], max_age=3600)
    with pytest.raises(MailgunTransient):
        h.relay.handle_event_data(event_data(published=published))
    assert h.deadletters.letters == []


def test_transient_failures_stop_after_the_attempt_limit() -> None:
    h = harness([MailgunTransient("503"), MailgunTransient("503"), MailgunTransient("503")], max_attempts=3)
    for _ in range(2):
        with pytest.raises(MailgunTransient):
            h.relay.handle_event_data(event_data())
    assert h.relay.handle_event_data(event_data()).status == "dead-lettered"
    assert len(h.deadletters.letters) == 1


def test_recipient_without_a_route_any_more_is_dead_lettered() -> None:
    h = harness(routes=OTHER_ROUTES)
    outcome = h.relay.handle_event_data(event_data())
    assert outcome.status == "dead-lettered"
    [(data, attributes, reason)] = h.deadletters.letters
    assert "no route" in reason
    assert data == corpus("11-iso-8859-1-8bit.eml")
    assert attributes["recipient"] == "shop@example.org"
    assert h.sender.sent == []


@pytest.mark.parametrize(
    "data",
    [
        {"message": {"data": "aGVsbG8=", "attributes": {"schema": "someone.else.v1", "recipient": "a@example.org"}}},
        {"message": {"data": "aGVsbG8=", "attributes": {}}},
        {"message": {"data": "%%% not base64", "attributes": {"schema": "tagrelay.v1", "recipient": "a@example.org"}}},
        {"unrelated": True},
    ],
    ids=["other-schema", "no-attributes", "bad-base64", "not-pubsub"],
)
def test_data_that_is_not_a_tagrelay_message_is_dead_lettered(data: dict[str, Any]) -> None:
    h = harness()
    outcome = h.relay.handle_event_data(data)
    assert outcome.status == "dead-lettered"
    [(letter, _, reason)] = h.deadletters.letters
    assert "not a tagrelay message" in reason
    assert json.loads(letter) == data  # what arrived is kept
    assert h.sender.sent == []


class MemoryBucket:
    """The few Cloud Storage calls ClaimStore makes, over a dict (bucket -> blob -> download/delete)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def bucket(self, name: str) -> MemoryBucket:
        return self

    def blob(self, name: str) -> MemoryBlob:
        return MemoryBlob(self.objects, name)


@dataclass
class MemoryBlob:
    objects: dict[str, bytes]
    name: str

    def download_as_bytes(self, timeout: float) -> bytes:
        return self.objects[self.name]

    def delete(self, timeout: float) -> None:
        del self.objects[self.name]


def claimed(
    objects: dict[str, bytes], plan: list[str | Exception]
) -> tuple[Relay, RecordingSender, RecordingDeadLetters]:
    sender, deadletters = RecordingSender(plan), RecordingDeadLetters()
    relay = Relay(
        ROUTES,
        sender,
        deadletters,
        ledger=MemoryLedger(clock=lambda: NOW),
        claims=ClaimStore("tagrelay-claims", client_factory=lambda: MemoryBucket(objects)),
        clock=lambda: NOW,
        sleep=Sleeps(),
    )
    return relay, sender, deadletters


def claim_event(raw: bytes) -> dict[str, Any]:
    head = raw[: raw.index(b"\r\n\r\n") + 2]
    envelope = Envelope(
        recipient="shop@example.org",
        sender="b@origin.example",
        mime=head,
        message_id="<big@example>",
        claim="gs://tagrelay-claims/claims/big.eml",
        digest=hashlib.sha256(raw).hexdigest(),
    )
    data = {"data": base64.b64encode(head).decode(), "attributes": envelope.attributes(), "messageId": "9"}
    return {"message": {**data, "publishTime": PUBLISHED}}


def test_a_claimed_message_is_fetched_sent_whole_and_its_object_kept_for_a_bounce() -> None:
    raw = corpus("06-mixed-attachments.eml")
    objects = {"claims/big.eml": raw}
    relay, sender, _ = claimed(objects, [])
    assert relay.handle_event_data(claim_event(raw)).status == "sent"
    assert sender.sent[0][1].endswith(raw[raw.index(b"\r\n\r\n") :])  # the whole body, from the bucket
    assert objects == {"claims/big.eml": raw}  # until Mailgun says delivered: the events function drops it


def test_a_claimed_message_is_dead_lettered_as_it_came_not_whole() -> None:
    """Pub/Sub takes 10 MB: the dead letter carries the header block and the claim, and the object stays."""
    raw = corpus("06-mixed-attachments.eml")
    objects = {"claims/big.eml": raw}
    relay, _, deadletters = claimed(objects, [MailgunRejected("Mailgun answered 400: no", 400)])
    assert relay.handle_event_data(claim_event(raw)).status == "dead-lettered"
    ((data, attributes, reason),) = deadletters.letters
    assert data == raw[: raw.index(b"\r\n\r\n") + 2]
    assert attributes["claim"] == "gs://tagrelay-claims/claims/big.eml"
    assert "400" in reason
    assert "claims/big.eml" in objects  # kept for replay


# -- issue 15 / 11: identity, token binding, stored messages, unexpected errors ------------------


def with_attributes(data: dict[str, Any], **extra: str) -> dict[str, Any]:
    message = data["message"]
    return {"message": {**message, "attributes": {**message["attributes"], **extra}}}


def test_a_message_under_a_token_bound_to_another_digest_is_refused_not_sent() -> None:
    h = harness()
    assert h.relay.handle_event_data(event_data("01-plain-ascii.eml")).status == "sent"
    outcome = h.relay.handle_event_data(event_data("02-plain-utf8-8bit.eml"))  # the same token "t" * 50
    assert outcome.status == "refused"
    assert len(h.sender.sent) == 1 and h.deadletters.letters == []


def test_a_stored_message_without_a_fetcher_is_dead_lettered_with_the_notification() -> None:
    h = harness()
    data = with_attributes(
        event_data(), stored="https://storage.api.mailgun.net/v3/domains/x/messages/k", digest="a" * 64
    )
    assert h.relay.handle_event_data(data).status == "dead-lettered"
    [(letter, attributes, reason)] = h.deadletters.letters
    assert letter == corpus("11-iso-8859-1-8bit.eml") and attributes["stored"].endswith("/k")
    assert "store(notify" in reason and h.sender.sent == []


def test_a_claim_without_a_digest_attribute_is_dead_lettered() -> None:
    h = harness()
    data = with_attributes(event_data(), claim="gs://tagrelay-claims/claims/x.eml")
    assert h.relay.handle_event_data(data).status == "dead-lettered"
    assert "digest" in h.deadletters.letters[0][2]


def test_an_unexpected_error_while_decoding_is_a_dead_letter() -> None:
    class Weird(dict[str, Any]):
        def get(self, *args: Any) -> Any:
            raise RuntimeError("boom")

    h = harness()
    assert h.relay.handle_event_data({"message": Weird()}).status == "dead-lettered"
    assert "RuntimeError" in h.deadletters.letters[0][2]
