"""tagrelay.services.events.Events in process, on the record a real relay send leaves in a MemoryLedger.

The relay (tagrelay.services.relay) sends a corpus message; the events service then gets webhook
posts written here in the shape of Mailgun's "Webhook payloads" page, signed with Mailgun's
documented HMAC (tests/unit/support.py). Dead letters, notices and log lines are recorded.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

import pytest

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import DEFAULT_EVENT_MAX_AGE_SECONDS, EventsConfig, SecretRef
from tagrelay.core.envelope import Envelope, message_digest
from tagrelay.core.errors import BusUnavailable, LedgerUnavailable, MailgunTransient
from tagrelay.core.ports import DELIVERY_VARIABLE, Mime, whole
from tagrelay.core.routes import load
from tagrelay.services.events import Events
from tagrelay.services.relay import Limits, Relay
from tests.hostile.perimeter_support import LogLines
from tests.unit.support import SIGNING_KEY, corpus, mailgun_signature

NOW = 1_704_067_200.0
ROUTES = load(
    """\
[[route]]
match = "notify-{tag}@example.org"
forward = "owner+{tag}@gmail.com"
notify = "boss@gmail.com"

[[route]]
match = "team@example.org"
forward = ["alice@gmail.com", "bob@gmail.com"]

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""
)
CONFIG = EventsConfig(
    project="events-test",
    routes=ROUTES,
    signing_key=SecretRef("MAILGUN_WEBHOOK_SIGNING_KEY", SIGNING_KEY),
    max_age_seconds=900,
    mailgun_domain="example.org",
    api_base="https://api.mailgun.net",
    api_key=SecretRef("MAILGUN_API_KEY", "key-x"),
    deadletter_topic="tagrelay-deadletter",
    mailgun_timeout=10,
)
RAW = corpus("11-iso-8859-1-8bit.eml")


@dataclass
class Sender:
    """Mailgun for the relay and the notices: records each send with its user variables."""

    fail: list[Exception] = field(default_factory=list)
    sent: list[tuple[tuple[str, ...], bytes, dict[str, str]]] = field(default_factory=list)

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append((tuple(to), whole(mime), dict(variables or {})))
        return f"<{len(self.sent)}.{secrets.token_hex(4)}@example.org>"


@dataclass
class DeadLetters:
    fail: list[Exception] = field(default_factory=list)
    letters: list[tuple[bytes, dict[str, str], str]] = field(default_factory=list)

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.letters.append((data, attributes, reason))


@dataclass
class World:
    ledger: MemoryLedger
    sender: Sender
    deadletters: DeadLetters
    relay: Relay
    events: Events
    logs: LogLines


@pytest.fixture
def world() -> Iterator[World]:
    ledger, sender, deadletters = MemoryLedger(clock=lambda: NOW), Sender(), DeadLetters()
    relay = Relay(ROUTES, sender, deadletters, ledger, limits=Limits(), clock=lambda: NOW)
    events = Events(CONFIG, Secret(CONFIG.signing_key), ledger, deadletters, sender, clock=lambda: NOW)
    with LogLines() as logs:
        yield World(ledger, sender, deadletters, relay, events, logs)


def push(recipient: str, raw: bytes = RAW, replay: str = "") -> dict[str, Any]:
    envelope = Envelope(recipient=recipient, sender="s@bank.example", mime=raw, token=secrets.token_hex(25),
                        message_id="<m@bank.example>", replay=replay)  # fmt: skip
    return {
        "message": {
            "data": base64.b64encode(raw).decode(),
            "attributes": envelope.attributes(),
            "messageId": "4242",
            "publishTime": "2024-01-01T00:00:00Z",
        }
    }


def sent(w: World, recipient: str) -> tuple[str, str, str]:
    """Send one message through the relay: (delivery key, Mailgun id, target)."""
    before = len(w.sender.sent)
    outcome = w.relay.handle_event_data(push(recipient))
    assert outcome.status == "sent"
    to, _, variables = w.sender.sent[before]
    return variables[DELIVERY_VARIABLE], outcome.detail, to[0]


