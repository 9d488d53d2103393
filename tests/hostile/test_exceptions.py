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
SHOWN = "a@b.example via example.org"  # a From the address parser cannot read shows the address in it
HOSTILE_VALUES = [
    pytest.param(NESTED_FROM, SHOWN, id="600-nested-comments"),
    pytest.param(b'"' * 3000 + b"<a@b.example>", None, id="3000-quotes"),
    pytest.param(b"<" * 5000 + b"a@b.example", None, id="5000-angles"),
    pytest.param(b"g:" * 3000 + b"a@b.example", None, id="3000-groups"),
    pytest.param(b"=?utf-8?q?" + b"=C3" * 20000 + b"?= <a@b.example>", None, id="huge-broken-encoded-word"),
    pytest.param(b"=?x-unknown?b?!!!?= =?utf-7?q?+AGE-?= =?idna?q?x?= <a@b.example>", None, id="odd-charsets"),
]


@pytest.mark.parametrize(("value", "shown"), HOSTILE_VALUES)
def test_the_rewrite_sends_a_from_it_cannot_parse(value: bytes, shown: str | None) -> None:
    raw = b"From: " + value + b"\r\nSubject: hi\r\n\r\nbody\r\n"
    out = rewrite(raw, "shop@example.org", "bounce@origin.example").mime  # raises nothing at all
    name, address = oracle.display_name(out)
    assert address == "shop@example.org"
    assert name == shown if shown else name.endswith(" via example.org")
    assert len(name) <= 78 + len(" via example.org")
    assert out.endswith(b"\r\n\r\nbody\r\n")
    assert str(oracle.parsed(out, "default")["Subject"]) == "hi"


@pytest.mark.parametrize(("value", "shown"), HOSTILE_VALUES)
def test_decode_words_and_the_notice_raise_nothing(value: bytes, shown: str | None) -> None:
    assert isinstance(decode_words(value.decode("latin-1")), str)
    out = build_notice(
        b"From: " + value + b"\r\nSubject: " + value + b"\r\n\r\nx", "shop@example.org", "r", "o@gmail.com"
    )
    assert oracle.parsed(out, "default")["Subject"].startswith("Undeliverable: ")


def test_the_parsed_form_of_the_issue_is_published_and_rewritten_not_a_500() -> None:
    h = ingest()
    value = NESTED_FROM.decode()
    content_type, body = parsed([["From", value], ["Subject", "=?utf-8?q?" + "=C3" * 5000 + "?="], ["To", value]])
    response, published = h.post(content_type, body)
    assert response.status == 200, response
    forwarded = rewrite(published[0].data, "shop@example.org", "bounce@origin.example")
    assert oracle.display_name(forwarded.mime) == (SHOWN, "shop@example.org")
    # The over-long unfoldable fields cannot leave as they are: dropped, and named in X-Tagrelay-Dropped.
    assert set(forwarded.dropped) == {"reply-to", "x-original-from", "subject", "to"}
    assert oracle.long_lines(forwarded.mime) == []
    assert "subject" in str(oracle.parsed(forwarded.mime, "default")["X-Tagrelay-Dropped"])
