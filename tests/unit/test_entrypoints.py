"""The two entry points in process, through functions-framework's own app and test client.

``functions_framework.create_app(target, source, signature_type).test_client()`` loads
``functions/*/main.py`` the way the deployed function does (its import runs
``tagrelay.app.cold_start`` with configuration from the environment) and serves it
through the framework's Flask app: the HTTP glue of ingest, and for the relay the
framework's own conversion of a Pub/Sub push body into a CloudEvent. No Java, no
subprocess: the Google and Mailgun clients are replaced by in-memory collaborators
through ``tagrelay.app.stand_ins``; configuration still comes from the environment.

The posts are written here by hand (urlencoded ``body-mime`` form, signed with
Mailgun's documented HMAC computed in tests/unit/support.py), not with tagrelay's tooling.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import os
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import flask.testing
import functions_framework
import pytest

from tagrelay.adapters.aliases import MemoryAliases
from tagrelay.adapters.insight import MemoryInsight
from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.app import StandIns, stand_ins
from tagrelay.core.errors import BusUnavailable, LedgerUnavailable, MailgunRejected, MailgunTransient
from tagrelay.core.ports import Mime, Refusal, whole
from tests.unit.support import (
    DATA,
    ROOT,
    SIGNING_KEY,
    RecordingPublisher,
    body_bytes,
    corpus,
    header_lines,
    mailgun_signature,
)

INGEST = ROOT / "functions" / "ingest" / "main.py"
RELAY = ROOT / "functions" / "relay" / "main.py"
MESSAGE = "11-iso-8859-1-8bit.eml"  # 8bit Latin-1 body: not UTF-8, so a text decode would show

ENVIRONMENT = {
    "GOOGLE_CLOUD_PROJECT": "entrypoint-test",
    "TAGRELAY_ROUTES": str(DATA / "routes.toml"),
    "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
    "MAILGUN_DOMAIN": "example.org",
    "MAILGUN_API_KEY": "key-entrypoint-test",
}
# Whatever would point a client at a real service or emulator, or pick another key, is removed.
REMOVED = (
    "MAILGUN_WEBHOOK_SIGNING_KEY_SECRET",
    "MAILGUN_API_KEY_SECRET",
    "TAGRELAY_CLAIM_BUCKET",
    "PUBSUB_EMULATOR_HOST",
    "FIRESTORE_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "TAGRELAY_TOPIC",
    "TAGRELAY_MAX_BODY_BYTES",
)


@pytest.fixture(autouse=True)
def environment() -> Iterator[None]:
    """Set the functions' environment for one test and restore every variable afterwards."""
    saved = dict(os.environ)
    for name in REMOVED:
        os.environ.pop(name, None)
    os.environ.update(ENVIRONMENT)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class DownLedger(MemoryLedger):
    def record_refusal(self, refusal: Refusal, token: str = "") -> str:
        raise LedgerUnavailable("Firestore failed (ServiceUnavailable)")


@dataclass
class RecordingSender:
    plan: list[Exception] = field(default_factory=list)
    sent: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        if self.plan:
            raise self.plan.pop(0)
        self.sent.append((tuple(to), whole(mime)))  # what Mailgun receives, in one piece
        return f"<{len(self.sent)}@mailgun.test>"


@dataclass
class RecordingDeadLetters:
    letters: list[tuple[bytes, dict[str, str], str]] = field(default_factory=list)

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        self.letters.append((data, attributes, reason))


def client(source: str, target: str, signature_type: str, replacements: StandIns) -> flask.testing.FlaskClient:
    with stand_ins(replacements):
        app: flask.Flask = functions_framework.create_app(target, source, signature_type)  # type: ignore[no-untyped-call]
    return app.test_client()


def ingest_client(
    publisher: RecordingPublisher, ledger: MemoryLedger | None = None, aliases: MemoryAliases | None = None
) -> flask.testing.FlaskClient:
    ledger = MemoryLedger() if ledger is None else ledger
    aliases = MemoryAliases() if aliases is None else aliases  # alias control states (issue 14), in memory
    return client(str(INGEST), "ingest", "http", StandIns(publisher=publisher, refusals=ledger, aliases=aliases))


# -- ingest ----------------------------------------------------------------------------------


def signed_fields(token: str, key: str = SIGNING_KEY, timestamp: int | None = None) -> list[tuple[str, bytes]]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return [
        ("timestamp", stamp.encode()),
        ("token", token.encode()),
        ("signature", mailgun_signature(key, stamp, token).encode()),
    ]


