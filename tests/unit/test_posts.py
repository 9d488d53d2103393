"""The Mailgun route posts in tests/data/posts/: parsed, verified and turned into messages.

Each NAME.body holds the exact bytes of a route POST written from Mailgun's
documentation (tests/data/posts/make_posts.py writes them and cites the page each
follows), NAME.json its Content-Type, recipient, form kind and a note. Whether our
own post simulator agrees with them is tests/unit/test_simulator.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tagrelay.core.inbound import Form, InboundMessage, check_signed, parse_form, to_inbound
from tests.unit.support import (
    NOW,
    POST_TIMESTAMP,
    POSTS,
    SIGNING_KEY,
    Attachment,
    contents,
    corpus,
    normalize_newlines,
    parse,
)

MAX_AGE = 9 * 3600.0
NAMES = sorted(p.stem for p in POSTS.glob("*.body"))


def meta(name: str) -> dict[str, Any]:
    data = json.loads((POSTS / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def receive(name: str) -> InboundMessage:
    """What ingest does with the post: parse as bytes, verify, build the message."""
    info = meta(name)
    form = parse_form(info["content_type"], (POSTS / f"{name}.body").read_bytes())
    stamp = check_signed(form, SIGNING_KEY.encode(), now=NOW, max_age_seconds=MAX_AGE)
    return to_inbound(form, stamp)


def cases(kind: str) -> list[Any]:
    chosen = [n for n in NAMES if _kind(n) == kind]
    return [pytest.param(n, id=n) for n in chosen]


def _kind(name: str) -> str:
    kind = meta(name)["form"]
    assert kind in ("mime", "parsed")
    return str(kind)


# The fields Mailgun documents for each form ([RECEIVE] in make_posts.py). stripped-* are
# documented as absent when Mailgun's quote detection fails, so they are not required.
MIME_FIELDS = ["recipient", "sender", "from", "subject", "body-mime", "timestamp", "token", "signature"]
PARSED_FIELDS = {"recipient", "sender", "from", "subject", "body-plain", "message-headers", "timestamp", "token"}
PARSED_FIELDS |= {"signature"}


def test_the_posts_are_the_documented_ones_of_each_form_and_encoding() -> None:
    kinds = sorted((_kind(n), meta(n)["content_type"].partition(";")[0]) for n in NAMES)
    assert kinds == [
        ("mime", "application/x-www-form-urlencoded"),
        ("mime", "application/x-www-form-urlencoded"),
        ("mime", "multipart/form-data"),
        ("parsed", "application/x-www-form-urlencoded"),
        ("parsed", "multipart/form-data"),
        ("parsed", "multipart/form-data"),
    ]
    for name in NAMES:
        assert set(meta(name)["follows"]) >= {"RECEIVE", "SIGN"}, name


@pytest.mark.parametrize("name", cases("mime"))
def test_mime_post_has_the_documented_fields_in_order(name: str) -> None:
    form = parse_form(meta(name)["content_type"], (POSTS / f"{name}.body").read_bytes())
    assert list(form.fields) == MIME_FIELDS
    assert form.files == {}


@pytest.mark.parametrize("name", cases("parsed"))
def test_parsed_post_has_the_documented_fields(name: str) -> None:
    form = parse_form(meta(name)["content_type"], (POSTS / f"{name}.body").read_bytes())
    assert set(form.fields) >= PARSED_FIELDS
    attachments = meta(name)["expect_attachments"]
    assert sorted(form.files) == [f"attachment-{n}" for n in range(1, len(attachments) + 1)]
    if attachments:
        assert form.text("attachment-count") == str(len(attachments))
        assert meta(name)["content_type"].startswith("multipart/form-data")  # "when the email has attachments"
    else:
        assert meta(name)["content_type"] == "application/x-www-form-urlencoded"
    cids = {f"<{a['content_id']}>": f"attachment-{n}" for n, a in enumerate(attachments, 1) if a["content_id"]}
    assert json.loads(form.fields.get("content-id-map", b"{}")) == cids


def test_stored_posts_are_what_make_posts_generates(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_posts", POSTS / "make_posts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.write(tmp_path)
    stored = sorted(p.name for p in POSTS.iterdir() if p.suffix in (".body", ".json", ".eml"))
    assert sorted(p.name for p in written) == stored
    for path in written:
        assert path.read_bytes() == (POSTS / path.name).read_bytes(), f"{path.name} differs: rerun make_posts.py"


@pytest.mark.parametrize("name", cases("mime"))
def test_mime_post_gives_the_source_message_byte_for_byte(name: str) -> None:
    message = receive(name)
    assert message.form_kind == "mime"
    assert message.recipient == meta(name)["recipient"]
    assert message.timestamp == POST_TIMESTAMP
    assert message.mime == corpus(meta(name)["source"])


@pytest.mark.parametrize("name", cases("parsed"))
def test_parsed_post_rebuilds_the_same_content(name: str) -> None:
    message = receive(name)
    assert message.form_kind == "parsed"
    assert message.recipient == meta(name)["recipient"]
    rebuilt = contents(message.mime)
    expected, expected_attachments = _expected(name)
    assert normalize_newlines(rebuilt.text or "") == normalize_newlines(expected["text"] or "")
    assert normalize_newlines(rebuilt.html or "") == normalize_newlines(expected["html"] or "")
    assert rebuilt.attachments == expected_attachments


@pytest.mark.parametrize("name", cases("parsed"))
def test_parsed_post_keeps_the_message_headers(name: str) -> None:
    message = parse(receive(name).mime)
    info = meta(name)
    if "source" in info:
        original = parse(corpus(info["source"]))
        wanted = {h: str(original[h]) for h in ("Subject", "From", "To", "Date", "Message-ID") if original[h]}
    else:
        wanted = info["expect_headers"]
        assert wanted["Subject"] == form_text(name, "subject")  # the documented subject field agrees
    for header, value in wanted.items():
        assert str(message[header]) == value, header


@pytest.mark.parametrize("name", cases("parsed"))
def test_parsed_post_rebuilds_a_well_formed_message(name: str) -> None:
    message = parse(receive(name).mime)
    assert [d for part in message.walk() for d in part.defects] == []
    # Content-IDs are msg-ids: in angle brackets (RFC 2045 section 7), so cid: URLs resolve.
    for part in message.walk():
        if part["Content-ID"]:
            assert str(part["Content-ID"]).startswith("<") and str(part["Content-ID"]).endswith(">")


def test_hand_written_parsed_post_carries_the_spam_verdict() -> None:
    message = receive("handwritten-parsed-multipart")
    assert (message.spam_flag, message.spam_score) == ("No", "0.3")
    assert message.sender == "bounce+1042@shop.example.com"


def test_hand_written_urlencoded_mime_post_is_signed_with_the_design_vector() -> None:
    form = parse_form("application/x-www-form-urlencoded", (POSTS / "handwritten-mime-urlencoded.body").read_bytes())
    assert form.text("token") == "a71d0000ed34da6768198da96f9daaf8fb98adbccfdbd2fdaf"
    assert form.text("signature") == "16e8315674ddc3aca0f791a93250320e9cc493a3a654aea8d82327b6dd13ceaf"
    assert form.text("subject") == "[tagrelay/tagrelay] Handle folded headers (PR #17)"


def meta_form(name: str) -> Form:
    return parse_form(meta(name)["content_type"], (POSTS / f"{name}.body").read_bytes())


def form_text(name: str, field: str) -> str:
    return meta_form(name).text(field)


def test_parsed_sample_keeps_every_repeated_header_in_order() -> None:
    """message-headers lists a repeated header every time; its own field holds the last value only."""
    message = parse(receive("parsed-sample").mime)
    assert message.get_all("X-Test-Many") == ["v1", "v2", "v3"]
    assert form_text("parsed-sample", "X-Test-Many") == "v3"
    assert str(message["X-Test-Utf8"]) == "Gr\u00fc\u00dfe aus K\u00f6ln"


def test_parsed_sample_post_is_the_message_it_was_written_from() -> None:
    """The .eml behind the parsed sample and its form say the same: the fixture is consistent."""
    original = contents((POSTS / "parsed-sample.eml").read_bytes())
    assert original.attachments == [
        Attachment(a["filename"], a["content_type"], a["content_id"], a["sha256"])
        for a in meta("parsed-sample")["expect_attachments"]
    ]
    body_plain = meta_form("parsed-sample").fields["body-plain"].decode()
    assert normalize_newlines(original.text or "") == normalize_newlines(body_plain)


def _expected(name: str) -> tuple[dict[str, str | None], list[Attachment]]:
    """What the rebuilt message must contain: the source .eml's content, or the form's own."""
    info = meta(name)
    if "source" in info:
        original = contents(corpus(info["source"]))
        return {"text": original.text, "html": original.html}, original.attachments
    form = parse_form(info["content_type"], (POSTS / f"{name}.body").read_bytes())
    for number, spec in enumerate(info["expect_attachments"], 1):
        upload = form.files[f"attachment-{number}"]
        assert hashlib.sha256(upload.data).hexdigest() == spec["sha256"]
    text = form.fields.get("body-plain", b"").decode()
    html = form.fields.get("body-html", b"").decode()
    attachments = [
        Attachment(a["filename"], a["content_type"], a["content_id"], a["sha256"]) for a in info["expect_attachments"]
    ]
    return {"text": text, "html": html or None}, attachments