def webhook(kind: str, key: str, mailgun_id: str, recipient: str, **extra: Any) -> tuple[bytes, dict[str, str]]:
    token = secrets.token_hex(25)
    stamp = str(int(NOW))
    signature = {"timestamp": stamp, "token": token, "signature": mailgun_signature(SIGNING_KEY, stamp, token)}
    data = {
        "event": kind,
        "id": secrets.token_hex(8),
        "timestamp": NOW + 1,
        "recipient": recipient,
        "user-variables": {DELIVERY_VARIABLE: key} if key else {},
        "message": {"headers": {"message-id": mailgun_id.strip("<>")}},
        **extra,
    }
    return json.dumps({"signature": signature, "event-data": data}).encode(), signature


def permanent(reason: str = "bounce") -> dict[str, Any]:
    return {"severity": "permanent", "reason": reason, "delivery-status": {"code": 550, "message": "5.1.1 unknown"}}


def answer(w: World, body: bytes) -> tuple[int, str]:
    result = w.events.handle("application/json", body)
    return result.status, result.text


def test_delivered_moves_the_record_and_drops_the_kept_copy(world: World) -> None:
    key, mailgun_id, target = sent(world, "shop@example.org")
    record = world.ledger.deliveries[key]
    assert (record["state"], record["mailgun_id"], record["message"]) == ("sent", mailgun_id, RAW)
    assert record["pubsub_id"] == "4242" and record["received_at"] == NOW and record["sent_at"] == NOW
    assert record["attributes"]["recipient"] == "shop@example.org"
    body, _ = webhook("delivered", key, mailgun_id, target, **{"delivery-status": {"code": 250}})
    assert answer(world, body) == (200, "delivered")
    record = world.ledger.deliveries[key]
    assert record["state"] == "delivered" and "message" not in record
    assert record["recipients"] == {target: {"state": "delivered", "reason": "", "code": 250, "at": NOW + 1}}


def test_a_permanent_failure_is_a_dead_letter_with_the_original_and_a_notice(world: World) -> None:
    key, mailgun_id, target = sent(world, "notify-x@example.org")
    body, _ = webhook("failed", key, mailgun_id, target, **permanent())
    assert answer(world, body) == (200, "failed")
    [(data, attributes, reason)] = world.deadletters.letters
    assert data == RAW
    assert attributes["recipient"] == "notify-x@example.org" and attributes["original_pubsub_id"] == "4242"
    assert reason == f"Mailgun: permanent failure for {target}: bounce 550 5.1.1 unknown"
    [(to, notice, variables)] = world.sender.sent[1:]
    assert to == ("boss@gmail.com",) and variables == {}
    assert b"Subject: =?utf-8?q?Undeliverable=3A" in notice
    assert RAW.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") in notice  # the original, attached whole
    assert world.ledger.deliveries[key]["state"] == "failed"
    [line] = [x for x in world.logs.take() if x.get("outcome") == "failed"]
    assert line["severity"] == "ERROR" and "bounce 550" in line["message"]


def test_a_replay_of_that_dead_letter_sends_it_again(world: World) -> None:
    key, mailgun_id, target = sent(world, "shop@example.org")
    answer(world, webhook("failed", key, mailgun_id, target, **permanent())[0])
    [(data, attributes, _)] = world.deadletters.letters
    # What tagrelay deadletters replay publishes: the data and attributes, marked replay.
    replayed = {"message": {"data": base64.b64encode(data).decode(), "attributes": {**attributes, "replay": "1"},
                            "messageId": "5000", "publishTime": "2024-01-01T00:10:00Z"}}  # fmt: skip
    outcome = world.relay.handle_event_data(replayed)
    assert outcome.status == "sent" and outcome.detail != mailgun_id
    assert [to for to, _, _ in world.sender.sent] == [(target,), (target,)]
    record = world.ledger.deliveries[key]
    assert (record["state"], record["mailgun_id"], record["recipients"]) == ("sent", outcome.detail, {})
    # A late duplicate of the first send's failure is stale now: no second dead letter.
    assert answer(world, webhook("failed", key, mailgun_id, target, **permanent())[0]) == (200, "stale")
    assert len(world.deadletters.letters) == 1


