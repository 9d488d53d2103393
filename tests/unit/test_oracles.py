"""The test oracles in tests/unit/support.py, checked on literal messages whose answer is written by hand."""

from __future__ import annotations

import pytest

from tests.unit.support import body_bytes, raw_fields


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"Subject: a\r\n\r\nbody\r\n", b"body\r\n"),
        (b"Subject: a\n\nbody\n", b"body\n"),
        (b"Subject: a\r\n folded\r\n\r\n\r\nstarts with an empty line\r\n", b"\r\nstarts with an empty line\r\n"),
        (b"From alice@bank.example Thu Nov 16 09:00:00 2023\nSubject: a\n\nx", b"x"),
        (b"Subject: a\r\n\r\n", b""),
        (b"Subject: a\r\n", None),
        (b"Subject: a", None),
        (b"\r\nno headers at all\r\n", b"no headers at all\r\n"),
        (b"Subject: a\r\n\r\n\x00\xff\r\n\r\n--b--", b"\x00\xff\r\n\r\n--b--"),
    ],
    ids=[
        "crlf",
        "lf",
        "folded-then-empty-body-line",
        "mbox-line",
        "empty-body",
        "no-body",
        "no-newline",
        "empty-head",
        "binary",
    ],
)
def test_body_bytes_is_everything_after_the_first_empty_line(raw: bytes, body: bytes | None) -> None:
    assert body_bytes(raw) == body


def test_raw_fields_keeps_folding_and_line_endings() -> None:
    raw = b"Subject: a\r\n b\r\nTo: x@example.org\r\n\r\nSubject: not a header\r\n"
    assert raw_fields(raw) == [("subject", b"Subject: a\r\n b\r\n"), ("to", b"To: x@example.org\r\n")]
