"""Class: a Mailgun event (tracking) webhook pointed at ingest by mistake gets a 400 that says why.

It is never a route post, so it is never retried into success; the answer names the fix.
Ingest reads at most 64 KiB of a JSON body to tell, even when the route key is configured
(the webhook URL would not carry ``k``).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import secrets
from typing import Any
from urllib.parse import urlencode

import pytest

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.app import read_capped
from tagrelay.core.config import EventsConfig, SecretRef
from tagrelay.core.events import MAX_BODY_BYTES, Recorded
from tagrelay.core.routes import load
from tagrelay.services.events import Events
from tests.hostile.perimeter_support import (
    ROUTE_KEY,
    CountingBody,
    LogLines,
    RecordingPublisher,
    fixed,
    make_ingest,
)
from tests.hostile.support import Recorder, mime_post, pipeline
from tests.hostile.support import message as hostile_message

HINT = (
    "this is a Mailgun event webhook, not a route post: ingest takes only route posts; "
    "point the domain's webhooks at the events function's URL instead (tagrelay mailgun ensure-webhooks)"
)
EVENT = {
    "signature": {"timestamp": "1800000000", "token": "t" * 50, "signature": "0" * 64},
    "event-data": {"event": "delivered", "id": "abc", "recipient": "owner@gmail.com", "timestamp": 1800000000.1},
}


@pytest.mark.parametrize("route_keys", [(), (fixed(ROUTE_KEY),)], ids=["no-route-key", "route-key-configured"])
def test_a_json_event_webhook_is_told_where_to_go(route_keys: tuple[object, ...]) -> None:
    publisher = RecordingPublisher()
    service = make_ingest(publisher, route_keys=route_keys)  # type: ignore[arg-type]
    response = service.handle("application/json; charset=utf-8", json.dumps(EVENT).encode())
    assert (response.status, response.text) == (400, HINT)
    assert publisher.published == []


def test_a_legacy_form_encoded_event_webhook_is_told_too() -> None:
    body = urlencode({"event": "delivered", "recipient": "owner@gmail.com", "timestamp": "1", "token": "t"}).encode()
    response = make_ingest(RecordingPublisher()).handle("application/x-www-form-urlencoded", body)
    assert (response.status, response.text) == (400, HINT)


def test_other_json_is_a_plain_400_and_a_large_one_is_not_read_whole() -> None:
    service = make_ingest(RecordingPublisher())
    assert service.handle("application/json", b'{"hello": 1}') == service.handle("application/json", b"[]")
    assert service.handle("application/json", b"[]").text == "expected a Mailgun route post (a form), got JSON"
    big = CountingBody(b'{"event-data": {}, "signature": {}, "pad": "' + b"x" * (8 << 20) + b'"}')
    response = service.handle("application/json", big)
    assert response.status == 400
    assert big.read <= 1 << 20  # one chunk: the sniff stops at 64 KiB


# -- the events function (issue 12): what a poster controls ------------------------------------
#
# A webhook post is signed with the HTTP webhook signing key, so only Mailgun can make one that is
# read past the signature. Before it: a bounded read, no Firestore. After it: the event names a
# delivery through a user variable only tagrelay sets (the rewrite drops X-Mailgun-Variables, so a
# sender cannot add one to a forward); what else a sender's own mail puts in an event (headers,
# subject) is never read.


class NoLedger:
    """A ledger that must not be reached: nothing unauthenticated costs a Firestore call."""

    def record_event(self, *args: object, **kwargs: object) -> Recorded:
        raise AssertionError("the ledger was called before the signature was checked")


def events_service(ledger: object, clock: float = 1_800_000_000.0) -> Events:
    config = EventsConfig(
        project="p",
        routes=load('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\n'),
        signing_key=SecretRef("MAILGUN_WEBHOOK_SIGNING_KEY", "hostile-signing-key"),
        max_age_seconds=900,
        mailgun_domain="example.org",
        api_base="https://api.mailgun.net",
        api_key=SecretRef("MAILGUN_API_KEY", "k"),
        deadletter_topic="tagrelay-deadletter",
        mailgun_timeout=5,
    )
    recorder = Recorder()
    return Events(config, Secret(config.signing_key), ledger, recorder, recorder, clock=lambda: clock)  # type: ignore[arg-type]


def signed_event(event_data: object, stamp: int = 1_800_000_000, key: str = "hostile-signing-key") -> bytes:
    token = secrets.token_hex(25)
    digest = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": str(stamp), "token": token, "signature": digest}, "event-data": event_data}
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b'{"signature": "x"}',
        b'{"signature": {"timestamp": 1e999, "token": "t", "signature": "s"}}',
        b'{"signature": {"timestamp": ["1"], "token": {"a": 1}, "signature": null}, "event-data": {}}',
        b"[" * 50_000 + b"]" * 50_000,
        b'{"signature": {}, "event-data": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001,
        json.dumps(EVENT).encode(),  # signed with "0" * 64 at the service clock's second
    ],
    ids=["empty", "null", "string-signature", "huge-number", "wrong-types", "deep-list", "deep-object", "forged"],
)
def test_what_is_not_signed_is_400_or_401_and_never_reaches_firestore(body: bytes) -> None:
    answer = events_service(NoLedger()).handle("application/json", body)
    assert answer.status in (400, 401)


def test_an_oversized_post_is_read_only_to_the_cap() -> None:
    class Stream(io.BytesIO):
        taken = 0

        def read(self, size: int | None = -1) -> bytes:
            piece = super().read(size)
            self.taken += len(piece)
            return piece

    class Request:
        stream = Stream(b'{"signature": {}, "pad": "' + b"x" * (8 << 20) + b'"}')

    request = Request()
    body = read_capped(request, MAX_BODY_BYTES + 1)
    assert len(body) == request.stream.taken == MAX_BODY_BYTES + 1  # not a byte more of the 8 MiB
    assert events_service(NoLedger()).handle("application/json", body).status == 400


def test_signed_junk_is_406_so_mailgun_stops_retrying() -> None:
    assert events_service(NoLedger()).handle("application/json", signed_event(["not", "an", "event"])).status == 406


def test_a_delivery_key_naming_no_record_creates_none() -> None:
    ledger = MemoryLedger()
    made_up = {
        "event": "failed",
        "severity": "permanent",
        "recipient": "victim@gmail.com",
        "user-variables": {"tagrelay-delivery": "f" * 64},
        "message": {"headers": {"message-id": "x@y"}},
    }
    answer = events_service(ledger).handle("application/json", signed_event(made_up))
    assert (answer.status, answer.text, ledger.deliveries) == (200, "ignored", {})


def test_an_event_of_another_send_cannot_fail_a_delivered_record() -> None:
    ledger = MemoryLedger()
    key = "e" * 64
    ledger.begin_delivery(key, 60, {"alias": "a@example.org", "targets": "owner+a@gmail.com"})
    ledger.delivery_done(
        key, "sent", "<real@example.org>", {"mailgun_id": "<real@example.org>", "attributes": {"a": "b"}}
    )
    other = {
        "event": "failed",
        "severity": "permanent",
        "recipient": "owner+a@gmail.com",
        "user-variables": {"tagrelay-delivery": key},
        "message": {"headers": {"message-id": "other@example.org"}},
    }
    answer = events_service(ledger).handle("application/json", signed_event(other))
    assert (answer.status, answer.text, ledger.deliveries[key]["state"]) == (200, "stale", "sent")


def test_a_sender_cannot_set_the_delivery_variable_through_x_mailgun_variables() -> None:
    p = pipeline()
    sent_variables: list[dict[str, str]] = []
    original = p.out.send_mime

    def recording(to: Any, mime: Any, variables: Any = None) -> str:
        sent_variables.append(dict(variables or {}))
        return original(to, mime, variables)

    p.out.send_mime = recording  # type: ignore[method-assign]
    forged = '{"tagrelay-delivery": "' + "0" * 64 + '"}'
    raw = hostile_message("vars@x.example", extra=f"X-Mailgun-Variables: {forged}\r\nX-Mailgun-Tag: t\r\n")
    assert p.post(mime_post(raw, "vars@example.org", "v" * 50)).status == 200
    assert [o.status for o in p.deliver()] == ["sent"]
    [(_, mime)] = p.out.sent
    assert b"x-mailgun" not in mime.lower()
    [variables] = sent_variables
    assert list(variables) == ["tagrelay-delivery"] and variables["tagrelay-delivery"] != "0" * 64


def test_control_characters_in_an_event_stay_out_of_the_log_lines() -> None:
    ledger = MemoryLedger()
    key = "d" * 64
    ledger.begin_delivery(key, 60, {"alias": "a@example.org", "targets": "owner+a@gmail.com"})
    ledger.delivery_done(key, "sent", "<m@example.org>", {"mailgun_id": "<m@example.org>", "attributes": {"a": "b"}})
    data = {
        "event": "failed",
        "severity": "temporary",
        "recipient": "owner+a@gmail.com\r\nX: y",
        "reason": 'greylisted\n{"severity": "CRITICAL"}',
        "user-variables": {"tagrelay-delivery": key},
        "message": {"headers": {"message-id": "m@example.org"}},
        "delivery-status": {"message": "a\u2028b\x00c"},
    }
    with LogLines() as logs:
        assert events_service(ledger).handle("application/json", signed_event(data)).status == 200
        lines = logs.take()
    assert lines and all(line["severity"] in ("INFO", "WARNING") for line in lines)
    assert all("\n" not in line["message"] and "\r" not in line["message"] for line in lines)