def test_no_notify_address_is_a_warning_only(world: World) -> None:
    key, mailgun_id, target = sent(world, "shop@example.org")
    answer(world, webhook("failed", key, mailgun_id, target, **permanent())[0])
    assert len(world.sender.sent) == 1  # no notice
    [line] = [x for x in world.logs.take() if x.get("outcome") == "not notified"]
    assert line["severity"] == "WARNING"


def test_a_suppressed_target_is_an_error_that_names_the_fix(world: World) -> None:
    key, mailgun_id, target = sent(world, "shop@example.org")
    body, _ = webhook("failed", key, mailgun_id, target, **permanent("suppress-bounce"))
    assert answer(world, body) == (200, "failed")
    [line] = [x for x in world.logs.take() if x.get("outcome") == "suppressed"]
    assert line["severity"] == "ERROR"
    assert line["message"] == (
        f"forward target {target} is on Mailgun's bounces list (suppress-bounce): every message to it is dropped. "
        f"Fix: tagrelay suppressions clear {target}, then tagrelay deadletters replay"
    )
    assert len(world.deadletters.letters) == 1


def test_complained_is_recorded_and_warned(world: World) -> None:
    key, mailgun_id, target = sent(world, "shop@example.org")
    assert answer(world, webhook("delivered", key, mailgun_id, target)[0]) == (200, "delivered")
    assert answer(world, webhook("complained", key, mailgun_id, target)[0]) == (200, "complained")
    assert world.ledger.deliveries[key]["state"] == "complained"
    assert [x["severity"] for x in world.logs.take() if x.get("outcome") == "complained"] == ["WARNING"]


def test_a_replayed_post_is_401_and_changes_nothing(world: World) -> None:
    key, mailgun_id, target = sent(world, "shop@example.org")
    body, _ = webhook("delivered", key, mailgun_id, target)
    assert answer(world, body)[0] == 200
    before = dict(world.ledger.deliveries[key])
    assert answer(world, body) == (401, "token already used: a replayed event post")
    # Even a replay of a foreign event's post: the token is spent either way.
    foreign, _ = webhook("delivered", "", "<x@y>", "someone@else.example")
    assert answer(world, foreign) == (200, "ignored")
    assert answer(world, foreign)[0] == 401
    assert world.ledger.deliveries[key] == before


def test_a_forged_post_is_401_and_changes_nothing(world: World) -> None:
    key, mailgun_id, target = sent(world, "shop@example.org")
    body, signature = webhook("failed", key, mailgun_id, target, **permanent())
    forged = body.replace(
        signature["signature"].encode(),
        mailgun_signature("not-the-key", signature["timestamp"], signature["token"]).encode(),
    )
    assert answer(world, forged) == (401, "signature does not match")
    assert world.ledger.deliveries[key]["state"] == "sent" and world.deadletters.letters == []


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"{}", 400),
        ("application/json", b"{", 400),
        ("application/json", b"{" + b" " * (256 * 1024) + b"}", 400),
        ("application/x-www-form-urlencoded", b"event=delivered&token=t", 400),
    ],
    ids=["text", "broken-json", "oversized", "legacy-form"],
)
def test_malformed_posts_are_400(world: World, content_type: str, body: bytes, status: int) -> None:
    assert world.events.handle(content_type, body).status == status


def test_signed_but_not_an_event_is_406(world: World) -> None:
    body, _ = webhook("delivered", "", "<x@y>", "r@x")
    document = json.loads(body)
    document["event-data"] = ["not", "an", "event"]
    assert answer(world, json.dumps(document).encode())[0] == 406


