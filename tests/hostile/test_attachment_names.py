"""Class 9: parsed-form attachments with odd file names all reach the forwarded copy; parts are counted.

Reproduced on main: an attachment posted with an empty, path-like (``path\\``, ``path/.``) or dot-dot
file name did not reach the forwarded copy. The posts here are written byte by byte as a
client that does not escape backslashes writes them (``filename="path\\"``), and decoded
by the real form parser (werkzeug), which takes such a part for a plain field.
"""

from __future__ import annotations

import pytest

from tagrelay.core.errors import Undeliverable
from tagrelay.core.inbound import parse_form, rebuild_mime
from tests.fuzz.support import (
    BOUNDARY,
    TIMESTAMP,
    Part,
    decode_multipart,
    encode_multipart,
    multipart_type,
    put,
    resign,
)
from tests.hostile import oracle
from tests.hostile.posts import ingest

ODD = [b"", b"path\\", b"path/.", b"..", b".", b"../../etc/passwd", b"C:\\dir\\", b"a\x01b.txt", b"ok.txt"]


def post(names: list[bytes], count: int | None = None) -> tuple[str, bytes]:
    parts = [Part(b"recipient", b"shop@example.org"), Part(b"body-plain", b"hi")]
    for number, name in enumerate(names, 1):
        raw_filename = b'; filename="' + name + b'"'  # as written on the wire, no escaping
        parts.append(
            Part(b"attachment-%d" % number, b"data-%d" % number, content_type=b"text/plain", params=raw_filename)
        )
    parts.append(Part(b"attachment-count", str(len(names) if count is None else count).encode()))
    return multipart_type(), encode_multipart(parts)


def attachments(raw: bytes) -> list[tuple[str | None, bytes]]:
    out = []
    for part in oracle.parsed_default(raw).walk():
        if part.get_content_disposition() == "attachment":
            data = part.get_payload(decode=True)
            assert isinstance(data, bytes)
            out.append((part.get_filename(), data))
    return out


def test_every_attachment_is_kept_under_a_safe_name() -> None:
    form = parse_form(*post(ODD))
    sent = attachments(rebuild_mime(form))
    assert [data for _, data in sent] == [b"data-%d" % n for n in range(1, len(ODD) + 1)]
    assert [name for name, _ in sent] == [
        "attachment-1",  # empty
        "attachment-2",  # path\ : the form parser could not read it
        "attachment-3",  # path/. names no file
        "attachment-4",  # ..
        "attachment-5",  # .
        "../../etc/passwd",  # kept as on the raw MIME path: mail clients keep the last component
        "attachment-7",  # C:\dir\ : unreadable for the form parser too
        "a b.txt",  # the control character is gone
        "ok.txt",
    ]


def test_a_post_with_fewer_parts_than_mailgun_counted_is_refused_not_forwarded_short() -> None:
    with pytest.raises(Undeliverable, match="attachment-count says 3, the post carries 2"):
        rebuild_mime(parse_form(*post([b"a.txt", b"b.txt"], count=3)))
    response, published = ingest().post(*signed(post([b"a.txt", b"b.txt"], count=3)))
    assert (response.status, published) == (406, [])


def signed(content: tuple[str, bytes]) -> tuple[str, bytes]:
    """The same post with the envelope and signature a Mailgun post carries."""
    parts = decode_multipart(content[1], BOUNDARY)
    parts = put(put(put(parts, b"timestamp", str(TIMESTAMP).encode()), b"token", b"q" * 50), b"sender", b"a@b.example")
    return multipart_type(), encode_multipart(resign(parts))


def test_through_ingest_the_odd_names_are_published_with_every_part() -> None:
    response, [published] = ingest().post(*signed(post(ODD)))
    assert response.status == 200
    assert [data for _, data in attachments(published.data)] == [b"data-%d" % n for n in range(1, len(ODD) + 1)]
