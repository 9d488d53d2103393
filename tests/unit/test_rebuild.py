"""tagrelay.core.inbound.rebuild_mime on hand-made parsed forms: layout, headers, and what it must survive."""

from __future__ import annotations

import json

import pytest

from tagrelay.core.inbound import Form, Upload, rebuild_mime
from tests.unit.support import contents, parse

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR-not-really"


def headers(*pairs: tuple[str, str]) -> bytes:
    return json.dumps([list(p) for p in pairs]).encode()


def test_text_only_form_becomes_a_single_text_part() -> None:
    raw = rebuild_mime(Form(fields={"body-plain": "Grüße\r\n".encode(), "message-headers": headers(("Subject", "Hi"))}))
    message = parse(raw)
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == "Grüße\n"
    assert message["Subject"] == "Hi"


def test_text_and_html_become_alternatives() -> None:
    raw = rebuild_mime(Form(fields={"body-plain": b"plain\r\n", "body-html": b"<p>html</p>\r\n"}))
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_inline_image_goes_into_related_with_the_html_and_keeps_its_content_id() -> None:
    form = Form(
        fields={
            "body-plain": b"see logo",
            "body-html": b'<img src="cid:logo@shop.example">',
            "content-id-map": b'{"<logo@shop.example>": "attachment-1"}',
        },
        files={"attachment-1": Upload("logo.png", "image/png", PNG)},
    )
    message = parse(rebuild_mime(form))
    related = [p for p in message.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    parts = list(related[0].iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/html", "image/png"]
    assert parts[1]["Content-ID"] == "<logo@shop.example>"
    assert parts[1].get_payload(decode=True) == PNG
    assert parts[1].get_filename() == "logo.png"


def test_attachments_are_added_in_numeric_order() -> None:
    files = {f"attachment-{n}": Upload(f"f{n}.bin", "application/octet-stream", bytes([n]) * n) for n in (10, 2, 1)}
    rebuilt = contents(rebuild_mime(Form(fields={"body-plain": b"x"}, files=files)))
    assert [a.filename for a in rebuilt.attachments] == ["f1.bin", "f2.bin", "f10.bin"]


def test_single_header_fields_are_used_without_message_headers() -> None:
    form = Form(
        fields={
            "body-plain": b"x",
            "From": b"Alice <alice@bank.example>",
            "subject": b"lower-case field",
            "Message-Id": b"<m1@bank.example>",
        }
    )
    message = parse(rebuild_mime(form))
    assert (message["From"], message["Subject"], message["Message-ID"]) == (
        "Alice <alice@bank.example>",
        "lower-case field",
        "<m1@bank.example>",
    )


def test_structure_headers_of_the_original_are_not_copied() -> None:
    form = Form(
        fields={
            "body-plain": b"x",
            "message-headers": headers(
                ("Content-Type", 'multipart/mixed; boundary="old"'),
                ("Content-Transfer-Encoding", "base64"),
                ("Subject", "kept"),
            ),
        }
    )
    message = parse(rebuild_mime(form))
    assert message.get_content_type() == "text/plain"
    assert len(message.get_all("Content-Type") or []) == 1
    assert message["Content-Transfer-Encoding"] != "base64"
    assert message["Subject"] == "kept"


def test_a_header_value_with_a_line_break_cannot_inject_a_header() -> None:
    form = Form(
        fields={
            "body-plain": b"x",
            "message-headers": headers(("Subject", "hi\r\nBcc: victim@example.com"), ("X-Folded", "a\r\n b")),
        }
    )
    raw = rebuild_mime(form)
    message = parse(raw)
    assert message["Bcc"] is None
    # The break becomes blanks (issue 15: normalise, never let it through): one Subject, nothing injected.
    assert message.get_all("Subject") == ["hi  Bcc: victim@example.com"]
    assert message["X-Folded"] == "a b"


@pytest.mark.parametrize(
    "message_headers",
    [
        b"not json",
        b'{"a": 1}',
        b'[[1, 2], ["Subject"], null, "x"]',
        b'[["Message-Id", "<a@b>"], ["Message-Id", "<c@d>"]]',
    ],
    ids=["not-json", "object", "odd-items", "unique-header-twice"],
)
def test_odd_message_headers_do_not_break_the_rebuild(message_headers: bytes) -> None:
    message = parse(rebuild_mime(Form(fields={"body-plain": b"body", "message-headers": message_headers})))
    assert message.get_content().strip() == "body"


def test_the_same_form_rebuilds_to_the_same_bytes() -> None:
    form = Form(
        fields={"body-plain": b"x", "body-html": b"<p>x</p>"},
        files={"attachment-1": Upload("a.pdf", "application/pdf", b"%PDF-1.4")},
    )
    assert rebuild_mime(form) == rebuild_mime(form)


def test_attachment_with_a_content_id_survives_without_html() -> None:
    form = Form(
        fields={"body-plain": b"photo attached", "content-id-map": b'{"<img1@phone.example>": "attachment-1"}'},
        files={"attachment-1": Upload("IMG_0001.png", "image/png", PNG)},
    )
    rebuilt = contents(rebuild_mime(form))
    assert [(a.filename, a.content_id) for a in rebuilt.attachments] == [("IMG_0001.png", "img1@phone.example")]


def test_forwarded_message_attachment_stays_readable() -> None:
    inner = b"From: Carol <carol@news.example.net>\r\nSubject: the original\r\n\r\nhello inner\r\n"
    form = Form(fields={"body-plain": b"fyi"}, files={"attachment-1": Upload("fwd.eml", "message/rfc822", inner)})
    message = parse(rebuild_mime(form))
    attached = [p for p in message.walk() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    assert attached[0]["Content-Transfer-Encoding"] in (None, "7bit", "8bit", "binary")
    embedded = attached[0].get_content()
    assert embedded["Subject"] == "the original"


def test_delivery_status_attachment_does_not_crash_the_rebuild() -> None:
    report = b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; x@example.net\r\nAction: failed\r\n"
    form = Form(
        fields={"body-plain": b"bounce"},
        files={"attachment-1": Upload("status.txt", "message/delivery-status", report)},
    )
    message = parse(rebuild_mime(form))
    assert any(p.get_content_type() == "message/delivery-status" for p in message.walk())


def test_filename_with_a_line_break_does_not_crash_the_rebuild() -> None:
    form = Form(fields={"body-plain": b"x"}, files={"attachment-1": Upload("evil\r\nname.txt", "text/plain", b"x")})
    message = parse(rebuild_mime(form))
    assert [p.get_payload(decode=True) for p in message.iter_attachments()] == [b"x"]