def test_a_permanent_failure_before_the_sent_write_is_503_then_handled(world: World) -> None:
    """The webhook can beat the relay's sent write; the message to dead-letter is in that write."""
    key = "b" * 64
    world.ledger.begin_delivery(key, 60, {"alias": "shop@example.org", "targets": "owner+shop@gmail.com"})
    body, _ = webhook("failed", key, "<early@example.org>", "owner+shop@gmail.com", **permanent())
    assert answer(world, body)[0] == 503
    assert world.ledger.deliveries[key]["state"] == "sending" and world.deadletters.letters == []
    fields = {"mailgun_id": "<early@example.org>", "attributes": {"recipient": "shop@example.org"}, "message": b"m"}
    world.ledger.delivery_done(key, "sent", "<early@example.org>", fields)
    retry, _ = webhook("failed", key, "<early@example.org>", "owner+shop@gmail.com", **permanent())  # signed afresh
    assert answer(world, retry) == (200, "failed")
    assert [d for d, _, _ in world.deadletters.letters] == [b"m"]


def test_delivered_before_the_sent_write_survives_it(world: World) -> None:
    key = "c" * 64
    world.ledger.begin_delivery(key, 60, {"alias": "shop@example.org", "targets": "owner+shop@gmail.com"})
    body, _ = webhook("delivered", key, "<fast@example.org>", "owner+shop@gmail.com")
    assert answer(world, body) == (200, "delivered")
    world.ledger.delivery_done(key, "sent", "<fast@example.org>", {"mailgun_id": "<fast@example.org>"})
    assert world.ledger.deliveries[key]["state"] == "delivered"
    assert world.ledger.begin_delivery(key, 60, {}).state == "done"  # a redelivery is not sent again


class DownLedger(MemoryLedger):
    def record_event(self, *args: Any, **kwargs: Any) -> Any:
        raise LedgerUnavailable("Firestore failed (ServiceUnavailable)")


class BrokenLedger(MemoryLedger):
    def record_event(self, *args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")


@pytest.mark.parametrize(("ledger", "severity"), [(DownLedger(), "ERROR"), (BrokenLedger(), "CRITICAL")])
def test_firestore_down_or_a_bug_is_503_never_500(world: World, ledger: MemoryLedger, severity: str) -> None:
    events = Events(CONFIG, Secret(CONFIG.signing_key), ledger, world.deadletters, world.sender, clock=lambda: NOW)
    body, _ = webhook("delivered", "d" * 64, "<x@y>", "r@x")
    assert events.handle("application/json", body).status == 503
    assert [x["severity"] for x in world.logs.take() if x.get("outcome") == "http 503"] == [severity]


def test_a_dead_letter_that_cannot_be_published_is_503_and_nothing_is_recorded(world: World) -> None:
    key, mailgun_id, target = sent(world, "notify-y@example.org")
    world.deadletters.fail.append(BusUnavailable("Pub/Sub did not acknowledge"))
    assert answer(world, webhook("failed", key, mailgun_id, target, **permanent())[0])[0] == 503
    assert world.ledger.deliveries[key]["state"] == "sent" and len(world.sender.sent) == 1
    assert answer(world, webhook("failed", key, mailgun_id, target, **permanent())[0]) == (200, "failed")
    assert len(world.deadletters.letters) == 1 and len(world.sender.sent) == 2  # the letter, then the notice


def test_a_notice_that_cannot_be_sent_is_a_warning_and_the_answer_stays_200(world: World) -> None:
    key, mailgun_id, target = sent(world, "notify-z@example.org")
    world.sender.fail.append(MailgunTransient("Mailgun answered 503"))
    assert answer(world, webhook("failed", key, mailgun_id, target, **permanent())[0]) == (200, "failed")
    assert len(world.deadletters.letters) == 1
    assert [x["severity"] for x in world.logs.take() if x.get("outcome") == "notice failed"] == ["WARNING"]


def test_two_targets_one_failing_dead_letters_once_and_a_replay_retakes(world: World) -> None:
    key, mailgun_id, _ = sent(world, "team@example.org")
    assert answer(world, webhook("delivered", key, mailgun_id, "alice@gmail.com")[0]) == (200, "delivered")
    assert answer(world, webhook("failed", key, mailgun_id, "bob@gmail.com", **permanent())[0]) == (200, "failed")
    assert answer(world, webhook("failed", key, mailgun_id, "bob@gmail.com", **permanent())[0]) == (200, "unchanged")
    assert len(world.deadletters.letters) == 1
    assert world.ledger.begin_delivery(key, 60, {}, retake_dead=True).state == "go"


@dataclass
class Bucket:
    """A claim store over a dict (what the events function reads and drops kept copies from)."""

    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, data: bytes, prefix: str = "claims/") -> str:
        ref = f"gs://b/{prefix}{len(self.objects)}.eml"
        self.objects[ref] = data
        return ref

    def get(self, ref: str) -> bytes:
        return self.objects[ref]

    def delete(self, ref: str) -> None:
        del self.objects[ref]


