"""tagrelay.services.ingest.Ingest in-process: the status for every kind of post, and what gets published."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.core.errors import BusUnavailable, LedgerUnavailable
from tagrelay.core.ports import Refusal
from tagrelay.core.routes import load
from tagrelay.services.ingest import Ingest, Response
from tagrelay_tools import mailgun_posts
from tests.unit.support import (
    CORPUS,
    NOW,
    POST_TIMESTAMP,
    POSTS,
    SIGNING_KEY,
    RecordingPublisher,
    corpus,
    ingest_config,
    parse,
)

RECEIVED_AT = "2023-11-14T22:13:30+00:00"  # NOW in UTC
ROUTES = load(
    """\
blocked = ["leaked@example.org"]

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""
)


class DownLedger(MemoryLedger):
    def record_refusal(self, refusal: Refusal, token: str = "") -> str:
        raise LedgerUnavailable("Firestore failed (ServiceUnavailable)")


def make_ingest(
    publisher: RecordingPublisher, max_body_bytes: int = 80 * 1024 * 1024, ledger: MemoryLedger | None = None
) -> Ingest:
    config = ingest_config(ROUTES, max_body_bytes=max_body_bytes)
    key = Secret(config.signing_key)
    return Ingest(config, key, publisher, ledger or MemoryLedger(clock=lambda: NOW), clock=lambda: NOW)


def mime_post(
    raw: bytes, recipient: str = "shop@example.org", key: str = SIGNING_KEY, timestamp: int = POST_TIMESTAMP
) -> mailgun_posts.Post:
    return mailgun_posts.mime_post(raw, recipient, "bounce@origin.example", key, timestamp, "a" * 50)


def handle(ingest: Ingest, post: mailgun_posts.Post) -> Response:
    return ingest.handle(post.content_type, post.body)


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


# -- 200 -------------------------------------------------------------------------------------


def test_signed_routable_post_is_published_once(publisher: RecordingPublisher) -> None:
    raw = corpus("11-iso-8859-1-8bit.eml")
    response = handle(make_ingest(publisher), mime_post(raw, "Friends.Alice@example.org"))
    assert response.status == 200
    assert publisher.published == [
        (
            raw,
            {
                "schema": "tagrelay.v1",
                "recipient": "Friends.Alice@example.org",
                "sender": "bounce@origin.example",
                "token": "a" * 50,
                "message_id": "<menu.1@cafe.example.fr>",
                "received_at": RECEIVED_AT,
                "digest": hashlib.sha256(raw).hexdigest(),
            },
        )
    ]


def test_parsed_post_publishes_the_rebuilt_message_with_the_spam_verdict(publisher: RecordingPublisher) -> None:
    info = json.loads((POSTS / "handwritten-parsed-multipart.json").read_text())
    response = make_ingest(publisher).handle(
        info["content_type"], (POSTS / "handwritten-parsed-multipart.body").read_bytes()
    )
    assert response.status == 200
    [(data, attributes)] = publisher.published
    assert b"Subject:" in data and b"logo.png" in data
    assert attributes["spam_flag"] == "No"
    assert attributes["spam_score"] == "0.3"
    assert attributes["message_id"] == "<20231114221305.1042.77@shop.example.com>"


@pytest.mark.parametrize(
    "name",
    [pytest.param(p.stem, id=p.stem) for p in sorted(POSTS.glob("*.body"))],
)
def test_every_sample_post_is_accepted(publisher: RecordingPublisher, name: str) -> None:
    info = json.loads((POSTS / f"{name}.json").read_text())
    response = make_ingest(publisher).handle(info["content_type"], (POSTS / f"{name}.body").read_bytes())
    assert (response.status, len(publisher.published)) == (200, 1), response
    assert publisher.published[0][1]["recipient"] == info["recipient"]


