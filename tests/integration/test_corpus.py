"""The whole .eml corpus end to end: every real-world-style message comes out rewritten and intact."""

from __future__ import annotations

import email.utils
import hashlib
import json
import uuid
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

from tagrelay.core.headers import Field, decode_words, first, parse_fields, split_message
from tagrelay_tools.localstack import Stack
from tests.integration.conftest import DATA, accepted, post
from tests.integration.waits import wait_for
from tests.unit.support import body_bytes, header_lines

CORPUS = sorted((DATA / "eml").glob("*.eml"))
MANIFEST: dict[str, dict[str, Any]] = json.loads((DATA / "eml" / "MANIFEST.json").read_text())
KEPT = ("subject", "date", "message-id", "to", "cc", "references", "in-reply-to", "mime-version", "content-type")
REFUSED = {"41-many-received.eml": 406}  # more than 25 Received headers: a loop
RUN = uuid.uuid4().hex[:6]
SENDER = "bounce@sender.example"


def alias_for(path: Path) -> str:
    return f"c{path.name[:2]}-{RUN}@example.org"


def arrival_to(stack: Stack, target: str, seconds: float = 45.0) -> dict[str, Any]:
    found = wait_for(f"a message for {target}", lambda: [r for r in accepted(stack) if r["to"] == [target]], seconds)
    assert len(found) == 1, found  # each corpus test has an alias of its own
    return found[0]


def payload_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def lines(text: str) -> list[str]:
    """Text content compared line by line: transfer encodings differ in line endings."""
    return text.strip().splitlines()


def fields_of(raw: bytes) -> list[Field]:
    return parse_fields(split_message(raw)[0])


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_message_is_forwarded_rewritten_and_intact(stack: Stack, path: Path) -> None:
    raw = path.read_bytes()
    alias = alias_for(path)
    response = post(stack, raw, alias, sender=SENDER)
    for _ in range(3):  # Mailgun retries a 503 (a cold emulator can time out the first ledger write)
        if response.status_code != 503:
            break
        response = post(stack, raw, alias, sender=SENDER)
    if path.name in REFUSED:
        assert response.status_code == REFUSED[path.name]
        return
    assert response.status_code == 200, response.text
    record = arrival_to(stack, f"owner+{alias.split('@')[0]}@gmail.com")
    forwarded = Path(record["path"]).read_bytes()

    # Body bytes unchanged, by an oracle that shares no code with the production splitter.
    assert body_bytes(forwarded) == body_bytes(raw) or (body_bytes(raw) is None and body_bytes(forwarded) == b"")
    for name in KEPT:  # kept byte for byte, read by the tests' own field scanner
        assert header_lines(forwarded, name) == header_lines(raw, name), name
    before, after = fields_of(raw), fields_of(forwarded)

    original_from = first(before, "from")
    # Split addresses before decoding names: an encoded word may hide a comma.
    from_name, from_address = email.utils.parseaddr(first(after, "from").unfolded)  # type: ignore[union-attr]
    from_name = decode_words(from_name)
    assert from_address == alias
    if original_from is not None:
        pairs = email.utils.getaddresses([original_from.unfolded])
        name, address = next(((decode_words(n), a) for n, a in pairs if n or a), ("", ""))
        assert from_name == f"{' '.join((name or address).split())} via example.org"
        reply_source = first(before, "reply-to")  # kept for the owner; Reply-To is a reply address (issue 13)
        if reply_source is not None:
            assert first(after, "x-original-reply-to").raw_value == reply_source.raw_value  # type: ignore[union-attr]
        assert first(after, "x-original-from").raw_value == original_from.raw_value  # type: ignore[union-attr]
    else:
        assert from_name == f"{SENDER} via example.org"
    reply_to = email.utils.parseaddr(first(after, "reply-to").unfolded)[1]  # type: ignore[union-attr]
    assert reply_to.startswith(f"r--{alias.split('@')[0]}.") and reply_to.endswith("@example.org"), reply_to
    assert first(after, "x-original-to").value == alias  # type: ignore[union-attr]
    assert first(after, "x-tagrelay-loop").value == "example.org"  # type: ignore[union-attr]
    for dropped in ("dkim-signature", "arc-seal", "authentication-results", "return-path", "sender", "delivered-to"):
        assert first(after, dropped) is None, dropped


PARSED = [
    "05-alternative-text-html.eml",
    "06-mixed-attachments.eml",
    "07-nested-related-inline-image.eml",
    "09-rfc2231-filenames.eml",
    "38-calendar-invite.eml",
    "51-apple-mail-inline-mixed.eml",
]


@pytest.mark.parametrize("name", PARSED)
def test_parsed_form_rebuilds_an_equivalent_message(stack: Stack, name: str) -> None:
    raw = (DATA / "eml" / name).read_bytes()
    alias = f"p{name[:2]}-{RUN}@example.org"
    assert post(stack, raw, alias, form="parsed", sender=SENDER).status_code == 200
    record = arrival_to(stack, f"owner+{alias.split('@')[0]}@gmail.com")
    original = message_from_bytes(raw, policy=default)
    rebuilt = message_from_bytes(Path(record["path"]).read_bytes(), policy=default)
    assert isinstance(original, EmailMessage) and isinstance(rebuilt, EmailMessage)
    for kind in ("plain", "html"):
        want, got = original.get_body((kind,)), rebuilt.get_body((kind,))
        assert (want is None) == (got is None), kind
        if want is not None and got is not None:
            assert lines(got.get_content()) == lines(want.get_content()), kind
    expected = sorted(
        (a["filename"], a["content_type"], a["content_id"], a["sha256"]) for a in MANIFEST[name]["expect_attachments"]
    )
    found = sorted(
        (
            part.get_filename(),
            part.get_content_type(),
            (part["Content-ID"] or "").strip("<>") or None,
            hashlib.sha256(payload_bytes(part)).hexdigest(),
        )
        for part in rebuilt.walk()
        if not part.is_multipart() and part not in (rebuilt.get_body(("plain",)), rebuilt.get_body(("html",)))
    )
    assert found == expected
    assert rebuilt["Subject"] == original["Subject"]
