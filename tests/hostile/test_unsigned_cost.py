"""Class: input that is expensive before it is authenticated.

An unsigned post may cost ingest only its own bytes and a linear scan of them:
the signature fields are checked before any large value is decoded, in urlencoded
and multipart bodies alike, with the signature before or after ``body-mime``.
Before the fix, 6 MB of ``%41`` cost +460 MB and 4 s before the 401.
Measured with tracemalloc around ``Ingest.handle`` (bench/unsigned_cost.py prints the table).
"""

from __future__ import annotations

import urllib.parse

import pytest
from urllib3 import encode_multipart_formdata

from bench.unsigned_cost import MB, FieldValue, measure, unsigned_posts
from tagrelay_tools import mailgun_posts
from tests.hostile.perimeter_support import MESSAGE, NOW, SIGNING_KEY, CountingBody, RecordingPublisher, make_ingest

MIB = 1 << 20


@pytest.mark.parametrize("size_mb", [1, 6, 25])
def test_an_unsigned_post_costs_a_small_constant_of_its_size(size_mb: int) -> None:
    size = size_mb * MB
    publisher = RecordingPublisher()
    service = make_ingest(publisher)
    for post in unsigned_posts(size):
        cost = measure(post, service)
        assert cost.status == 401, post.shape
        # The body arrives in 1 MiB chunks and may be joined once; nothing is decoded.
        assert cost.peak_bytes <= 3 * cost.size + MIB, (post.shape, cost.peak_bytes)
        assert cost.seconds < 1.0, (post.shape, cost.seconds)
    assert publisher.published == []


def test_a_bad_signature_before_the_body_stops_reading() -> None:
    bad: list[tuple[str, FieldValue]] = [("timestamp", str(int(NOW))), ("token", "t" * 50), ("signature", "0" * 64)]
    fields: list[tuple[str, FieldValue]] = [
        ("recipient", "shop@example.org"),
        *bad,
        ("body-mime", ("m.eml", b"A" * (20 * MB), "message/rfc822")),
    ]
    body, content_type = encode_multipart_formdata(fields)
    stream = CountingBody(body)
    response = make_ingest(RecordingPublisher()).handle(content_type, stream)
    assert (response.status, response.text) == (401, "signature does not match")
    assert stream.read <= MIB  # the first chunk held the signature; the other 19 MB were never pulled


@pytest.mark.parametrize("field", ["timestamp", "token", "signature"])
def test_an_oversized_signature_field_is_refused_while_it_arrives(field: str) -> None:
    fields: list[tuple[str, FieldValue]] = [("recipient", "shop@example.org"), (field, "9" * (8 * MB))]
    fields.append(("body-mime", b"x"))
    body, content_type = encode_multipart_formdata(fields)
    stream = CountingBody(body)
    response = make_ingest(RecordingPublisher()).handle(content_type, stream)
    assert response.status == 401
    assert response.text == f"{field} longer than 512 octets"
    assert stream.read <= MIB


def test_the_body_cap_is_what_mailgun_can_send() -> None:
    """26 MiB for a multipart post (25 MB message and its fields); 3 times that urlencoded (%XX)."""
    service = make_ingest(RecordingPublisher())
    assert service.config.max_body_bytes == 26 * MIB
    over = CountingBody(b"-" * (26 * MIB + 1))
    assert service.handle("multipart/form-data; boundary=b", over).status == 406
    assert over.read <= 27 * MIB  # stopped at the cap, not at the end of the body
    assert service.handle("application/x-www-form-urlencoded", b"a" * (78 * MIB + 1)).status == 406


def test_a_signed_urlencoded_message_still_decodes_exactly() -> None:
    """The windowed unquoting gives what the standard library gives in one go, across window edges."""
    raw = MESSAGE + bytes(range(256)) * 1000 + b"%+&=" * 70000  # about 550 KB: several 64 KiB windows
    signed = mailgun_posts.signature_fields(SIGNING_KEY, int(NOW), "k" * 50)
    form = {"recipient": "shop@example.org", "sender": "a@b.example", "body-mime": raw, **signed}
    body = urllib.parse.urlencode(form).encode("ascii")
    publisher = RecordingPublisher()
    response = make_ingest(publisher).handle("application/x-www-form-urlencoded", body)
    assert response.status == 200, response.text
    [(data, _)] = publisher.published
    encoded = body.split(b"body-mime=", 1)[1].split(b"&", 1)[0]
    assert data == urllib.parse.unquote_to_bytes(encoded.replace(b"+", b" ")) == raw
