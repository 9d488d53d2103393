"""Class: a Mailgun event (tracking) webhook pointed at ingest by mistake gets a 400 that says why.

It is never a route post, so it is never retried into success; the answer names the fix.
Ingest reads at most 64 KiB of a JSON body to tell, even when the route key is configured
(the webhook URL would not carry ``k``).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from tests.hostile.perimeter_support import ROUTE_KEY, CountingBody, RecordingPublisher, fixed, make_ingest

HINT = (
    "this is a Mailgun event webhook, not a route post: ingest takes only route posts; "
    "remove this URL from the domain's webhooks in Mailgun"
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