def test_identical_retry_is_published_again_with_the_same_identity(publisher: RecordingPublisher) -> None:
    """Ingest keeps no state (issue 11): the relay's delivery record makes the second copy a duplicate."""
    ingest = make_ingest(publisher)
    post = mime_post(corpus("01-plain-ascii.eml"))
    assert handle(ingest, post).status == 200
    assert handle(ingest, post).status == 200
    assert len(publisher.published) == 2
    assert publisher.published[0] == publisher.published[1]


def test_parsed_post_retry_rebuilds_to_the_same_digest(publisher: RecordingPublisher) -> None:
    info = json.loads((POSTS / "handwritten-parsed-multipart.json").read_text())
    body = (POSTS / "handwritten-parsed-multipart.body").read_bytes()
    ingest = make_ingest(publisher)
    assert ingest.handle(info["content_type"], body).status == 200
    assert ingest.handle(info["content_type"], body).status == 200
    [(first, a1), (second, a2)] = publisher.published
    assert first == second and a1["digest"] == a2["digest"] == hashlib.sha256(first).hexdigest()


def test_loop_marker_of_another_domain_is_not_a_loop(publisher: RecordingPublisher) -> None:
    raw = b"X-Tagrelay-Loop: example.net\r\n" + corpus("01-plain-ascii.eml")
    assert handle(make_ingest(publisher), mime_post(raw)).status == 200


# -- 401 -------------------------------------------------------------------------------------


def without(post: mailgun_posts.Post, *names: str) -> bytes:
    """The same multipart body with some fields taken out."""
    boundary = post.content_type.partition("boundary=")[2].encode()
    parts = post.body.split(b"--" + boundary)
    kept = [p for p in parts if not any(f'name="{n}"'.encode() in p.split(b"\r\n\r\n", 1)[0] for n in names)]
    return (b"--" + boundary).join(kept)


@pytest.mark.parametrize("names", [("signature",), ("timestamp", "token", "signature"), ("token",)])
def test_unsigned_post_is_401_and_nothing_is_published(publisher: RecordingPublisher, names: tuple[str, ...]) -> None:
    post = mime_post(corpus("01-plain-ascii.eml"))
    response = make_ingest(publisher).handle(post.content_type, without(post, *names))
    assert response.status == 401
    assert publisher.published == []


def test_wrong_key_is_401(publisher: RecordingPublisher) -> None:
    assert handle(make_ingest(publisher), mime_post(corpus("01-plain-ascii.eml"), key="other-key")).status == 401
    assert publisher.published == []


def test_tampered_signature_is_401(publisher: RecordingPublisher) -> None:
    post = mime_post(corpus("01-plain-ascii.eml"))
    good = mailgun_posts.signature_fields(SIGNING_KEY, POST_TIMESTAMP, "a" * 50)["signature"].encode()
    body = post.body.replace(good, good[:-1] + (b"0" if good[-1:] != b"0" else b"1"))
    assert make_ingest(publisher).handle(post.content_type, body).status == 401
    assert publisher.published == []


@pytest.mark.parametrize("timestamp", [POST_TIMESTAMP - 9 * 3600 - 60, POST_TIMESTAMP + 3600])
def test_timestamp_outside_the_window_is_401(publisher: RecordingPublisher, timestamp: int) -> None:
    assert handle(make_ingest(publisher), mime_post(corpus("01-plain-ascii.eml"), timestamp=timestamp)).status == 401
    assert publisher.published == []


def test_token_reused_for_another_message_is_published_with_its_own_digest(publisher: RecordingPublisher) -> None:
    """The relay binds the token to the first digest and refuses the other (tests/unit/test_relay.py)."""
    ingest = make_ingest(publisher)
    assert handle(ingest, mime_post(corpus("01-plain-ascii.eml"))).status == 200
    assert handle(ingest, mime_post(corpus("02-plain-utf8-8bit.eml"))).status == 200
    [(_, a1), (_, a2)] = publisher.published
    assert a1["token"] == a2["token"] and a1["digest"] != a2["digest"]


