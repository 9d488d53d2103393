"""Class 8: the owner notice builds for any message the relay can dead-letter.

Reproduced on main: ``From: Jürgen`` (raw UTF-8) or a UTF-8 body sent 8bit raised
UnicodeEncodeError; CR/LF in a decoded Subject raised ValueError.
"""

from __future__ import annotations

import pytest

from tagrelay.core.notice import build_notice
from tests.hostile import oracle

CASES = {
    "8bit-from": "From: J\u00fcrgen <j@x.example>\r\nSubject: hi\r\n\r\nbody\r\n".encode(),
    "8bit-body": "From: j@x.example\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nGr\u00fc\u00dfe\r\n".encode(),
    "crlf-in-decoded-subject": b"From: j@x.example\r\nSubject: =?utf-8?q?a=0D=0ABcc:_x@y?=\r\n\r\nbody\r\n",
    "latin-1-8bit": b"From: j@x.example\r\nSubject: caf\xe9\r\n\r\ncaf\xe9\r\n",
    "binary-with-nul": b"From: j@x.example\r\n\r\n\x00\xff" * 3,
    "lf-only": b"From: j@x.example\nSubject: s\n\nbody\n",
    "no-headers": b"",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_notice_builds_parses_and_carries_the_original(name: str) -> None:
    original = CASES[name]
    out = build_notice(original, "shop@example.org", "cannot rewrite: x", "owner@gmail.com")
    for policy_name in oracle.POLICIES:
        names = oracle.field_names(out, policy_name)
        assert names.count("subject") == 1 and "bcc" not in names
    assert oracle.long_lines(out) == [] and oracle.controls_in_block(out) == []
    message = oracle.parsed(out, "default")
    assert str(message["Subject"]).startswith("Undeliverable: ")
    [attached] = [p for p in message.walk() if p.get_content_disposition() == "attachment"]
    assert attached.get_filename() == "original.eml"
    if attached.get_content_type() == "message/rfc822":
        sent = attached.as_bytes().split(b"\n\n", 1)[1].replace(b"\r\n", b"\n")
        assert sent.rstrip(b"\n") == original.replace(b"\r\n", b"\n").rstrip(b"\n")  # line endings are the transport's
    else:
        assert attached.get_payload(decode=True) == original


def test_the_8bit_from_is_shown_decoded_in_the_text() -> None:
    out = build_notice(CASES["8bit-from"], "shop@example.org", "r", "owner@gmail.com")
    body = oracle.parsed_default(out).get_body(("plain",))
    assert body is not None and "from:    J\u00fcrgen <j@x.example>" in body.get_content()
