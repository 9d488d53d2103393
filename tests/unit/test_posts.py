"""The sample Mailgun posts in tests/data/posts/: parsed, verified and turned into messages.

Each NAME.body holds the exact bytes of a route POST, NAME.json its Content-Type,
recipient, form kind and a note (see tests/data/posts/make_posts.py, which
generates them and documents each one).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tagrelay.core.inbound import InboundMessage, check_signed, parse_form, to_inbound
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


def test_there_are_sample_posts_of_each_kind() -> None:
    kinds = [_kind(n) for n in NAMES]
    assert kinds.count("mime") >= 4
    assert kinds.count("parsed") >= 4
    assert any(meta(n)["content_type"] == "application/x-www-form-urlencoded" for n in NAMES)


def test_stored_posts_are_what_make_posts_generates(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_posts", POSTS / "make_posts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.write(tmp_path)
    stored = sorted(p.name for p in POSTS.iterdir() if p.suffix in (".body", ".json"))
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