# -- 400 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"recipient": "shop@example.org", "body-mime": "x"}'),
        ("application/json", b""),
        ("", b""),
        ("multipart/form-data; boundary=xyz", b""),
        ("multipart/form-data; boundary=xyz", b"\x00\xff garbage \x80"),
        ("application/x-www-form-urlencoded", b""),
        ("application/x-www-form-urlencoded", b"hello=world"),
        ("application/x-www-form-urlencoded", b"recipient=shop%40example.org"),
        ("text/plain", corpus("01-plain-ascii.eml")),
    ],
    ids=[
        "json",
        "empty-json",
        "empty",
        "empty-multipart",
        "garbage-multipart",
        "empty-form",
        "other-form",
        "no-message",
        "raw-eml",
    ],
)
def test_non_mailgun_body_is_400(publisher: RecordingPublisher, content_type: str, body: bytes) -> None:
    assert make_ingest(publisher).handle(content_type, body).status == 400
    assert publisher.published == []


# -- 406 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "raw"),
    [
        ("shop@example.com", corpus("01-plain-ascii.eml")),  # no route
        ("leaked@example.org", corpus("01-plain-ascii.eml")),  # blocked
        ("leaked+promo@example.org", corpus("01-plain-ascii.eml")),  # blocked, sub-address
        ("shop@example.org", b"X-Tagrelay-Loop: example.org\r\n" + corpus("01-plain-ascii.eml")),  # our loop marker
        ("shop@EXAMPLE.org", b"X-Tagrelay-Loop: Example.Org\r\n" + corpus("01-plain-ascii.eml")),
        ("shop@example.org", corpus("41-many-received.eml")),  # 30 Received headers
        ("shop@example.org, bank@example.org", corpus("01-plain-ascii.eml")),  # not one address
    ],
    ids=[
        "no-route",
        "blocked",
        "blocked-sub-address",
        "loop-marker",
        "loop-marker-case",
        "many-received",
        "two-recipients",
    ],
)
def test_undeliverable_post_is_406(publisher: RecordingPublisher, recipient: str, raw: bytes) -> None:
    ledger = MemoryLedger(clock=lambda: NOW)
    assert handle(make_ingest(publisher, ledger=ledger), mime_post(raw, recipient)).status == 406
    assert publisher.published == []
    [record] = ledger.refusals.values()  # a signed 406 leaves a record with the message
    assert record["alias"] == recipient and record["size"] == len(raw)
    if record["kind"] == "message":
        assert record["message"] == raw


def test_parsed_post_of_a_looping_message_is_406(publisher: RecordingPublisher) -> None:
    raw = b"X-Tagrelay-Loop: example.org\r\n" + corpus("05-alternative-text-html.eml")
    post = mailgun_posts.parsed_post(
        raw, "github@example.org", "bounce@origin.example", SIGNING_KEY, POST_TIMESTAMP, "d" * 50
    )
    assert handle(make_ingest(publisher), post).status == 406
    assert publisher.published == []


def test_body_over_max_body_bytes_is_406(publisher: RecordingPublisher) -> None:
    ingest = make_ingest(publisher, max_body_bytes=8192)
    assert handle(ingest, mime_post(corpus("06-mixed-attachments.eml"))).status == 406  # 12 kB message
    assert handle(ingest, mime_post(corpus("01-plain-ascii.eml"))).status == 200
    assert len(publisher.published) == 1


def test_message_over_the_pubsub_limit_is_406(publisher: RecordingPublisher) -> None:
    raw = corpus("01-plain-ascii.eml") + b"x" * 9_600_000
    assert handle(make_ingest(publisher), mime_post(raw)).status == 406
    assert publisher.published == []


# -- 503 -------------------------------------------------------------------------------------


def test_bus_unavailable_is_503_and_the_retry_publishes(publisher: RecordingPublisher) -> None:
    ingest = make_ingest(publisher)
    post = mime_post(corpus("01-plain-ascii.eml"))
    publisher.fail_with = BusUnavailable("no acknowledgement from Pub/Sub within 10s")
    response = handle(ingest, post)
    assert response.status == 503
    assert "10s" not in response.text  # the client gets a generic answer
    publisher.fail_with = None
    assert handle(ingest, post).status == 200  # Mailgun's retry goes through
    assert len(publisher.published) == 1