def mime_form(raw: bytes, recipient: str, token: str, **signing: Any) -> bytes:
    """The urlencoded ``body-mime`` form, field by field as Mailgun documents it for a ``mime`` route URL."""
    fields = [("recipient", recipient.encode()), ("sender", b"bounce@origin.example"), ("body-mime", raw)]
    fields += signed_fields(token, **signing)
    return "&".join(f"{name}={urllib.parse.quote_from_bytes(value, safe='')}" for name, value in fields).encode()


URLENCODED = "application/x-www-form-urlencoded"


def post(http: flask.testing.FlaskClient, body: bytes, content_type: str = URLENCODED) -> tuple[int, str]:
    response = http.post("/", data=body, content_type=content_type)
    return response.status_code, response.get_data(as_text=True)


def test_ingest_publishes_a_signed_post_and_answers_200() -> None:
    publisher = RecordingPublisher()
    http = ingest_client(publisher)
    raw = corpus(MESSAGE)
    status, _ = post(http, mime_form(raw, "shop@example.org", "e" * 50))
    assert status == 200
    [(data, attributes)] = publisher.published
    assert data == raw  # the 8bit Latin-1 octets, through Flask and the form decoder untouched
    assert (attributes["schema"], attributes["recipient"], attributes["token"]) == (
        "tagrelay.v1",
        "shop@example.org",
        "e" * 50,
    )


def test_ingest_answers_an_identical_retry_200_and_publishes_it_with_the_same_identity() -> None:
    """Ingest keeps no state (issue 11): the relay's delivery record makes the second copy a duplicate."""
    publisher = RecordingPublisher()
    http = ingest_client(publisher)
    body = mime_form(corpus(MESSAGE), "shop@example.org", "r" * 50)
    assert [post(http, body)[0], post(http, body)[0]] == [200, 200]
    [(first_data, first), (second_data, second)] = publisher.published
    assert first_data == second_data == corpus(MESSAGE)
    assert first["digest"] == second["digest"] == hashlib.sha256(corpus(MESSAGE)).hexdigest()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"hello"),
        ("application/json", b'{"recipient": "shop@example.org"}'),
        (URLENCODED, b"just=some&form=fields"),
    ],
    ids=["text", "json", "not-mailgun-fields"],
)
def test_ingest_answers_400_to_what_is_not_a_mailgun_form(content_type: str, body: bytes) -> None:
    publisher = RecordingPublisher()
    assert post(ingest_client(publisher), body, content_type)[0] == 400
    assert publisher.published == []


@pytest.mark.parametrize(
    "signing",
    [{"key": "another-key"}, {"timestamp": 1_000_000_000}],
    ids=["wrong-key", "timestamp-from-2001"],
)
def test_ingest_answers_401_to_a_post_it_cannot_trust(signing: dict[str, Any]) -> None:
    publisher = RecordingPublisher()
    body = mime_form(corpus(MESSAGE), "shop@example.org", "s" * 50, **signing)
    assert post(ingest_client(publisher), body)[0] == 401
    assert publisher.published == []


def test_ingest_answers_401_to_a_post_without_a_signature() -> None:
    publisher = RecordingPublisher()
    body = mime_form(corpus(MESSAGE), "shop@example.org", "u" * 50)
    unsigned = b"&".join(f for f in body.split(b"&") if not f.startswith(b"signature="))
    assert post(ingest_client(publisher), unsigned)[0] == 401
    assert publisher.published == []


def test_ingest_answers_406_to_a_blocked_alias() -> None:
    publisher = RecordingPublisher()
    body = mime_form(corpus(MESSAGE), "leaked@example.org", "b" * 50)
    assert post(ingest_client(publisher), body)[0] == 406
    assert publisher.published == []


def test_ingest_answers_406_to_a_recipient_no_route_matches() -> None:
    publisher = RecordingPublisher()
    body = mime_form(corpus(MESSAGE), "someone@elsewhere.example", "n" * 50)
    assert post(ingest_client(publisher), body)[0] == 406
    assert publisher.published == []


def test_ingest_answers_503_when_pubsub_is_unavailable_and_the_retry_publishes() -> None:
    publisher = RecordingPublisher(fail_with=BusUnavailable("no acknowledgement from Pub/Sub within 10s"))
    http = ingest_client(publisher)
    body = mime_form(corpus(MESSAGE), "shop@example.org", "p" * 50)
    assert post(http, body)[0] == 503
    publisher.fail_with = None
    assert post(http, body)[0] == 200
    assert len(publisher.published) == 1


def test_ingest_publishes_without_the_ledger_and_answers_503_when_a_refusal_cannot_be_recorded() -> None:
    """Firestore is not on the hot path; a 406 without its refusal record would be a silent loss."""
    publisher = RecordingPublisher()
    http = ingest_client(publisher, DownLedger())
    assert post(http, mime_form(corpus(MESSAGE), "shop@example.org", "l" * 50))[0] == 200
    assert post(http, mime_form(corpus(MESSAGE), "someone@elsewhere.example", "m" * 50))[0] == 503
    assert len(publisher.published) == 1