def large(world: World, bucket: Bucket) -> tuple[Relay, Events, bytes]:
    raw = RAW + b"x" * (600 * 1024) + b"\r\n"
    relay = Relay(
        ROUTES, world.sender, world.deadletters, world.ledger, limits=Limits(), clock=lambda: NOW, keep=bucket
    )
    events = Events(
        CONFIG, Secret(CONFIG.signing_key), world.ledger, world.deadletters, world.sender, bucket, lambda: NOW
    )
    return relay, events, raw


def test_a_copy_over_512_kib_is_kept_in_the_bucket_dead_lettered_whole_and_dropped_when_delivered(world: World) -> None:
    bucket = Bucket()
    relay, events, raw = large(world, bucket)
    for recipient, kind in (("big@example.org", "failed"), ("big2@example.org", "delivered")):
        assert relay.handle_event_data(push(recipient, raw)).status == "sent"
        _, _, variables = world.sender.sent[-1]
        key = variables[DELIVERY_VARIABLE]
        record = world.ledger.deliveries[key]
        assert "message" not in record and bucket.objects[record["blob"]] == raw
        assert record["blob"].startswith("gs://b/sent/")
        extra = permanent() if kind == "failed" else {}
        target = f"owner+{recipient.partition('@')[0]}@gmail.com"
        body, _ = webhook(kind, key, record["mailgun_id"], target, **extra)
        assert events.handle("application/json", body).status == 200
    [(data, _, _)] = world.deadletters.letters
    assert data == raw  # the whole original, from the bucket
    assert list(bucket.objects.values()) == [raw]  # the delivered one's copy is gone, the failed one's kept


@dataclass
class Racing(Sender):
    """Mailgun for the relay, with a webhook post that arrives while the relay's send is in flight."""

    during: list[Any] = field(default_factory=list)

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        while self.during:
            self.during.pop(0)()
        return super().send_mime(to, mime, variables)


def replay_of(letter: tuple[bytes, dict[str, str], str]) -> dict[str, Any]:
    data, attributes, _ = letter
    return {"message": {"data": base64.b64encode(data).decode(), "attributes": {**attributes, "replay": "1"},
                        "messageId": "5000", "publishTime": "2024-01-01T00:10:00Z"}}  # fmt: skip


def test_a_late_event_of_the_first_send_during_a_replay_is_stale_and_the_replay_stays_watched(world: World) -> None:
    """Review of issue 12: while a replay was sending (mailgun_id reset to ""), a late event of the first send
    was taken for the replay's own early event: a second dead letter and notice, the record 'failed' under
    the old id, and then the replay's own bounce was 'unchanged' (the target already failed): lost silently."""
    racing = Racing()
    relay = Relay(ROUTES, racing, world.deadletters, world.ledger, limits=Limits(), clock=lambda: NOW)
    events = Events(CONFIG, Secret(CONFIG.signing_key), world.ledger, world.deadletters, racing, clock=lambda: NOW)
    assert relay.handle_event_data(push("notify-x@example.org")).status == "sent"
    (target,), _, variables = racing.sent[0]
    key = variables[DELIVERY_VARIABLE]
    first_id = world.ledger.deliveries[key]["mailgun_id"]
    assert events.handle("application/json", webhook("failed", key, first_id, target, **permanent())[0]).status == 200
    [letter] = world.deadletters.letters
    late: list[tuple[int, str]] = []  # Mailgun's retry of that webhook (our 200 was lost), during the replay's send
    racing.during.append(
        lambda: late.append(
            astuple(events.handle("application/json", webhook("failed", key, first_id, target, **permanent())[0]))
        )
    )
    outcome = relay.handle_event_data(replay_of(letter))
    assert late == [(200, "stale")] and outcome.status == "sent"
    assert len(world.deadletters.letters) == 1 and len(racing.sent) == 3  # send, notice, replay
    record = world.ledger.deliveries[key]
    assert (record["state"], record["mailgun_id"], record["recipients"]) == ("sent", outcome.detail, {})
    # The replay's own bounce is a dead letter and a notice again.
    assert (
        events.handle("application/json", webhook("failed", key, outcome.detail, target, **permanent())[0]).status
        == 200
    )
    assert len(world.deadletters.letters) == 2 and len(racing.sent) == 4


