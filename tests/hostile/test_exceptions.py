"""Class 1: no exception outside the tree from the pure core, whatever a header holds.

Reproduced on main: ``From: `` + 600 nested ``(`` … ``)`` + `` <a@b.example>`` raised RecursionError
in the rewrite (the relay neither sent nor dead-lettered it) and a bare 500 at ingest on the
parsed-form path (Mailgun retried for 8 hours, then dropped it).
"""

from __future__ import annotations

import pytest

from tagrelay.core.headers import decode_words
from tagrelay.core.notice import build_notice
from tagrelay.core.rewrite import rewrite
from tests.hostile import oracle
from tests.hostile.posts import ingest, parsed

NESTED_FROM = b"(" * 600 + b"x" + b")" * 600 + b" <a@b.example>"
HOSTILE_VALUES = [
    pytest.param(NESTED_FROM, id="600-nested-comments"),
    pytest.param(b'"' * 3000 + b"<a@b.example>", id="3000-quotes"),
    pytest.param(b"<" * 5000 + b"a@b.example", id="5000-angles"),
    pytest.param(b"g:" * 3000 + b"a@b.example", id="3000-groups"),
    pytest.param(b"=?utf-8?q?" + b"=C3" * 20000 + b"?= <a@b.example>", id="huge-broken-encoded-word"),
    pytest.param(b"=?x-unknown?b?!!!?= =?utf-7?q?+AGE-?= =?idna?q?x?= <a@b.example>", id="odd-charsets"),
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_the_rewrite_sends_a_from_it_cannot_parse_under_the_address_or_the_sender(value: bytes) -> None:
    raw = b"From: " + value + b"\r\nSubject: hi\r\n\r\nbody\r\n"
    out = rewrite(raw, "shop@example.org", "bounce@origin.example").mime  # raises nothing at all
    message = oracle.parsed(out, "default")
    assert message["From"].addresses[0].addr_spec == "shop@example.org"
    name = message["From"].addresses[0].display_name
    assert name in ("a@b.example via example.org", "bounce@origin.example via example.org") or name.endswith(
        " via example.org"
    )
    assert out.endswith(b"\r\n\r\nbody\r\n")
    assert str(message["Subject"]) == "hi"


def test_the_nested_from_of_the_issue_shows_its_address() -> None:
    out = rewrite(b"From: " + NESTED_FROM + b"\r\n\r\nx", "shop@example.org", "bounce@origin.example").mime
    assert oracle.parsed(out, "default")["From"].addresses[0].display_name == "a@b.example via example.org"


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_decode_words_and_the_notice_raise_nothing(value: bytes) -> None:
    assert isinstance(decode_words(value.decode("latin-1")), str)
    out = build_notice(b"From: " + value + b"\r\nSubject: " + value + b"\r\n\r\nx", "shop@example.org", "r", "o@gmail.com")
    assert oracle.parsed(out, "default")["Subject"].startswith("Undeliverable: ")


def test_a_parsed_form_that_cannot_be_rebuilt_is_a_406_never_a_500() -> None:
    h = ingest()
    value = NESTED_FROM.decode()
    content_type, body = parsed([["From", value], ["Subject", "=?utf-8?q?" + "=C3" * 5000 + "?="], ["To", value]])
    response, published = h.post(content_type, body)
    assert response.status in (200, 406), response
    if response.status == 200:  # rebuilt: the From went through as written
        assert b"x" in published[0].data