def test_ingest_refuses_to_start_without_its_configuration() -> None:
    del os.environ["MAILGUN_WEBHOOK_SIGNING_KEY"]
    with pytest.raises(SystemExit) as stopped:
        ingest_client(RecordingPublisher())
    assert stopped.value.code == 2


# -- relay -----------------------------------------------------------------------------------


@dataclass
class RelayHarness:
    http: flask.testing.FlaskClient
    sender: RecordingSender
    deadletters: RecordingDeadLetters


@dataclass
class MemoryClaims:
    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, data: bytes, prefix: str = "claims/") -> str:
        ref = f"gs://entrypoint-claims/{prefix}{len(self.objects)}.eml"
        self.objects[ref] = data
        return ref

    def get(self, ref: str) -> bytes:
        return self.objects[ref]

    def delete(self, ref: str) -> None:
        del self.objects[ref]


def relay_harness(plan: list[Exception] | None = None, claims: MemoryClaims | None = None) -> RelayHarness:
    sender, deadletters = RecordingSender(list(plan or [])), RecordingDeadLetters()
    replacements = StandIns(
        ledger=MemoryLedger(), sender=sender, deadletters=deadletters, claims=claims, insight=MemoryInsight()
    )
    return RelayHarness(client(str(RELAY), "relay", "cloudevent", replacements), sender, deadletters)