def test_a_late_delivered_of_the_first_send_does_not_strand_a_replay_that_must_retry(world: World) -> None:
    """Review of issue 12: two targets, bob's copy bounced and is replayed; alice's late 'delivered' of the
    first send, arriving during the replay's send, marked the record delivered (accepted): the replay's
    transient failure released nothing, and its redelivery was 'done': never sent. Now alice's event is
    recorded for alice (the replay spared her) and the record stays the replay's lease."""
    racing = Racing()
    relay = Relay(ROUTES, racing, world.deadletters, world.ledger, limits=Limits(), clock=lambda: NOW)
    assert relay.handle_event_data(push("team@example.org")).status == "sent"
    _, _, variables = racing.sent[0]
    key = variables[DELIVERY_VARIABLE]
    first_id = world.ledger.deliveries[key]["mailgun_id"]
    assert answer(world, webhook("failed", key, first_id, "bob@gmail.com", **permanent())[0]) == (200, "failed")
    [letter] = world.deadletters.letters
    late: list[tuple[int, str]] = []
    racing.during.append(lambda: late.append(answer(world, webhook("delivered", key, first_id, "alice@gmail.com")[0])))
    racing.fail.append(MailgunTransient("Mailgun answered 503"))
    with pytest.raises(MailgunTransient):
        relay.handle_event_data(replay_of(letter))
    assert late == [(200, "sending")] and world.ledger.deliveries[key]["state"] == "retry"
    outcome = relay.handle_event_data(replay_of(letter))  # Pub/Sub redelivers the replay
    assert outcome.status == "sent" and racing.sent[1][0] == ("bob@gmail.com",)
    assert answer(world, webhook("delivered", key, outcome.detail, "bob@gmail.com")[0]) == (200, "delivered")
    record = world.ledger.deliveries[key]
    assert record["state"] == "delivered" and "message" not in record


def test_a_replay_after_one_of_two_targets_bounced_goes_to_that_target_only(world: World) -> None:
    """Review of issue 12: alice got the team's message, bob's copy bounced; the replay of that dead letter
    sent it to both again (a duplicate for alice). Now only bob's copy is sent again, and once it is delivered
    the record is delivered for both and the kept copy goes."""
    key, first_id, _ = sent(world, "team@example.org")
    assert answer(world, webhook("delivered", key, first_id, "alice@gmail.com")[0]) == (200, "delivered")
    assert answer(world, webhook("failed", key, first_id, "bob@gmail.com", **permanent())[0]) == (200, "failed")
    [letter] = world.deadletters.letters
    outcome = world.relay.handle_event_data(replay_of(letter))
    assert outcome.status == "sent"
    assert [to for to, _, _ in world.sender.sent] == [("alice@gmail.com", "bob@gmail.com"), ("bob@gmail.com",)]
    assert answer(world, webhook("delivered", key, outcome.detail, "bob@gmail.com")[0]) == (200, "delivered")
    record = world.ledger.deliveries[key]
    assert record["state"] == "delivered" and "message" not in record
    assert {t: r["state"] for t, r in record["recipients"].items()} == {
        "alice@gmail.com": "delivered",
        "bob@gmail.com": "delivered",
    }