def test_ledger_unavailable_does_not_touch_a_routable_post(publisher: RecordingPublisher) -> None:
    ingest = make_ingest(publisher, ledger=DownLedger())
    assert handle(ingest, mime_post(corpus("01-plain-ascii.eml"))).status == 200
    assert len(publisher.published) == 1


def test_refusal_that_cannot_be_recorded_is_503_not_a_silent_406(publisher: RecordingPublisher) -> None:
    ingest = make_ingest(publisher, ledger=DownLedger())
    assert handle(ingest, mime_post(corpus("01-plain-ascii.eml"), "leaked@example.org")).status == 503
    assert publisher.published == []


# -- never any other status ------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("form", ["mime", "parsed"])
def test_every_corpus_message_gets_a_defined_status(publisher: RecordingPublisher, name: str, form: str) -> None:
    raw = corpus(name)
    try:
        make = mailgun_posts.mime_post if form == "mime" else mailgun_posts.parsed_post
        post = make(raw, "shop@example.org", "bounce@origin.example", SIGNING_KEY, POST_TIMESTAMP, "b" * 50)
    except LookupError:
        pytest.skip("mailgun_posts.parsed_post cannot build this post (see test_parsed_roundtrip)")
    response = handle(make_ingest(publisher), post)
    expected = 406 if name == "41-many-received.eml" else 200
    assert response.status == expected, response


def multipart(fields: list[tuple[bytes, bytes]]) -> tuple[str, bytes]:
    """A multipart body by hand: (Content-Disposition parameters, value)."""
    body = b""
    for disposition, value in fields:
        body += b"--bnd\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + value + b"\r\n"
    return "multipart/form-data; boundary=bnd", body + b"--bnd--\r\n"


def signed_parsed_form(*extra: tuple[bytes, bytes]) -> tuple[str, bytes]:
    signed = mailgun_posts.signature_fields(SIGNING_KEY, POST_TIMESTAMP, "c" * 50)
    return multipart(
        [
            (b'name="recipient"', b"shop@example.org"),
            (b'name="sender"', b"bounce@origin.example"),
            (b'name="body-plain"', b"see attachment"),
            *[(f'name="{k}"'.encode(), v.encode()) for k, v in signed.items()],
            *extra,
        ]
    )


def test_filename_with_a_line_break_is_queued_without_the_line_break(publisher: RecordingPublisher) -> None:
    content_type, body = signed_parsed_form(
        (b"name=\"attachment-1\"; filename*=UTF-8''evil%0D%0Aname.txt\r\nContent-Type: text/plain", b"data")
    )
    assert make_ingest(publisher).handle(content_type, body).status == 200
    [(data, _)] = publisher.published
    [attachment] = [part for part in parse(data).walk() if part.get_content_disposition() == "attachment"]
    assert "\r" not in (attachment.get_filename() or "") and "\n" not in (attachment.get_filename() or "")
    assert attachment.get_payload(decode=True) == b"data"


def test_delivery_status_attachment_is_queued(publisher: RecordingPublisher) -> None:
    content_type, body = signed_parsed_form(
        (
            b'name="attachment-1"; filename="status"\r\nContent-Type: message/delivery-status',
            b"Reporting-MTA: dns; mx.example.net\r\n\r\nAction: failed",
        )
    )
    assert make_ingest(publisher).handle(content_type, body).status == 200
    assert len(publisher.published) == 1


def test_response_text_never_echoes_the_signing_key(publisher: RecordingPublisher) -> None:
    responses: list[Any] = [
        handle(make_ingest(publisher), mime_post(corpus("01-plain-ascii.eml"), key="wrong")),
        handle(make_ingest(publisher), mime_post(corpus("01-plain-ascii.eml"), "x@example.com")),
    ]
    assert all(SIGNING_KEY not in r.text for r in responses)