def push_body(raw: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    """What a Pub/Sub push subscription posts (the framework turns it into a CloudEvent)."""
    published = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {
        "message": {
            "data": base64.b64encode(raw).decode("ascii"),
            "attributes": attributes,
            "messageId": "4242",
            "publishTime": published,
        },
        "subscription": "projects/entrypoint-test/subscriptions/tagrelay-relay",
    }


ATTRIBUTES = {
    "schema": "tagrelay.v1",
    "recipient": "shop@example.org",
    "sender": "bounce@origin.example",
    "token": "t" * 50,
    "message_id": "<11-iso-8859-1-8bit@corpus.example>",
    "received_at": "2024-01-01T00:00:00+00:00",
}


def test_relay_sends_a_pushed_message_rewritten_with_its_body_untouched() -> None:
    h = relay_harness()
    raw = corpus(MESSAGE)
    response = h.http.post("/", json=push_body(raw, ATTRIBUTES))
    assert response.status_code == 200
    [(to, sent)] = h.sender.sent
    assert to == ("owner+shop@gmail.com",)
    assert body_bytes(sent) == body_bytes(raw)  # the tests' own splitter, not tagrelay.core.headers
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(sent)
    assert headers["From"].addresses[0].addr_spec == "shop@example.org"
    assert header_lines(sent, "x-tagrelay-loop") == [b"X-Tagrelay-Loop: example.org\r\n"]
    assert h.deadletters.letters == []


def test_relay_answers_500_to_a_transient_failure_so_pubsub_redelivers() -> None:
    h = relay_harness([MailgunTransient("Mailgun answered 503")])
    body = push_body(corpus(MESSAGE), ATTRIBUTES)
    assert h.http.post("/", json=body).status_code == 500
    assert (h.sender.sent, h.deadletters.letters) == ([], [])
    assert h.http.post("/", json=body).status_code == 200  # the redelivery
    assert len(h.sender.sent) == 1


def test_relay_dead_letters_a_permanent_failure_and_acknowledges() -> None:
    h = relay_harness([MailgunRejected("Mailgun answered 400: 'to' parameter is not a valid address", 400)])
    raw = corpus(MESSAGE)
    assert h.http.post("/", json=push_body(raw, ATTRIBUTES)).status_code == 200
    [(data, attributes, reason)] = h.deadletters.letters
    assert (data, attributes["recipient"]) == (raw, "shop@example.org")
    assert reason == "Mailgun answered 400: 'to' parameter is not a valid address"
    assert h.sender.sent == []


def test_relay_dead_letters_a_push_that_is_not_a_tagrelay_message() -> None:
    h = relay_harness()
    body = push_body(b"hello", {"schema": "someone.else.v1", "recipient": "shop@example.org"})
    assert h.http.post("/", json=body).status_code == 200
    [(_, _, reason)] = h.deadletters.letters
    assert reason == "not a tagrelay message: schema is 'someone.else.v1', expected 'tagrelay.v1'"
    assert h.sender.sent == []


def test_relay_fetches_a_claim_checked_message_whole_and_keeps_its_object_for_a_bounce() -> None:
    """Regression: the relay was wired without a claim store, so every message over Pub/Sub's
    limit was dead-lettered ("a claim-checked message, and no claim store is configured")."""
    raw = corpus(MESSAGE)
    claims = MemoryClaims()
    ref = claims.put(raw)
    h = relay_harness(claims=claims)
    head = raw[: raw.index(b"\r\n\r\n") + 2]  # what ingest publishes for a claim check: the header block
    digest = hashlib.sha256(raw).hexdigest()  # ingest's digest of the whole message: the delivery's identity
    attributes = {**ATTRIBUTES, "claim": ref, "digest": digest}
    assert h.http.post("/", json=push_body(head, attributes)).status_code == 200
    assert h.deadletters.letters == []
    [(_, sent)] = h.sender.sent
    assert body_bytes(sent) == body_bytes(raw)
    assert list(claims.objects.values()) == [raw]  # kept until Mailgun says delivered (issue 12)


# -- the one-click block link at /block (issue 14) ----------------------------------------------


def test_block_link_route_is_served_by_ingest_with_its_own_mac_and_no_route_key() -> None:
    from urllib.parse import parse_qs, urlparse

    from tagrelay.core import control

    reply_key = "e" * 40
    os.environ["TAGRELAY_REPLY_KEY"] = reply_key
    os.environ["TAGRELAY_ROUTE_KEY"] = "route-key-of-the-entrypoint-test"
    aliases = MemoryAliases()
    http = ingest_client(RecordingPublisher(), aliases=aliases)
    link = control.block_link("http://localhost", "link-shop@example.org", time.time(), control.link_key(reply_key))
    fields = {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}
    page = http.get("/block", query_string=fields)
    assert page.status_code == 200 and page.mimetype == "text/html" and page.headers["X-Frame-Options"] == "DENY"
    assert aliases.records == {}
    assert http.post("/block", data=fields).status_code == 200
    assert aliases.records["link-shop@example.org"]["state"] == "blocked"
    assert http.post("/block", data={**fields, "s": "f" * 64}).status_code == 403
    assert http.post("/block", data={"a": "x" * 5000}).status_code == 413
    assert http.post("/mime", data=b"").status_code == 401  # Mailgun's path still wants the route key


def test_block_link_route_is_404_without_a_reply_key() -> None:
    os.environ.pop("TAGRELAY_REPLY_KEY", None)
    http = ingest_client(RecordingPublisher())
    assert http.get("/block?a=x@example.org&x=1&s=00").status_code == 404


# -- events (issue 12) -----------------------------------------------------------------------

EVENTS = ROOT / "functions" / "events" / "main.py"


def events_client(ledger: MemoryLedger, deadletters: RecordingDeadLetters) -> flask.testing.FlaskClient:
    replacements = StandIns(event_ledger=ledger, deadletters=deadletters, sender=RecordingSender())
    return client(str(EVENTS), "events", "http", replacements)


def event_post(key: str, token: str, signing_key: str = SIGNING_KEY) -> bytes:
    stamp = str(int(time.time()))
    data = {
        "event": "delivered",
        "recipient": "owner+shop@gmail.com",
        "timestamp": time.time(),
        "user-variables": {"tagrelay-delivery": key},
        "message": {"headers": {"message-id": "1.x@example.org"}},
    }
    signature = {"timestamp": stamp, "token": token, "signature": mailgun_signature(signing_key, stamp, token)}
    return json.dumps({"signature": signature, "event-data": data}).encode()


def test_events_moves_a_sent_record_to_delivered_and_refuses_a_replay() -> None:
    ledger = MemoryLedger()
    key = "e" * 64
    ledger.begin_delivery(key, 60, {"alias": "shop@example.org", "targets": "owner+shop@gmail.com"})
    ledger.delivery_done(key, "sent", "<1.x@example.org>", {"mailgun_id": "<1.x@example.org>"})
    http = events_client(ledger, RecordingDeadLetters())
    body = event_post(key, "k" * 50)
    assert post(http, body, "application/json") == (200, "delivered\n")
    assert post(http, body, "application/json") == (401, "token already used: a replayed event post\n")
    assert post(http, event_post(key, "f" * 50, "wrong-key"), "application/json")[0] == 401
    assert ledger.deliveries[key]["state"] == "delivered"


def test_events_answers_400_to_what_is_not_an_event_post_never_500() -> None:
    http = events_client(MemoryLedger(), RecordingDeadLetters())
    assert post(http, b"{", "application/json")[0] == 400
    assert post(http, b"x" * (300 * 1024), "application/json") == (400, "event post over 262144 bytes\n")
    assert post(http, mime_form(corpus(MESSAGE), "shop@example.org", "m" * 50))[0] == 400
