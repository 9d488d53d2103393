"""Bugs the fuzz suite found, each kept as its minimal input: they are fixed, and these keep them fixed."""

from __future__ import annotations

import time

import pytest

from tagrelay.core import routes
from tagrelay.core.rewrite import has_loop_marker, rewrite
from tests.fuzz.support import (
    TIMESTAMP,
    Part,
    encode_multipart,
    harness,
    multipart_type,
    resign,
)
from tests.unit.support import body_bytes

MESSAGE = b"From: a@b.example\r\nSubject: s\r\n\r\nhello\r\n"


def signed(
    *extra: Part, recipient: bytes = b"shop@example.org", token: bytes = b"tok", mime: bytes | None = MESSAGE
) -> bytes:
    """A correctly signed, routable multipart post (with body-mime unless mime=None), plus ``extra`` parts."""
    parts = [
        Part(b"recipient", recipient),
        Part(b"sender", b"alice@bank.example"),
        Part(b"timestamp", str(TIMESTAMP).encode()),
        Part(b"token", token),
        *([Part(b"body-mime", mime)] if mime is not None else []),
        *extra,
    ]
    return encode_multipart(resign(parts))


def test_form_part_without_a_name_is_answered() -> None:
    response = harness().ingest.handle(multipart_type(), signed(Part(None, b"x")))
    assert response.status == 200  # the nameless part is ignored; the post is signed and routable


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(Part(b"message-headers", b"[" * 100_000), id="message-headers"),
        pytest.param(Part(b"content-id-map", b'{"a":' * 50_000), id="content-id-map"),
    ],
)
def test_deeply_nested_json_in_a_parsed_post_is_answered(field: Part) -> None:
    response = harness().ingest.handle(multipart_type(), signed(Part(b"body-plain", b"x"), field, mime=None))
    assert response.status == 200  # signed and routable: the unreadable JSON field is not needed


# Each post and the status it must get: a control character in a field that becomes an attribute
# is either cleaned (200) or, in the envelope itself, refused as undeliverable (406).
ATTRIBUTE_INJECTIONS = {
    "message_id from an RFC 2047 word": (signed(mime=b"Message-ID: =?utf-8?q?a=0D=0Ab?=\r\n\r\nhi\r\n"), 200),
    "spam_flag from X-Mailgun-Sflag": (signed(Part(b"X-Mailgun-Sflag", b"No\r\nX-Evil: 1")), 200),
    "token (signed as sent)": (signed(token=b"to\r\nken"), 406),
}


@pytest.mark.parametrize("name", sorted(ATTRIBUTE_INJECTIONS))
def test_published_attributes_hold_no_control_characters(name: str) -> None:
    h = harness()
    post, status = ATTRIBUTE_INJECTIONS[name]
    response = h.ingest.handle(multipart_type(), post)
    assert response.status == status
    assert len(h.publisher.published) == (1 if status == 200 else 0)
    for published in h.publisher.published:
        for key, value in published.attributes.items():
            assert not any(c in value for c in "\r\n\0"), (key, value)


def test_a_recipient_too_long_for_an_attribute_is_not_published_cut() -> None:
    recipient = "a" * 1013 + "@example.org"  # 1025 bytes
    h = harness()
    response = h.ingest.handle(multipart_type(), signed(recipient=recipient.encode()))
    assert (response.status, response.text) == (406, "recipient longer than 254 octets")
    assert h.publisher.published == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"From: a@b.example\r\n \r\n\r\nbody\r\n", id="whitespace-only continuation ends the From"),
        pytest.param(
            b"DKIM-Signature: x\r\r\nSubject: s\r\n\r\nbody\r\n", id="bare CR before CRLF in a dropped header"
        ),
    ],
)
def test_rewrite_keeps_the_header_block_whole(raw: bytes) -> None:
    out = rewrite(raw, "shop@example.org").mime
    assert body_bytes(out) == body_bytes(raw) == b"body\r\n"
    assert has_loop_marker(out, "example.org")


def test_rewrite_orphan_continuation_does_not_join_the_loop_marker() -> None:
    out = rewrite(b" x\r\nSubject: s\r\n\r\nbody\r\n", "shop@example.org").mime
    assert has_loop_marker(out, "example.org")


WILDCARD_ROUTES = """\
[[route]]
match = "*-*-*-*@example.net"
forward = "owner@gmail.com"
"""


def test_wildcard_route_resolves_a_long_recipient_quickly() -> None:
    table = routes.load(WILDCARD_ROUTES)
    started = time.perf_counter()
    table.resolve("-" * 240 + "@example.net.x")  # 64 characters take about 10 ms
    assert time.perf_counter() - started < 0.1