def test_delivered_before_the_sent_write_leaves_no_kept_copy_behind(world: World) -> None:
    """Review of issue 12: the webhook beat the relay's sent write and dropped a kept copy that was not there
    yet; the sent write then stored the copy on a record that is delivered, where nothing would drop it."""
    key = "e" * 64
    world.ledger.begin_delivery(key, 60, {"alias": "shop@example.org", "targets": "owner+shop@gmail.com"})
    assert answer(world, webhook("delivered", key, "<fast@example.org>", "owner+shop@gmail.com")[0])[0] == 200
    fields = {"mailgun_id": "<fast@example.org>", "attributes": {"recipient": "shop@example.org"}, "message": RAW}
    world.ledger.delivery_done(key, "sent", "<fast@example.org>", fields)
    record = world.ledger.deliveries[key]
    assert record["state"] == "delivered" and record["attributes"] == {"recipient": "shop@example.org"}
    assert "message" not in record and "blob" not in record


class RetriedRound(MemoryLedger):
    """A ledger whose first commit loses to a concurrent write (FirestoreLedger's precondition): the event is
    decided, and its before-commit step run, a second time."""

    def record_event(self, event: Any, token: str, expires: float, before_commit: Any) -> Any:
        record = self.deliveries.get(event.key)
        if record is not None:
            from tagrelay.core.events import apply

            change = apply(dict(record), event, NOW)
            if change.fields:
                before_commit(change, dict(record))  # then FailedPrecondition: decide again
        return super().record_event(event, token, expires, before_commit)


def test_a_commit_round_lost_to_a_concurrent_write_does_not_dead_letter_twice(world: World) -> None:
    """Review of issue 12: FirestoreLedger.record_event runs the before-commit step once per round; the
    dead letter was published again on every round a concurrent write (the other target's event) cost."""
    ledger = RetriedRound(clock=lambda: NOW)
    relay = Relay(ROUTES, world.sender, world.deadletters, ledger, limits=Limits(), clock=lambda: NOW)
    events = Events(CONFIG, Secret(CONFIG.signing_key), ledger, world.deadletters, world.sender, clock=lambda: NOW)
    assert relay.handle_event_data(push("notify-x@example.org")).status == "sent"
    (target,), _, variables = world.sender.sent[0]
    key = variables[DELIVERY_VARIABLE]
    body, _ = webhook("failed", key, ledger.deliveries[key]["mailgun_id"], target, **permanent())
    assert events.handle("application/json", body).status == 200
    assert len(world.deadletters.letters) == 1 and len(world.sender.sent) == 2  # the send and one notice


def test_mailguns_retry_of_an_early_failure_with_its_original_signature_is_applied_half_an_hour_later(
    world: World,
) -> None:
    """Review of issue 12: Mailgun's docs do not say that a webhook retry is signed afresh (third-party references
    say it resends the original signature block). An early permanent failure (503) whose relay resolved its send
    only after a wait would see its retries (5, 15, 30 min...) refused as stale with a 900 s window: the bounce lost.
    With the default window the retry of the very same post is applied."""
    clock = [NOW]
    config = EventsConfig(**{**CONFIG.__dict__, "max_age_seconds": DEFAULT_EVENT_MAX_AGE_SECONDS})
    events = Events(
        config, Secret(config.signing_key), world.ledger, world.deadletters, world.sender, clock=lambda: clock[0]
    )
    key = "d" * 64
    world.ledger.begin_delivery(key, 60, {"alias": "shop@example.org", "targets": "owner+shop@gmail.com"})
    body, _ = webhook("failed", key, "<slow@example.org>", "owner+shop@gmail.com", **permanent())
    assert events.handle("application/json", body).status == 503
    fields = {"mailgun_id": "<slow@example.org>", "attributes": {"recipient": "shop@example.org"}, "message": b"m"}
    world.ledger.delivery_done(key, "sent", "<slow@example.org>", fields)
    clock[0] = NOW + 30 * 60  # Mailgun's third retry, the same post
    assert astuple(events.handle("application/json", body)) == (200, "failed")
    assert [d for d, _, _ in world.deadletters.letters] == [b"m"]
    clock[0] += 60
    assert events.handle("application/json", body).status == 401  # and it is still single use


def test_a_replay_after_one_bounce_spares_a_target_still_pending_and_still_hears_its_outcome(world: World) -> None:
    """Review of issue 12: bob's copy bounced before Mailgun said anything about alice's. The replay goes to bob
    only (alice's first copy may still arrive), and alice's late events of the first send still count: a late
    failure of hers is a dead letter of its own, not a stale event lost."""
    key, first_id, _ = sent(world, "team@example.org")
    assert answer(world, webhook("failed", key, first_id, "bob@gmail.com", **permanent())[0]) == (200, "failed")
    [letter] = world.deadletters.letters
    outcome = world.relay.handle_event_data(replay_of(letter))
    assert outcome.status == "sent"
    assert [to for to, _, _ in world.sender.sent] == [("alice@gmail.com", "bob@gmail.com"), ("bob@gmail.com",)]
    assert answer(world, webhook("delivered", key, outcome.detail, "bob@gmail.com")[0]) == (200, "delivered")
    assert world.ledger.deliveries[key]["mailgun_id"] == outcome.detail
    assert answer(world, webhook("failed", key, first_id, "alice@gmail.com", **permanent())[0]) == (200, "failed")
    assert len(world.deadletters.letters) == 2
    record = world.ledger.deliveries[key]
    assert record["state"] == "failed" and record["mailgun_id"] == outcome.detail
    assert {t: r["state"] for t, r in record["recipients"].items()} == {
        "alice@gmail.com": "failed",
        "bob@gmail.com": "delivered",
    }
    # Its replay goes to alice only.
    again = world.relay.handle_event_data(replay_of(world.deadletters.letters[1]))
    assert again.status == "sent" and world.sender.sent[-1][0] == ("alice@gmail.com",)


@dataclass
class Fast(Sender):
    """Mailgun whose 'delivered' webhook reaches the events function before the relay's send call returns."""

    hook: Any = None

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        self.sent.append((tuple(to), whole(mime), dict(variables or {})))
        if self.hook is not None:
            self.hook(to[0], (variables or {})[DELIVERY_VARIABLE])
        return "<fast@example.org>"


@pytest.mark.parametrize("claimed", [False, True])
def test_delivered_before_the_sent_write_leaves_no_object_behind(world: World, claimed: bool) -> None:
    """Review of issue 12: the 'delivered' that beat the relay's sent write found no kept copy to drop (not written
    yet); the sent write then skipped it, but the sent/ copy the relay had uploaded for it, or the claim-check
    object, stayed in the bucket with nothing left to delete it."""
    bucket, fast = Bucket(), Fast()
    relay = Relay(ROUTES, fast, world.deadletters, world.ledger, bucket, Limits(), lambda: NOW, keep=bucket)
    events = Events(CONFIG, Secret(CONFIG.signing_key), world.ledger, world.deadletters, fast, bucket, lambda: NOW)

    def delivered(target: str, key: str) -> None:
        body, _ = webhook("delivered", key, "<fast@example.org>", target)
        assert events.handle("application/json", body).status == 200

    fast.hook = delivered
    raw = RAW + b"x" * (600 * 1024) + b"\r\n"
    data = push("big@example.org", raw)
    if claimed:  # as ingest publishes a message over Pub/Sub's limit: the header block, the claim, the digest
        head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        attributes = {**data["message"]["attributes"], "claim": bucket.put(raw), "digest": message_digest(raw)}
        data = {"message": {**data["message"], "data": base64.b64encode(head).decode(), "attributes": attributes}}
    assert relay.handle_event_data(data).status == "sent"
    [record] = world.ledger.deliveries.values()
    assert record["state"] == "delivered" and "blob" not in record and "message" not in record
    assert bucket.objects == {}


def test_the_fix_in_the_suppression_error_is_quoted_for_a_shell(world: World) -> None:
    """The tag of a templated target is the sender's choice: the command to paste must stay one word."""
    key, mailgun_id, target = sent(world, "a$b&c@example.org")
    assert "$" in target and "&" in target
    answer(world, webhook("failed", key, mailgun_id, target, **permanent("suppress-bounce"))[0])
    [line] = [x for x in world.logs.take() if x.get("outcome") == "suppressed"]
    assert f"Fix: tagrelay suppressions clear '{target}', then" in line["message"]
